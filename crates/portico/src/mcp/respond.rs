//! HTTP answers shared by the MCP transports and the `host` proxy: bodies, JSON and SSE replies,
//! refusals with their JSON-RPC error.
// A refusal is a ready `Response`; it is built at most once per refused request, never on the happy path.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{ACCEPT, CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;

use crate::limits::Exceeded;
use crate::mcp::jsonrpc::{self, code};
use crate::mcp::sse;
use crate::policy::headers::HeaderModifier;

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A comment on idle GET streams, so proxies and clients do not time them out.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A reply's payload from which it is sent in parts rather than copied into one buffer.
const SENT_IN_PARTS_FROM: usize = 16 * 1024;

/// `reply` as a `200` JSON answer; a large payload (a merged list) goes out as it is, between the
/// envelope's head and its closing brace, in one vectored write.
pub(crate) fn json_reply(reply: jsonrpc::Reply) -> Response<Body> {
    if reply.payload.json().get().len() < SENT_IN_PARTS_FROM {
        return json_text_response(StatusCode::OK, reply.to_json());
    }
    let (head, payload, tail) = reply.into_parts();
    let parts = Parts(VecDeque::from([
        Bytes::from(head),
        Bytes::from(payload.into_boxed_bytes()),
        Bytes::from_static(tail.as_bytes()),
    ]));
    let mut response = Response::new(parts.boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A body of a few buffers, each sent as it is (hyper writes them with one vectored write), with
/// its length known so that it goes out with a `Content-Length`.
struct Parts(VecDeque<Bytes>);

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|part| part.len() as u64).sum())
    }
}

pub(crate) fn json_response(status: StatusCode, message: &Value) -> Response<Body> {
    json_text_response(status, message.to_string())
}

pub(crate) fn json_text_response(status: StatusCode, json: String) -> Response<Body> {
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The most of a refused request's body that is read (and dropped) to keep its connection open.
const UNREAD_BODY_LIMIT: usize = 64 * 1024;
/// How long a refusal waits for the rest of the request's body before it closes the connection.
const UNREAD_BODY_TIME: Duration = Duration::from_secs(1);

/// `response`, sent once the body of the request it refuses is read and dropped. hyper closes a
/// connection whose request body was not read to the end when the answer is written, and an HTTP/1
/// client that has already put that connection back in its pool (httpx does) then finds it closed
/// under its next request ("server disconnected without sending a response"). A body larger than
/// 64 KiB or slower than a second is not waited for; the response then says `Connection: close`.
pub(crate) async fn after_body(
    request: http::Request<Incoming>,
    mut response: Response<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if hyper::body::Body::is_end_stream(&body) || parts.version >= http::Version::HTTP_2 {
        return response;
    }
    let read = http_body_util::Limited::new(body, UNREAD_BODY_LIMIT).collect();
    if !matches!(
        tokio::time::timeout(UNREAD_BODY_TIME, read).await,
        Ok(Ok(_))
    ) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A refusal with a JSON-RPC error body (`id: null`): the request never reached a session.
pub(crate) fn refuse(status: StatusCode, code: i64, message: impl Into<String>) -> Response<Body> {
    json_response(status, &jsonrpc::error(Value::Null, code, message))
}

pub(crate) fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    accepts_all(headers, [media])
}

/// Whether `Accept` allows every one of `media`, read in one pass.
pub(crate) fn accepts_all<const N: usize>(headers: &HeaderMap, media: [&str; N]) -> bool {
    let mut missing = [true; N];
    for accept in headers.get_all(ACCEPT) {
        for part in accept.as_bytes().split(|&b| b == b',') {
            let range = part
                .split(|&b| b == b';')
                .next()
                .unwrap_or(part)
                .trim_ascii();
            for (missing, media) in missing.iter_mut().zip(media) {
                *missing &= !in_range(range, media.as_bytes());
            }
        }
    }
    !missing.contains(&true)
}

/// Whether the media range `range` (of an `Accept` header) includes `media`.
fn in_range(range: &[u8], media: &[u8]) -> bool {
    let kind = media.split(|&b| b == b'/').next().unwrap_or(media);
    // Media types are case-insensitive (RFC 9110 §8.3.1).
    range.eq_ignore_ascii_case(media)
        || range == b"*/*"
        || range
            .strip_suffix(b"/*")
            .is_some_and(|range_kind| range_kind.eq_ignore_ascii_case(kind))
}

/// A target's own `responseHeaderModifier`, carried from the reply to the route's entry (`endpoint`), which applies it.
#[derive(Clone)]
pub(crate) struct TargetHeaders(pub(crate) Arc<HeaderModifier>);

/// HTTP 503 with `Retry-After` and a JSON-RPC error naming the limit that was reached.
pub(crate) fn over_limit(id: Value, over: Exceeded) -> Response<Body> {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &jsonrpc::error(id, code::INTERNAL_ERROR, over.to_string()),
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(over.retry_after_secs),
    );
    response
}

pub(crate) fn sse_body(messages: impl futures::Stream<Item = String> + Send + 'static) -> Body {
    let frames =
        messages.map(|message| Ok::<_, Infallible>(Frame::data(sse::message_frame(&message))));
    StreamBody::new(frames).boxed_unsync()
}

/// The SSE frames `frame` makes of what `rx` receives, with a keep-alive comment after
/// [`KEEP_ALIVE`] without one; the stream ends when the sender is gone.
pub(crate) fn frames_kept_alive<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
    frame: impl Fn(T) -> Bytes + Send + 'static,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold((rx, frame), |(mut rx, frame)| async move {
        let next = tokio::select! {
            received = rx.recv() => frame(received?),
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((next, (rx, frame)))
    })
}

/// An SSE body of [`frames_kept_alive`].
pub(crate) fn kept_alive_body<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
    frame: impl Fn(T) -> Bytes + Send + 'static,
) -> Body {
    let frames = frames_kept_alive(rx, frame).map(|frame| Ok::<_, Infallible>(Frame::data(frame)));
    StreamBody::new(frames).boxed_unsync()
}

pub(crate) fn sse_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_ranges() {
        let both = with_accept("application/json, text/event-stream");
        assert!(accepts(&both, "application/json") && accepts(&both, "text/event-stream"));
        assert!(accepts_all(
            &both,
            ["application/json", "text/event-stream"]
        ));
        assert!(!accepts_all(
            &with_accept("application/json"),
            ["application/json", "text/event-stream"]
        ));
        assert!(accepts(&with_accept("*/*"), "text/event-stream"));
        assert!(!accepts(
            &with_accept("application/json"),
            "text/event-stream"
        ));
        assert!(accepts(&with_accept("text/*;q=0.5"), "text/event-stream"));
        assert!(accepts(
            &with_accept("Text/Event-Stream"),
            "text/event-stream"
        ));
        assert!(!accepts(&with_accept("text/*x"), "text/event-stream"));
        assert!(!accepts(&with_accept("image/*"), "text/event-stream"));
    }
}
