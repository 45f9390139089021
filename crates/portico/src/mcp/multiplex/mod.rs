//! The multiplexer: one client session over the targets of an MCP backend.
//!
//! Client → targets: `initialize` and lists fan out concurrently; calls are routed by their prefixed
//! name; request ids are the gateway's own per target, mapped back on the way out.
//! Targets → client: notifications and requests are delivered on the stream of the request they belong
//! to, or on the client's GET stream; requests get session-unique ids and their answers return to the
//! asking target with its original id.

pub mod cursor;
mod downlink;
mod items;
pub(crate) mod merge;
pub mod naming;

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

pub use downlink::Downlink;
pub use merge::{SUPPORTED_VERSIONS, negotiate_version};
use naming::ListKind;

use crate::config::model::{FailureMode, PrefixMode};
use crate::config::runtime::LimitSettings;
use crate::config::runtime::{McpBackend, Target};
use crate::limits::{self, Exceeded, RequestSlot, SessionQuota};
use crate::mcp::jsonrpc::{self, Kind, Payload, Reply, code};
use crate::mcp::params;
use crate::mcp::upstream::{ClientToken, InboundHandler, InboundSink, Upstream, UpstreamError};
use crate::policy::authz::{self, Caller, Decision};
use crate::policy::headers::HeaderModifier;
use crate::policy::timeout::Timeout;
use crate::policy::{Level, ai};
use crate::telemetry::metrics::{Metrics, Operation, metrics};
use crate::telemetry::traces;

/// How long a target gets to start and answer `initialize`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
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

/// One target's connection for this session.
struct Slot {
    /// The target's current config: a reload that changes only what does not touch the connection
    /// (authorization, guards, limits) swaps it in place.
    target: ArcSwap<Target>,
    upstream: ArcSwapOption<Upstream>,
    /// Counts connections, so a close reported by an old one is ignored.
    generation: AtomicU64,
    reconnecting: AtomicBool,
    /// Set when a reload took the target out of the session. The slot stays (its index is named by
    /// requests still in flight) but serves nothing new.
    retired: AtomicBool,
    /// A stdio target's place under `config.limits.stdioProcesses`, given back when the slot retires.
    process: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    fn new(target: Arc<Target>, process: Option<OwnedSemaphorePermit>) -> Arc<Self> {
        Arc::new(Self {
            target: ArcSwap::new(target),
            upstream: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            process: Mutex::new(process),
        })
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// The session's targets. Slots are only ever added, so an index (`t`) names the same slot for the
/// session's life; `live` lists the current targets' slots in config order.
struct Table {
    slots: Vec<Arc<Slot>>,
    live: Vec<usize>,
}

/// A request in flight at a target, by `(target index, upstream id)`.
struct Pending {
    stream: mpsc::Sender<String>,
    /// Fired when the client cancels the request, so the gateway stops waiting for the target.
    cancel: CancellationToken,
    progress_token: Option<Value>,
    /// Order of arrival: messages a target sends without saying which request they belong to go
    /// to its most recent one.
    seq: u64,
}

#[derive(Default)]
struct Inflight {
    by_upstream: HashMap<(usize, u64), Pending>,
    by_client: HashMap<String, Vec<(usize, u64)>>,
    seq: u64,
}

/// List-item authorization decisions: (target, list kind, caller fingerprint) → item name → allowed.
type Decisions = HashMap<(usize, u8, u64), HashMap<String, bool>>;

/// A request a target sent to the client: its target and its original id.
type ServerRequests = HashMap<u64, (usize, Value)>;

pub struct Mux {
    /// The MCP protocol version negotiated with the client.
    pub protocol_version: &'static str,
    /// Handed to upstream connections, which report to the session without keeping it alive.
    me: Weak<Mux>,
    /// The session's backend as the config has it now (replaced on reload).
    backend: ArcSwap<McpBackend>,
    table: ArcSwap<Table>,
    init_params: Value,
    http: reqwest::Client,
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

/// How long a target a reload removed keeps serving the calls already in flight at it.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// At most this many remembered decisions per session; past it the memory starts over.
const DECISIONS_LIMIT: usize = 16_384;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Mux {
    /// Connects to every target and answers the client's `initialize` request.
    /// `Err` is the JSON-RPC error response when the session cannot start.
    /// `client_token` is the client's `Authorization` header, for `backendAuth: passthrough` targets.
    pub async fn start(
        backend: Arc<McpBackend>,
        initialize: &Value,
        http: reqwest::Client,
        client_token: Option<http::HeaderValue>,
        mut quota: SessionQuota,
        limits: LimitSettings,
    ) -> Result<(Arc<Mux>, Value), Value> {
        let id = initialize["id"].clone();
        let init_params = initialize
            .get("params")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let version = negotiate_version(init_params["protocolVersion"].as_str());
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
        let mux = Arc::new_cyclic(|me| Mux {
            protocol_version: version,
            me: me.clone(),
            table: ArcSwap::from_pointee(table),
            backend: ArcSwap::new(backend),
            init_params,
            http,
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
        });
        let all: Vec<usize> = mux.table.load().live.clone();
        let failed = mux.connect_all(&all).await;
        if mux.backend.load().failure_mode == FailureMode::FailClosed
            && let Some((i, e)) = failed.first()
        {
            let message = format!("target {} unavailable: {e}", mux.target(*i).name);
            mux.close().await;
            return Err(jsonrpc::error(id, code::INTERNAL_ERROR, message));
        }
        mux.retry_later(failed);
        let answered: Vec<(Arc<Target>, Arc<Upstream>)> = all
            .iter()
            .filter_map(|t| {
                let slot = mux.slot(*t);
                Some((slot.target.load_full(), slot.upstream.load_full()?))
            })
            .collect();
        let answered: Vec<(&str, &Value)> = answered
            .iter()
            .map(|(target, upstream)| (&*target.name, &upstream.init_result))
            .collect();
        let result = merge::initialize_result(version, &answered);
        Ok((mux.clone(), jsonrpc::result(id, result)))
    }

    /// Connects the targets of `slots` concurrently; the ones that failed, with why.
    async fn connect_all(&self, slots: &[usize]) -> Vec<(usize, UpstreamError)> {
        let results = join_all(slots.iter().map(|t| self.connect(*t))).await;
        slots
            .iter()
            .zip(results)
            .filter_map(|(t, r)| r.err().map(|e| (*t, e)))
            .collect()
    }

    /// Leaves targets that could not be connected out of the session for now, and retries them.
    fn retry_later(self: &Arc<Self>, failed: Vec<(usize, UpstreamError)>) {
        for (t, e) in failed {
            let target = self.target(t);
            target.health.failed(&e.to_string());
            tracing::warn!(target: "portico::mux", target = %target.name, error = %e,
                "target unavailable; left out of this session and retried with backoff");
            self.spawn_reconnect(t);
        }
    }

    /// The slot of target index `t`. Indices come from the table, which only grows.
    fn slot(&self, t: usize) -> Arc<Slot> {
        self.table.load().slots[t].clone()
    }

    /// The current config of target index `t`.
    fn target(&self, t: usize) -> Arc<Target> {
        self.slot(t).target.load_full()
    }

    /// The indices of the session's current targets, in config order.
    fn live(&self) -> Vec<usize> {
        self.table.load().live.clone()
    }

    async fn connect(&self, i: usize) -> Result<(), UpstreamError> {
        let slot = self.slot(i);
        let target = slot.target.load_full();
        let generation = slot.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let sink = InboundSink {
            target: i,
            generation,
            handler: self.weak_self(),
        };
        let connect = Upstream::connect(
            &target,
            &self.init_params,
            sink,
            &self.http,
            &self.client_token,
            self.limits.upstream_response_bytes,
        );
        let upstream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                UpstreamError::Initialize(format!("no answer within {CONNECT_TIMEOUT:?}"))
            })??;
        if self.closed.is_cancelled() || slot.is_retired() {
            upstream.close().await;
            return Err(UpstreamError::Closed);
        }
        slot.upstream.store(Some(upstream));
        // A reload may have retired the slot meanwhile; whichever side comes second closes.
        if slot.is_retired()
            && let Some(upstream) = slot.upstream.swap(None)
        {
            upstream.close().await;
            return Err(UpstreamError::Closed);
        }
        if self.listening.load(Ordering::Acquire)
            && let Some(upstream) = slot.upstream.load_full()
        {
            upstream.listen();
        }
        tracing::info!(target: "portico::mux", target = %target.name, "target connected");
        Ok(())
    }

    /// Makes `stream` the client's stream for messages outside requests (its GET stream, or the
    /// legacy SSE stream), and opens each target's own.
    pub fn attach_stream(&self, stream: mpsc::Sender<String>) {
        self.downlink.attach(stream);
        self.listening.store(true, Ordering::Release);
        for t in self.live() {
            if let Some(upstream) = self.slot(t).upstream.load_full() {
                upstream.listen();
            }
        }
    }

    /// Retries a target with exponential backoff until it answers or the session ends; the client
    /// then hears that the lists changed.
    fn spawn_reconnect(self: &Arc<Self>, i: usize) {
        let slot = self.slot(i);
        if slot.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let mux = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                tokio::select! {
                    _ = mux.closed.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                if slot.is_retired() {
                    break;
                }
                match mux.connect(i).await {
                    Ok(()) => {
                        mux.lists_changed();
                        break;
                    }
                    Err(e) => {
                        let target = slot.target.load();
                        target.health.failed(&e.to_string());
                        tracing::warn!(target: "portico::mux", target = %target.name,
                        error = %e, retry_in = ?backoff * 2, "target still unavailable")
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            slot.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Tells the client (on its GET stream) that every list may have changed.
    fn lists_changed(&self) {
        for list in ["tools", "prompts", "resources"] {
            let method = format!("notifications/{list}/list_changed");
            self.downlink
                .send(jsonrpc::notification(&method, json!({})).to_string());
        }
    }

    /// The name of the session's backend (`<route>/<index>`), by which a reload finds its successor.
    pub fn backend_name(&self) -> String {
        self.backend.load().name.clone()
    }

    /// Moves the live session onto a reloaded config of its backend. A target whose name and
    /// connection fingerprint stay keeps its connection and takes the new policies; a removed or
    /// re-addressed one is retired (its calls in flight finish first, within [`RETIRE_GRACE`]); a new
    /// one is connected. The client hears `notifications/*/list_changed` when anything changed.
    pub fn reconfigure(self: &Arc<Self>, backend: Arc<McpBackend>) {
        if self.is_closed() {
            return;
        }
        let old = self.backend.swap(backend.clone());
        let table = self.table.load_full();
        let mut changed =
            old.prefixed != backend.prefixed || old.prefix_mode != backend.prefix_mode;
        let mut successor_of: Vec<Option<usize>> = vec![None; backend.targets.len()];
        for &t in &table.live {
            let slot = &table.slots[t];
            let current = slot.target.load_full();
            let successor = backend
                .targets
                .iter()
                .position(|new| new.name == current.name && new.connection == current.connection);
            match successor {
                Some(n) => {
                    changed |= backend.targets[n].revision != current.revision;
                    slot.target.store(backend.targets[n].clone());
                    successor_of[n] = Some(t);
                }
                None => {
                    changed = true;
                    self.retire(t, slot.clone());
                }
            }
        }
        let mut slots = table.slots.clone();
        let mut live = Vec::with_capacity(backend.targets.len());
        let mut added = Vec::new();
        for (target, kept) in backend.targets.iter().zip(successor_of) {
            if let Some(t) = kept {
                live.push(t);
                continue;
            }
            let Some(process) = self.process_for(target) else {
                continue;
            };
            changed = true;
            slots.push(Slot::new(target.clone(), process));
            live.push(slots.len() - 1);
            added.push(slots.len() - 1);
        }
        self.table.store(Arc::new(Table { slots, live }));
        lock(&self.decisions).clear();
        lock(&self.bare_names).clear();
        if !changed {
            return;
        }
        let mux = self.clone();
        tokio::spawn(async move {
            let failed = mux.connect_all(&added).await;
            mux.retry_later(failed);
            mux.lists_changed();
        });
    }

    /// A stdio target's place under `stdioProcesses` (`Some(None)` for other targets); `None` when the
    /// limit leaves no room, and the target stays out of the session.
    fn process_for(&self, target: &Target) -> Option<Option<OwnedSemaphorePermit>> {
        if !is_stdio(target) {
            return Some(None);
        }
        let quota = lock(&self.quota);
        match quota.as_ref().map(SessionQuota::admit_process) {
            Some(Ok(permit)) => Some(Some(permit)),
            Some(Err(over)) => {
                tracing::warn!(target: "portico::mux", target = %target.name, %over,
                    "target added by the reload left out of this live session");
                None
            }
            None => None,
        }
    }

    /// Takes slot `t` out of the session: nothing new is routed to it, its calls in flight get
    /// [`RETIRE_GRACE`] to finish, then its connection closes (a stdio process is stopped).
    fn retire(self: &Arc<Self>, t: usize, slot: Arc<Slot>) {
        slot.retired.store(true, Ordering::Release);
        // A close reported by the connection being retired is not a crash to recover from.
        slot.generation.fetch_add(1, Ordering::Relaxed);
        let mux = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + RETIRE_GRACE;
            while mux.has_calls_at(t) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(upstream) = slot.upstream.swap(None) {
                upstream.close().await;
            }
            lock(&slot.process).take();
            tracing::info!(target: "portico::mux", target = %slot.target.load().name,
                "target left the session (config reloaded)");
        });
    }

    /// Whether target index `t` has requests in flight.
    fn has_calls_at(&self, t: usize) -> bool {
        lock(&self.inflight)
            .by_upstream
            .keys()
            .any(|(target, _)| *target == t)
    }

    fn weak_self(&self) -> Weak<dyn InboundHandler> {
        self.me.clone()
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

    /// The names of the targets this session is connected to now.
    pub fn connected_targets(&self) -> Vec<Arc<str>> {
        let table = self.table.load();
        table
            .live
            .iter()
            .map(|t| &table.slots[*t])
            .filter(|s| s.upstream.load().is_some())
            .map(|s| s.target.load().name.clone())
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Ends the session: every target connection is closed (stdio processes stopped and reaped).
    /// Requests still in flight are cancelled at their targets first, so remote targets stop work
    /// that nobody will read.
    pub async fn close(&self) {
        self.closed.cancel();
        let inflight: Vec<(usize, u64)> =
            lock(&self.inflight).by_upstream.keys().copied().collect();
        let cancels = inflight.into_iter().filter_map(|(t, upstream_id)| {
            let upstream = self.slot(t).upstream.load_full()?;
            let message = jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": upstream_id, "reason": "the session ended"}),
            );
            Some(async move { upstream.notify(message).await })
        });
        join_all(cancels).await;
        let table = self.table.load_full();
        let upstreams: Vec<_> = table
            .slots
            .iter()
            .filter_map(|s| s.upstream.swap(None))
            .collect();
        join_all(upstreams.iter().map(|u| u.close())).await;
        for slot in &table.slots {
            lock(&slot.process).take();
        }
        lock(&self.quota).take();
    }

    /// Admits one more client request, up to `requestsInFlightPerSession`; the slot frees itself when
    /// dropped.
    pub fn admit_request(&self) -> Result<RequestSlot, Exceeded> {
        limits::admit_request(&self.in_flight, self.limits.requests_in_flight_per_session)
    }

    fn target_index(&self, name: &str) -> Option<usize> {
        let table = self.table.load();
        table
            .live
            .iter()
            .copied()
            .find(|t| &*table.slots[*t].target.load().name == name)
    }

    /// The target of a backend that has just one: it serves every method, named or not.
    fn single_target(&self) -> Option<usize> {
        match self.table.load().live[..] {
            [t] => Some(t),
            _ => None,
        }
    }

    // ---- client → targets ------------------------------------------------------------------------

    /// Handles one client request; messages that belong to it on the way are sent on `stream`.
    /// `caller` is needed when some target has an `mcpAuthorization` policy ([`Self::authorizes`]).
    pub async fn request(
        self: &Arc<Self>,
        request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
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
            "tools/call" => self.by_name(ListKind::Tools, request, stream, caller).await,
            "prompts/get" => {
                self.by_name(ListKind::Prompts, request, stream, caller)
                    .await
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.by_name(ListKind::Resources, request, stream, caller)
                    .await
            }
            "completion/complete" => self.complete(request, stream, caller).await,
            "logging/setLevel" => self.broadcast(request, stream).await,
            _ => match self.single_target() {
                Some(t) => self.forward(t, request, stream).await,
                None => Outcome::of(Reply::error(
                    request["id"].clone(),
                    code::METHOD_NOT_FOUND,
                    format!("Method not found: {method}"),
                )),
            },
        }
    }

    /// Resolves a client-facing name to `(target, the target's own name)`.
    async fn resolve(self: &Arc<Self>, kind: ListKind, name: &str) -> Option<(usize, String)> {
        if self.backend.load().prefixed {
            let (target, rest) = naming::split(name, kind.separator())?;
            return Some((self.target_index(target)?, rest.to_string()));
        }
        if let Some(t) = self.single_target() {
            return Some((t, name.to_string()));
        }
        // prefixMode: never, several targets: names are looked up in what the targets listed.
        let key = (kind as u8, name.to_string());
        if let Some(found) = lock(&self.bare_names).get(&key) {
            return found.map(|t| (t, name.to_string()));
        }
        self.index_bare_names(kind).await;
        lock(&self.bare_names)
            .get(&key)
            .copied()
            .flatten()
            .map(|t| (t, name.to_string()))
    }

    /// Lists every page of `kind` from every target to learn who serves which bare name.
    async fn index_bare_names(self: &Arc<Self>, kind: ListKind) {
        let (sink, _rx) = mpsc::channel(1);
        let mut cursor: Option<String> = None;
        loop {
            let mut params = json!({});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let request = json!({"jsonrpc": "2.0", "id": "portico-index", "method": kind.method(), "params": params});
            let outcome = self.list(kind, request, &sink, None).await;
            cursor = outcome
                .response
                .result_raw()
                .and_then(|result| items::read_page(result, kind).ok())
                .and_then(|page| page.next_cursor);
            if cursor.is_none() {
                break;
            }
        }
    }

    /// `tools/call`, `prompts/get`, `resources/*`: routed by the name or URI in `params`.
    async fn by_name(
        self: &Arc<Self>,
        kind: ListKind,
        mut request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let field = if kind == ListKind::Resources {
            "uri"
        } else {
            "name"
        };
        let name = request["params"][field]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some((t, own_name)) = self.resolve(kind, &name).await else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        let arguments = request["params"].get("arguments");
        let method = jsonrpc::method(&request);
        let verdict = self.authorize(t, caller, method, kind, &own_name, arguments);
        if let Some(denied) = self.refusal(&request, kind, &name, t, &own_name, &verdict) {
            return denied;
        }
        let guarded_result = matches!(method, "tools/call" | "prompts/get" | "resources/read");
        if method == "resources/subscribe"
            && let Some(upstream) = self.slot(t).upstream.load_full()
        {
            // The target sends `notifications/resources/updated` outside the request.
            upstream.listen();
        }
        // `params` is an object (checked in `request`); only the name changes, nothing is added.
        let Some(params) = jsonrpc::params_mut(&mut request) else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        params.insert(field.to_string(), Value::String(own_name.clone()));
        let arguments = params
            .get_mut("arguments")
            .filter(|_| kind != ListKind::Resources);
        if let Some(denied) = arguments.and_then(|arguments| self.guard_request(t, arguments)) {
            let mut refused = self.refused_by_guard(t, request["id"].clone(), denied, own_name);
            refused.authz = verdict.map(|v| v.describe());
            return refused;
        }
        let mut outcome = self.forward(t, request, stream).await;
        outcome.authz = verdict.map(|v| v.describe());
        if guarded_result {
            self.guard_response(t, &mut outcome);
        }
        if self.backend.load().prefixed {
            match kind {
                ListKind::Resources => self.prefix_contents(&mut outcome.response, t),
                ListKind::Tools => self.prefix_resource_links(&mut outcome.response, t),
                _ => {}
            }
        }
        outcome.item = Some(own_name);
        outcome
    }

    /// `completion/complete`: routed by the prompt name or resource URI of `params.ref`.
    async fn complete(
        self: &Arc<Self>,
        mut request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let reference = &request["params"]["ref"];
        let (kind, field) = match reference["type"].as_str() {
            Some("ref/prompt") => (ListKind::Prompts, "name"),
            _ => (ListKind::Resources, "uri"),
        };
        let name = reference[field].as_str().unwrap_or_default().to_string();
        let Some((t, own_name)) = self.resolve(kind, &name).await else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        let method = jsonrpc::method(&request);
        let verdict = self.authorize(t, caller, method, kind, &own_name, None);
        if let Some(denied) = self.refusal(&request, kind, &name, t, &own_name, &verdict) {
            return denied;
        }
        // `params.ref` is an object (checked in `request`); only its name changes.
        let Some(params) = jsonrpc::params_mut(&mut request) else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        if let Some(reference) = params.get_mut("ref").and_then(Value::as_object_mut) {
            reference.insert(field.to_string(), Value::String(own_name.clone()));
        }
        let denied = params
            .iter_mut()
            .filter(|(key, _)| matches!(key.as_str(), "argument" | "context"))
            .find_map(|(_, part)| self.guard_request(t, part));
        if let Some(denied) = denied {
            let mut refused = self.refused_by_guard(t, request["id"].clone(), denied, own_name);
            refused.authz = verdict.map(|v| v.describe());
            return refused;
        }
        let mut outcome = self.forward(t, request, stream).await;
        outcome.authz = verdict.map(|v| v.describe());
        outcome.item = Some(own_name);
        outcome
    }

    /// `logging/setLevel`: every connected target gets it; the client gets `{}`.
    async fn broadcast(self: &Arc<Self>, request: Value, stream: &mpsc::Sender<String>) -> Outcome {
        let targets: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|t| self.slot(*t).upstream.load().is_some())
            .collect();
        join_all(
            targets
                .into_iter()
                .map(|t| self.forward(t, request.clone(), stream)),
        )
        .await;
        Outcome::of(Reply::result(request["id"].clone(), &json!({})))
    }

    /// Prefixes the URIs of a `resources/read` result, so the client can use them again.
    fn prefix_contents(&self, response: &mut Reply, t: usize) {
        let Some(result) = response.result_raw() else {
            return;
        };
        let Ok(mut result) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        let Some(contents) = result.get_mut("contents").and_then(Value::as_array_mut) else {
            return;
        };
        let target = self.target(t).name.clone();
        for content in contents {
            naming::prefix_item(content, ListKind::Resources, &target);
        }
        *response = Reply::result(response.id.take(), &result);
    }

    /// Prefixes the URIs of `resource_link` items in a tool result, so the client can read them through
    /// Portico. Results without any are passed on untouched, unparsed.
    fn prefix_resource_links(&self, response: &mut Reply, t: usize) {
        let Some(result) = response.result_raw() else {
            return;
        };
        if !result.get().contains("\"resource_link\"") {
            return;
        }
        let Ok(mut result) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) else {
            return;
        };
        let target = self.target(t).name.clone();
        for item in content
            .iter_mut()
            .filter(|item| item["type"] == "resource_link")
        {
            naming::prefix_item(item, ListKind::Resources, &target);
        }
        *response = Reply::result(response.id.take(), &result);
    }

    /// A list request: every target (or those the cursor names) concurrently, merged in config order.
    async fn list(
        self: &Arc<Self>,
        kind: ListKind,
        request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let id = request["id"].clone();
        let pages: Option<cursor::Pages> = match request["params"]["cursor"].as_str() {
            None => None,
            Some(c) => match cursor::decode(c) {
                Some(pages) => Some(pages),
                None => {
                    return Outcome::of(Reply::error(id, code::INVALID_PARAMS, "invalid cursor"));
                }
            },
        };
        let live = self.live();
        let backend = self.backend.load_full();
        let asked: Vec<(usize, Option<String>)> = live
            .iter()
            .copied()
            .filter_map(|t| {
                let target = self.target(t);
                let name = &*target.name;
                match &pages {
                    None => Some((t, None)),
                    Some(pages) => pages
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, c)| (t, Some(c.clone()))),
                }
            })
            .filter(|(t, _)| self.declares(*t, kind))
            .collect();
        let calls = asked.iter().map(|(t, page)| {
            let mut request = request.clone();
            if let Some(params) = jsonrpc::params_mut(&mut request) {
                match page {
                    Some(page) => params.insert("cursor".to_string(), Value::String(page.clone())),
                    None => params.remove("cursor"),
                };
            }
            self.forward(*t, request, stream)
        });
        let replies = join_all(calls).await;
        let mut pages = Vec::with_capacity(replies.len());
        for ((t, _), reply) in asked.iter().zip(&replies) {
            let target = self.target(*t);
            match reply
                .response
                .result_raw()
                .map(|result| items::read_page(result, kind))
            {
                Some(Ok(page)) => {
                    if kind == ListKind::Tools
                        && page.next_cursor.is_none()
                        && pages_of_one(&request)
                    {
                        target
                            .health
                            .tools
                            .store(page.items.len(), Ordering::Relaxed);
                    }
                    pages.push((*t, page))
                }
                failed => {
                    if backend.failure_mode == FailureMode::FailClosed {
                        let message = format!("target {} unavailable", target.name);
                        return Outcome::of(Reply::error(id, code::INTERNAL_ERROR, message));
                    }
                    let error = match failed {
                        Some(Err(e)) => format!("invalid list result: {e}"),
                        _ => reply.response.error_message().unwrap_or_default(),
                    };
                    tracing::warn!(target: "portico::mux", target = %target.name, method = kind.method(), error,
                        "target left out of the list");
                }
            }
        }
        if let Some(caller) = caller {
            for (t, page) in &mut pages {
                self.filter_items(*t, caller, kind, &mut page.items);
            }
        }
        let never = backend.prefix_mode == PrefixMode::Never && live.len() > 1;
        if never {
            for (t, page) in &mut pages {
                self.record_bare_names(kind, *t, &mut page.items);
            }
        }
        let mut merged = String::with_capacity(4096);
        merged.push('{');
        items::push_json_string(&mut merged, kind.result_key());
        merged.push_str(":[");
        let mut first = true;
        let mut next = cursor::Pages::new();
        for (t, page) in pages {
            let target = self.target(t).name.clone();
            if let Some(c) = page.next_cursor {
                next.push((target.to_string(), c));
            }
            for mut item in page.items {
                if never && self.is_ambiguous(kind, &mut item) {
                    continue;
                }
                if !first {
                    merged.push(',');
                }
                first = false;
                if backend.prefixed {
                    item.write_prefixed(&mut merged, kind, &target);
                } else {
                    merged.push_str(item.raw.get());
                }
            }
        }
        merged.push(']');
        if !next.is_empty() {
            merged.push_str(",\"nextCursor\":");
            items::push_json_string(&mut merged, &cursor::encode(&next));
        }
        merged.push('}');
        let payload = match RawValue::from_string(merged) {
            Ok(raw) => Payload::Result(raw),
            Err(e) => {
                return Outcome::of(Reply::error(
                    id,
                    code::INTERNAL_ERROR,
                    format!("merging lists failed: {e}"),
                ));
            }
        };
        Outcome::of(Reply { id, payload })
    }

    /// Whether target `t` is connected and declared the capability `kind` needs.
    fn declares(&self, t: usize, kind: ListKind) -> bool {
        let upstream = self.slot(t).upstream.load();
        upstream.as_ref().is_some_and(|u| {
            u.init_result["capabilities"]
                .get(kind.capability())
                .is_some()
        })
    }

    /// Whether any target of this session has an `mcpAuthorization` policy.
    pub fn authorizes(&self) -> bool {
        self.backend
            .load()
            .targets
            .iter()
            .any(|target| target.policies.authorization.is_some())
    }

    /// The decision of target `t`'s effective `mcpAuthorization` on one item; `None` without a policy.
    fn authorize(
        &self,
        t: usize,
        caller: Option<&Caller>,
        method: &str,
        kind: ListKind,
        name: &str,
        arguments: Option<&Value>,
    ) -> Option<Verdict> {
        let config = self.target(t);
        let sourced = config.policies.authorization.as_ref()?;
        let target = &config.name;
        let anonymous = Caller::default();
        let base = caller.unwrap_or(&anonymous).context();
        let mut context = base.new_inner_scope();
        context.add_variable_from_value(
            "mcp",
            authz::mcp_variable(method, target, kind.noun(), name, arguments),
        );
        let decision = sourced.policy.decide(&context);
        metrics().record_authorization(target, decision.allowed, sourced.level, decision.rule);
        Some(Verdict {
            decision,
            level: sourced.level,
            rule: decision
                .rule
                .map(|i| sourced.policy.rules[i].source.clone()),
        })
    }

    /// The answer to a denied item: exactly the answer for a name that does not exist.
    fn refusal(
        &self,
        request: &Value,
        kind: ListKind,
        name: &str,
        t: usize,
        own: &str,
        verdict: &Option<Verdict>,
    ) -> Option<Outcome> {
        let verdict = verdict.as_ref().filter(|v| !v.decision.allowed)?;
        let mut outcome = Outcome::of(unknown(request["id"].clone(), kind, name));
        outcome.target = Some(self.target(t).name.clone());
        outcome.item = Some(own.to_string());
        outcome.authz = Some(verdict.describe());
        Some(outcome)
    }

    /// Drops the items of target `t` that its policy does not let `caller` see.
    fn filter_items(
        &self,
        t: usize,
        caller: &Caller,
        kind: ListKind,
        list: &mut Vec<items::Item<'_>>,
    ) {
        let config = self.target(t);
        let Some(sourced) = &config.policies.authorization else {
            return;
        };
        let target = &config.name;
        let base = caller.context();
        let method = kind.method();
        if !sourced.policy.per_item {
            // No rule reads `mcp`: one decision for the whole list.
            let mut context = base.new_inner_scope();
            context.add_variable_from_value(
                "mcp",
                authz::mcp_variable(method, target, kind.noun(), "", None),
            );
            if !sourced.policy.decide(&context).allowed {
                list.clear();
            }
            return;
        }
        // Decisions depend only on the caller and the item: remembered for the session, so listing
        // again costs lookups, not CEL.
        let caller_key = caller.fingerprint(sourced.policy.reads_request, &self.fingerprint_keys);
        let scope = (t, kind as u8, caller_key);
        let mut decided = Vec::with_capacity(list.len());
        {
            let cache = lock(&self.decisions);
            let known = cache.get(&scope);
            for item in list.iter_mut() {
                let name = item.name(kind).unwrap_or_default().to_string();
                let allowed = known.and_then(|k| k.get(&name)).copied();
                decided.push((name, allowed));
            }
        }
        let mut learned = Vec::new();
        for (name, known) in &mut decided {
            if known.is_none() {
                let mut context = base.new_inner_scope();
                context.add_variable_from_value(
                    "mcp",
                    authz::mcp_variable(method, target, kind.noun(), name, None),
                );
                let allowed = !name.is_empty() && sourced.policy.decide(&context).allowed;
                *known = Some(allowed);
                learned.push((name.clone(), allowed));
            }
        }
        if !learned.is_empty() {
            let mut cache = lock(&self.decisions);
            let size: usize = cache.values().map(HashMap::len).sum();
            if size + learned.len() > DECISIONS_LIMIT {
                cache.clear();
            }
            cache.entry(scope).or_default().extend(learned);
        }
        let mut verdicts = decided
            .into_iter()
            .map(|(_, allowed)| allowed == Some(true));
        list.retain(|_| verdicts.next().unwrap_or(false));
    }

    /// Records which target serves each bare name (`prefixMode: never`); a name served by several
    /// targets is marked ambiguous.
    fn record_bare_names(&self, kind: ListKind, t: usize, list: &mut [items::Item<'_>]) {
        let mut names = lock(&self.bare_names);
        for item in list {
            let Some(name) = item.name(kind) else {
                continue;
            };
            let entry = names
                .entry((kind as u8, name.to_string()))
                .or_insert(Some(t));
            if *entry != Some(t) {
                *entry = None;
            }
        }
    }

    fn is_ambiguous(&self, kind: ListKind, item: &mut items::Item<'_>) -> bool {
        let Some(name) = item.name(kind) else {
            return false;
        };
        let ambiguous = lock(&self.bare_names).get(&(kind as u8, name.to_string())) == Some(&None);
        if ambiguous {
            tracing::warn!(target: "portico::mux", name, "served by several targets under prefixMode: never; hidden");
        }
        ambiguous
    }

    /// Runs target `t`'s request guards over `value` (arguments); masks in place.
    fn guard_request(&self, t: usize, value: &mut Value) -> Option<ai::Denied> {
        let target = self.target(t);
        let guards = target.policies.ai.as_ref()?.policy.request.as_ref()?;
        if value.is_null() {
            return None;
        }
        guards.apply(value, ai::Scope::All).err()
    }

    /// Runs target `t`'s response guards over a result: masks it, or replaces it with the denial.
    fn guard_response(&self, t: usize, outcome: &mut Outcome) {
        let target = self.target(t);
        let Some(guards) = target
            .policies
            .ai
            .as_ref()
            .and_then(|ai| ai.policy.response.as_ref())
        else {
            return;
        };
        let Some(raw) = outcome.response.result_raw() else {
            return;
        };
        let Ok(mut result) = serde_json::from_str::<Value>(raw.get()) else {
            // Too deep to read is too deep to check: refused rather than let through unguarded.
            tracing::warn!(target: "portico::guard", target = %target.name, "a result the prompt guard cannot read was refused");
            outcome.response = Reply::error(
                outcome.response.id.clone(),
                code::INTERNAL_ERROR,
                format!(
                    "target {}: the reply could not be checked by the prompt guard",
                    target.name
                ),
            );
            return;
        };
        match guards.apply(&mut result, ai::Scope::Text) {
            Ok(false) => {}
            Ok(true) => {
                outcome.response = Reply::result(outcome.response.id.clone(), &result);
            }
            Err(denied) => {
                Metrics::count(&metrics().guard, &target.name, "response");
                tracing::warn!(target: "portico::guard", target = %target.name, rule = %denied.rule, "response refused by prompt guard");
                outcome.response =
                    Reply::error(outcome.response.id.clone(), ai::DENIED, denied.message);
                outcome.guard = Some(denied.rule);
            }
        }
    }

    fn refused_by_guard(&self, t: usize, id: Value, denied: ai::Denied, item: String) -> Outcome {
        let target = &self.target(t);
        Metrics::count(&metrics().guard, &target.name, "request");
        tracing::warn!(target: "portico::guard", target = %target.name, rule = %denied.rule, "request refused by prompt guard");
        Outcome {
            response: Reply::error(id, ai::DENIED, denied.message),
            target: Some(target.name.clone()),
            item: Some(item),
            authz: None,
            response_headers: None,
            guard: Some(denied.rule),
            protocol: protocol(target),
        }
    }

    /// Sends one request to target `t` under a fresh id and maps the response back to the client's id.
    async fn forward(
        self: &Arc<Self>,
        t: usize,
        mut request: Value,
        stream: &mpsc::Sender<String>,
    ) -> Outcome {
        let slot = self.slot(t);
        let config = slot.target.load_full();
        // Taken, not copied: the request goes out under the gateway's own id.
        let client_id = request
            .get_mut("id")
            .map(Value::take)
            .unwrap_or(Value::Null);
        let target = Some(config.name.clone());
        let refused = |response: Reply| Outcome {
            response,
            target: target.clone(),
            item: None,
            authz: None,
            response_headers: None,
            guard: None,
            protocol: protocol(&config),
        };
        let Some(upstream) = slot.upstream.load_full() else {
            let message = format!("target {} unavailable", config.name);
            return refused(Reply::error(client_id, code::INTERNAL_ERROR, message));
        };
        if let Some(limit) = &config.policies.rate_limit
            && let Err(wait) = limit.policy.take()
        {
            Metrics::count(&metrics().limits, &config.name, "rate_limit");
            return refused(rate_limited(client_id, &config.name, wait));
        }
        let started = std::time::Instant::now();
        let method = jsonrpc::method(&request).to_string();
        let tool = (method == "tools/call")
            .then(|| request["params"]["name"].as_str())
            .flatten()
            .unwrap_or_default()
            .to_string();
        let upstream_id = upstream.next_id();
        jsonrpc::set_id(&mut request, json!(upstream_id));
        let progress_token = request["params"]["_meta"].get("progressToken").cloned();
        let mut call = self.track(t, upstream_id, &client_id, stream, progress_token);
        let limit = config.policies.timeout.as_ref().map(|s| *s.policy);
        let span = traces::OpenSpan::client(&method);
        if let Some(span) = &span {
            carry_trace_context(&mut request, span.context());
        }
        let sending = upstream.request(request);
        let sending = async {
            match &span {
                Some(span) => traces::within(span.context(), sending).await,
                None => sending.await,
            }
        };
        let reply = tokio::select! {
            reply = within(limit, sending) => reply,
            _ = call.cancel.cancelled() => Err(CallError::Cancelled),
        };
        let response = settle(&mut call, &config.name, client_id, reply);
        drop(call);
        let error = response.error_code();
        if let Some(mut span) = span {
            span.rename(&method, &tool);
            span.attribute("mcp.method.name", &method);
            span.attribute("gen_ai.tool.name", &tool);
            span.attribute("portico.target", &config.name);
            span.attribute("network.transport", transport(&config));
            span.end(error);
        }
        self.record_call(t, &method, &tool, error, started.elapsed());
        let response_headers = config
            .policies
            .response_headers
            .as_ref()
            .filter(|s| s.level != Level::Route)
            .map(|s| s.policy.clone());
        Outcome {
            response_headers,
            ..refused(response)
        }
    }

    /// Records `mcp.client.operation.duration` for one call to target `t`.
    fn record_call(
        &self,
        t: usize,
        method: &str,
        tool: &str,
        error: Option<i64>,
        elapsed: Duration,
    ) {
        let target = &self.target(t);
        let transport = transport(target);
        let operation = Operation {
            route: "",
            method,
            target: &target.name,
            item: tool,
            error,
            version: self.protocol_version,
        };
        metrics().record_client_operation(&operation, transport, elapsed);
    }

    /// Records a request sent to target `t`; the returned [`Call`] forgets it when dropped.
    fn track(
        &self,
        t: usize,
        upstream_id: u64,
        client_id: &Value,
        stream: &mpsc::Sender<String>,
        progress_token: Option<Value>,
    ) -> Call<'_> {
        let cancel = CancellationToken::new();
        let mut inflight = lock(&self.inflight);
        inflight.seq += 1;
        let seq = inflight.seq;
        inflight.by_upstream.insert(
            (t, upstream_id),
            Pending {
                stream: stream.clone(),
                cancel: cancel.clone(),
                progress_token,
                seq,
            },
        );
        inflight
            .by_client
            .entry(id_key(client_id))
            .or_default()
            .push((t, upstream_id));
        Call {
            mux: self,
            t,
            upstream_id,
            client_id: client_id.clone(),
            cancel,
            stop_reason: "the client went away",
            unanswered: true,
        }
    }

    /// Tells target `t` to stop working on its request `upstream_id` (`notifications/cancelled`).
    fn cancel_at_target(&self, t: usize, upstream_id: u64, reason: &str) {
        let Some(upstream) = self.slot(t).upstream.load_full() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let message = jsonrpc::notification(
            "notifications/cancelled",
            json!({"requestId": upstream_id, "reason": reason}),
        );
        runtime.spawn(async move { upstream.notify(message).await });
    }

    fn untrack(&self, t: usize, upstream_id: u64, client_id: &Value) {
        let mut inflight = lock(&self.inflight);
        inflight.by_upstream.remove(&(t, upstream_id));
        let key = id_key(client_id);
        if let Some(list) = inflight.by_client.get_mut(&key) {
            list.retain(|entry| *entry != (t, upstream_id));
            if list.is_empty() {
                inflight.by_client.remove(&key);
            }
        }
    }

    /// A notification from the client.
    pub async fn client_notification(&self, mut message: Value) {
        match jsonrpc::method(&message) {
            // Portico completed the handshake with each target itself.
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let key = id_key(&message["params"]["requestId"]);
                let owners = {
                    let inflight = lock(&self.inflight);
                    let owners = inflight.by_client.get(&key).cloned().unwrap_or_default();
                    for owner in &owners {
                        if let Some(pending) = inflight.by_upstream.get(owner) {
                            pending.cancel.cancel();
                        }
                    }
                    owners
                };
                for (t, upstream_id) in owners {
                    let Some(params) = jsonrpc::params_mut(&mut message) else {
                        return;
                    };
                    params.insert("requestId".to_string(), json!(upstream_id));
                    if let Some(upstream) = self.slot(t).upstream.load_full() {
                        let _ = upstream.notify(message.clone()).await;
                    }
                }
            }
            _ => {
                let upstreams: Vec<_> = self
                    .live()
                    .into_iter()
                    .filter_map(|t| self.slot(t).upstream.load_full())
                    .collect();
                join_all(upstreams.iter().map(|u| u.notify(message.clone()))).await;
            }
        }
    }

    /// The client's answer to a request a target sent; `false` when no target is waiting for it.
    pub async fn client_response(&self, mut message: Value) -> bool {
        let Some(gateway_id) = message["id"].as_u64() else {
            return false;
        };
        let Some((t, original_id)) = lock(&self.server_requests).remove(&gateway_id) else {
            return false;
        };
        jsonrpc::set_id(&mut message, original_id);
        if let Some(upstream) = self.slot(t).upstream.load_full()
            && let Err(e) = upstream.notify(message).await
        {
            tracing::warn!(target: "portico::mux", target = %self.target(t).name, error = %e,
                "could not deliver the client's answer");
        }
        true
    }

    // ---- targets → client ------------------------------------------------------------------------

    async fn target_closed(self: &Arc<Self>, t: usize, generation: u64, reason: &str) {
        let slot = self.slot(t);
        let target = slot.target.load_full();
        if slot.generation.load(Ordering::Relaxed) != generation || self.closed.is_cancelled() {
            return;
        }
        let Some(old) = slot.upstream.swap(None) else {
            return;
        };
        tracing::warn!(target: "portico::mux", target = %target.name, reason, "target connection lost");
        target.health.restarts.fetch_add(1, Ordering::Relaxed);
        target.health.failed(reason);
        old.close().await;
        if self.backend.load().failure_mode == FailureMode::FailClosed {
            self.close().await;
            return;
        }
        self.spawn_reconnect(t);
    }

    fn on_target_message(&self, t: usize, mut message: Value, related: Option<u64>) {
        match jsonrpc::kind(&message) {
            Kind::Request => {
                if jsonrpc::method(&message) == "ping" {
                    self.answer_target(t, jsonrpc::result(message["id"].clone(), json!({})));
                    return;
                }
                if jsonrpc::method(&message) == "sampling/createMessage"
                    && !self.shape_sampling(t, &mut message)
                {
                    return;
                }
                let original = message["id"].clone();
                if let Err(refusal) = self.hold_server_request(t, &original) {
                    self.answer_target(t, jsonrpc::error(original, code::INTERNAL_ERROR, refusal));
                    return;
                }
                let gateway_id = self.next_server_request.fetch_add(1, Ordering::Relaxed);
                jsonrpc::set_id(&mut message, json!(gateway_id));
                lock(&self.server_requests).insert(gateway_id, (t, original));
                self.expire_later(gateway_id);
                self.deliver(t, related, message);
            }
            Kind::Notification => {
                match jsonrpc::method(&message) {
                    "notifications/resources/updated" if self.backend.load().prefixed => {
                        if let Some(params) = message.get_mut("params") {
                            naming::prefix_item(params, ListKind::Resources, &self.target(t).name);
                        }
                    }
                    "notifications/cancelled" => {
                        let original = &message["params"]["requestId"];
                        let gateway_id = lock(&self.server_requests)
                            .iter()
                            .find(|(_, (target, id))| *target == t && id == original)
                            .map(|(gid, _)| *gid);
                        let (Some(gateway_id), Some(params)) =
                            (gateway_id, jsonrpc::params_mut(&mut message))
                        else {
                            return;
                        };
                        params.insert("requestId".to_string(), json!(gateway_id));
                    }
                    _ => {}
                }
                self.deliver(t, related, message);
            }
            Kind::Response | Kind::Invalid => {}
        }
    }

    /// Makes room for one more request to the client: expired ones are answered to their targets and
    /// forgotten; `Err` says why the new one cannot be sent.
    fn hold_server_request(&self, t: usize, id: &Value) -> Result<(), String> {
        let cap = self.limits.pending_client_requests_per_session;
        if lock(&self.server_requests).len() < cap {
            return Ok(());
        }
        tracing::warn!(target: "portico::mux", target = %self.target(t).name, %id, cap,
            "request to the client refused: too many unanswered (config.limits.pendingClientRequestsPerSession)");
        Err(format!(
            "the client has {cap} unanswered requests (config.limits.pendingClientRequestsPerSession); try again later"
        ))
    }

    /// Forgets request `gateway_id` to the client if it is still unanswered after
    /// `pendingClientRequestTimeout`, and answers its target with an error.
    fn expire_later(&self, gateway_id: u64) {
        let (mux, after) = (self.me.clone(), self.limits.pending_client_request_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(mux) = mux.upgrade() else { return };
            let Some((t, original)) = lock(&mux.server_requests).remove(&gateway_id) else {
                return;
            };
            tracing::warn!(target: "portico::mux", target = %mux.target(t).name, id = %original,
                "the client did not answer a request of the target in time (config.limits.pendingClientRequestTimeout)");
            let message = format!(
                "the client did not answer within {after:?} (config.limits.pendingClientRequestTimeout)"
            );
            mux.answer_target(t, jsonrpc::error(original, code::INTERNAL_ERROR, message));
        });
    }

    /// Sends target `t` a response to one of its own requests.
    fn answer_target(&self, t: usize, response: Value) {
        if let Some(upstream) = self.slot(t).upstream.load_full() {
            tokio::spawn(async move { upstream.notify(response).await });
        }
    }

    /// Applies target `t`'s `ai` policy to a `sampling/createMessage` it sends: the request guards
    /// over its messages (a denial is answered to the target, and the client never sees the request),
    /// then defaults, overrides and model aliases. `false` when the request was refused.
    fn shape_sampling(&self, t: usize, message: &mut Value) -> bool {
        let target = &self.target(t);
        let Some(ai) = target.policies.ai.as_ref().map(|s| &s.policy) else {
            return true;
        };
        let Some(params) = message.get_mut("params") else {
            return true;
        };
        if let Some(guards) = &ai.request
            && let Err(denied) = guards.apply(params, ai::Scope::Text)
        {
            Metrics::count(&metrics().guard, &target.name, "sampling");
            tracing::warn!(target: "portico::guard", target = %target.name, method = "sampling/createMessage", rule = %denied.rule, "sampling request refused by prompt guard");
            let refusal = jsonrpc::error(message["id"].clone(), ai::DENIED, denied.message);
            self.answer_target(t, refusal);
            return false;
        }
        if let Some(sampling) = &ai.sampling {
            sampling.apply(params);
        }
        true
    }

    /// Sends a target's message on the stream of the request it belongs to, else on the GET stream.
    fn deliver(&self, t: usize, related: Option<u64>, message: Value) {
        let stream = {
            let inflight = lock(&self.inflight);
            let token = message["params"].get("progressToken");
            let by_related = related.and_then(|id| inflight.by_upstream.get(&(t, id)));
            let by_token = || {
                token.and_then(|token| {
                    inflight
                        .by_upstream
                        .iter()
                        .find(|((target, _), p)| {
                            *target == t && p.progress_token.as_ref() == Some(token)
                        })
                        .map(|(_, p)| p)
                })
            };
            let latest = || {
                inflight
                    .by_upstream
                    .iter()
                    .filter(|((target, _), _)| *target == t)
                    .max_by_key(|(_, p)| p.seq)
                    .map(|(_, p)| p)
            };
            by_related
                .or_else(by_token)
                .or_else(latest)
                .map(|p| p.stream.clone())
        };
        let message = message.to_string();
        let message = match stream {
            Some(stream) => match stream.try_send(message) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => message,
        };
        self.downlink.send(message);
    }
}

impl InboundHandler for Mux {
    fn message(&self, target: usize, message: Value, related: Option<u64>) {
        self.on_target_message(target, message, related);
    }

    fn closed(self: Arc<Self>, target: usize, generation: u64, reason: String) {
        tokio::spawn(async move { self.target_closed(target, generation, &reason).await });
    }
}

/// A request in flight at a target. However its wait ends (an answer, a timeout, or the client's
/// request being dropped because the client disconnected), dropping it frees the bookkeeping; if the
/// target never answered, the target is sent `notifications/cancelled`.
struct Call<'a> {
    mux: &'a Mux,
    t: usize,
    upstream_id: u64,
    client_id: Value,
    /// Fired when the client cancels the request.
    cancel: CancellationToken,
    /// What the target is told when it is cancelled.
    stop_reason: &'static str,
    unanswered: bool,
}

impl Call<'_> {
    /// The target answered (or was already told to stop): nothing to cancel.
    fn answered(&mut self) {
        self.unanswered = false;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.mux.untrack(self.t, self.upstream_id, &self.client_id);
        if self.unanswered && !self.mux.closed.is_cancelled() {
            self.mux
                .cancel_at_target(self.t, self.upstream_id, self.stop_reason);
        }
    }
}

fn is_stdio(target: &Target) -> bool {
    matches!(target.kind, crate::config::runtime::TargetKind::Stdio(_))
}

/// `network.transport` of a target: `pipe` for a stdio process, `tcp` for the rest.
fn transport(target: &Target) -> &'static str {
    match target.kind {
        crate::config::runtime::TargetKind::Stdio(_) => "pipe",
        _ => "tcp",
    }
}

/// Puts the call's trace context in `params._meta.traceparent`, as the MCP conventions carry it to
/// every kind of target. Only when tracing: otherwise the request goes out as the client sent it.
fn carry_trace_context(request: &mut Value, context: traces::Context) {
    let Some(params) = jsonrpc::params_mut(request) else {
        return;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(
            "traceparent".to_string(),
            Value::String(context.traceparent()),
        );
    }
}

/// Why a call to a target gave no answer.
enum CallError {
    Upstream(UpstreamError),
    Cancelled,
    Expired(Timeout),
}

/// The client's response to a call that ended with `reply`. Only a call the target did not finish
/// (a timeout) leaves `call` armed to cancel it at the target.
fn settle(
    call: &mut Call<'_>,
    target: &str,
    client_id: Value,
    reply: Result<Payload, CallError>,
) -> Reply {
    let failed = |e: UpstreamError| match e {
        UpstreamError::TooLarge(_) => {
            format!("target {target}: {e} (config.limits.upstreamResponse)")
        }
        e => format!("target {target}: {e}"),
    };
    match reply {
        Ok(payload) => {
            call.answered();
            Reply {
                id: client_id,
                payload,
            }
        }
        Err(CallError::Cancelled) => {
            // The client's own `notifications/cancelled` already reached the target.
            call.answered();
            let message = failed(UpstreamError::Cancelled);
            Reply::error(client_id, code::INTERNAL_ERROR, message)
        }
        Err(CallError::Expired(timeout)) => {
            call.stop_reason = "timeout";
            Metrics::count(&metrics().limits, target, "timeout");
            let message = timeout.expired(target);
            tracing::warn!(target: "portico::mux", target, error = %message, "upstream call timed out; target told to cancel");
            Reply::error(client_id, code::INTERNAL_ERROR, message)
        }
        Err(CallError::Upstream(e)) => {
            call.answered();
            tracing::warn!(target: "portico::mux", target, error = %e, "upstream call failed");
            Reply::error(client_id, code::INTERNAL_ERROR, failed(e))
        }
    }
}

/// `call`, bounded by the target's `timeout` policy if it has one.
async fn within(
    limit: Option<Timeout>,
    call: impl Future<Output = Result<Payload, UpstreamError>>,
) -> Result<Payload, CallError> {
    let Some(timeout) = limit else {
        return call.await.map_err(CallError::Upstream);
    };
    match tokio::time::timeout(timeout.limit, call).await {
        Ok(reply) => reply.map_err(CallError::Upstream),
        Err(_) => Err(CallError::Expired(timeout)),
    }
}

/// The error for a call refused by the target's `localRateLimit`: which target, and when to retry.
fn rate_limited(id: Value, target: &str, wait: Duration) -> Reply {
    let seconds = crate::policy::rate_limit::retry_after_secs(wait);
    let error = json!({
        "code": code::INTERNAL_ERROR,
        "message": format!("rate limit of target {target} reached (localRateLimit); retry in {seconds} s"),
        "data": {"target": target, "retryAfter": seconds},
    });
    Reply {
        id,
        payload: Payload::Error(
            serde_json::value::to_raw_value(&error).unwrap_or_else(|_| RawValue::NULL.to_owned()),
        ),
    }
}

/// An authorization decision and where it came from, for the access log.
struct Verdict {
    decision: Decision,
    level: Level,
    rule: Option<String>,
}

impl Verdict {
    fn describe(&self) -> String {
        let effect = if self.decision.allowed {
            "allow"
        } else {
            "deny"
        };
        match &self.rule {
            Some(rule) => format!("{effect} ({} rule `{rule}`)", self.level.name()),
            None => format!("{effect} ({} policy, no rule matched)", self.level.name()),
        }
    }
}

/// Whether a list request asks for the first page (so one page without a next cursor is the whole list).
fn pages_of_one(request: &Value) -> bool {
    request["params"]["cursor"].is_null()
}

/// `a2a` when the target's traffic is marked agent-to-agent (`a2a: {}` at any level), else `mcp`.
fn protocol(target: &Target) -> &'static str {
    match target.policies.a2a {
        Some(_) => "a2a",
        None => "mcp",
    }
}

fn unknown(id: Value, kind: ListKind, name: &str) -> Reply {
    Reply::error(
        id,
        code::INVALID_PARAMS,
        format!("Unknown {}: {name}", kind.noun()),
    )
}
