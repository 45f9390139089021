//! A target reached over MCP Streamable HTTP: one POST per message, JSON or SSE replies, a GET stream
//! for the target's unprompted messages, and the upstream's own `Mcp-Session-Id`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{InboundSink, UpstreamError};
use crate::mcp::jsonrpc::{self, Incoming, Payload};
use crate::mcp::sse;
use crate::policy::outbound::Outbound;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// How long the target may take to take `notifications/initialized` before the messages waiting for it
/// go ahead anyway.
const INITIALIZED_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HttpUpstream {
    url: reqwest::Url,
    client: reqwest::Client,
    sink: InboundSink,
    session_id: RwLock<Option<HeaderValue>>,
    protocol_version: RwLock<Option<HeaderValue>>,
    /// The `initialize` request, replayed once if the upstream session expires.
    init_request: RwLock<Option<Value>>,
    listen: CancellationToken,
    /// Whether the GET stream was opened: only once someone can hear what comes on it.
    listening: AtomicBool,
    /// Held (for writing) while `notifications/initialized` is on its way; everything else sent to
    /// the target waits for it (reads), so the target hears it first.
    ready: Arc<tokio::sync::RwLock<()>>,
    outbound: Arc<Outbound>,
    /// Largest reply body or SSE event accepted from the target.
    max_message: usize,
}

fn read<T: Clone>(lock: &RwLock<Option<T>>) -> Option<T> {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<Option<T>>, value: Option<T>) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

fn connect_error(e: reqwest::Error) -> UpstreamError {
    // The causes say what failed, e.g. `invalid peer certificate: UnknownIssuer`.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    // Without the URL: a query string may carry credentials.
    let mut message = e.without_url().to_string();
    for cause in causes {
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    UpstreamError::Connect(message)
}

impl HttpUpstream {
    /// `url` is the one connected to (it differs from the configured one when `backendTLS.sni` names
    /// another host).
    pub fn new(
        url: reqwest::Url,
        client: reqwest::Client,
        sink: InboundSink,
        outbound: Outbound,
        max_message: usize,
    ) -> Self {
        Self {
            max_message,
            outbound: Arc::new(outbound),
            url,
            client,
            sink,
            session_id: RwLock::new(None),
            protocol_version: RwLock::new(None),
            init_request: RwLock::new(None),
            listen: CancellationToken::new(),
            listening: AtomicBool::new(false),
            ready: Arc::default(),
        }
    }

    pub fn set_protocol_version(&self, version: &str) {
        write(&self.protocol_version, HeaderValue::from_str(version).ok());
    }

    /// Adds the upstream session headers, then the target's header changes and credentials.
    async fn prepare(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Request, UpstreamError> {
        let session = (read(&self.session_id), read(&self.protocol_version));
        Ok(self
            .outbound
            .finish(with_session(request, &session))
            .await?)
    }

    async fn post(&self, message: &Value) -> Result<reqwest::Response, UpstreamError> {
        let _ready = self.ready.read().await;
        let body =
            serde_json::to_vec(message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let request = self
            .client
            .post(self.url.clone())
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let request = match crate::telemetry::traces::current_traceparent() {
            Some(traceparent) => request.header("traceparent", traceparent),
            None => request,
        };
        self.client
            .execute(self.prepare(request).await?)
            .await
            .map_err(connect_error)
    }

    pub async fn request(&self, request: Value) -> Result<Payload, UpstreamError> {
        let is_initialize = jsonrpc::method(&request) == "initialize";
        if is_initialize {
            write(&self.init_request, Some(request.clone()));
        }
        let response = self.post(&request).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND
            && !is_initialize
            && read(&self.session_id).is_some()
        {
            tracing::info!(target: "portico::upstream", "upstream session expired; initializing again");
            self.reinitialize().await?;
            let response = self.post(&request).await?;
            return self.read_response(response, &request).await;
        }
        if is_initialize {
            write(
                &self.session_id,
                response
                    .headers()
                    .get(SESSION_HEADER)
                    .map(crate::base::http::detached),
            );
        }
        self.read_response(response, &request).await
    }

    async fn reinitialize(&self) -> Result<(), UpstreamError> {
        write(&self.session_id, None);
        let init = read(&self.init_request).ok_or(UpstreamError::Closed)?;
        let response = self.post(&init).await?;
        write(
            &self.session_id,
            response
                .headers()
                .get(SESSION_HEADER)
                .map(crate::base::http::detached),
        );
        self.read_response(response, &init).await?;
        self.send(jsonrpc::notification(
            "notifications/initialized",
            serde_json::json!({}),
        ))
        .await
    }

    async fn read_response(
        &self,
        mut response: reqwest::Response,
        request: &Value,
    ) -> Result<Payload, UpstreamError> {
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let id = request["id"].as_u64();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json") {
            let body = super::read_body(response, self.max_message).await?;
            let text =
                std::str::from_utf8(&body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            return match jsonrpc::parse_incoming(text) {
                Ok(Incoming::Response { payload, .. }) => Ok(payload),
                Ok(Incoming::Other(_)) => Err(UpstreamError::Protocol(
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
        while let Some(chunk) = response.chunk().await.map_err(connect_error)? {
            let events = reader
                .feed(&chunk)
                .map_err(|_| UpstreamError::TooLarge(self.max_message))?;
            for event in events {
                match parse_event(&event) {
                    Some(Incoming::Response {
                        id: Some(answered),
                        payload,
                    }) if Some(answered) == id => {
                        // The target ends the stream right after its response; reading that end lets the
                        // connection go back to the pool instead of being closed. Usually the end has
                        // arrived with the response: only when it has not does a task wait for it.
                        if !matches!(response.chunk().now_or_never(), Some(Ok(None))) {
                            tokio::spawn(async move {
                                while let Ok(Some(_)) = response.chunk().await {}
                            });
                        }
                        return Ok(payload);
                    }
                    Some(Incoming::Other(message)) => self.sink.message(message, id),
                    Some(Incoming::Response { .. }) | None => {}
                }
            }
        }
        Err(UpstreamError::Closed)
    }

    /// Sends `notifications/initialized` without waiting for the target's 202: the client's
    /// `initialize` is answered a round trip sooner, and whatever is sent next waits for it instead.
    pub fn send_initialized(&self) {
        let Ok(gate) = self.ready.clone().try_write_owned() else {
            return;
        };
        let message = jsonrpc::notification("notifications/initialized", serde_json::json!({}));
        let request = self
            .client
            .post(self.url.clone())
            .header(ACCEPT, ACCEPT_BOTH)
            .header(CONTENT_TYPE, "application/json")
            .body(message.to_string());
        let session = (read(&self.session_id), read(&self.protocol_version));
        let (client, outbound) = (self.client.clone(), self.outbound.clone());
        tokio::spawn(async move {
            let _gate = gate;
            let sending = async {
                let request = outbound.finish(with_session(request, &session)).await?;
                client.execute(request).await.map_err(connect_error)
            };
            // Bounded: everything else sent to the target waits for this.
            let refused = match tokio::time::timeout(INITIALIZED_TIMEOUT, sending).await {
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
        let response = self.post(&message).await?;
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
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let session = (read(&self.session_id), read(&self.protocol_version));
        let (sink, cancel, client) = (self.sink.clone(), self.listen.clone(), self.client.clone());
        let (url, outbound, max_event) =
            (self.url.clone(), self.outbound.clone(), self.max_message);
        let ready = self.ready.clone();
        tokio::spawn(async move {
            drop(ready.read().await);
            let mut backoff = Duration::from_millis(500);
            loop {
                // Built again for every attempt: credentials may have been refreshed since.
                let request = client.get(url.clone()).header(ACCEPT, "text/event-stream");
                let Ok(request) = outbound.finish(with_session(request, &session)).await else {
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

    pub async fn close(&self) {
        self.listen.cancel();
        if read(&self.session_id).is_none() {
            return;
        }
        let _ready = self.ready.read().await;
        let Ok(request) = self.prepare(self.client.delete(self.url.clone())).await else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.execute(request)).await;
    }
}

/// The upstream session's headers: its id and the negotiated protocol version.
fn with_session(
    mut request: reqwest::RequestBuilder,
    (id, version): &(Option<HeaderValue>, Option<HeaderValue>),
) -> reqwest::RequestBuilder {
    if let Some(id) = id {
        request = request.header(SESSION_HEADER, id.clone());
    }
    if let Some(version) = version {
        request = request.header(VERSION_HEADER, version.clone());
    }
    request
}

fn parse_event(event: &sse::Event) -> Option<Incoming> {
    if event.data.trim().is_empty() {
        return None;
    }
    jsonrpc::parse_incoming(&event.data).ok()
}

/// Reads one GET stream to its end; `false` when the target does not offer one (no retry).
async fn listen_once(
    client: &reqwest::Client,
    request: reqwest::Request,
    sink: &InboundSink,
    max_event: usize,
) -> bool {
    let Ok(mut response) = client.execute(request).await else {
        return true;
    };
    if !response.status().is_success() {
        return false;
    }
    let mut reader = sse::Reader::new(max_event);
    while let Ok(Some(chunk)) = response.chunk().await {
        let Ok(events) = reader.feed(&chunk) else {
            tracing::warn!(target: "portico::upstream", max_event, "the target's event stream sent an event over config.limits.upstreamResponse; reconnecting");
            return true;
        };
        for event in events {
            if let Some(Incoming::Other(message)) = parse_event(&event) {
                sink.message(message, None);
            }
        }
    }
    true
}
