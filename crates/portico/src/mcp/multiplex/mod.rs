//! The multiplexer: one client session over the targets of an MCP backend.
//!
//! Client → targets: `initialize` and lists fan out concurrently; calls are routed by their prefixed
//! name; request ids are the gateway's own per target, mapped back on the way out.
//! Targets → client: notifications and requests are delivered on the stream of the request they belong
//! to, or on the client's GET stream; requests get session-unique ids and their answers return to the
//! asking target with its original id.

mod authorize;
mod call;
pub mod cursor;
pub mod downlink;
mod guard;
mod inbound;
mod items;
mod list;
pub(crate) mod merge;
pub mod naming;
mod routing;
mod targets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::future::join_all;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use authorize::*;
use call::*;
pub use downlink::{Downlink, Event};
use inbound::*;
pub use merge::{SUPPORTED_VERSIONS, negotiate_version};
use naming::ListKind;
use routing::*;
use targets::*;

use crate::config::model::{FailureMode, PrefixMode};
use crate::config::runtime::LimitSettings;
use crate::config::runtime::{McpBackend, Target};
use crate::limits::{self, Exceeded, RequestSlot, SessionQuota};
use crate::mcp::jsonrpc::{self, Kind, Payload, Reply, code};
use crate::mcp::message::{Initialize, Message};
use crate::mcp::params;
use crate::mcp::session_token::{TargetTicket, Ticket};
use crate::mcp::upstream::{ClientToken, InboundHandler, InboundSink, Upstream, UpstreamError};
use crate::policy::authz::{self, Caller, Decision};
use crate::policy::headers::HeaderModifier;
use crate::policy::timeout::Timeout;
use crate::policy::{Level, ai};
use crate::telemetry::metrics::{Metrics, Operation, metrics};
use crate::telemetry::traces;

/// Capacity of one request's reply stream; past it, messages fall back to the GET stream.
pub const STREAM_CAPACITY: usize = 256;

/// What the access log records about one handled request.
#[derive(Debug)]
pub struct Outcome {
    pub response: Reply,
    pub target: Option<Arc<str>>,
    /// The tool, prompt or resource the request named (the target's own name).
    pub item: Option<String>,
    /// The authorization decision, for the access log.
    pub authz: Option<String>,
    /// The answering target's own `responseHeaderModifier` (backend or target level).
    pub response_headers: Option<Arc<HeaderModifier>>,
    /// The prompt-guard rule that refused the request or its response (never the matched text).
    pub guard: Option<String>,
    /// `a2a` when the target's traffic is marked agent-to-agent, else `mcp`.
    pub protocol: &'static str,
}

impl Outcome {
    fn of(response: Reply) -> Self {
        Self {
            response,
            target: None,
            item: None,
            authz: None,
            response_headers: None,
            guard: None,
            protocol: "mcp",
        }
    }
}

pub struct Mux {
    /// The MCP protocol version negotiated with the client.
    pub protocol_version: &'static str,
    /// Handed to upstream connections, which report to the session without keeping it alive.
    me: Weak<Mux>,
    /// The session's backend as the config has it now (replaced on reload).
    backend: ArcSwap<McpBackend>,
    table: ArcSwap<Table>,
    /// The client's `initialize` params, as text: sent to targets connected later in the session.
    init_params: Box<RawValue>,
    inflight: Mutex<Inflight>,
    server_requests: Mutex<ServerRequests>,
    next_server_request: AtomicU64,
    /// Name → target for `prefixMode: never` (`None`: served by several targets, hidden).
    bare_names: Mutex<HashMap<(u8, String), Option<usize>>>,
    pub downlink: Downlink,
    /// Whether the client has opened a stream for messages outside requests; from then on every
    /// target's own such stream is open too.
    listening: AtomicBool,
    closed: CancellationToken,
    /// List-item authorization decisions: (target, kind, caller fingerprint) → name → allowed.
    decisions: Mutex<Decisions>,
    fingerprint_keys: std::collections::hash_map::RandomState,
    /// The client's bearer token, for targets with `backendAuth: passthrough`.
    client_token: ClientToken,
    /// The session's place on its route and its stdio processes, given back when it closes.
    quota: Mutex<Option<SessionQuota>>,
    limits: LimitSettings,
    /// Client requests being handled ([`Mux::admit_request`]).
    in_flight: Arc<AtomicUsize>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a session could not start; the client's `initialize` gets it as a JSON-RPC error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A target of a `failClosed` backend could not be connected.
    #[error("target {target} unavailable: {error}")]
    TargetUnavailable { target: Arc<str>, error: String },
}

impl StartError {
    /// The JSON-RPC error code the client gets.
    pub fn code(&self) -> i64 {
        match self {
            StartError::TargetUnavailable { .. } => code::INTERNAL_ERROR,
        }
    }
}

impl Mux {
    /// Connects to every target and answers the client's `initialize` request: the session and its
    /// reply's JSON text. `Err` says why the session cannot start.
    /// `client_token` is the client's `Authorization` header, for `backendAuth: passthrough` targets.
    pub async fn start(
        backend: Arc<McpBackend>,
        initialize: &Initialize,
        client_token: Option<http::HeaderValue>,
        quota: SessionQuota,
        limits: LimitSettings,
    ) -> Result<(Arc<Mux>, String), StartError> {
        let id = &initialize.id;
        let version = negotiate_version(initialize.protocol_version.as_deref());
        let init_params = initialize.params.clone();
        let mux = Mux::new(backend, version, init_params, client_token, quota, limits);
        let all: Vec<usize> = mux.table.load().live.clone();
        let failed = mux.connect_all(&all).await;
        if mux.backend.load().failure_mode == FailureMode::FailClosed
            && let Some((i, e)) = failed.first()
        {
            let target = mux.target(*i).name.clone();
            let error = e.to_string();
            mux.close().await;
            return Err(StartError::TargetUnavailable { target, error });
        }
        mux.retry_later(failed);
        let reply = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#,
            mux.initialize_result()
        );
        Ok((mux, reply))
    }

    /// The `initialize` result of the session, as JSON text: the connected targets' results merged.
    pub fn initialize_result(&self) -> Arc<str> {
        let answered: Vec<(Arc<Target>, Arc<Upstream>)> = self
            .live()
            .into_iter()
            .filter_map(|t| {
                let slot = self.slot(t);
                Some((slot.target.load_full(), slot.upstream.load_full()?))
            })
            .collect();
        let answered: Vec<(&str, &str)> = answered
            .iter()
            .map(|(target, upstream)| (&*target.name, upstream.init_result.get()))
            .collect();
        merge::initialize_result_text(self.protocol_version, &answered)
    }

    fn new(
        backend: Arc<McpBackend>,
        version: &'static str,
        init_params: Box<RawValue>,
        client_token: Option<http::HeaderValue>,
        mut quota: SessionQuota,
        limits: LimitSettings,
    ) -> Arc<Mux> {
        let slots: Vec<Arc<Slot>> = backend
            .targets
            .iter()
            .map(|target| {
                let process = is_stdio(target).then(|| quota.take_process()).flatten();
                Slot::new(target.clone(), process)
            })
            .collect();
        let table = Table {
            live: (0..slots.len()).collect(),
            slots,
        };
        Arc::new_cyclic(|me| Mux {
            protocol_version: version,
            me: me.clone(),
            table: ArcSwap::from_pointee(table),
            backend: ArcSwap::new(backend),
            init_params,
            inflight: Mutex::default(),
            server_requests: Mutex::default(),
            next_server_request: AtomicU64::new(1),
            bare_names: Mutex::default(),
            downlink: Downlink::default(),
            listening: AtomicBool::new(false),
            closed: CancellationToken::new(),
            decisions: Mutex::default(),
            fingerprint_keys: Default::default(),
            client_token: Arc::new(ArcSwapOption::from(client_token.map(Arc::new))),
            quota: Mutex::new(Some(quota)),
            limits,
            in_flight: Arc::default(),
        })
    }

    /// Takes over a session another replica began (or this one, before a restart), from its
    /// `ticket`: HTTP targets carry on with their upstream sessions; the others are connected and
    /// initialized afresh, as after a crash, unless `connect_others` is false (the session is
    /// resumed only to be ended).
    pub async fn resume(
        backend: Arc<McpBackend>,
        ticket: &Ticket,
        client_token: Option<http::HeaderValue>,
        quota: SessionQuota,
        limits: LimitSettings,
        connect_others: bool,
    ) -> Arc<Mux> {
        let version = negotiate_version(Some(&ticket.version));
        let init_params = ticket.init_params.clone();
        let mux = Mux::new(backend, version, init_params, client_token, quota, limits);
        let mut others = Vec::new();
        for t in mux.live() {
            let slot = mux.slot(t);
            let target = slot.target.load_full();
            let resumed = ticket
                .targets
                .iter()
                .find(|kept| *kept.name == *target.name)
                .and_then(|kept| {
                    Upstream::resume(
                        &target,
                        &mux.init_params,
                        mux.next_sink(t, &slot),
                        &mux.client_token,
                        mux.limits.upstream_response_bytes,
                        kept,
                    )
                });
            match resumed {
                Some(upstream) => slot.upstream.store(Some(upstream)),
                None => others.push(t),
            }
        }
        if connect_others {
            let failed = mux.connect_all(&others).await;
            mux.retry_later(failed);
        }
        mux
    }

    /// What a session id carries of the targets: each HTTP target's upstream session.
    pub fn target_tickets(&self) -> Vec<TargetTicket> {
        let table = self.table.load();
        table
            .live
            .iter()
            .map(|t| &table.slots[*t])
            .filter_map(|slot| {
                let upstream = slot.upstream.load_full()?;
                upstream.ticket(&slot.target.load().name)
            })
            .collect()
    }

    /// The client's `initialize` params, as the session keeps them.
    pub fn init_params(&self) -> &RawValue {
        &self.init_params
    }

    /// The name of the session's backend (`<route>/<index>`), by which a reload finds its successor.
    pub fn backend_name(&self) -> String {
        self.backend.load().name.clone()
    }

    /// How long a request goes on after its client lost its reply stream (`config.limits.streamResumeGrace`).
    pub fn stream_resume_grace(&self) -> std::time::Duration {
        self.limits.stream_resume_grace
    }

    /// Whether any target forwards the client's own token (`backendAuth: passthrough`).
    pub fn passes_token_through(&self) -> bool {
        self.backend.load().targets.iter().any(|target| {
            matches!(
                target.policies.backend_auth.as_ref().map(|a| &*a.policy),
                Some(crate::policy::backend_auth::BackendAuth::Passthrough)
            )
        })
    }

    /// Records the client's current bearer token for passthrough targets.
    pub fn set_client_token(&self, token: Option<http::HeaderValue>) {
        self.client_token.store(token.map(Arc::new));
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Admits one more client request, up to `requestsInFlightPerSession`; the slot frees itself when
    /// dropped.
    pub fn admit_request(&self) -> Result<RequestSlot, Exceeded> {
        limits::admit_request(&self.in_flight, self.limits.requests_in_flight_per_session)
    }

    /// Handles one client request; messages that belong to it on the way are sent on `stream`.
    /// `caller` is needed when some target has an `mcpAuthorization` policy ([`Self::authorizes`]).
    pub async fn request(
        self: &Arc<Self>,
        request: Message,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let request = match request {
            // Read only when its params had the shape `params::check` asks for.
            Message::Named(_) => return self.named(request, stream, caller).await,
            Message::Parsed(request) => request,
            copied @ (Message::Initialize(_) | Message::Shared(_)) => copied.into_value(),
        };
        let method = jsonrpc::method(&request);
        if let Err(invalid) = params::check(method, request.get("params")) {
            return Outcome::of(Reply::error(
                request["id"].clone(),
                code::INVALID_PARAMS,
                invalid,
            ));
        }
        if let Some(kind) = ListKind::from_method(method) {
            return self.list(kind, request, stream, caller).await;
        }
        match method {
            "ping" => Outcome::of(Reply::result(request["id"].clone(), &json!({}))),
            "initialize" => Outcome::of(Reply::error(
                request["id"].clone(),
                code::INVALID_REQUEST,
                "session already initialized",
            )),
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe" => self.named(request.into(), stream, caller).await,
            "completion/complete" => self.complete(request, stream, caller).await,
            "logging/setLevel" => self.broadcast(request, stream).await,
            _ => match self.single_target() {
                Some(t) => self.forward(t, request.into(), stream).await,
                None => Outcome::of(Reply::error(
                    request["id"].clone(),
                    code::METHOD_NOT_FOUND,
                    format!("Method not found: {method}"),
                )),
            },
        }
    }

    /// A request for one named item (a tool, a prompt, a resource), routed by its name.
    async fn named(
        self: &Arc<Self>,
        request: Message,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let kind = match request.method() {
            "tools/call" => ListKind::Tools,
            "prompts/get" => ListKind::Prompts,
            _ => ListKind::Resources,
        };
        self.by_name(kind, request, stream, caller).await
    }
}
