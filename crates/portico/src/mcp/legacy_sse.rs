//! The legacy HTTP+SSE transport (MCP 2024-11-05), for clients that predate Streamable HTTP.
//!
//! `GET <prefix>/sse` opens an event stream whose first event, `endpoint`, names where to POST
//! messages: `<prefix>/message?sessionId=ID`. Each POST is answered `202 Accepted`; responses, and
//! everything the targets send, come on the event stream. Behind it are the same session and
//! multiplexer as Streamable HTTP. The session ends when the event stream closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Response, StatusCode, Uri};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use tokio::sync::mpsc;

use super::jsonrpc::{Kind, code};
use super::multiplex::{Event, Mux, STREAM_CAPACITY};
use super::session::{self, Owner, Session, new_session_id};
use super::sse;
use crate::config::runtime::Route;
use crate::gateway::Gateway;
use crate::mcp::handling::{
    Kept, handle_request, over_rate_limit, read_body, start_session, subject,
};
use crate::mcp::header_names::SESSION_HEADER;
use crate::mcp::message::Message;
use crate::mcp::respond::{
    Body, after_body, empty, frames_kept_alive, over_limit, refuse, sse_response,
};
use crate::policy::authz::Caller;

/// Where the event stream's messages go, and the session once `initialize` made one.
struct Connection {
    stream: mpsc::Sender<String>,
    route: Arc<str>,
    /// The caller that opened the stream; messages from any other caller are refused.
    owner: Owner,
    session: OnceLock<Arc<Session>>,
}

/// The open event streams, by the id their `endpoint` event carries.
#[derive(Default)]
pub struct Connections {
    map: Mutex<HashMap<String, Arc<Connection>>>,
}

impl Connections {
    fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn insert(&self, id: String, connection: Arc<Connection>) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, connection);
    }

    /// Forgets every open event stream, so that each ends once its requests in flight are answered.
    pub fn end_all(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn remove(&self, id: &str) -> Option<Arc<Connection>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }
}

/// A GET that opens a legacy event stream: its path ends in `/sse` and it names no session.
pub fn opens_stream(path: &str, headers: &HeaderMap) -> bool {
    path.ends_with("/sse") && !headers.contains_key(SESSION_HEADER)
}

/// The `sessionId` of a POST to a legacy message endpoint.
pub fn message_session(uri: &Uri) -> Option<String> {
    if !uri.path().ends_with("/message") {
        return None;
    }
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, _)| name == "sessionId")
        .map(|(_, value)| value.into_owned())
}

/// Ends the session when the client goes away (the event stream's body is dropped).
struct OnClose {
    gateway: Arc<Gateway>,
    id: String,
}

impl Drop for OnClose {
    fn drop(&mut self) {
        let Some(connection) = self.gateway.legacy.remove(&self.id) else {
            return;
        };
        let Some(session) = connection.session.get() else {
            return;
        };
        tracing::info!(target: "portico::session", session = %session.tag, "legacy SSE stream closed by the client; session ended");
        let (sessions, id) = (self.gateway.sessions.clone(), session.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { sessions.remove(&id).await });
        }
    }
}

pub fn open(gateway: &Arc<Gateway>, route: &Route, path: &str, claims: &Value) -> Response<Body> {
    let id = new_session_id();
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    let connection = Arc::new(Connection {
        stream: tx,
        route: route.name.as_str().into(),
        owner: session::owner(claims),
        session: OnceLock::new(),
    });
    gateway.legacy.insert(id.clone(), connection);
    let base = path.strip_suffix("sse").unwrap_or(path);
    let endpoint = format!("event: endpoint\ndata: {base}message?sessionId={id}\n\n");
    tracing::info!(target: "portico::session", route = %route.name, "legacy SSE stream opened");
    let closing = OnClose {
        gateway: gateway.clone(),
        id,
    };
    // The connection is forgotten when its stream is dropped: `closing` lives in the stream.
    let messages = frames_kept_alive(rx, move |message: String| {
        let _ = &closing;
        sse::message_frame(&message)
    });
    let frames = futures::stream::once(async move { Bytes::from(endpoint) })
        .chain(messages)
        .map(|frame| Ok::<_, Infallible>(Frame::data(frame)));
    sse_response(http_body_util::BodyExt::boxed_unsync(StreamBody::new(
        frames,
    )))
}

/// A POST to `<prefix>/message?sessionId=ID`: accepted at once (202); what it leads to goes on the
/// event stream.
pub async fn message(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    id: &str,
    (parts, body): (http::request::Parts, Incoming),
    peer: SocketAddr,
    claims: Value,
) -> Response<Body> {
    let connection = match gateway.legacy.get(id) {
        Some(c) if *c.route == *route.name && c.owner == session::owner(&claims) => c,
        _ => {
            let refused = refuse(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "unknown sessionId; open the event stream (GET .../sse) again",
            );
            return after_body(http::Request::from_parts(parts, body), refused).await;
        }
    };
    let message = match read_body(gateway, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    let kind = message.kind();
    if message.is_batch() || kind == Kind::Invalid {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "not a single JSON-RPC 2.0 message",
        );
    }
    if kind == Kind::Request
        && let Some(refused) = over_rate_limit(route)
    {
        return refused;
    }
    let initializing = kind == Kind::Request && message.method() == "initialize";
    let session = match connection.session.get() {
        None if initializing => {
            let token = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .map(crate::base::http::detached);
            initialize(
                gateway,
                route,
                connection,
                message.into_value(),
                &claims,
                token,
            )
            .await;
            return empty(StatusCode::ACCEPTED);
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "send `initialize` first",
            );
        }
        Some(session) => session.clone(),
    };
    if gateway.sessions.get(&session.id).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "the session has ended; open the event stream (GET .../sse) again",
        );
    }
    match kind {
        Kind::Request => {
            let slot = match session.mux.admit_request() {
                Ok(slot) => slot,
                Err(over) => return over_limit(message.id().clone(), over),
            };
            if session.mux.passes_token_through() {
                let token = parts
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(crate::base::http::detached);
                session.mux.set_client_token(token);
            }
            let sub = subject(&claims);
            let caller = session
                .mux
                .authorizes()
                .then(|| Caller::new(&parts.headers, "POST", parts.uri.path(), peer, claims));
            let parent = super::handling::traceparent(&parts.headers);
            let route = route.clone();
            tokio::spawn(async move {
                let outcome = handle_request(
                    &route,
                    &session,
                    message,
                    &connection.stream,
                    caller.as_ref(),
                    sub.as_deref(),
                    parent,
                )
                .await;
                drop(slot);
                let _ = connection.stream.send(outcome.response.to_json()).await;
            });
        }
        Kind::Notification => session.mux.client_notification(message.into_value()).await,
        Kind::Response => {
            session.mux.client_response(message.into_value()).await;
        }
        Kind::Invalid => {}
    }
    empty(StatusCode::ACCEPTED)
}

async fn initialize(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    connection: Arc<Connection>,
    message: Value,
    claims: &Value,
    token: Option<http::HeaderValue>,
) {
    let message = Message::Parsed(message);
    let reply = match start_session(gateway, route, &message, claims, token, Kept::InTable).await {
        Ok((session, result)) => {
            attach_downlink(&session.mux, connection.stream.clone());
            let _ = connection.session.set(session);
            result
        }
        Err(not_started) => not_started.error.to_string(),
    };
    let _ = connection.stream.send(reply).await;
}

/// Sends the session's messages outside requests on the legacy event stream, which also carries the
/// replies (the legacy transport has no event ids to resume by).
fn attach_downlink(mux: &Mux, stream: mpsc::Sender<String>) {
    let (events, mut received) = mpsc::channel::<Event>(STREAM_CAPACITY);
    mux.attach_stream(events, None);
    tokio::spawn(async move {
        while let Some((_, message)) = received.recv().await {
            if stream.send(message).await.is_err() {
                return;
            }
        }
    });
}
