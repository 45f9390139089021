//! Requests waiting for their responses on connections where a separate reader receives everything
//! the target sends (stdio, legacy SSE): the reader routes responses here, the rest to the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{InboundSink, UpstreamError};
use crate::base::json_text::scan;
use crate::mcp::jsonrpc::{Incoming, Payload};
use crate::mcp::list_result::{self, Shape};

type Table = HashMap<u64, Waiter>;

/// A request waiting for its response, and the shape of the page it asked for, if it is a list.
struct Waiter {
    page: Option<Shape>,
    reply: oneshot::Sender<Result<Payload, UpstreamError>>,
}

#[derive(Clone, Default)]
pub struct Waiters(Arc<Mutex<Table>>);

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the request with `send` and waits for the response with its id; the answer to a list
    /// request (`page`) is split into its items as it is validated. The waiter is removed however
    /// this ends, cancellation included.
    pub async fn call<F>(
        &self,
        id: Option<u64>,
        page: Option<Shape>,
        send: F,
    ) -> Result<Payload, UpstreamError>
    where
        F: Future<Output = Result<(), UpstreamError>>,
    {
        let id = id.ok_or_else(|| UpstreamError::Protocol("request without id".into()))?;
        let (reply, rx) = oneshot::channel();
        self.lock().insert(id, Waiter { page, reply });
        let _forget = Forget { waiters: self, id };
        send.await?;
        rx.await.unwrap_or(Err(UpstreamError::Closed))
    }

    /// Routes one message the target wrote: a response to its waiter, anything else to `sink`.
    /// `source` names the transport in the warning about text that is not JSON.
    pub fn route(&self, text: &str, sink: &InboundSink, source: &str) {
        match list_result::parse_answer(text, self.page_answered(text)) {
            Ok(Incoming::Response { id, payload }) => {
                if let Some(waiter) = id.and_then(|id| self.lock().remove(&id)) {
                    let _ = waiter.reply.send(Ok(payload));
                }
            }
            Ok(Incoming::Other(message)) => sink.message(message, None),
            Err(_) => {
                tracing::warn!(target: "portico::upstream", source, "target sent something that is not JSON; ignored")
            }
        }
    }

    /// The shape of the page `text` answers: the id is looked up before the message is read, by a
    /// scan, and only while a list request waits (most messages answer none). A wrong guess (the text
    /// is read properly only after) costs the split, never the answer.
    fn page_answered(&self, text: &str) -> Option<Shape> {
        if !self.lock().values().any(|w| w.page.is_some()) {
            return None;
        }
        let id = likely_id(text)?;
        self.lock().get(&id).and_then(|w| w.page)
    }

    /// Fails every request still waiting (the connection is gone), each with `error()`.
    pub fn fail_all(&self, error: impl Fn() -> UpstreamError) {
        for (_, waiter) in self.lock().drain() {
            let _ = waiter.reply.send(Err(error()));
        }
    }
}

/// The numeric `id` of the message `text`, by a scan that trusts the text: `parse_answer` validates it.
/// (Servers write `id` before `result`, or after it, as the TypeScript SDK does: the scan then skips
/// the result.)
fn likely_id(text: &str) -> Option<u64> {
    let mut object = scan::Object::at(text.as_bytes(), 0)?;
    while let Some(key) = object.key() {
        let value = object.skip_value();
        if key == Some(b"id".as_slice()) {
            return text.get(value)?.parse().ok();
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::upstream::InboundHandler;
    use serde_json::Value;
    use std::sync::Weak;

    struct Nobody;

    impl InboundHandler for Nobody {
        fn message(&self, _: usize, _: Value, _: Option<u64>) {}
        fn closed(self: Arc<Self>, _: usize, _: u64, _: String) {}
    }

    /// The answer `text` gets when it arrives for request 7, sent as `method`.
    async fn answer(method: &str, text: &str) -> Payload {
        let waiters = Waiters::default();
        let sink = InboundSink {
            target: 0,
            generation: 0,
            handler: Weak::<Nobody>::new(),
        };
        let page = list_result::shape(method);
        let send = async {
            waiters.route(text, &sink, "test");
            Ok(())
        };
        waiters.call(Some(7), page, send).await.expect("answered")
    }

    fn is_split(payload: &Payload) -> bool {
        matches!(payload, Payload::Result(json) if json.spans().is_some())
    }

    #[tokio::test]
    async fn a_list_answer_is_split_as_it_is_read_wherever_its_id_is() {
        let page = r#"{"tools":[{"name":"a"},{"name":"b","x":[1]}]}"#;
        let id_first = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{page}}}"#);
        let id_last = format!(r#"{{"result":{page},"jsonrpc":"2.0","id":7}}"#);
        for text in [&id_first, &id_last] {
            let payload = answer("tools/list", text).await;
            assert!(is_split(&payload), "{text}");
            let Payload::Result(json) = payload else {
                unreachable!()
            };
            assert_eq!(json.get(), page);
            assert_eq!(json.spans().map(|s| s.items.len()), Some(2));
        }
        // The same answer to another request is read as any message is.
        assert!(!is_split(&answer("tools/call", &id_first).await));
    }

    #[test]
    fn the_id_scan_finds_the_id_serde_reads_and_survives_broken_text() {
        use crate::base::json_text::testing::random_json;
        use crate::mcp::jsonrpc;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut agreed = 0;
        for round in 0..20_000 {
            let (mut before, mut after) = (String::new(), String::new());
            random_json(&mut rng, 2, &mut before);
            random_json(&mut rng, 2, &mut after);
            let id = rng.random_range(0..1_000u64);
            let mut text = match round % 3 {
                0 => format!(r#"{{"id":{id},"result":{before}}}"#),
                1 => format!(r#"{{"result":{before},"x":{after},"id":{id}}}"#),
                _ => format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{before}}}"#),
            };
            if round % 2 == 1 {
                let at = rng.random_range(0..text.len());
                text.remove(at);
            }
            let found = likely_id(&text);
            if let Ok(Incoming::Response { id: read, .. }) = jsonrpc::parse_incoming(&text) {
                assert_eq!(found, read, "{text}");
                agreed += 1;
            }
        }
        assert!(agreed > 5_000, "{agreed}");
    }

    #[tokio::test]
    async fn odd_answers_to_a_list_are_read_as_any_message() {
        // Brackets and escapes in a string before the id; then an error.
        let text = r#"{"jsonrpc":"2.0","x":"\u00e9]}","id":7,"result":{"tools":[]}}"#;
        let payload = answer("tools/list", text).await;
        let Payload::Result(json) = payload else {
            panic!("no result")
        };
        assert_eq!(json.get(), r#"{"tools":[]}"#);
        let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
        assert!(matches!(
            answer("tools/list", error).await,
            Payload::Error(_)
        ));
    }
}
