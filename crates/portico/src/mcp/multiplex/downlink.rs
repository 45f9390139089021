//! The client's GET stream: messages (serialized JSON-RPC) that belong to no request. Held in a bounded backlog while the
//! client has no stream open, and flushed when it opens one.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::mpsc;

/// Messages kept for a client without a GET stream; past this the oldest are dropped.
const BACKLOG: usize = 1024;

#[derive(Default)]
pub struct Downlink {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stream: Option<mpsc::Sender<String>>,
    backlog: VecDeque<String>,
}

impl Downlink {
    pub fn send(&self, message: String) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let message = match &state.stream {
            None => message,
            Some(stream) => match stream.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(message)) => message,
                Err(mpsc::error::TrySendError::Closed(message)) => {
                    state.stream = None;
                    message
                }
            },
        };
        state.keep(message);
    }

    /// Makes `stream` the client's GET stream, replacing an older one, and sends it the backlog.
    pub fn attach(&self, stream: mpsc::Sender<String>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(message) = state.backlog.pop_front() {
            if let Err(e) = stream.try_send(message) {
                state.backlog.push_front(e.into_inner());
                break;
            }
        }
        state.stream = Some(stream);
    }
}

impl Downlink {
    /// Ends the client's GET stream, if one is open; later messages wait in the backlog.
    pub fn detach(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stream = None;
    }
}

impl State {
    fn keep(&mut self, message: String) {
        if self.backlog.len() == BACKLOG {
            self.backlog.pop_front();
            tracing::warn!(target: "portico::mux", "client has no GET stream; dropped the oldest queued message");
        }
        self.backlog.push_back(message);
    }
}
