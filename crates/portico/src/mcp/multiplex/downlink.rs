//! The client's GET stream: messages (serialized JSON-RPC) that belong to no request. Each gets the
//! next event id of the session. Held in a bounded backlog while the client has no stream open, and
//! sent when it opens one; the last ones sent are kept too, so a client that reconnects with
//! `Last-Event-ID` gets what it missed.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// Messages kept for a client without a GET stream; past this the oldest are dropped.
const BACKLOG: usize = 1024;
/// Messages already sent that are kept for a client that reconnects (`Last-Event-ID`).
const REPLAY: usize = 64;

/// A message on the GET stream and its event id.
pub type Event = (u64, String);

#[derive(Default)]
pub struct Downlink {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stream: Option<mpsc::Sender<Event>>,
    /// Event ids start at 1.
    next_id: u64,
    /// (event id, message), in id order: the last sent ones, then those not sent yet.
    kept: VecDeque<(u64, String)>,
    /// The highest id sent on a stream.
    sent: u64,
}

impl Downlink {
    pub fn send(&self, message: String) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.next_id += 1;
        let id = state.next_id;
        state.kept.push_back((id, message));
        state.flush();
        state.trim();
    }

    /// Makes `stream` the client's GET stream, replacing an older one, and sends it what the client
    /// has not had: the messages after `last_event_id` when it names one still kept, else those
    /// never sent. A stream that falls behind is ended (the client reconnects and resumes).
    pub fn attach(&self, stream: mpsc::Sender<Event>, last_event_id: Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = last_event_id
            && last <= state.sent
        {
            state.sent = last;
        }
        state.stream = Some(stream);
        state.flush();
        state.trim();
    }

    /// Ends the client's GET stream, if one is open; later messages wait in the backlog.
    pub fn detach(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
    }
}

impl State {
    /// Sends what the stream has not had, in order; a stream that cannot take one more is ended, so
    /// that no later message reaches it past a gap.
    fn flush(&mut self) {
        let Some(stream) = &self.stream else { return };
        let start = self.kept.partition_point(|(id, _)| *id <= self.sent);
        for (id, message) in self.kept.iter().skip(start) {
            if stream.try_send((*id, message.clone())).is_err() {
                self.stream = None;
                return;
            }
            self.sent = *id;
        }
    }

    /// Keeps at most `REPLAY` sent messages and `BACKLOG` unsent ones.
    fn trim(&mut self) {
        let sent = self.kept.partition_point(|(id, _)| *id <= self.sent);
        for _ in REPLAY..sent {
            self.kept.pop_front();
        }
        let unsent = self.kept.len() - sent.min(REPLAY);
        if unsent > BACKLOG {
            let drop_at = self.kept.len() - unsent;
            self.kept.remove(drop_at);
            tracing::warn!(target: "portico::mux", "client has no GET stream; dropped the oldest queued message");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(rx: &mut mpsc::Receiver<Event>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|(id, message)| format!("{id}:{message}"))
            .collect()
    }

    #[test]
    fn a_reconnecting_client_gets_what_it_missed() {
        let downlink = Downlink::default();
        downlink.send("a".into());
        let (tx, mut rx) = mpsc::channel(16);
        downlink.attach(tx, None);
        downlink.send("b".into());
        downlink.send("c".into());
        assert_eq!(received(&mut rx), ["1:a", "2:b", "3:c"]);
        // The client saw up to event 1 before its stream broke.
        downlink.detach();
        downlink.send("d".into());
        let (tx, mut rx) = mpsc::channel(16);
        downlink.attach(tx, Some(1));
        assert_eq!(received(&mut rx), ["2:b", "3:c", "4:d"]);
        // Without Last-Event-ID, only what was never sent.
        downlink.detach();
        downlink.send("e".into());
        let (tx, mut rx) = mpsc::channel(16);
        downlink.attach(tx, None);
        assert_eq!(received(&mut rx), ["5:e"]);
    }

    #[test]
    fn a_stream_that_falls_behind_is_ended_and_nothing_is_lost() {
        let downlink = Downlink::default();
        let (tx, mut rx) = mpsc::channel(2);
        downlink.attach(tx, None);
        for m in ["a", "b", "c", "d"] {
            downlink.send(m.into());
        }
        assert_eq!(received(&mut rx), ["1:a", "2:b"]);
        assert!(rx.try_recv().is_err(), "ended");
        let (tx, mut rx) = mpsc::channel(16);
        downlink.attach(tx, Some(2));
        assert_eq!(received(&mut rx), ["3:c", "4:d"]);
    }

    #[test]
    fn the_replay_window_and_the_backlog_are_bounded() {
        let downlink = Downlink::default();
        let (tx, mut rx) = mpsc::channel(4096);
        downlink.attach(tx, None);
        for i in 0..200 {
            downlink.send(i.to_string());
        }
        assert_eq!(received(&mut rx).len(), 200);
        downlink.detach();
        for i in 200..(200 + BACKLOG + 10) {
            downlink.send(i.to_string());
        }
        let state = downlink.state.lock().unwrap();
        assert_eq!(state.kept.len(), REPLAY + BACKLOG);
        assert_eq!(state.kept.front().unwrap().0, 200 - REPLAY as u64 + 1);
    }
}
