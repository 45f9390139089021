//! The client side of MCP Streamable HTTP: POST (requests, notifications, responses; JSON or SSE
//! replies), GET (the session's stream), DELETE (end the session).
//!
//! The HTTP status and JSON-RPC error of every malformed request is decided in the client-facing
//! modules, in the order a request meets them: `endpoint` (origin, host, protocol version,
//! authentication), this module or `legacy_sse` (method, headers, session), `handling` (body, rate
//! limit, limits).
// A refusal is a ready `Response`; it is built at most once per refused request, never on the happy path.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::base::coarse_timer;
use crate::config::runtime::Route;
use crate::gateway::Gateway;
use crate::mcp::endpoint::unsupported_version;
use crate::mcp::handling::{
    Admitted, Kept, Post, Resume, find_session, handle_request, over_rate_limit, read_body,
    start_session,
};
use crate::mcp::header_names::{SESSION_HEADER, VERSION_HEADER};
use crate::mcp::jsonrpc::{self, Kind, code};
use crate::mcp::message::Message;
use crate::mcp::multiplex::STREAM_CAPACITY;
use crate::mcp::multiplex::SUPPORTED_VERSIONS;
use crate::mcp::per_request;
use crate::mcp::post_stream::{self, PostStream};
use crate::mcp::respond::{
    Body, TargetHeaders, accepts, accepts_all, after_body, empty, header, json_reply,
    json_response, json_text_response, kept_alive_body, refuse, sse_body, sse_response,
};
use crate::mcp::session::Session;
use crate::mcp::sse;

/// The session named by the request's `Mcp-Session-Id` ([`find_session`]): 400 without one.
async fn session(
    gateway: &Gateway,
    route: &Route,
    headers: &HeaderMap,
    claims: &Value,
    purpose: Resume,
) -> Result<Arc<Session>, Response<Body>> {
    let Some(id) = header(headers, SESSION_HEADER) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id header; send `initialize` first",
        ));
    };
    let token = headers.get(http::header::AUTHORIZATION);
    find_session(gateway, route, id, claims, token, purpose).await
}

/// A POST must accept both reply forms and carry JSON.
fn check_post_headers(headers: &HeaderMap) -> Result<(), Response<Body>> {
    if !accepts_all(headers, ["application/json", "text/event-stream"]) {
        return Err(refuse(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must allow both application/json and text/event-stream",
        ));
    }
    let json = header(headers, CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    });
    if !json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    Ok(())
}

pub(crate) async fn post(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
    claims: Value,
) -> Response<Body> {
    // The branches most requests do not take are boxed: a future is as large as its largest await,
    // and every request's future (boxed per request by the server) would be sized for them.
    if let Err(refused) = check_post_headers(request.headers()) {
        return Box::pin(after_body(request, refused)).await;
    }
    // Taken apart, so the headers outlive the body read without a copy.
    let (parts, body) = request.into_parts();
    let (path, headers) = (parts.uri.path(), &parts.headers);
    let session_header = header(headers, SESSION_HEADER);
    let message = match read_body(gateway, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    if message.is_batch() {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let kind = message.kind();
    if kind == Kind::Invalid {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "not a valid JSON-RPC 2.0 message",
        );
    }
    if kind == Kind::Request
        && let Some(refused) = over_rate_limit(route)
    {
        return refused;
    }
    let post = Post {
        headers,
        path,
        peer,
    };
    if session_header.is_none() && per_request::applies(headers, &message) {
        let message = message.into_value();
        return Box::pin(per_request::post(
            gateway, route, message, kind, post, claims,
        ))
        .await;
    }
    if let Some(version) = header(headers, VERSION_HEADER)
        && !SUPPORTED_VERSIONS.contains(&version)
    {
        return unsupported_version(message.id().clone(), version);
    }
    if route.is_stateless() {
        let message = message.into_value();
        return Box::pin(stateless(gateway, route, message, kind, post, claims)).await;
    }
    if session_header.is_none() && kind == Kind::Request && message.method() == "initialize" {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .map(crate::base::http::detached);
        return initialize(gateway, route, &message, &claims, token).await;
    }
    let session = match session(gateway, route, headers, &claims, Resume::ToServe).await {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    match kind {
        Kind::Request => match post.admit(&session, claims, message.id()) {
            Ok(admitted) => run_request(route, session, message, admitted).await,
            Err(refused) => refused,
        },
        Kind::Notification => {
            Box::pin(session.mux.client_notification(message.into_value())).await;
            empty(StatusCode::ACCEPTED)
        }
        Kind::Response => {
            if !Box::pin(session.mux.client_response(message.into_value())).await {
                tracing::debug!(target: "portico::access", session = %session.tag, "answer to no pending server request; dropped");
            }
            empty(StatusCode::ACCEPTED)
        }
        Kind::Invalid => unreachable!("refused above"),
    }
}

/// The methods that only make sense in a session.
const NEED_A_SESSION: [&str; 3] = [
    "resources/subscribe",
    "resources/unsubscribe",
    "logging/setLevel",
];

/// A POST on a `statefulMode: stateless` route: no `Mcp-Session-Id`. A request gets a session of its
/// own for as long as it runs (each target initialized; pooled connections reused), closed when it
/// has been answered; `initialize` is answered the same way. Notifications and answers to requests
/// have nothing to reach, and are accepted (202).
async fn stateless(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: Value,
    kind: Kind,
    request: Post<'_>,
    claims: Value,
) -> Response<Body> {
    if kind != Kind::Request {
        return empty(StatusCode::ACCEPTED);
    }
    let method = jsonrpc::method(&message);
    if method == "ping" {
        return json_response(
            StatusCode::OK,
            &jsonrpc::result(message["id"].clone(), json!({})),
        );
    }
    if NEED_A_SESSION.contains(&method) {
        let error = jsonrpc::error(
            message["id"].clone(),
            code::INVALID_REQUEST,
            format!(
                "`{method}` needs a session, and this route is stateless (statefulMode: stateless)"
            ),
        );
        return json_response(StatusCode::OK, &error);
    }
    let headers = request.headers;
    let token = headers
        .get(http::header::AUTHORIZATION)
        .map(crate::base::http::detached);
    let initializing = method == "initialize";
    let (initialize, kept) = if initializing {
        (Message::Parsed(message.clone()), Kept::ForInitialize)
    } else {
        (
            Message::Parsed(stateless_initialize(headers)),
            Kept::ForRequest,
        )
    };
    let (session, result) =
        match start_session(gateway, route, &initialize, &claims, token, kept).await {
            Ok(started) => started,
            Err(not_started) => return not_started.into_response(&message["id"]),
        };
    if initializing {
        return json_text_response(StatusCode::OK, result);
    }
    match request.admit(&session, claims, &message["id"]) {
        Ok(admitted) => run_request(route, session, message.into(), admitted).await,
        Err(refused) => refused,
    }
}

/// The `initialize` a stateless request's targets get: the version the client names in its
/// `MCP-Protocol-Version` header (else the latest), no client capabilities (the client cannot be
/// asked anything without a session), and Portico as the client.
fn stateless_initialize(headers: &HeaderMap) -> Value {
    let version = crate::mcp::multiplex::negotiate_version(header(headers, VERSION_HEADER));
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "portico", "version": env!("CARGO_PKG_VERSION")},
    }})
}

async fn initialize(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: &Message,
    claims: &Value,
    token: Option<HeaderValue>,
) -> Response<Body> {
    match start_session(gateway, route, message, claims, token, Kept::InTable).await {
        Ok((session, result)) => {
            let mut reply = json_text_response(StatusCode::OK, result);
            if let Ok(id) = HeaderValue::from_str(&session.id) {
                reply.headers_mut().insert(SESSION_HEADER, id);
            }
            reply
        }
        Err(not_started) => not_started.into_response(message.id()),
    }
}

/// Runs a client request. The reply is plain JSON when nothing else came first and the response came
/// within [`post_stream::STREAM_AFTER`], else a resumable SSE stream ([`post_stream`]) that carries
/// the messages belonging to the request and ends with its response.
async fn run_request(
    route: &Arc<Route>,
    session: Arc<Session>,
    message: Message,
    admitted: Admitted,
) -> Response<Body> {
    let (tx, mut rx) = mpsc::channel(STREAM_CAPACITY);
    let streams = session.clone();
    // A stateless route's session ends with the request: there is no GET to resume a stream with.
    let resumable = !route.is_stateless();
    let route = route.clone();
    let mut handling = Box::pin(async move {
        let outcome = Box::pin(handle_request(
            &route,
            &session,
            message,
            &tx,
            admitted.caller.as_ref(),
            admitted.sub.as_deref(),
            admitted.parent,
        ))
        .await;
        drop(admitted.slot);
        (outcome.response, outcome.response_headers, tx)
    });
    // Most requests finish before anything else is sent for them: those are answered in place, as JSON,
    // without a task or a stream.
    let first = tokio::select! {
        biased;
        (response, target_headers, tx) = &mut handling => {
            drop(tx);
            let mut messages = Vec::new();
            while let Ok(message) = rx.try_recv() {
                messages.push(message);
            }
            if messages.is_empty() {
                let mut reply = json_reply(response);
                if let Some(modifier) = target_headers {
                    reply.extensions_mut().insert(TargetHeaders(modifier));
                }
                return reply;
            }
            messages.push(response.to_json());
            let mut reply = sse_response(sse_body(futures::stream::iter(messages)));
            if let Some(modifier) = target_headers {
                reply.extensions_mut().insert(TargetHeaders(modifier));
            }
            return reply;
        }
        Some(first) = rx.recv() => Some(first),
        // A request that takes a while gets a stream the client can resume if its connection breaks.
        // A coarse deadline: a tokio timer here would cost every request a wake-up of the worker.
        () = coarse_timer::after(post_stream::STREAM_AFTER), if resumable => None,
    };
    let stream = streams.post_streams.open(resumable && primes(&streams));
    let client = stream.attach(0);
    if let Some(first) = first {
        stream.push(&first);
    }
    tokio::spawn(pump(stream, handling, rx, streams));
    sse_response(post_stream_body(client))
}

/// Whether the session's reply streams start with a priming event: for clients of 2025-11-25 or later,
/// which know an event without data (SEP-1699).
fn primes(session: &Session) -> bool {
    session.mux.protocol_version >= "2025-11-25"
}

/// Moves a request's messages, then its response, onto its resumable stream. A client that lost the
/// stream has `config.limits.streamResumeGrace` to resume it; after that the request is cancelled
/// (dropping it tells the target, see `multiplex::Call`).
async fn pump<F>(
    stream: Arc<PostStream>,
    mut handling: std::pin::Pin<Box<F>>,
    mut rx: mpsc::Receiver<String>,
    session: Arc<Session>,
) where
    F: std::future::Future<
            Output = (
                jsonrpc::Reply,
                Option<Arc<crate::policy::headers::HeaderModifier>>,
                mpsc::Sender<String>,
            ),
        >,
{
    let grace = session.mux.stream_resume_grace();
    loop {
        let detached = stream.detached_since();
        let deadline = detached.map(|since| since + grace);
        tokio::select! {
            biased;
            (response, _, tx) = &mut handling => {
                drop(tx);
                while let Ok(message) = rx.try_recv() {
                    stream.push(&message);
                }
                stream.push(&response.to_json());
                stream.finish();
                return;
            }
            Some(message) = rx.recv() => stream.push(&message),
            _ = stream.client_gone(), if detached.is_none() => {}
            _ = stream.reattached(), if detached.is_some() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                if stream.detached_since().is_some() {
                    tracing::info!(target: "portico::access", session = %session.tag, stream = stream.id(),
                        "the client did not resume its reply stream in time; request cancelled");
                    return;
                }
            }
        }
    }
}

/// The SSE body of a POST stream (its frames come ready).
fn post_stream_body(frames: mpsc::Receiver<Bytes>) -> Body {
    kept_alive_body(frames, |frame| frame)
}

pub(crate) async fn get(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    headers: &HeaderMap,
    claims: &Value,
) -> Response<Body> {
    if !accepts(headers, "text/event-stream") {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must allow text/event-stream",
        );
    }
    let session = match session(gateway, route, headers, claims, Resume::ToServe).await {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    // A client resuming its stream names the last event it received: of a POST's stream, or of this one.
    let last_event = header(headers, "last-event-id");
    if let Some((stream, after)) = last_event.and_then(|id| session.post_streams.find(id)) {
        return sse_response(post_stream_body(stream.attach(after)));
    }
    let last_event_id = last_event.and_then(|id| id.trim().parse().ok());
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    session.mux.attach_stream(tx, last_event_id);
    sse_response(kept_alive_body(rx, |(id, message)| {
        sse::event_frame(id, &message)
    }))
}

pub(crate) async fn delete(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    headers: &HeaderMap,
    claims: &Value,
) -> Response<Body> {
    let session = match session(gateway, route, headers, claims, Resume::ToEnd).await {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    gateway.sessions.end(&session.id);
    tracing::info!(target: "portico::session", route = %route.name, session = %session.tag, "session deleted by the client");
    empty(StatusCode::OK)
}
