//! A target reached over MCP Streamable HTTP: one POST per message, JSON or SSE replies, a GET stream
//! for the target's unprompted messages, and the upstream's own `Mcp-Session-Id`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod per_request;

use super::{InboundSink, UpstreamError};
use crate::base::coarse_timer;
use crate::base::http_client::{self, HttpClient, ReplyBody, Response, next_chunk};
use crate::mcp::header_names::{SESSION_HEADER, VERSION_HEADER};
use crate::mcp::jsonrpc::{self, Incoming as Message, Payload};
use crate::mcp::list_result;
use crate::mcp::message::Message as Outgoing;
use crate::mcp::sse;
use crate::policy::outbound::Outbound;

const ACCEPT_BOTH: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
const ACCEPT_EVENTS: HeaderValue = HeaderValue::from_static("text/event-stream");
/// How long to wait before resuming a stream the target closed, when it did not say (`retry:`).
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest wait a target's `retry:` gets: a call is not held up longer between two polls.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Resumptions in a row that bring no event before the call fails: the target has gone away.
const MAX_IDLE_RESUMPTIONS: u32 = 3;
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// The notification that ends the handshake, as sent.
const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}"#;

/// How long the target may take to take `notifications/initialized` before the messages waiting for it
/// go ahead anyway.
const INITIALIZED_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HttpUpstream {
    uri: Uri,
    client: HttpClient,
    sink: InboundSink,
    session_id: RwLock<Option<HeaderValue>>,
    protocol_version: RwLock<Option<HeaderValue>>,
    /// The `initialize` request as sent, and its id: replayed once if the upstream session expires.
    init_request: RwLock<Option<(Bytes, Option<u64>)>>,
    listen: CancellationToken,
    /// Whether the GET stream was opened: only once someone can hear what comes on it.
    listening: AtomicBool,
    /// Held (for writing) while `notifications/initialized` is on its way; everything else sent to
    /// the target waits for it (reads), so the target hears it first.
    ready: Arc<tokio::sync::RwLock<()>>,
    outbound: Arc<Outbound>,
    /// Largest reply body or SSE event accepted from the target.
    max_message: usize,
    /// Set when the target speaks the 2026-07-28 revision: no upstream session, this context in
    /// every request's `_meta` ([`per_request`]).
    context: arc_swap::ArcSwapOption<per_request::Context>,
    /// Answers the client owes for a 2026-07-28 target's questions, by the id they were asked under.
    answers: per_request::Answers,
}

fn read<T: Clone>(lock: &RwLock<Option<T>>) -> Option<T> {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<Option<T>>, value: Option<T>) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

fn connect_error(e: impl std::error::Error + 'static) -> UpstreamError {
    // The causes say what failed, e.g. `invalid peer certificate: UnknownIssuer`.
    UpstreamError::Connect(http_client::describe(&e))
}

/// The upstream session's headers: its id and the negotiated protocol version.
type SessionHeaders = (Option<HeaderValue>, Option<HeaderValue>);

/// A request to the target at `uri`, with the upstream session's headers.
fn request(
    method: Method,
    uri: &Uri,
    accept: HeaderValue,
    body: Bytes,
    (id, version): &SessionHeaders,
) -> Request<Bytes> {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(ACCEPT, accept);
    if method == Method::POST {
        headers.insert(CONTENT_TYPE, JSON);
    }
    if let Some(id) = id {
        headers.insert(SESSION_HEADER, id.clone());
    }
    if let Some(version) = version {
        headers.insert(VERSION_HEADER, version.clone());
    }
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers;
    request
}

/// Adds the target's header changes and credentials, then sends.
async fn send(
    client: &HttpClient,
    outbound: &Outbound,
    request: Request<Bytes>,
) -> Result<Response, UpstreamError> {
    let request = outbound.finish(request).await?;
    client
        .send(request.map(http_body_util::Full::new))
        .await
        .map_err(connect_error)
}

impl HttpUpstream {
    /// `uri` is the target's URL.
    pub fn new(
        uri: Uri,
        client: HttpClient,
        sink: InboundSink,
        outbound: Outbound,
        max_message: usize,
    ) -> Self {
        Self {
            max_message,
            outbound: Arc::new(outbound),
            uri,
            client,
            sink,
            session_id: RwLock::new(None),
            protocol_version: RwLock::new(None),
            init_request: RwLock::new(None),
            listen: CancellationToken::new(),
            listening: AtomicBool::new(false),
            ready: Arc::default(),
            context: arc_swap::ArcSwapOption::empty(),
            answers: Default::default(),
        }
    }

    /// Carries on an upstream session another replica began: its id and version are known, and so
    /// is the `initialize` request to replay if it has expired meanwhile.
    pub fn resume(&self, session: Option<&str>, version: &str, init_request: (Bytes, u64)) {
        if version == crate::mcp::revision_2026::REVISION {
            self.use_context(&init_request.0);
            return;
        }
        let header = |text: &str| HeaderValue::from_str(text).ok();
        write(&self.session_id, session.and_then(header));
        write(&self.protocol_version, header(version));
        write(
            &self.init_request,
            Some((init_request.0, Some(init_request.1))),
        );
    }

    /// The upstream session's id and protocol version, for the session id another replica resumes.
    pub fn session_state(&self) -> (Option<String>, Option<String>) {
        let text =
            |value: Option<HeaderValue>| value.and_then(|v| v.to_str().ok().map(str::to_string));
        (
            text(read(&self.session_id)),
            text(read(&self.protocol_version)),
        )
    }

    fn session(&self) -> SessionHeaders {
        (read(&self.session_id), read(&self.protocol_version))
    }

    pub fn set_protocol_version(&self, version: &str) {
        write(&self.protocol_version, HeaderValue::from_str(version).ok());
    }

    async fn post(&self, body: Bytes) -> Result<Response, UpstreamError> {
        let _ready = self.ready.read().await;
        let mut request = request(Method::POST, &self.uri, ACCEPT_BOTH, body, &self.session());
        if let Some(traceparent) = crate::telemetry::traces::current_traceparent()
            .and_then(|value| HeaderValue::try_from(value).ok())
        {
            request.headers_mut().insert("traceparent", traceparent);
        }
        send(&self.client, &self.outbound, request).await
    }

    pub async fn request(&self, request: Outgoing) -> Result<Payload, UpstreamError> {
        // The rare branches are boxed, so the common one's future is not sized for them.
        if let Some(context) = self.context.load_full() {
            return Box::pin(self.request_in_context(&context, request.into_value())).await;
        }
        let id = request.sent_id();
        // A list's answer is split into its items while it is validated.
        let page = list_result::shape(request.method());
        let body = Bytes::from(request.to_bytes());
        let response = self.post(body.clone()).await?;
        if response.status() == http::StatusCode::NOT_FOUND && read(&self.session_id).is_some() {
            tracing::info!(target: "portico::upstream", "upstream session expired; initializing again");
            Box::pin(self.reinitialize()).await?;
            let response = self.post(body).await?;
            return self.read_answer(response, id, page).await;
        }
        self.read_answer(response, id, page).await
    }

    /// Sends the handshake's `initialize` (`request`, whose id is `id`), keeping its bytes to
    /// initialize again should the target forget the session.
    pub async fn initialize(&self, request: String, id: u64) -> Result<Payload, UpstreamError> {
        let body = Bytes::from(request);
        write(&self.init_request, Some((body.clone(), Some(id))));
        let response = self.post(body).await?;
        self.keep_session_id(&response);
        self.read_response(response, Some(id)).await
    }

    fn keep_session_id(&self, response: &Response) {
        write(
            &self.session_id,
            response
                .headers()
                .get(SESSION_HEADER)
                .map(crate::base::http::detached),
        );
    }

    async fn reinitialize(&self) -> Result<(), UpstreamError> {
        write(&self.session_id, None);
        let (init, id) = read(&self.init_request).ok_or(UpstreamError::Closed)?;
        let response = self.post(init).await?;
        self.keep_session_id(&response);
        self.read_response(response, id).await?;
        self.send(jsonrpc::notification(
            "notifications/initialized",
            serde_json::json!({}),
        ))
        .await
    }

    async fn read_response(
        &self,
        response: Response,
        id: Option<u64>,
    ) -> Result<Payload, UpstreamError> {
        self.read_answer(response, id, None).await
    }

    /// Reads the answer to request `id`; a result of `page`'s shape is split as it is validated.
    async fn read_answer(
        &self,
        response: Response,
        id: Option<u64>,
        page: Option<list_result::Shape>,
    ) -> Result<Payload, UpstreamError> {
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut body = response.into_body();
        if content_type.starts_with("application/json") {
            let body = super::read_body(body, self.max_message).await?;
            let text =
                std::str::from_utf8(&body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            return match list_result::parse_answer(text, page) {
                Ok(Message::Response { payload, .. }) => Ok(payload),
                Ok(Message::Other(_)) => Err(UpstreamError::Protocol(
                    "a JSON reply that is not a response".into(),
                )),
                Err(e) => Err(UpstreamError::Protocol(e.to_string())),
            };
        }
        if !content_type.starts_with("text/event-stream") {
            return Err(UpstreamError::Protocol(format!(
                "unexpected content type `{content_type}`"
            )));
        }
        let mut reader = sse::Reader::new(self.max_message);
        let mut idle_resumptions = 0;
        loop {
            let mut progressed = false;
            while let Some(chunk) = next_chunk(&mut body).await.map_err(connect_error)? {
                let events = reader
                    .feed(&chunk)
                    .map_err(|_| UpstreamError::TooLarge(self.max_message))?;
                progressed |= !events.is_empty();
                for event in events {
                    match parse_event(&event, page) {
                        Some(Message::Response {
                            id: Some(answered),
                            payload,
                        }) if Some(answered) == id => {
                            // The target ends the stream right after its response; reading that end lets
                            // the connection go back to the pool instead of being closed. Usually the end
                            // has arrived with the response: only when it has not does a task wait for it.
                            if !matches!(next_chunk(&mut body).now_or_never(), Some(Ok(None))) {
                                tokio::spawn(async move {
                                    while let Ok(Some(_)) = next_chunk(&mut body).await {}
                                });
                            }
                            return Ok(payload);
                        }
                        Some(Message::Other(message)) => self.sink.message(message, id),
                        Some(Message::Response { .. }) | None => {}
                    }
                }
            }
            // The stream ended before the response. A target that named an event may close its
            // stream at will and goes on with a GET that names the last event (SSE polling,
            // SEP-1699); one that keeps closing without sending anything has gone away.
            let Some(last_event) = reader.last_event_id.clone() else {
                return Err(UpstreamError::Closed);
            };
            idle_resumptions = if progressed { 0 } else { idle_resumptions + 1 };
            if idle_resumptions > MAX_IDLE_RESUMPTIONS {
                return Err(UpstreamError::Closed);
            }
            let wait = reader.retry.map_or(DEFAULT_RETRY, Duration::from_millis);
            tokio::time::sleep(wait.min(MAX_RETRY)).await;
            // Boxed: rare, and the future of every answer's read would be sized for it.
            body = Box::pin(self.resume_stream(&last_event)).await?;
            reader = sse::Reader::new(self.max_message);
            reader.last_event_id = Some(last_event);
        }
    }

    /// The rest of a stream the target closed, from the event after `last_event`.
    async fn resume_stream(&self, last_event: &str) -> Result<ReplyBody, UpstreamError> {
        let _ready = self.ready.read().await;
        let mut request = request(
            Method::GET,
            &self.uri,
            ACCEPT_EVENTS,
            Bytes::new(),
            &self.session(),
        );
        let last_event = HeaderValue::from_str(last_event)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        request.headers_mut().insert("last-event-id", last_event);
        let response = send(&self.client, &self.outbound, request).await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        Ok(response.into_body())
    }

    /// Sends `notifications/initialized` without waiting for the target's 202: the client's
    /// `initialize` is answered a round trip sooner, and whatever is sent next waits for it instead.
    pub fn send_initialized(&self) {
        let Ok(gate) = self.ready.clone().try_write_owned() else {
            return;
        };
        let request = request(
            Method::POST,
            &self.uri,
            ACCEPT_BOTH,
            Bytes::from_static(INITIALIZED),
            &self.session(),
        );
        let (client, outbound) = (self.client.clone(), self.outbound.clone());
        tokio::spawn(async move {
            let _gate = gate;
            // Bounded: everything else sent to the target waits for this.
            let sending = send(&client, &outbound, request);
            let refused = match coarse_timer::timeout(INITIALIZED_TIMEOUT, sending).await {
                Ok(Ok(response)) if response.status().is_success() => return,
                Ok(Ok(response)) => format!("HTTP {}", response.status().as_u16()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {INITIALIZED_TIMEOUT:?}"),
            };
            tracing::warn!(target: "portico::upstream", error = %refused, "the target did not take notifications/initialized");
        });
    }

    /// Sends a notification or a response; the target answers 202 with no body.
    pub async fn send(&self, message: Value) -> Result<(), UpstreamError> {
        if self.context.load().is_some() {
            // In the 2026-07-28 revision the client's answers go into the retried request, and a
            // cancellation is the request's connection closing: nothing is sent on its own.
            self.answers.deliver(message);
            return Ok(());
        }
        let body =
            serde_json::to_vec(&message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let response = self.post(body.into()).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(response.status().as_u16()))
        }
    }

    /// Opens the GET stream on which the target may send notifications and requests at any time,
    /// unless it is open already. Not at connect: an idle session then costs the target no stream, and
    /// Portico no pooled connection, tasks and buffers.
    pub fn open_listen_stream(&self) {
        // A 2026-07-28 target has no stream outside requests (it has `subscriptions/listen`).
        if self.context.load().is_some() || self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let session = self.session();
        let (sink, cancel, client) = (self.sink.clone(), self.listen.clone(), self.client.clone());
        let (uri, outbound, max_event) =
            (self.uri.clone(), self.outbound.clone(), self.max_message);
        let ready = self.ready.clone();
        tokio::spawn(async move {
            drop(ready.read().await);
            let mut backoff = Duration::from_millis(500);
            loop {
                // Built again for every attempt: credentials may have been refreshed since.
                let request = request(Method::GET, &uri, ACCEPT_EVENTS, Bytes::new(), &session);
                let Ok(request) = outbound.finish(request).await else {
                    return;
                };
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = listen_once(&client, request, &sink, max_event) => outcome,
                };
                if !outcome {
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// Lets go of the upstream session without ending it: another replica may be serving it.
    pub fn release(&self) {
        self.listen.cancel();
    }

    pub async fn close(&self) {
        self.listen.cancel();
        if read(&self.session_id).is_none() {
            return;
        }
        let _ready = self.ready.read().await;
        let request = request(
            Method::DELETE,
            &self.uri,
            ACCEPT_BOTH,
            Bytes::new(),
            &self.session(),
        );
        let deleting = send(&self.client, &self.outbound, request);
        let _ = coarse_timer::timeout(Duration::from_secs(2), deleting).await;
    }
}

fn parse_event(event: &sse::Event, page: Option<list_result::Shape>) -> Option<Message> {
    if event.data.trim().is_empty() {
        return None;
    }
    list_result::parse_answer(&event.data, page).ok()
}

/// Reads one GET stream to its end; `false` when the target does not offer one (no retry).
async fn listen_once(
    client: &HttpClient,
    request: Request<Bytes>,
    sink: &InboundSink,
    max_event: usize,
) -> bool {
    let Ok(response) = client.send(request.map(http_body_util::Full::new)).await else {
        return true;
    };
    if !response.status().is_success() {
        return false;
    }
    let mut body = response.into_body();
    let mut reader = sse::Reader::new(max_event);
    while let Ok(Some(chunk)) = next_chunk(&mut body).await {
        let Ok(events) = reader.feed(&chunk) else {
            tracing::warn!(target: "portico::upstream", max_event, "the target's event stream sent an event over config.limits.upstreamResponse; reconnecting");
            return true;
        };
        for event in events {
            if let Some(Message::Other(message)) = parse_event(&event, None) {
                sink.message(message, None);
            }
        }
    }
    true
}
