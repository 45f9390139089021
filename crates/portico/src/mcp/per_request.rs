//! The 2026-07-28 revision on the same endpoint as the session-based ones: no sessions, every request
//! carries its context (protocol version, client capabilities, client info) in `params._meta`,
//! `server/discover` instead of `initialize`, and a server's questions to the client returned as
//! `input_required` results that the client answers by calling again.
//!
//! Portico bridges: the requests of one context (route, caller, credentials, client info and
//! capabilities) share one session with the targets, in whichever revision each target speaks (a
//! session-based one, or this one: `upstream::http::per_request`), kept in the session table like any
//! other (idle expiry, limits, shutdown) under an id no client is given. `subscriptions/listen` hears
//! the list changes of the context's targets. When a target asks the client something during a call, the call is parked and
//! the client gets `input_required` with the question; its retry, carrying `inputResponses` and the
//! `requestState`, hands the answers to the target and resumes the same call.
// A refusal is a ready `Response`; it is built at most once per refused request, never on the happy path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::config::runtime::Route;
use crate::gateway::Gateway;
use crate::mcp::handling::{Admitted, Kept, Post, handle_request, start_session};
use crate::mcp::header_names::VERSION_HEADER;
use crate::mcp::jsonrpc::{self, Kind, code};
use crate::mcp::message::Message;
use crate::mcp::multiplex::{STREAM_CAPACITY, SUPPORTED_VERSIONS};
use crate::mcp::respond::{
    Body, TargetHeaders, empty, header, json_response, json_text_response, sse_body, sse_response,
};
use crate::mcp::session::{self, Owner, Session};

use crate::mcp::revision_2026::{
    META_CAPABILITIES, META_CLIENT_INFO, META_SERVER_INFO, META_VERSION, METHOD_HEADER,
    NAME_HEADER, REVISION,
};

const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Where the ids of per-request sessions begin; no sealed session id does (base64url has no `~`).
const CONTEXT_ID_PREFIX: char = '~';

/// The methods of the revision Portico serves; any other is not found (404, `-32601`), among them
/// those the revision removed (`initialize`, `ping`, `logging/setLevel`, `resources/subscribe`, …).
const SERVED: [&str; 8] = [
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "completion/complete",
];

/// Results clients may cache, which must therefore say for how long and for whom.
const CACHEABLE: [&str; 5] = [
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Every version Portico speaks, oldest first: what `server/discover` advertises.
pub fn all_versions() -> Vec<&'static str> {
    let mut versions = SUPPORTED_VERSIONS.to_vec();
    versions.push(REVISION);
    versions
}

/// Whether a POST without `Mcp-Session-Id` speaks the per-request revision: it says so in its
/// header or its `_meta`, or it is `server/discover`.
pub fn applies(headers: &HeaderMap, message: &Message) -> bool {
    header(headers, VERSION_HEADER) == Some(REVISION)
        || message
            .meta()
            .is_some_and(|meta| meta.get(META_VERSION).is_some())
        || message.method() == "server/discover"
}

/// Whether `id` names a per-request context's session (never valid as a client's session id).
pub fn is_context_id(id: &str) -> bool {
    id.starts_with(CONTEXT_ID_PREFIX)
}

/// Serves a POST of the per-request revision.
pub(crate) async fn post(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: Value,
    kind: Kind,
    request: Post<'_>,
    claims: Value,
) -> Response<Body> {
    if kind != Kind::Request {
        // Nothing of the client's outside a request reaches a target in this revision: a
        // cancellation is the client closing its stream.
        return empty(StatusCode::ACCEPTED);
    }
    let id = message["id"].clone();
    if let Err(refused) = check(request.headers, &message) {
        return refused;
    }
    let method = jsonrpc::method(&message);
    // A stateless route keeps no context between requests: nothing to listen on.
    let listens = !route.is_stateless();
    let listening = method == "subscriptions/listen" && listens;
    if method != "server/discover" && !listening && !SERVED.contains(&method) {
        let text = format!("method `{method}` not found (protocol revision {REVISION})");
        return error_response(StatusCode::NOT_FOUND, id, code::METHOD_NOT_FOUND, text);
    }
    if let Some(state) = message["params"]["requestState"].as_str() {
        return resume(gateway, route, &session::owner(&claims), state, &message).await;
    }
    let token = request.headers.get(http::header::AUTHORIZATION);
    let session = match context_session(gateway, route, &message, &claims, token).await {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    if method == "server/discover" {
        tracing::info!(target: "portico::access", route = %route.name, session = %session.tag, method, "mcp request");
        return json_response(
            StatusCode::OK,
            &jsonrpc::result(id, discover(&session, listens)),
        );
    }
    if listening {
        tracing::info!(target: "portico::access", route = %route.name, session = %session.tag, method, "mcp request");
        return listen(&session, id, &message["params"]["notifications"]);
    }
    let admitted = match request.admit(&session, claims, &id) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let flight = Flight::launch(route, session, message, admitted);
    answer(gateway, flight, id).await
}

/// The revision's checks, in its order: the `_meta` context (`-32602`), the headers against the body
/// (`-32020`), then the version (`-32022`); each refused with HTTP 400.
fn check(headers: &HeaderMap, message: &Value) -> Result<(), Response<Body>> {
    let id = message["id"].clone();
    let bad =
        |code: i64, text: String| error_response(StatusCode::BAD_REQUEST, id.clone(), code, text);
    let Some(meta) = message["params"]["_meta"].as_object() else {
        return Err(bad(
            code::INVALID_PARAMS,
            format!(
                "params._meta must be an object with `{META_VERSION}` and `{META_CAPABILITIES}` (protocol revision {REVISION})"
            ),
        ));
    };
    let missing: Vec<&str> = [META_VERSION, META_CAPABILITIES]
        .into_iter()
        .filter(|key| !meta.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        return Err(bad(
            code::INVALID_PARAMS,
            format!("params._meta is missing {}", missing.join(" and ")),
        ));
    }
    let Some(version) = meta[META_VERSION].as_str() else {
        return Err(bad(
            code::INVALID_PARAMS,
            format!("params._meta.{META_VERSION} must be a string"),
        ));
    };
    if header(headers, VERSION_HEADER) != Some(version) {
        return Err(bad(
            code::HEADER_MISMATCH,
            format!(
                "the MCP-Protocol-Version header must equal params._meta.{META_VERSION} (`{version}`)"
            ),
        ));
    }
    let method = jsonrpc::method(message);
    if header(headers, METHOD_HEADER).map(str::trim) != Some(method) {
        return Err(bad(
            code::HEADER_MISMATCH,
            format!("the Mcp-Method header must equal the request's method (`{method}`)"),
        ));
    }
    if let Some(named) = named_item(message)
        && header(headers, NAME_HEADER)
            .and_then(decode_header_value)
            .as_deref()
            != Some(named)
    {
        return Err(bad(
            code::HEADER_MISMATCH,
            format!("the Mcp-Name header must equal the item the request names (`{named}`)"),
        ));
    }
    if version != REVISION {
        let mut refusal = jsonrpc::error(
            id.clone(),
            code::UNSUPPORTED_PROTOCOL_VERSION,
            format!(
                "unsupported protocol version `{version}`; supported: {}",
                all_versions().join(", ")
            ),
        );
        refusal["error"]["data"] = json!({"supported": all_versions(), "requested": version});
        return Err(json_response(StatusCode::BAD_REQUEST, &refusal));
    }
    Ok(())
}

/// The tool, prompt or resource a request names, which its `Mcp-Name` header repeats.
fn named_item(message: &Value) -> Option<&str> {
    let key = match jsonrpc::method(message) {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    message["params"][key].as_str()
}

/// A header value as the revision encodes it: `=?base64?…?=` for values a header cannot carry,
/// else the value itself; surrounding whitespace is not part of it (RFC 9110 §5.5).
fn decode_header_value(value: &str) -> Option<String> {
    let value = value.trim();
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(value.to_string()),
    }
}

fn error_response(status: StatusCode, id: Value, code: i64, text: String) -> Response<Body> {
    json_response(status, &jsonrpc::error(id, code, text))
}

/// A process-wide random salt: context ids cannot be computed outside this process.
fn salt() -> &'static [u8; 32] {
    static SALT: OnceLock<[u8; 32]> = OnceLock::new();
    SALT.get_or_init(|| {
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        salt
    })
}

/// The id of the session the requests of one context share: a salted digest of the route, the
/// caller, the credentials the targets may be given and the client's declared info and capabilities.
fn context_id(
    route: &str,
    owner: &Owner,
    token: Option<&HeaderValue>,
    meta: &Map<String, Value>,
) -> String {
    let mut digest = digest::Context::new(&digest::SHA256);
    digest.update(salt());
    let info = meta
        .get(META_CLIENT_INFO)
        .map(Value::to_string)
        .unwrap_or_default();
    let capabilities = meta[META_CAPABILITIES].to_string();
    let parts: [&[u8]; 5] = [
        route.as_bytes(),
        owner.as_deref().unwrap_or_default().as_bytes(),
        token.map(HeaderValue::as_bytes).unwrap_or_default(),
        info.as_bytes(),
        capabilities.as_bytes(),
    ];
    for part in parts {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    format!(
        "{CONTEXT_ID_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(digest.finish())
    )
}

/// The session serving the request's context, started (its targets initialized with the client's
/// info and capabilities) if there is none yet. A `statefulMode: stateless` route shares nothing:
/// each request gets a session of its own.
async fn context_session(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: &Value,
    claims: &Value,
    token: Option<&HeaderValue>,
) -> Result<Arc<Session>, Response<Body>> {
    let meta = message["params"]["_meta"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let client_info = meta
        .get(META_CLIENT_INFO)
        .cloned()
        .unwrap_or_else(|| json!({"name": "unnamed 2026-07-28 client", "version": "0"}));
    let initialize = Message::Parsed(
        json!({"jsonrpc": "2.0", "id": message["id"], "method": "initialize", "params": {
            "protocolVersion": SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
            "capabilities": meta[META_CAPABILITIES],
            "clientInfo": client_info,
        }}),
    );
    let detached = token.map(crate::base::http::detached);
    if route.is_stateless() {
        return start(
            gateway,
            route,
            initialize,
            claims,
            detached,
            Kept::ForRequest,
        )
        .await;
    }
    let id = context_id(&route.name, &session::owner(claims), token, &meta);
    if let Some(session) = gateway.sessions.get(&id) {
        return Ok(session);
    }
    let _starting = gateway.sessions.resuming(&id).await;
    if let Some(session) = gateway.sessions.get(&id) {
        return Ok(session);
    }
    let session = start(
        gateway,
        route,
        initialize,
        claims,
        detached,
        Kept::PerRequest(&id),
    )
    .await?;
    session.mux.listen_to_targets();
    Ok(session)
}

async fn start(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    initialize: Message,
    claims: &Value,
    token: Option<HeaderValue>,
    kept: Kept<'_>,
) -> Result<Arc<Session>, Response<Body>> {
    start_session(gateway, route, &initialize, claims, token, kept)
        .await
        .map(|(session, _)| session)
        .map_err(|not_started| not_started.into_response(initialize.id()))
}

/// The `server/discover` result: what `initialize` would answer, in the revision's form. List
/// changes are offered when `subscriptions/listen` is (`listens`: not on a stateless route);
/// resource subscriptions are not.
fn discover(session: &Session, listens: bool) -> Value {
    let initialized: Value =
        serde_json::from_str(&session.mux.initialize_result()).unwrap_or_default();
    let mut capabilities = initialized["capabilities"].clone();
    if let Some(capabilities) = capabilities.as_object_mut() {
        for kind in ["tools", "prompts", "resources"] {
            if let Some(capability) = capabilities.get_mut(kind).and_then(Value::as_object_mut) {
                if !listens {
                    capability.remove("listChanged");
                }
                capability.remove("subscribe");
            }
        }
    }
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": all_versions(),
        "capabilities": capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {META_SERVER_INFO: initialized["serverInfo"]},
    });
    if let Some(instructions) = initialized.get("instructions") {
        result["instructions"] = instructions.clone();
    }
    result
}

/// The list changes a `subscriptions/listen` stream may ask for: (filter key, notification).
const LIST_CHANGES: [(&str, &str); 3] = [
    ("toolsListChanged", "notifications/tools/list_changed"),
    ("promptsListChanged", "notifications/prompts/list_changed"),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
    ),
];
const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// `subscriptions/listen`: a stream of the list changes the client asked for (`requested`), from any
/// of the context's targets, each tagged with the subscription's id (the request's); first the
/// acknowledgement of what is served (list changes, not resource subscriptions). The context's latest
/// listen stream is the one that hears.
fn listen(session: &Session, id: Value, requested: &Value) -> Response<Body> {
    let mut accepted = Map::new();
    for (key, _) in LIST_CHANGES {
        if requested[key] == true {
            accepted.insert(key.into(), json!(true));
        }
    }
    let wanted: Vec<&'static str> = LIST_CHANGES
        .iter()
        .filter(|(key, _)| accepted.contains_key(*key))
        .map(|(_, method)| *method)
        .collect();
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        json!({"notifications": accepted, "_meta": {META_SUBSCRIPTION_ID: id}}),
    );
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    session.mux.attach_stream(tx, None);
    let changes =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|(_, m)| (m, rx)) },
        )
        .filter_map(move |message| {
            let tagged = tag_list_change(&message, &wanted, &id);
            async move { tagged }
        });
    let stream = futures::stream::once(async move { ack.to_string() }).chain(changes);
    sse_response(sse_body(stream.boxed()))
}

/// `message` tagged with the subscription `id`, if it is one of the `wanted` list changes.
fn tag_list_change(message: &str, wanted: &[&str], id: &Value) -> Option<String> {
    let mut message: Value = serde_json::from_str(message).ok()?;
    if !wanted.contains(&jsonrpc::method(&message)) {
        return None;
    }
    if !message["params"].is_object() {
        message["params"] = json!({});
    }
    message["params"]["_meta"][META_SUBSCRIPTION_ID] = id.clone();
    Some(message.to_string())
}

/// The code the session-based revisions give an unknown resource; 2026-07-28 uses `-32602`.
const RESOURCE_NOT_FOUND: i64 = -32002;

/// How a final response reaches the client: its result said complete, and cacheable results say
/// for how long (not at all: the lists depend on the caller's authorization and on targets that
/// may change) and for whom (this caller); an unknown resource in the revision's terms.
fn finish(response: &str, id: &Value, method: &str, uri: &Value) -> String {
    let Ok(mut response) = serde_json::from_str::<Value>(response) else {
        return response.to_string();
    };
    jsonrpc::set_id(&mut response, id.clone());
    if let Some(error) = response.get_mut("error").and_then(Value::as_object_mut)
        && method == "resources/read"
        && error.get("code").and_then(Value::as_i64) == Some(RESOURCE_NOT_FOUND)
    {
        error.insert("code".into(), json!(code::INVALID_PARAMS));
        error.entry("data").or_insert_with(|| json!({ "uri": uri }));
    }
    if let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| json!("complete"));
        if CACHEABLE.contains(&method) {
            result.entry("ttlMs").or_insert_with(|| json!(0));
            result
                .entry("cacheScope")
                .or_insert_with(|| json!("private"));
        }
    }
    response.to_string()
}

/// Log levels in order of severity (RFC 5424, as MCP names them).
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

fn severity(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

/// A call in progress: the task handling it, the messages it sends the client, its final response.
struct Flight {
    session: Arc<Session>,
    method: String,
    /// The resource a `resources/read` names.
    uri: Value,
    messages: mpsc::Receiver<String>,
    done: oneshot::Receiver<(String, Option<TargetHeaders>)>,
    task: tokio::task::AbortHandle,
    /// `notifications/message` below this severity are not sent; none are without a level.
    log_level: Option<usize>,
    /// The target's questions the client has not answered yet: client-side id → `{method, params}`.
    asked: Map<String, Value>,
}

impl Drop for Flight {
    /// A call nobody waits for any more (the client went away, or never came back with its
    /// answers) is cancelled: the target is told.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the client hears next of a call.
enum Step {
    Message(String),
    Ask,
    Done(String, Option<TargetHeaders>),
}

impl Flight {
    fn launch(
        route: &Arc<Route>,
        session: Arc<Session>,
        message: Value,
        admitted: Admitted,
    ) -> Self {
        let method = jsonrpc::method(&message).to_string();
        let uri = message["params"]["uri"].clone();
        let log_level = message["params"]["_meta"][META_LOG_LEVEL]
            .as_str()
            .and_then(severity);
        let (tx, messages) = mpsc::channel(STREAM_CAPACITY);
        let (finished, done) = oneshot::channel();
        let (route, handled_session) = (route.clone(), session.clone());
        let task = tokio::spawn(async move {
            let outcome = Box::pin(handle_request(
                &route,
                &handled_session,
                for_session(message).into(),
                &tx,
                admitted.caller.as_ref(),
                admitted.sub.as_deref(),
                admitted.parent,
            ))
            .await;
            drop(admitted.slot);
            let headers = outcome.response_headers.map(TargetHeaders);
            let _ = finished.send((outcome.response.to_json(), headers));
        });
        Self {
            session,
            method,
            uri,
            messages,
            done,
            task: task.abort_handle(),
            log_level,
            asked: Map::new(),
        }
    }

    async fn next(&mut self) -> Step {
        loop {
            tokio::select! {
                biased;
                Some(message) = self.messages.recv() => {
                    if let Some(step) = self.sort(message) {
                        return step;
                    }
                }
                done = &mut self.done => {
                    return match done {
                        Ok((response, headers)) => Step::Done(response, headers),
                        Err(_) => Step::Done(
                            jsonrpc::error(Value::Null, code::INTERNAL_ERROR, "the call ended without a response").to_string(),
                            None,
                        ),
                    };
                }
            }
        }
    }

    /// A message the target sent during the call: a question for the client (parks the call),
    /// a notification to pass on, or a log message below the level the client asked for.
    fn sort(&mut self, text: String) -> Option<Step> {
        let message: Value = serde_json::from_str(&text).ok()?;
        match jsonrpc::kind(&message) {
            Kind::Request => {
                let key = match &message["id"] {
                    Value::String(id) => id.clone(),
                    other => other.to_string(),
                };
                let question = json!({"method": message["method"], "params": message["params"]});
                self.asked.insert(key, question);
                Some(Step::Ask)
            }
            Kind::Notification if jsonrpc::method(&message) == "notifications/message" => {
                let level = message["params"]["level"].as_str().and_then(severity)?;
                (level >= self.log_level?).then_some(Step::Message(text))
            }
            _ => Some(Step::Message(text)),
        }
    }

    /// Hands the client's `inputResponses` to the targets that asked; the questions left unanswered
    /// stay asked.
    async fn deliver(&mut self, responses: &Map<String, Value>) {
        for (key, response) in responses {
            if self.asked.remove(key).is_none() {
                continue;
            }
            let answer = json!({"jsonrpc": "2.0", "id": key, "result": response});
            self.session.mux.client_response(answer).await;
        }
    }
}

/// The request as a session-based target takes it: the context is the session's (a target that also
/// speaks 2026-07-28 would otherwise take `_meta`'s version for its own and refuse the request),
/// and the retry fields are Portico's business.
fn for_session(mut message: Value) -> Value {
    let Some(params) = jsonrpc::params_mut(&mut message) else {
        return message;
    };
    params.remove("inputResponses");
    params.remove("requestState");
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        for key in [
            META_VERSION,
            META_CAPABILITIES,
            META_CLIENT_INFO,
            META_LOG_LEVEL,
        ] {
            meta.remove(key);
        }
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    message
}

/// Calls waiting for their clients' answers, by `requestState`.
#[derive(Default)]
pub struct Parked(Mutex<HashMap<String, Flight>>);

impl Parked {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `flight` until the client calls again, at most `wait`; returns its `requestState`.
    fn park(self: &Arc<Self>, flight: Flight, wait: Duration) -> String {
        let state = session::new_session_id();
        self.lock().insert(state.clone(), flight);
        let (parked, key) = (Arc::downgrade(self), state.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(parked) = parked.upgrade() {
                let expired = parked.lock().remove(&key);
                drop(expired);
            }
        });
        state
    }

    fn take(&self, state: &str) -> Option<Flight> {
        self.lock().remove(state)
    }

    /// Drops every parked call (on shutdown): their targets are told.
    pub fn clear(&self) {
        let all: Vec<Flight> = self.lock().drain().map(|(_, f)| f).collect();
        drop(all);
    }
}

/// A retry of a parked call: the answers go to the targets, and the call goes on.
async fn resume(
    gateway: &Arc<Gateway>,
    route: &Route,
    owner: &Owner,
    state: &str,
    message: &Value,
) -> Response<Body> {
    let id = message["id"].clone();
    let flight = gateway.parked.take(state).filter(|f| {
        *f.session.route == *route.name
            && f.session.owner == *owner
            && f.method == jsonrpc::method(message)
    });
    let Some(mut flight) = flight else {
        let text = "unknown or expired requestState: make the request again without it".to_string();
        return error_response(StatusCode::OK, id, code::INVALID_PARAMS, text);
    };
    if let Some(responses) = message["params"]["inputResponses"].as_object() {
        flight.deliver(responses).await;
    }
    if !flight.asked.is_empty() {
        let reply = input_required(gateway, flight, &id);
        return json_text_response(StatusCode::OK, reply);
    }
    answer(gateway, flight, id).await
}

/// The `input_required` result that parks `flight`, as the response to request `id`.
fn input_required(gateway: &Arc<Gateway>, flight: Flight, id: &Value) -> String {
    let questions = Value::Object(flight.asked.clone());
    let wait = gateway.limits.settings.pending_client_request_timeout;
    let state = gateway.parked.park(flight, wait);
    let result =
        json!({"resultType": "input_required", "inputRequests": questions, "requestState": state});
    jsonrpc::result(id.clone(), result).to_string()
}

/// The HTTP response to request `id` carrying `flight` on: plain JSON when its end (or a question)
/// comes before anything else, else an SSE stream of its messages ending with it.
async fn answer(gateway: &Arc<Gateway>, mut flight: Flight, id: Value) -> Response<Body> {
    let first = match flight.next().await {
        Step::Done(response, headers) => {
            let mut reply = json_text_response(
                StatusCode::OK,
                finish(&response, &id, &flight.method, &flight.uri),
            );
            if let Some(headers) = headers {
                reply.extensions_mut().insert(headers);
            }
            return reply;
        }
        Step::Ask => {
            return json_text_response(StatusCode::OK, input_required(gateway, flight, &id));
        }
        Step::Message(message) => message,
    };
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    let gateway = gateway.clone();
    tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            let step = tokio::select! {
                step = flight.next() => step,
                // The client went away: dropping the flight cancels the call.
                _ = tx.closed() => return,
            };
            let last = match step {
                Step::Message(message) => {
                    if tx.send(message).await.is_err() {
                        return;
                    }
                    continue;
                }
                Step::Done(response, _) => finish(&response, &id, &flight.method, &flight.uri),
                Step::Ask => input_required(&gateway, flight, &id),
            };
            let _ = tx.send(last).await;
            return;
        }
    });
    let messages =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    sse_response(sse_body(messages.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_decode_as_the_revision_encodes_them() {
        assert_eq!(decode_header_value("  echo ").as_deref(), Some("echo"));
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8=?=").as_deref(),
            Some("Hello")
        );
        assert_eq!(decode_header_value("=?base64?SGVs!!!bG8=?="), None);
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8=").as_deref(),
            Some("=?base64?SGVsbG8=")
        );
    }

    #[test]
    fn context_ids_differ_by_caller_and_capabilities() {
        let meta = |caps: Value| {
            let mut meta = Map::new();
            meta.insert(META_CAPABILITIES.into(), caps);
            meta
        };
        let alice: Owner = Some("iss\0alice".into());
        let a = context_id("r", &alice, None, &meta(json!({})));
        assert!(is_context_id(&a));
        assert_eq!(a, context_id("r", &alice, None, &meta(json!({}))));
        assert_ne!(a, context_id("r", &None, None, &meta(json!({}))));
        assert_ne!(
            a,
            context_id("r", &alice, None, &meta(json!({"sampling": {}})))
        );
        assert_ne!(a, context_id("other", &alice, None, &meta(json!({}))));
    }

    #[test]
    fn results_say_they_are_complete_and_how_to_cache_them() {
        let listed = finish(
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
            &json!(7),
            "tools/list",
            &Value::Null,
        );
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed["id"], 7);
        assert_eq!(listed["result"]["resultType"], "complete");
        assert_eq!(listed["result"]["ttlMs"], 0);
        assert_eq!(listed["result"]["cacheScope"], "private");
        let called = finish(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#,
            &json!(7),
            "tools/call",
            &Value::Null,
        );
        let called: Value = serde_json::from_str(&called).unwrap();
        assert!(called["result"].get("ttlMs").is_none());
    }
}
