//! Connections to targets. Every kind answers the same [`Upstream`] interface, so the multiplexer never
//! asks which kind of target it talks to.

mod http;
pub mod openapi;
mod sse;
mod stdio;
pub mod stdio_pool;
mod waiters;

use crate::base::http::BodyError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::base::http_client::HttpClient;
use crate::base::json_text::scan;
use crate::config::runtime::{Target, TargetKind, TlsClient};
use crate::mcp::jsonrpc::{self, Payload};
use crate::mcp::message::Message;
use crate::mcp::session_token::TargetTicket;

/// Receives what a target sends on its own: notifications and requests to the client, and the end
/// of the connection.
///
/// Called synchronously by the connection's reader, in the order the target wrote, so a notification
/// that precedes a response reaches the client before it.
pub trait InboundHandler: Send + Sync {
    /// `related` is the gateway's id of the upstream request whose stream carried the message.
    fn message(&self, target: usize, message: Value, related: Option<u64>);
    /// The connection `generation` of `target` is gone (the process exited, the stream broke).
    fn closed(self: Arc<Self>, target: usize, generation: u64, reason: String);
}

/// Why a call to a target failed. Messages name the failure, never a raw upstream body.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not start: {0}")]
    Start(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("sent an invalid reply: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
    #[error("initialize failed: {0}")]
    Initialize(String),
    #[error("request cancelled by the client")]
    Cancelled,
    #[error("sent a message larger than {0} bytes; refused, connection dropped")]
    TooLarge(usize),
    /// A 2026-07-28 target's question the client refused or did not answer.
    #[error("its question to the client was not answered ({0})")]
    Unanswered(String),
}

/// A request that could not be finished for the target (built, or given its credentials) is a failed
/// connection, as the client sees it.
impl From<crate::policy::outbound::OutboundError> for UpstreamError {
    fn from(e: crate::policy::outbound::OutboundError) -> Self {
        UpstreamError::Connect(e.0)
    }
}

/// Reads a whole HTTP reply body from a target, at most `limit` bytes ([`crate::base::http::read_capped`]).
pub async fn read_body<B>(body: B, limit: usize) -> Result<bytes::Bytes, UpstreamError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + 'static,
{
    crate::base::http::read_capped(body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(limit) => UpstreamError::TooLarge(limit),
            BodyError::Read(message) => UpstreamError::Connect(message),
        })
}

/// The `initialize` request a target gets: the client's params, the gateway's id.
fn initialize_request(id: u64, init_params: &RawValue) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{}}}"#,
        init_params.get()
    )
}

/// A Streamable HTTP target's connection (not yet initialized): its own client with `backendTLS`,
/// else the sending worker's pool; its header changes and credentials.
fn streamable_http(
    target: &Target,
    url: &reqwest::Url,
    uri: &::http::Uri,
    sink: InboundSink,
    client_token: &ClientToken,
    max_message: usize,
) -> http::HttpUpstream {
    let client = match &target.tls_client {
        Some(TlsClient::Mcp(client)) => client.clone(),
        _ => HttpClient::shared(url.scheme() == "https"),
    };
    let outbound =
        crate::policy::outbound::Outbound::new(&target.policies, url, Some(client_token.clone()));
    http::HttpUpstream::new(uri.clone(), client, sink, outbound, max_message)
}

/// Where a target's unprompted messages go, and which target and connection they are from.
#[derive(Clone)]
pub struct InboundSink {
    pub target: usize,
    /// Counts connections to the target, so a close reported by an old one can be told apart.
    pub generation: u64,
    pub handler: Weak<dyn InboundHandler>,
}

impl InboundSink {
    fn message(&self, message: Value, related: Option<u64>) {
        if let Some(handler) = self.handler.upgrade() {
            handler.message(self.target, message, related);
        }
    }

    fn closed(&self, reason: String) {
        if let Some(handler) = self.handler.upgrade() {
            handler.closed(self.target, self.generation, reason);
        }
    }
}

/// The client's current bearer token, for targets with `backendAuth: passthrough`; the session
/// updates it on every request.
pub use crate::policy::outbound::ClientToken;

// One per target of a session, the HTTP one the most common: boxing it would cost each call a
// pointer to follow for a few hundred bytes per session.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Stdio(stdio::StdioUpstream),
    Http(http::HttpUpstream),
    Sse(sse::SseUpstream),
    OpenApi(openapi::OpenApiUpstream),
}

/// One live, initialized connection to one target for one client session.
pub struct Upstream {
    transport: Transport,
    next_id: AtomicU64,
    /// The target's `initialize` result as it wrote it: read once, when the session's own result is
    /// merged; kept as text, which costs a session a fraction of the parsed tree.
    pub init_result: jsonrpc::Json,
    /// Which of [`CAPABILITIES`] the target declared.
    declared: u8,
}

/// The capabilities the gateway asks a target about.
const CAPABILITIES: [&str; 5] = ["tools", "prompts", "resources", "completions", "logging"];

/// What the gateway keeps of a target's `initialize` result: its protocol version (empty when it
/// names none) and which of [`CAPABILITIES`] it declared.
fn read_init_result(result: &str) -> (String, u8) {
    scan_init_result(result).unwrap_or_else(|| init_result_by_value(result))
}

/// [`read_init_result`] through a `Value` of the result: for what the scan leaves.
fn init_result_by_value(result: &str) -> (String, u8) {
    let result: Value = serde_json::from_str(result).unwrap_or_default();
    let version = result["protocolVersion"].as_str().unwrap_or_default();
    (version.to_string(), declared(&result))
}

/// [`read_init_result`] by a scan of the validated text: a session's start reads one per target, and
/// a `Value` of it builds a map per object, each key hashed with SipHash, to read two fields. `None`
/// for a key written with escapes (it may spell a field), which the `Value` reads; as there, the last
/// of a repeated field counts.
fn scan_init_result(result: &str) -> Option<(String, u8)> {
    let bytes = result.as_bytes();
    let Some(mut object) = scan::Object::at(bytes, 0) else {
        return Some((String::new(), 0));
    };
    let (mut version, mut declared) = (String::new(), 0);
    while let Some(key) = object.key() {
        let key = key?;
        let value = object.skip_value();
        match key {
            b"protocolVersion" => {
                version = serde_json::from_str(&result[value]).unwrap_or_default();
            }
            b"capabilities" => {
                declared = 0;
                let Some(mut capabilities) = scan::Object::at(bytes, value.start) else {
                    continue;
                };
                while let Some(name) = capabilities.key() {
                    let name = name?;
                    capabilities.skip_value();
                    if let Some(i) = CAPABILITIES.iter().position(|c| c.as_bytes() == name) {
                        declared |= 1 << i;
                    }
                }
            }
            _ => {}
        }
    }
    Some((version, declared))
}

fn declared(result: &Value) -> u8 {
    let capabilities = &result["capabilities"];
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(_, name)| capabilities.get(**name).is_some())
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

impl Upstream {
    /// Starts or connects to `target` and runs the `initialize` handshake with `init_params` (the
    /// client's own, so the target sees the client's capabilities).
    pub async fn connect(
        target: &Target,
        init_params: &RawValue,
        sink: InboundSink,
        client_token: &ClientToken,
        max_message: usize,
    ) -> Result<Arc<Upstream>, UpstreamError> {
        // A remote target's own TLS client (backendTLS), or the worker's shared one.
        let remote = |url: &reqwest::Url| match &target.tls_client {
            Some(TlsClient::Reqwest(client, connect_url)) => {
                Ok((client.clone(), connect_url.clone()))
            }
            _ => crate::base::http_client::shared_reqwest()
                .map(|client| (client, url.clone()))
                .ok_or_else(|| UpstreamError::Start("no HTTP client could be built".into())),
        };
        let outbound = |url| {
            crate::policy::outbound::Outbound::new(
                &target.policies,
                url,
                Some(client_token.clone()),
            )
        };
        let transport = match &target.kind {
            TargetKind::Stdio(spec) => {
                let warm = target.pool.as_ref().and_then(|pool| pool.take());
                let process = match warm {
                    Some(process) => process,
                    None => stdio::Process::start(&target.name, spec)?,
                };
                Transport::Stdio(stdio::StdioUpstream::attach(process, sink, max_message))
            }
            TargetKind::Http { url, uri } => Transport::Http(streamable_http(
                target,
                url,
                uri,
                sink,
                client_token,
                max_message,
            )),
            TargetKind::Sse { url } => {
                let (client, connect_url) = remote(url)?;
                Transport::Sse(
                    sse::SseUpstream::connect(
                        connect_url,
                        client,
                        outbound(url),
                        sink,
                        max_message,
                    )
                    .await?,
                )
            }
            TargetKind::OpenApi { url, api } => {
                let (client, connect_url) = remote(url)?;
                Transport::OpenApi(openapi::OpenApiUpstream::new(
                    api.clone(),
                    connect_url,
                    client,
                    outbound(url),
                    max_message,
                ))
            }
        };
        let mut upstream = Upstream {
            transport,
            next_id: AtomicU64::new(1),
            init_result: jsonrpc::Json::written("null".into()),
            declared: 0,
        };
        let id = upstream.next_id();
        let payload = match upstream.initialize(id, init_params).await {
            Ok(payload) => payload,
            // A target of the 2026-07-28 revision only may refuse `initialize`.
            Err(UpstreamError::Status(_)) if upstream.speaks_2026(init_params).await => {
                return Ok(Arc::new(upstream));
            }
            Err(e) => {
                upstream.close().await;
                return Err(e);
            }
        };
        let raw = match payload {
            Payload::Result(raw) => raw,
            Payload::Error(_) if upstream.speaks_2026(init_params).await => {
                return Ok(Arc::new(upstream));
            }
            Payload::Error(error) => {
                upstream.close().await;
                let reply = jsonrpc::Reply {
                    id: Value::Null,
                    payload: Payload::Error(error),
                };
                return Err(UpstreamError::Initialize(
                    reply.error_message().unwrap_or_default(),
                ));
            }
        };
        let (version, declared) = read_init_result(raw.get());
        upstream.declared = declared;
        upstream.init_result = raw;
        // A target that keeps no session may be one of the 2026-07-28 revision that answers
        // `initialize` but wants every request's context in `_meta`: it is asked.
        let sessionless = matches!(&upstream.transport, Transport::Http(http) if http.session_state().0.is_none());
        if sessionless && upstream.speaks_2026(init_params).await {
            return Ok(Arc::new(upstream));
        }
        if let Transport::Http(http) = &upstream.transport {
            http.set_protocol_version(&version);
            http.send_initialized();
            return Ok(Arc::new(upstream));
        }
        upstream
            .notify(jsonrpc::notification(
                "notifications/initialized",
                Value::Object(Default::default()),
            ))
            .await?;
        Ok(Arc::new(upstream))
    }

    /// Whether an HTTP target speaks the 2026-07-28 revision (its `server/discover` says so): from
    /// then on it is spoken to in it, and its discovery stands for its `initialize` result.
    async fn speaks_2026(&mut self, init_params: &RawValue) -> bool {
        let id = self.next_id();
        let Transport::Http(http) = &self.transport else {
            return false;
        };
        let params: Value = serde_json::from_str(init_params.get()).unwrap_or_default();
        let Ok(discovered) = http.discover(id, &params).await else {
            return false;
        };
        self.declared = declared(&discovered);
        self.init_result = jsonrpc::Json::of(&discovered);
        true
    }

    /// Carries on with an HTTP target's upstream session that another replica began (`ticket`),
    /// without a new handshake. `None` for other kinds of target, which are connected afresh.
    pub fn resume(
        target: &Target,
        init_params: &RawValue,
        sink: InboundSink,
        client_token: &ClientToken,
        max_message: usize,
        ticket: &TargetTicket,
    ) -> Option<Arc<Upstream>> {
        let TargetKind::Http { url, uri } = &target.kind else {
            return None;
        };
        let http = streamable_http(target, url, uri, sink, client_token, max_message);
        // Ids well apart from the ones the replica that began the session uses for the same
        // upstream session, so the target never sees one id twice at a time.
        let first_id = u64::from(rand::random::<u32>()) << 20;
        let init_request = initialize_request(first_id, init_params);
        http.resume(
            ticket.session.as_deref(),
            &ticket.version,
            (init_request.into(), first_id),
        );
        Some(Arc::new(Upstream {
            transport: Transport::Http(http),
            next_id: AtomicU64::new(first_id + 1),
            init_result: jsonrpc::Json::written("null".into()),
            declared: ticket.declared,
        }))
    }

    /// What another replica needs to carry on with this connection: `None` unless it is an HTTP
    /// target's, whose upstream session outlives the process.
    pub fn ticket(&self, name: &str) -> Option<TargetTicket> {
        let Transport::Http(http) = &self.transport else {
            return None;
        };
        let (session, version) = http.session_state();
        Some(TargetTicket {
            name: name.to_string(),
            session,
            version: version.unwrap_or_default(),
            declared: self.declared,
        })
    }

    /// Lets go of the connection when the session leaves this process but may go on in another:
    /// an HTTP target's upstream session is kept (not deleted); anything else is closed.
    pub async fn release(&self) {
        match &self.transport {
            Transport::Http(t) => t.release(),
            _ => self.close().await,
        }
    }

    /// Opens the target's channel for messages outside requests (the GET stream of an HTTP target),
    /// once someone listens: the client opened its own GET stream, or subscribed to a resource.
    pub fn listen(&self) {
        if let Transport::Http(http) = &self.transport {
            http.open_listen_stream();
        }
    }

    /// Whether the target declared `capability` (one of `tools`, `prompts`, `resources`,
    /// `completions`, `logging`) in its `initialize` result.
    pub fn declares(&self, capability: &str) -> bool {
        CAPABILITIES
            .iter()
            .position(|known| *known == capability)
            .is_some_and(|i| self.declared & 1 << i != 0)
    }

    /// A fresh id for a request to this target.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends the handshake's `initialize` request (id `id`, the client's `init_params`) and waits for
    /// the response's payload. An HTTP target gets the text as written; the other transports take a
    /// message.
    async fn initialize(&self, id: u64, init_params: &RawValue) -> Result<Payload, UpstreamError> {
        let request = initialize_request(id, init_params);
        if let Transport::Http(http) = &self.transport {
            return http.initialize(request, id).await;
        }
        let request: Value =
            serde_json::from_str(&request).map_err(|e| UpstreamError::Initialize(e.to_string()))?;
        self.request(request.into()).await
    }

    /// Sends `request` (whose `id` came from [`Self::next_id`]) and waits for the response's payload.
    pub async fn request(&self, request: Message) -> Result<Payload, UpstreamError> {
        match &self.transport {
            Transport::Stdio(t) => t.request(request).await,
            Transport::Http(t) => t.request(request).await,
            Transport::Sse(t) => t.request(request).await,
            Transport::OpenApi(t) => t.request(request.into_value()).await,
        }
    }

    /// Sends a notification, or a response to a request the target made.
    pub async fn notify(&self, message: Value) -> Result<(), UpstreamError> {
        match &self.transport {
            Transport::Stdio(t) => t.send(&message).await,
            Transport::Http(t) => t.send(message).await,
            Transport::Sse(t) => t.send(&message).await,
            // Notifications (initialized, cancelled) have nothing to act on: each call is one request.
            Transport::OpenApi(_) => Ok(()),
        }
    }

    /// Ends the connection: a stdio process is stopped and reaped, an HTTP session deleted.
    pub async fn close(&self) {
        match &self.transport {
            Transport::Stdio(t) => t.close().await,
            Transport::Http(t) => t.close().await,
            Transport::Sse(t) => t.close(),
            Transport::OpenApi(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialize_result_is_read_as_its_value_reads() {
        let results = [
            r#"{"protocolVersion":"2025-06-18","capabilities":{"logging":{},"completions":{},"prompts":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"tools":{"listChanged":true}},"serverInfo":{"name":"call","version":"0.1.0"},"instructions":"Fixture server call."}"#,
            r#"{"capabilities":{"tools":{}},"protocolVersion":"2025-03-26"}"#,
            r#" { "protocolVersion" : "2025-06-18" , "capabilities" : { "tools" : null , "prompts" : [ ] } } "#,
            r#"{"protocolVersion":20250618,"capabilities":{"tools":{}}}"#,
            r#"{"protocolVersion":"2025-\u00306-18","capabilities":{}}"#,
            r#"{"protocolVersion":"a","protocolVersion":"b"}"#,
            r#"{"capabilities":{"tools":{}},"capabilities":{"logging":{}}}"#,
            r#"{"capabilities":{"experimental":{"tools":{},"prompts":{}},"resources":{}}}"#,
            r#"{"capabilities":"tools"}"#,
            r#"{"capabilities":{"to\u006fls":{}},"protocolVersion":"x"}"#,
            r#"{"protocol\u0056ersion":"2025-06-18"}"#,
            r#"{"serverInfo":{"protocolVersion":"no","capabilities":{"tools":{}}}}"#,
            r#"{}"#,
            r#""2025-06-18""#,
            r#"[{"capabilities":{"tools":{}}}]"#,
            r#"null"#,
        ];
        for result in results {
            assert_eq!(
                read_init_result(result),
                init_result_by_value(result),
                "{result}"
            );
        }
        // Keys with escapes are left to the `Value`.
        assert_eq!(scan_init_result(r#"{"protocol\u0056ersion":"v"}"#), None);
        assert_eq!(
            scan_init_result(r#"{"capabilities":{"to\u006fls":{}}}"#),
            None
        );
    }
}
