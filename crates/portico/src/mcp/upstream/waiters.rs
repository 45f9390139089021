//! Requests waiting for their responses on connections where a separate reader receives everything
//! the target sends (stdio, legacy SSE): the reader routes responses here, the rest to the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{InboundSink, UpstreamError};
use crate::mcp::jsonrpc::{self, Incoming, Payload};

type Table = HashMap<u64, oneshot::Sender<Result<Payload, UpstreamError>>>;

#[derive(Clone, Default)]
pub struct Waiters(Arc<Mutex<Table>>);

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` with `send` and waits for the response with its id. The waiter is removed
    /// however this ends, cancellation included.
    pub async fn call<F>(&self, id: Option<u64>, send: F) -> Result<Payload, UpstreamError>
    where
        F: Future<Output = Result<(), UpstreamError>>,
    {
        let id = id.ok_or_else(|| UpstreamError::Protocol("request without id".into()))?;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        let _forget = Forget { waiters: self, id };
        send.await?;
        rx.await.unwrap_or(Err(UpstreamError::Closed))
    }

    /// Routes one message the target wrote: a response to its waiter, anything else to `sink`.
    /// `source` names the transport in the warning about text that is not JSON.
    pub fn route(&self, text: &str, sink: &InboundSink, source: &str) {
        match jsonrpc::parse_incoming(text) {
            Ok(Incoming::Response { id, payload }) => {
                if let Some(waiter) = id.and_then(|id| self.lock().remove(&id)) {
                    let _ = waiter.send(Ok(payload));
                }
            }
            Ok(Incoming::Other(message)) => sink.message(message, None),
            Err(_) => {
                tracing::warn!(target: "portico::upstream", source, "target sent something that is not JSON; ignored")
            }
        }
    }

    /// Fails every request still waiting (the connection is gone), each with `error()`.
    pub fn fail_all(&self, error: impl Fn() -> UpstreamError) {
        for (_, waiter) in self.lock().drain() {
            let _ = waiter.send(Err(error()));
        }
    }
}

struct Forget<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.id);
    }
}
