//! Server-sent events: an incremental reader (for upstream streams) and the writer's framing.

use bytes::Bytes;

/// One dispatched event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
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
        buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut search = self.scanned;
        // Where the unfinished line's scan stopped: the end, or a `\r` that may start a `\r\n`.
        let mut scanned_to = buffer.len();
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buffer[search..]) {
            let end = search + offset;
            // A lone `\r` at the end of the buffer may be the first half of `\r\n`: wait for more.
            if buffer[end] == b'\r' && end + 1 == buffer.len() {
                scanned_to = end;
                break;
            }
            // Borrowed unless the line is not UTF-8. `from_utf8` first: its check is several times
            // faster than the lossy decoder's on the valid text streams carry.
            let line = match std::str::from_utf8(&buffer[start..end]) {
                Ok(line) => std::borrow::Cow::Borrowed(line),
                Err(_) => String::from_utf8_lossy(&buffer[start..end]),
            };
            let event = self.line(&line);
            let skip = if buffer[end] == b'\r' && buffer.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            start = end + skip;
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
        buffer.drain(..start);
        self.scanned = scanned_to - start;
        self.buffer = buffer;
        if self.buffer.len() + self.current.data.len() > self.max_event {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.current = Event::default();
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_string()),
            // An id with a NUL is ignored (the SSE standard).
            "id" if !value.contains('\0') => {
                self.current.id = Some(value.to_string());
                self.last_event_id = Some(value.to_string());
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        None
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
        assert_eq!(events[1].id.as_deref(), Some("7"));
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
