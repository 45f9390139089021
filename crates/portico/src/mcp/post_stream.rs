//! A POST's reply stream that outlives its connection (MCP 2025-11-25, SEP-1699). Its first event
//! primes the client: an id and `retry:`, no data (only for clients of 2025-11-25 or later: older ones
//! may take an event without data for a broken message). Every event has an id (`p<stream>-<n>`) and is
//! kept until the request is answered and a while after. A client whose connection broke resumes with
//! a GET that names the last event it received, and gets the events after it, then the rest live. A
//! request whose client does not come back within `config.limits.streamResumeGrace` is cancelled: its
//! target is told.
//! The streams live in the replica that serves the request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::mcp::sse;

/// A request not answered within this gets a resumable stream (until then the reply may be plain JSON).
pub const STREAM_AFTER: Duration = Duration::from_millis(200);
/// How long a client waits before it reconnects a broken stream (`retry:` of the priming event).
pub const RETRY: Duration = Duration::from_secs(1);
/// The streams of a session that can be resumed: the most recent ones.
const KEPT_STREAMS: usize = 16;
/// The events a stream keeps for resumption, and their bytes; past either the oldest go (a resumption
/// from before them gets what is left). A stream answered more than [`KEPT_AFTER_ANSWER`] ago is let go.
const KEPT_EVENTS: usize = 1024;
const KEPT_BYTES: usize = 1 << 20;
const KEPT_AFTER_ANSWER: Duration = Duration::from_secs(30);
/// Events a client may be behind on its connection before it is cut off (it can resume).
const CLIENT_CAPACITY: usize = 256;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's POST streams that can be resumed.
#[derive(Default)]
pub struct PostStreams {
    next: AtomicU64,
    recent: Mutex<VecDeque<Arc<PostStream>>>,
}

impl PostStreams {
    /// A new stream of this session; `prime`: whether it starts with a priming event.
    pub fn open(&self, prime: bool) -> Arc<PostStream> {
        let now = Instant::now();
        let stream = Arc::new(PostStream {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            prime,
            state: Mutex::new(State {
                first: 1,
                ..State::default()
            }),
            changed: Notify::new(),
        });
        let mut recent = lock(&self.recent);
        recent.retain(|s| {
            lock(&s.state)
                .answered_at
                .is_none_or(|at| now.duration_since(at) < KEPT_AFTER_ANSWER)
        });
        if recent.len() == KEPT_STREAMS {
            recent.pop_front();
        }
        recent.push_back(stream.clone());
        stream
    }

    /// The stream an event id (`p<stream>-<n>`) names, and the event's number.
    pub fn find(&self, event_id: &str) -> Option<(Arc<PostStream>, u64)> {
        let (stream, n) = event_id.trim().strip_prefix('p')?.split_once('-')?;
        let (stream, n): (u64, u64) = (stream.parse().ok()?, n.parse().ok()?);
        let found = lock(&self.recent)
            .iter()
            .find(|s| s.id == stream)
            .cloned()?;
        Some((found, n))
    }
}

/// One POST's stream.
pub struct PostStream {
    id: u64,
    prime: bool,
    state: Mutex<State>,
    /// Woken when a client attaches.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// The number of the first kept event (events are numbered from 1; 0 is the priming event).
    first: u64,
    kept: VecDeque<Bytes>,
    kept_bytes: usize,
    client: Option<mpsc::Sender<Bytes>>,
    /// When the client's connection went, if it has.
    detached: Option<Instant>,
    /// When the response was pushed, once it has been.
    answered_at: Option<Instant>,
}

impl State {
    fn next_number(&self) -> u64 {
        self.first + self.kept.len() as u64
    }
}

impl PostStream {
    fn frame(&self, n: u64, message: &str) -> Bytes {
        sse::event_frame(format_args!("p{}-{n}", self.id), message)
    }

    fn priming(&self) -> Bytes {
        Bytes::from(format!(
            "id: p{}-0\nretry: {}\ndata: \n\n",
            self.id,
            RETRY.as_millis()
        ))
    }

    /// Attaches a client that received events up to `after` (0: none): it gets the priming event (on
    /// a first attachment), the kept events after `after`, then the new ones; its channel ends after
    /// the response.
    pub fn attach(&self, after: u64) -> mpsc::Receiver<Bytes> {
        let mut state = lock(&self.state);
        let (tx, rx) = mpsc::channel(CLIENT_CAPACITY + state.kept.len() + 1);
        if after == 0 && self.prime {
            let _ = tx.try_send(self.priming());
        }
        let skip = after.saturating_sub(state.first - 1) as usize;
        for frame in state.kept.iter().skip(skip) {
            let _ = tx.try_send(frame.clone());
        }
        state.detached = None;
        state.client = state.answered_at.is_none().then_some(tx);
        drop(state);
        self.changed.notify_waiters();
        rx
    }

    /// Adds a message for the client: kept, and sent now if the client is there and keeping up.
    pub fn push(&self, message: &str) {
        let mut state = lock(&self.state);
        let frame = self.frame(state.next_number(), message);
        while state.kept.len() == KEPT_EVENTS
            || (!state.kept.is_empty() && state.kept_bytes + frame.len() > KEPT_BYTES)
        {
            if let Some(dropped) = state.kept.pop_front() {
                state.kept_bytes -= dropped.len();
            }
            state.first += 1;
        }
        state.kept_bytes += frame.len();
        state.kept.push_back(frame.clone());
        let sent = state.client.as_ref().map(|client| client.try_send(frame));
        if matches!(sent, Some(Err(_))) {
            state.client = None;
            state.detached = Some(Instant::now());
        }
    }

    /// The request is answered (its response pushed): the client's stream ends after it.
    pub fn finish(&self) {
        let mut state = lock(&self.state);
        state.answered_at = Some(Instant::now());
        state.client = None;
    }

    /// Resolves when the client's connection goes (at once when there is none).
    pub async fn client_gone(&self) {
        let client = lock(&self.state).client.clone();
        if let Some(client) = client {
            client.closed().await;
        }
        let mut state = lock(&self.state);
        if state.client.as_ref().is_none_or(mpsc::Sender::is_closed) {
            state.client = None;
            state.detached.get_or_insert_with(Instant::now);
        }
    }

    /// When the client went, if it is gone.
    pub fn detached_since(&self) -> Option<Instant> {
        lock(&self.state).detached
    }

    /// Resolves when a client attaches.
    pub async fn reattached(&self) {
        self.changed.notified().await;
    }

    /// Its id, for logs.
    pub fn id(&self) -> u64 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<String> {
        let mut frames = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            frames.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        frames
    }

    #[test]
    fn a_resumed_stream_gets_what_came_after_its_last_event() {
        let streams = PostStreams::default();
        let stream = streams.open(true);
        let mut first = stream.attach(0);
        stream.push("one");
        stream.push("two");
        let frames = drain(&mut first);
        assert!(
            frames[0].starts_with("id: p1-0\nretry: 1000\ndata: \n"),
            "{frames:?}"
        );
        assert!(frames[1].starts_with("id: p1-1\n") && frames[1].contains("one"));
        drop(first);
        stream.push("three");
        let (found, n) = streams.find("p1-1").unwrap();
        let mut resumed = found.attach(n);
        stream.push("response");
        stream.finish();
        let frames = drain(&mut resumed);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(frames[0].contains("two") && frames[2].contains("response"));
        assert!(
            resumed.try_recv().is_err(),
            "the stream ends after the response"
        );
        assert!(streams.find("p9-1").is_none());
        assert!(streams.find("17").is_none());
        let mut unprimed = streams.open(false).attach(0);
        assert!(
            drain(&mut unprimed).is_empty(),
            "no priming event for older clients"
        );
    }

    #[test]
    fn a_stream_keeps_a_bounded_tail() {
        let streams = PostStreams::default();
        let stream = streams.open(false);
        let big = "x".repeat(600 * 1024);
        for _ in 0..3 {
            stream.push(&big);
        }
        stream.push("response");
        stream.finish();
        let frames = drain(&mut stream.attach(0));
        assert_eq!(
            frames.len(),
            2,
            "a MiB at most: the last big event and the response"
        );
        assert!(frames[0].starts_with("id: p1-3\n"), "{}", &frames[0][..20]);
    }
}
