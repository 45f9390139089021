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
    current: Event,
    has_data: bool,
    max_event: usize,
}

/// An event grew past the reader's limit (the stream should be dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl Reader {
    /// A reader that refuses any event (or line) larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            buffer: Vec::new(),
            current: Event::default(),
            has_data: false,
            max_event,
        }
    }

    /// The largest event this reader accepts.
    pub fn max_event(&self) -> usize {
        self.max_event
    }

    /// Adds `chunk` and returns the events it completed; `Err` once an event is larger than the limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + offset;
            // A lone `\r` at the end of the buffer may be the first half of `\r\n`: wait for more.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            let skip = if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            start = end + skip;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            if self.current.data.len() > self.max_event
                || events.last().is_some_and(|e| e.data.len() > self.max_event)
            {
                return Err(EventTooLarge);
            }
        }
        self.buffer.drain(..start);
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
            "id" => self.current.id = Some(value.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
