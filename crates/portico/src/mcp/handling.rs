//! The phases of one MCP request that both client transports share, in the order they run:
//! authentication, the body, the route's rate limit, starting a session, handling a request in it
//! (trace span, multiplexer, access log and metrics).
// A refusal is a ready `Response`; it is built at most once per refused request, never on the happy path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::runtime::Route;
use crate::gateway::Gateway;
use crate::limits::Exceeded;
use crate::mcp::jsonrpc::{self, code};
use crate::mcp::message::Message;
use crate::mcp::multiplex::{Mux, Outcome, negotiate_version};
use crate::mcp::respond::{Body, header, json_response, over_limit, refuse};
use crate::mcp::session::{self, Session};
use crate::mcp::session_token::{SessionKeys, Ticket};
use crate::policy::authz::Caller;
use crate::policy::jwt::Rejection;
use crate::policy::mcp_authn::McpAuthentication;
use crate::telemetry::{metrics, traces};

/// `scheme://host[:port]` that URLs written for this request's client start with
/// ([`crate::config::runtime::PublicOrigin`]).
pub fn base_url(route: &Route, headers: &HeaderMap) -> String {
    route.origin.resolve(header(headers, HOST))
}

/// Validates the bearer token when the route has `mcpAuthentication` or `jwtAuth`: `Ok(claims)`
/// (`Null` when anonymous), or the 401 to answer.
pub(crate) async fn authenticate(
    route: &Route,
    headers: &HeaderMap,
) -> Result<Value, Response<Body>> {
    let (validator, metadata) = match (&route.authentication, &route.jwt) {
        (Some(authn), _) => (
            &*authn.jwt,
            Some(McpAuthentication::metadata_url(
                &base_url(route, headers),
                &route.resource_path,
            )),
        ),
        (None, Some(jwt)) => (&*jwt.policy, None),
        (None, None) => return Ok(Value::Null),
    };
    validator.authenticate(headers).await.map_err(|rejection| {
        tracing::info!(target: "portico::access", route = %route.name, reason = %rejection, "request refused: authentication");
        let mut params = Vec::new();
        if let Some(url) = metadata {
            params.push(format!("resource_metadata=\"{url}\""));
        }
        if rejection != Rejection::Missing {
            params.push("error=\"invalid_token\"".to_string());
            params.push(format!("error_description=\"{rejection}\""));
        }
        let challenge = if params.is_empty() { "Bearer".to_string() } else { format!("Bearer {}", params.join(", ")) };
        let mut response = refuse(StatusCode::UNAUTHORIZED, code::INVALID_REQUEST, rejection.to_string());
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
        }
        response
    })
}

/// How long a client may take to send a request body: a slow sender holds a connection and a buffer.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn read_body(
    gateway: &Gateway,
    body: Incoming,
) -> Result<Message, Response<Body>> {
    // Copied out, so the config is not held while the body arrives.
    let (limit, max_depth) = {
        let config = gateway.config.load();
        (
            config.settings.max_body_bytes,
            config.settings.max_json_depth,
        )
    };
    // A declared length over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            format!("request body exceeds {limit} bytes (config.limits.requestBody)"),
        ));
    }
    let Ok(read) =
        tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await
    else {
        return Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            code::INVALID_REQUEST,
            format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
        ));
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::INVALID_REQUEST,
                format!("request body exceeds {limit} bytes (config.limits.requestBody)"),
            ));
        }
        Err(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                code::PARSE_ERROR,
                "could not read the request body",
            ));
        }
    };
    if jsonrpc::nesting_depth(&body) > max_depth {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            format!("JSON nests deeper than {max_depth} levels (config.limits.jsonDepth)"),
        ));
    }
    Message::read(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            code::PARSE_ERROR,
            format!("Parse error: {e}"),
        )
    })
}

/// HTTP 429 when the route's `localRateLimit` has no token for one more request.
pub(crate) fn over_rate_limit(route: &Route) -> Option<Response<Body>> {
    let wait = route.rate_limit.as_ref()?.take().err()?;
    let seconds = crate::policy::rate_limit::retry_after_secs(wait);
    metrics::Metrics::count(&metrics::metrics().limits, &route.name, "route_rate_limit");
    tracing::info!(target: "portico::access", route = %route.name, retry_after = seconds, "request refused: route rate limit (localRateLimit)");
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        code::INVALID_REQUEST,
        format!(
            "rate limit of route {} reached (localRateLimit); retry in {seconds} s",
            route.name
        ),
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    Some(response)
}

/// The caller's `sub` claim, for the access log.
pub(crate) fn subject(claims: &Value) -> Option<String> {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Why no session was started: the JSON-RPC error to answer, and the limit if one was reached.
pub(crate) struct NotStarted {
    pub error: Value,
    pub over: Option<Exceeded>,
}

impl From<Value> for NotStarted {
    fn from(error: Value) -> Self {
        Self { error, over: None }
    }
}

impl NotStarted {
    /// The answer to the request `id` that needed the session: 503 naming the limit reached, else
    /// the JSON-RPC error (HTTP 200).
    pub(crate) fn into_response(self, id: &Value) -> Response<Body> {
        match self.over {
            Some(over) => over_limit(id.clone(), over),
            None => {
                let mut error = self.error;
                error["id"] = id.clone();
                json_response(http::StatusCode::OK, &error)
            }
        }
    }
}

/// Where a started session is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept<'a> {
    /// In the session table, under the id the client gets.
    InTable,
    /// Nowhere: a stateless route's `initialize`, answered and closed.
    ForInitialize,
    /// Nowhere: the session of one request on a stateless route (not logged as an `initialize`).
    ForRequest,
    /// In the session table under this id, which no client gets: the session of the 2026-07-28
    /// requests of one context ([`crate::mcp::per_request`]; not logged as an `initialize`).
    PerRequest(&'a str),
}

/// Starts a session on `route` from the client's `initialize` (either transport) and logs it:
/// the session and the `initialize` reply, or the JSON-RPC error to answer. The session belongs to
/// the caller whose `claims` (`Null` when anonymous) made it.
pub(crate) async fn start_session(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: &Message,
    claims: &Value,
    token: Option<HeaderValue>,
    kept: Kept<'_>,
) -> Result<(Arc<Session>, String), NotStarted> {
    let sub = subject(claims);
    let version = negotiate_version(message.protocol_version());
    let mut served = Served {
        route,
        session: "-",
        method: "initialize",
        version,
        sub: sub.as_deref(),
        started: Instant::now(),
    };
    let log = |served: &Served, code: Option<i64>| {
        if matches!(kept, Kept::InTable | Kept::ForInitialize) {
            served.log(None, code);
        }
    };
    let init = match message.initialize() {
        Ok(init) => init,
        Err(invalid) => {
            log(&served, Some(code::INVALID_PARAMS));
            return Err(jsonrpc::error(message.id().clone(), code::INVALID_PARAMS, invalid).into());
        }
    };
    let picked = route.pick_backend();
    let backend_index = route
        .backends
        .iter()
        .position(|b| std::ptr::eq(b, picked))
        .unwrap_or_default();
    let backend = picked.mcp.clone();
    let quota = match gateway
        .limits
        .admit_session(&route.name, backend.stdio_targets())
    {
        Ok(quota) => quota,
        Err(over) => {
            tracing::warn!(target: "portico::access", route = %route.name, method = "initialize", sub = served.sub.unwrap_or("-"), %over, "session refused");
            let error = jsonrpc::error(init.id.clone(), code::INTERNAL_ERROR, over.to_string());
            return Err(NotStarted {
                error,
                over: Some(over),
            });
        }
    };
    let limits = gateway.limits.settings;
    match Mux::start(backend, &init, token, quota, limits).await {
        Ok((mux, response)) if let Kept::PerRequest(id) = kept => {
            let owner = session::owner(claims);
            let session =
                gateway
                    .sessions
                    .insert_per_request(id, route.name.as_str().into(), owner, mux);
            Ok((session, response))
        }
        Ok((mux, response)) if kept != Kept::InTable => {
            let owner = session::owner(claims);
            let session = Session::transient(route.name.as_str().into(), owner, mux);
            log(&served, None);
            Ok((Arc::new(session), response))
        }
        Ok((mux, response)) => {
            let owner = session::owner(claims);
            let ticket = Ticket {
                route: route.name.to_string(),
                backend: backend_index,
                version: mux.protocol_version.to_string(),
                owner: owner.as_deref().map(str::to_string),
                init_params: mux.init_params().to_owned(),
                targets: Vec::new(),
                issued: SessionKeys::issued_now(),
            };
            let session = gateway.sessions.insert(ticket, owner, mux);
            served.session = &session.tag;
            log(&served, None);
            Ok((session, response))
        }
        Err(error) => {
            log(&served, Some(error.code()));
            Err(jsonrpc::error(init.id.clone(), error.code(), error.to_string()).into())
        }
    }
}

/// What a resumed session is for: serving requests, or only being ended (`DELETE`), which needs
/// no process started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    ToServe,
    ToEnd,
}

/// The session named by `id` on `route` for the caller with `claims`: the one this process holds,
/// or the one `id` seals, resumed here (another replica began it, or this process before a
/// restart). `Err` is the refusal: 404 for an id that is unknown, tampered with, expired, of another
/// route or of another caller (told apart from none, so ids cannot be probed); 503 when the
/// session limits leave no room.
pub(crate) async fn find_session(
    gateway: &Gateway,
    route: &Route,
    id: &str,
    claims: &Value,
    token: Option<&HeaderValue>,
    purpose: Resume,
) -> Result<Arc<Session>, Response<Body>> {
    let unknown = || {
        refuse(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "unknown or expired session; initialize a new one",
        )
    };
    if crate::mcp::per_request::is_context_id(id) {
        return Err(unknown());
    }
    let owner = session::owner(claims);
    let held = || {
        let session = gateway.sessions.get(id)?;
        let mine = *session.route == *route.name && session.owner == owner;
        Some(if mine { Ok(session) } else { Err(unknown()) })
    };
    if let Some(found) = held() {
        return found;
    }
    let ticket = gateway.sessions.open(id).ok_or_else(unknown)?;
    let backend = route.backends.get(ticket.backend).ok_or_else(unknown)?;
    if ticket.route != *route.name || ticket.owner.as_deref() != owner.as_deref() {
        return Err(unknown());
    }
    let _resuming = gateway.sessions.resuming(id).await;
    if let Some(found) = held() {
        return found;
    }
    let backend = backend.mcp.clone();
    let stdio = match purpose {
        Resume::ToServe => backend.stdio_targets(),
        Resume::ToEnd => 0,
    };
    let quota = match gateway.limits.admit_session(&route.name, stdio) {
        Ok(quota) => quota,
        Err(over) => {
            tracing::warn!(target: "portico::session", route = %route.name, %over, "session not resumed");
            return Err(over_limit(Value::Null, over));
        }
    };
    let limits = gateway.limits.settings;
    let token = token.map(crate::base::http::detached);
    let connect_others = purpose == Resume::ToServe;
    let mux = Mux::resume(backend, &ticket, token, quota, limits, connect_others).await;
    let session = gateway
        .sessions
        .insert_resumed(id, route.name.as_str().into(), owner, mux);
    tracing::info!(target: "portico::session", route = %route.name, session = %session.tag,
        "session resumed from its id (begun by another replica or before a restart)");
    Ok(session)
}

/// Runs one client request in `session` (either transport) and writes its access-log line.
pub(crate) async fn handle_request(
    route: &Route,
    session: &Session,
    message: Message,
    stream: &mpsc::Sender<String>,
    caller: Option<&Caller>,
    sub: Option<&str>,
    parent: Option<traces::Context>,
) -> Outcome {
    let started = Instant::now();
    let method = message.method().to_string();
    // The client's context: its `traceparent` header, else the one in `params._meta`.
    let parent = parent.or_else(|| {
        message
            .meta()?
            .get("traceparent")?
            .as_str()
            .and_then(traces::Context::parse)
    });
    let span = traces::OpenSpan::server(&method, parent);
    // Boxed: a future is moved (copied) whole at each await that holds it, and this one holds every
    // stage down to the target's HTTP client.
    let handling = Box::pin(session.mux.request(message, stream, caller));
    let outcome = match &span {
        Some(span) => traces::within(span.context(), handling).await,
        None => handling.await,
    };
    if let Some(span) = span {
        end_server_span(span, route, session, &method, &outcome);
    }
    let served = Served {
        route,
        session: &session.tag,
        method: &method,
        version: session.mux.protocol_version,
        sub,
        started,
    };
    served.log(Some(&outcome), outcome.response.error_code());
    outcome
}

/// The HTTP request a JSON-RPC request was POSTed in: what its handling reads of it.
pub(crate) struct Post<'a> {
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub peer: std::net::SocketAddr,
}

/// A request admitted into its session: its place among the session's requests in flight, and who
/// asks (for authorization, logs and traces).
pub(crate) struct Admitted {
    pub slot: crate::limits::RequestSlot,
    pub caller: Option<Caller>,
    pub sub: Option<String>,
    pub parent: Option<traces::Context>,
}

impl Post<'_> {
    /// Admits request `id` into `session` (503 past `requestsInFlightPerSession`); the client's
    /// token goes to the session's `backendAuth: passthrough` targets.
    pub(crate) fn admit(
        &self,
        session: &Session,
        claims: Value,
        id: &Value,
    ) -> Result<Admitted, Response<Body>> {
        let slot = session
            .mux
            .admit_request()
            .map_err(|over| over_limit(id.clone(), over))?;
        if session.mux.passes_token_through() {
            let token = self.headers.get(http::header::AUTHORIZATION);
            session
                .mux
                .set_client_token(token.map(crate::base::http::detached));
        }
        let sub = subject(&claims);
        let caller = session
            .mux
            .authorizes()
            .then(|| Caller::new(self.headers, "POST", self.path, self.peer, claims));
        Ok(Admitted {
            slot,
            caller,
            sub,
            parent: traceparent(self.headers),
        })
    }
}

/// The client's W3C trace context from its `traceparent` header, if tracing is on and it sent one.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<traces::Context> {
    if !traces::enabled() {
        return None;
    }
    header(headers, "traceparent").and_then(traces::Context::parse)
}

/// Names the request's span as the MCP conventions do (`tools/call echo`), with their attributes.
pub(crate) fn end_server_span(
    mut span: traces::OpenSpan,
    route: &Route,
    session: &Session,
    method: &str,
    outcome: &Outcome,
) {
    let item = outcome.item.as_deref().unwrap_or_default();
    span.rename(method, item);
    span.attribute("mcp.method.name", method);
    let name_key = match method {
        "prompts/get" => "gen_ai.prompt.name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "mcp.resource.uri",
        _ => "gen_ai.tool.name",
    };
    span.attribute(name_key, item);
    span.attribute("mcp.protocol.version", session.mux.protocol_version);
    span.attribute("network.transport", "tcp");
    span.attribute("portico.route", &route.name);
    span.attribute(
        "portico.target",
        outcome.target.as_deref().unwrap_or_default(),
    );
    span.end(outcome.response.error_code());
}

/// One client request as the access log and the metrics see it.
pub(crate) struct Served<'a> {
    pub(crate) route: &'a Route,
    /// The session's log tag (`-` before there is one).
    pub(crate) session: &'a str,
    pub(crate) method: &'a str,
    /// The session's negotiated MCP protocol version.
    pub(crate) version: &'a str,
    pub(crate) sub: Option<&'a str>,
    pub(crate) started: Instant,
}

impl Served<'_> {
    /// Writes the access-log line and records `mcp.server.operation.duration`.
    fn log(&self, outcome: Option<&Outcome>, error: Option<i64>) {
        let elapsed = self.started.elapsed();
        let field = |f: fn(&Outcome) -> Option<&str>| outcome.and_then(f).unwrap_or("-");
        tracing::info!(
            target: "portico::access",
            route = %self.route.name,
            session = self.session,
            method = self.method,
            target = field(|o| o.target.as_deref()),
            tool = field(|o| o.item.as_deref()),
            authz = field(|o| o.authz.as_deref()),
            guard = field(|o| o.guard.as_deref()),
            protocol = outcome.map_or("mcp", |o| o.protocol),
            sub = self.sub.unwrap_or("-"),
            error_code = error.unwrap_or(0),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "mcp request",
        );
        self.record(outcome, error, elapsed);
    }

    fn record(&self, outcome: Option<&Outcome>, error: Option<i64>, elapsed: Duration) {
        let operation = metrics::Operation {
            route: &self.route.name,
            method: self.method,
            target: outcome
                .and_then(|o| o.target.as_deref())
                .unwrap_or_default(),
            item: outcome.and_then(|o| o.item.as_deref()).unwrap_or_default(),
            error,
            version: self.version,
        };
        metrics::metrics().record_server_operation(&operation, elapsed);
    }
}
