//! Server-sent events: an incremental reader (for upstream streams) and the writer's framing.

use std::borrow::Cow;

use bytes::Bytes;

/// One dispatched event (its id is the reader's [`Reader::last_event_id`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

/// Feeds chunks of an SSE stream in, takes whole events out.
#[derive(Debug)]
pub struct Reader {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no line end: a long line arriving in many chunks is
    /// scanned once, not once per chunk.
    scanned: usize,
    current: Event,
    has_data: bool,
    max_event: usize,
    /// The id of the last event the stream named (also one without data, such as a priming event):
    /// where a reconnection resumes (`Last-Event-ID`).
    pub last_event_id: Option<String>,
    /// The reconnection delay the stream asked for (`retry:`, milliseconds).
    pub retry: Option<u64>,
}

/// An event grew past the reader's limit (the stream should be dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl Reader {
    /// A reader that refuses any event (or line) larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            buffer: Vec::new(),
            scanned: 0,
            current: Event::default(),
            has_data: false,
            max_event,
            last_event_id: None,
            retry: None,
        }
    }

    /// The largest event this reader accepts.
    pub fn max_event(&self) -> usize {
        self.max_event
    }

    /// Adds `chunk` and returns the events it completed; `Err` once an event is larger than the limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        let mut buffer = std::mem::take(&mut self.buffer);
        // Lines are read in the chunk itself unless one began in an earlier chunk: only what is
        // left of an unfinished line is copied.
        let in_chunk = buffer.is_empty();
        if !in_chunk {
            buffer.extend_from_slice(chunk);
        }
        let text = if in_chunk { chunk } else { &buffer[..] };
        let (events, start, scanned_to) = self.lines(text)?;
        if in_chunk {
            buffer.extend_from_slice(&chunk[start..]);
        } else {
            buffer.drain(..start);
        }
        self.scanned = scanned_to - start;
        self.buffer = buffer;
        if self.buffer.len() + self.current.data.len() > self.max_event {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// Reads the whole lines of `text` (whose first `self.scanned` bytes hold no line end): the
    /// events they complete, where the unfinished line starts, and where its scan stopped.
    fn lines(&mut self, text: &[u8]) -> Result<(Vec<Event>, usize, usize), EventTooLarge> {
        let mut events = Vec::new();
        let (mut start, mut search) = (0, self.scanned);
        // Where the unfinished line's scan stopped: the end, or a `\r` that may start a `\r\n`.
        let mut scanned_to = text.len();
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &text[search..]) {
            let end = search + offset;
            // A lone `\r` at the end of the text may be the first half of `\r\n`: wait for more.
            if text[end] == b'\r' && end + 1 == text.len() {
                scanned_to = end;
                break;
            }
            let event = self.line(&text[start..end]);
            let crlf = text[end] == b'\r' && text.get(end + 1) == Some(&b'\n');
            start = end + 1 + usize::from(crlf);
            search = start;
            if let Some(event) = event {
                events.push(event);
            }
            if self.current.data.len() > self.max_event
                || events.last().is_some_and(|e| e.data.len() > self.max_event)
            {
                return Err(EventTooLarge);
            }
        }
        Ok((events, start, scanned_to))
    }

    fn line(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.current = Event::default();
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return None,
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&text(value));
                self.has_data = true;
            }
            b"event" => self.current.event = Some(text(value).into_owned()),
            // An id with a NUL is ignored (the SSE standard).
            b"id" if !value.contains(&0) => {
                let id = self.last_event_id.get_or_insert_default();
                id.clear();
                id.push_str(&text(value));
            }
            b"retry" => {
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        None
    }
}

/// A field's value as text: borrowed unless it is not UTF-8. `from_utf8` first: its check is several
/// times faster than the lossy decoder's on the valid text streams carry.
fn text(value: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(value) {
        Ok(value) => Cow::Borrowed(value),
        Err(_) => String::from_utf8_lossy(value),
    }
}

/// Frames one JSON-RPC message as an SSE `message` event.
pub fn message_frame(json: &str) -> Bytes {
    let mut frame = String::with_capacity(json.len() + 24);
    frame.push_str("event: message\ndata: ");
    frame.push_str(json);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

/// A `message` event with its id, for a stream the client can resume (`Last-Event-ID`).
pub fn event_frame(id: impl std::fmt::Display, json: &str) -> Bytes {
    use std::fmt::Write;
    let mut frame = String::with_capacity(json.len() + 48);
    // Writing to a String cannot fail.
    let _ = write!(frame, "id: {id}\nevent: message\ndata: ");
    frame.push_str(json);
    frame.push_str("\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_priming_event_gives_the_id_to_resume_from_and_the_retry() {
        let mut reader = Reader::new(1024);
        let events = reader.feed(b"id: s1-0\nretry: 250\ndata: \n\n").unwrap();
        assert!(events.iter().all(|e| e.data.is_empty()));
        assert_eq!(reader.last_event_id.as_deref(), Some("s1-0"));
        assert_eq!(reader.retry, Some(250));
        reader
            .feed(b"id: s1-1\ndata: {}\n\nretry: soon\n\n")
            .unwrap();
        assert_eq!(reader.last_event_id.as_deref(), Some("s1-1"));
        assert_eq!(
            reader.retry,
            Some(250),
            "a retry that is not a number is ignored"
        );
    }

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut reader = Reader::new(1024);
        assert!(
            reader
                .feed(b"event: message\r\ndata: {\"a\"")
                .unwrap()
                .is_empty()
        );
        let events = reader
            .feed(b":1}\r\n\r\n: comment\n\nid: 7\ndata: x\ndata: y\n\n")
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[0].event.as_deref(), Some("message"));
        assert_eq!(events[1].data, "x\ny");
        assert_eq!(reader.last_event_id.as_deref(), Some("7"));
    }

    #[test]
    fn every_split_of_a_stream_gives_the_same_events() {
        let stream = b"event: message\r\ndata: {\"long\":\"0123456789abcdef\"}\r\n\r\ndata: a\rdata: b\r\rid: 9\ndata: \xff\n\n";
        let whole = Reader::new(1024).feed(stream).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].data, "a\nb");
        assert_eq!(whole[2].data, "\u{fffd}");
        for size in 1..stream.len() {
            let mut reader = Reader::new(1024);
            let events: Vec<Event> = stream
                .chunks(size)
                .flat_map(|chunk| reader.feed(chunk).unwrap())
                .collect();
            assert_eq!(events, whole, "chunks of {size}");
            assert_eq!(
                reader.last_event_id.as_deref(),
                Some("9"),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn priming_events_without_data_are_skipped() {
        let mut reader = Reader::new(1024);
        assert!(reader.feed(b"id: 0\nretry: 3000\ndata:\n\n").unwrap().len() == 1);
        assert!(reader.feed(b"id: 1\nretry: 3000\n\n").unwrap().is_empty());
    }

    #[test]
    fn an_event_past_the_limit_is_refused_before_it_completes() {
        let mut reader = Reader::new(16);
        assert_eq!(reader.feed(b"data: 0123456789\n\n").unwrap().len(), 1);
        assert_eq!(reader.feed(b"data: 0123456789"), Ok(vec![]));
        assert_eq!(
            reader.feed(b"abcdefgh"),
            Err(EventTooLarge),
            "one long line"
        );
        let mut reader = Reader::new(16);
        assert_eq!(
            reader.feed(b"data: 0123456789\ndata: 0123456789\n"),
            Err(EventTooLarge),
            "many lines"
        );
    }
}
