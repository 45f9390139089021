//! The client side of MCP Streamable HTTP: POST (requests, notifications, responses; JSON or SSE
//! replies), GET (the session's stream), DELETE (end the session).
//!
//! HTTP statuses and JSON-RPC error codes for malformed requests are decided here and nowhere else.
// A refusal is a ready `Response`; it is built at most once per refused request, never on the happy path.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::runtime::Route;
use crate::limits::{Exceeded, RequestSlot};
use crate::mcp::jsonrpc::{self, Kind, code};
use crate::mcp::legacy_sse;
use crate::mcp::multiplex::{Mux, Outcome, STREAM_CAPACITY, SUPPORTED_VERSIONS, negotiate_version};
use crate::mcp::params;
use crate::mcp::session::{self, Session};
use crate::mcp::sse;
use crate::policy::authz::Caller;
use crate::policy::headers::HeaderModifier;
use crate::policy::jwt::Rejection;
use crate::policy::mcp_authn::McpAuthentication;
use crate::server::Gateway;
use crate::telemetry::{metrics, traces};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
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

fn json_response(status: StatusCode, message: &Value) -> Response<Body> {
    json_text_response(status, message.to_string())
}

fn json_text_response(status: StatusCode, json: String) -> Response<Body> {
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A refusal with a JSON-RPC error body (`id: null`): the request never reached a session.
pub(crate) fn refuse(status: StatusCode, code: i64, message: impl Into<String>) -> Response<Body> {
    json_response(status, &jsonrpc::error(Value::Null, code, message))
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    let wildcard = format!("{kind}/*");
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| {
            accept.split(',').any(|part| {
                let range = part.split(';').next().unwrap_or_default().trim();
                range == media || range == wildcard || range == "*/*"
            })
        })
}

fn is_localhost(host: &str) -> bool {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// The MCP spec's DNS-rebinding defence: a browser origin must be allowed by the route's `cors`, or
/// be a localhost origin when there is no cors policy.
fn origin_allowed(route: &Route, origin: &str) -> bool {
    match &route.cors {
        Some(cors) => cors.policy.allows(origin),
        None => is_localhost(origin.split_once("://").map_or(origin, |(_, rest)| rest)),
    }
}

/// Serves one HTTP request on an MCP route.
pub async fn handle(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let origin = header(request.headers(), ORIGIN).map(str::to_string);
    let Some(origin) = origin else {
        return serve(gateway, route, request, peer).await;
    };
    if !origin_allowed(route, &origin) {
        return refuse(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            format!("origin `{origin}` is not allowed; add it to the route's cors.allowOrigins"),
        );
    }
    let Some(cors) = &route.cors else {
        return serve(gateway, route, request, peer).await;
    };
    if request.method() == Method::OPTIONS {
        let mut response = empty(StatusCode::NO_CONTENT);
        *response.headers_mut() = cors.policy.preflight(&origin, request.headers());
        return response;
    }
    let mut response = serve(gateway, route, request, peer).await;
    cors.policy.decorate(&origin, response.headers_mut());
    response
}

/// A target's own `responseHeaderModifier`, carried from the reply to [`modify_response`].
#[derive(Clone)]
struct TargetHeaders(Arc<HeaderModifier>);

/// The route's `responseHeaderModifier`, then the answering target's, so the more specific wins.
fn modify_response(route: &Route, mut response: Response<Body>) -> Response<Body> {
    if let Some(modifier) = &route.response_headers {
        modifier.apply(response.headers_mut());
    }
    if let Some(TargetHeaders(modifier)) = response.extensions_mut().remove::<TargetHeaders>() {
        modifier.apply(response.headers_mut());
    }
    response
}

async fn serve(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let response = dispatch(gateway, route, request, peer).await;
    modify_response(route, response)
}

async fn dispatch(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let rebinding_guard = route
        .backends
        .iter()
        .any(|b| b.mcp.dns_rebinding_protection);
    if rebinding_guard && !header(request.headers(), HOST).is_some_and(is_localhost) {
        return refuse(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Host is not localhost (dnsRebindingProtection)",
        );
    }
    if let Some(version) = header(request.headers(), VERSION_HEADER)
        && !SUPPORTED_VERSIONS.contains(&version)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            format!(
                "unsupported MCP-Protocol-Version `{version}`; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        );
    }
    let claims = match authenticate(route, request.headers()).await {
        Ok(claims) => claims,
        Err(refused) => return refused,
    };
    if *request.method() == Method::POST
        && !request.headers().contains_key(SESSION_HEADER)
        && let Some(id) = legacy_sse::message_session(request.uri())
    {
        let parts = request.into_parts();
        return legacy_sse::message(gateway, route, &id, parts, peer, claims).await;
    }
    if *request.method() == Method::GET
        && legacy_sse::opens_stream(request.uri().path(), request.headers())
    {
        if !accepts(request.headers(), "text/event-stream") {
            return refuse(
                StatusCode::NOT_ACCEPTABLE,
                code::INVALID_REQUEST,
                "Accept must allow text/event-stream",
            );
        }
        return legacy_sse::open(gateway, route, request.uri().path(), &claims);
    }
    match *request.method() {
        Method::POST => post(gateway, route, request, peer, claims).await,
        Method::GET => get(gateway, route, request.headers(), &claims),
        Method::DELETE => delete(gateway, route, request.headers(), &claims).await,
        _ => {
            let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, POST, DELETE"),
            );
            response
        }
    }
}

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

/// The session named by the request's `Mcp-Session-Id`: 400 without one, 404 for an unknown one, and
/// 404 as well for another caller's (`claims` are the request's; the owner is not told apart from a
/// missing id, so ids cannot be probed).
fn session(
    gateway: &Gateway,
    route: &Route,
    headers: &HeaderMap,
    claims: &Value,
) -> Result<Arc<Session>, Response<Body>> {
    let Some(id) = header(headers, SESSION_HEADER) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id header; send `initialize` first",
        ));
    };
    match gateway.sessions.get(id) {
        Some(session)
            if *session.route == *route.name && session.owner == session::owner(claims) =>
        {
            Ok(session)
        }
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "unknown or expired session; initialize a new one",
        )),
    }
}

/// How long a client may take to send a request body: a slow sender holds a connection and a buffer.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn read_body(gateway: &Gateway, body: Incoming) -> Result<Value, Response<Body>> {
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
    serde_json::from_slice(&body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            code::PARSE_ERROR,
            format!("Parse error: {e}"),
        )
    })
}

async fn post(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
    claims: Value,
) -> Response<Body> {
    // Taken apart, so the headers outlive the body read without a copy.
    let (parts, body) = request.into_parts();
    let (path, headers) = (parts.uri.path(), &parts.headers);
    if !(accepts(headers, "application/json") && accepts(headers, "text/event-stream")) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must allow both application/json and text/event-stream",
        );
    }
    let json = header(headers, CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    });
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let session_header = header(headers, SESSION_HEADER);
    let message = match read_body(gateway, body).await {
        Ok(message) => message,
        Err(refused) => return refused,
    };
    if message.is_array() {
        return refuse(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let kind = jsonrpc::kind(&message);
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
    if session_header.is_none()
        && kind == Kind::Request
        && jsonrpc::method(&message) == "initialize"
    {
        let token = headers.get(http::header::AUTHORIZATION).cloned();
        return initialize(gateway, route, message, &claims, token).await;
    }
    let session = match session(gateway, route, headers, &claims) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    match kind {
        Kind::Request => {
            let slot = match session.mux.admit_request() {
                Ok(slot) => slot,
                Err(over) => return over_limit(message["id"].clone(), over),
            };
            let sub = subject(&claims);
            if session.mux.passes_token_through() {
                session
                    .mux
                    .set_client_token(headers.get(http::header::AUTHORIZATION).cloned());
            }
            let caller = session
                .mux
                .authorizes()
                .then(|| Caller::new(headers, "POST", path, peer, claims));
            let parent = traceparent(headers);
            run_request(route, session, message, caller, sub, slot, parent).await
        }
        Kind::Notification => {
            session.mux.client_notification(message).await;
            empty(StatusCode::ACCEPTED)
        }
        Kind::Response => {
            if !session.mux.client_response(message).await {
                tracing::debug!(target: "portico::access", session = %session.tag, "answer to no pending server request; dropped");
            }
            empty(StatusCode::ACCEPTED)
        }
        Kind::Invalid => unreachable!("refused above"),
    }
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

async fn initialize(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: Value,
    claims: &Value,
    token: Option<HeaderValue>,
) -> Response<Body> {
    match start_session(gateway, route, &message, claims, token).await {
        Ok((session, result)) => {
            let mut reply = json_response(StatusCode::OK, &result);
            if let Ok(id) = HeaderValue::from_str(&session.id) {
                reply.headers_mut().insert(SESSION_HEADER, id);
            }
            reply
        }
        Err(NotStarted {
            over: Some(over), ..
        }) => over_limit(message["id"].clone(), over),
        Err(NotStarted { error, .. }) => json_response(StatusCode::OK, &error),
    }
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

/// Starts a session on `route` from the client's `initialize` (either transport) and logs it:
/// the session and the `initialize` reply, or the JSON-RPC error to answer. The session belongs to
/// the caller whose `claims` (`Null` when anonymous) made it.
pub(crate) async fn start_session(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    message: &Value,
    claims: &Value,
    token: Option<HeaderValue>,
) -> Result<(Arc<Session>, Value), NotStarted> {
    let sub = subject(claims);
    let version = negotiate_version(message["params"]["protocolVersion"].as_str());
    let mut served = Served {
        route,
        session: "-",
        method: "initialize",
        version,
        sub: sub.as_deref(),
        started: Instant::now(),
    };
    if let Err(invalid) = params::check("initialize", message.get("params")) {
        served.log(None, Some(code::INVALID_PARAMS));
        return Err(jsonrpc::error(message["id"].clone(), code::INVALID_PARAMS, invalid).into());
    }
    let backend = route.pick_backend().mcp.clone();
    let Some(http) = gateway.http_client() else {
        return Err(jsonrpc::error(
            message["id"].clone(),
            code::INTERNAL_ERROR,
            "no HTTP client",
        )
        .into());
    };
    let quota = match gateway
        .limits
        .admit_session(&route.name, backend.stdio_targets())
    {
        Ok(quota) => quota,
        Err(over) => {
            tracing::warn!(target: "portico::access", route = %route.name, method = "initialize", sub = served.sub.unwrap_or("-"), %over, "session refused");
            let error = jsonrpc::error(
                message["id"].clone(),
                code::INTERNAL_ERROR,
                over.to_string(),
            );
            return Err(NotStarted {
                error,
                over: Some(over),
            });
        }
    };
    let limits = gateway.limits.settings;
    match Mux::start(backend, message, http, token, quota, limits).await {
        Ok((mux, response)) => {
            let owner = session::owner(claims);
            let session = gateway
                .sessions
                .insert(route.name.as_str().into(), owner, mux);
            served.session = &session.tag;
            served.log(None, jsonrpc::error_code(&response));
            Ok((session, response))
        }
        Err(error) => {
            served.log(None, jsonrpc::error_code(&error));
            Err(error.into())
        }
    }
}

/// Runs one client request in `session` (either transport) and writes its access-log line.
pub(crate) async fn handle_request(
    route: &Route,
    session: &Session,
    message: Value,
    stream: &mpsc::Sender<String>,
    caller: Option<&Caller>,
    sub: Option<&str>,
    parent: Option<traces::Context>,
) -> Outcome {
    let started = Instant::now();
    let method = jsonrpc::method(&message).to_string();
    // The client's context: its `traceparent` header, else the one in `params._meta`.
    let parent = parent.or_else(|| {
        message["params"]["_meta"]["traceparent"]
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

/// The client's W3C trace context from its `traceparent` header, if tracing is on and it sent one.
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<traces::Context> {
    if !traces::enabled() {
        return None;
    }
    header(headers, "traceparent").and_then(traces::Context::parse)
}

/// Names the request's span as the MCP conventions do (`tools/call echo`), with their attributes.
fn end_server_span(
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

/// Runs a client request. The reply is plain JSON when nothing else came first, else an SSE stream
/// that carries the messages belonging to the request and ends with its response.
async fn run_request(
    route: &Arc<Route>,
    session: Arc<Session>,
    message: Value,
    caller: Option<Caller>,
    sub: Option<String>,
    slot: RequestSlot,
    parent: Option<traces::Context>,
) -> Response<Body> {
    let (tx, mut rx) = mpsc::channel(STREAM_CAPACITY);
    // Resolves when the client drops the reply stream, i.e. goes away.
    let client = tx.clone();
    let route = route.clone();
    let mut handling = Box::pin(async move {
        let outcome = Box::pin(handle_request(
            &route,
            &session,
            message,
            &tx,
            caller.as_ref(),
            sub.as_deref(),
            parent,
        ))
        .await;
        drop(slot);
        (outcome.response, outcome.response_headers, tx)
    });
    // Most requests finish before anything else is sent for them: those are answered in place, as JSON,
    // without a task or a stream.
    tokio::select! {
        biased;
        (response, target_headers, tx) = &mut handling => {
            drop(tx);
            let mut messages = Vec::new();
            while let Ok(message) = rx.try_recv() {
                messages.push(message);
            }
            if messages.is_empty() {
                let mut reply = json_text_response(StatusCode::OK, response.to_json());
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
            reply
        }
        Some(first) = rx.recv() => {
            tokio::spawn(async move {
                // A client that goes away mid-stream cancels the request: dropping it tells the
                // target (see `multiplex::Call`).
                tokio::select! {
                    (response, _, tx) = &mut handling => {
                        let _ = tx.send(response.to_json()).await;
                    }
                    _ = client.closed() => {}
                }
            });
            let rest = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            sse_response(sse_body(futures::stream::once(async { first }).chain(rest)))
        }
    }
}

fn sse_body(messages: impl futures::Stream<Item = String> + Send + 'static) -> Body {
    let frames =
        messages.map(|message| Ok::<_, Infallible>(Frame::data(sse::message_frame(&message))));
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

fn get(
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
    let session = match session(gateway, route, headers, claims) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    session.mux.attach_stream(tx);
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let frame = tokio::select! {
            message = rx.recv() => sse::message_frame(&message?),
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<_, Infallible>(Frame::data(frame)), rx))
    });
    sse_response(StreamBody::new(frames).boxed_unsync())
}

async fn delete(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    headers: &HeaderMap,
    claims: &Value,
) -> Response<Body> {
    let session = match session(gateway, route, headers, claims) {
        Ok(session) => session,
        Err(refused) => return refused,
    };
    gateway.sessions.end(&session.id);
    tracing::info!(target: "portico::session", route = %route.name, session = %session.tag, "session deleted by the client");
    empty(StatusCode::OK)
}

/// One client request as the access log and the metrics see it.
struct Served<'a> {
    route: &'a Route,
    /// The session's log tag (`-` before there is one).
    session: &'a str,
    method: &'a str,
    /// The session's negotiated MCP protocol version.
    version: &'a str,
    sub: Option<&'a str>,
    started: Instant,
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
        assert!(accepts(&with_accept("*/*"), "text/event-stream"));
        assert!(!accepts(
            &with_accept("application/json"),
            "text/event-stream"
        ));
        assert!(accepts(&with_accept("text/*;q=0.5"), "text/event-stream"));
    }

    #[test]
    fn localhost_forms() {
        for host in [
            "localhost",
            "localhost:3000",
            "127.0.0.1:80",
            "[::1]:3000",
            "[::1]",
        ] {
            assert!(is_localhost(host), "{host}");
        }
        for host in ["evil.example", "127.0.0.2", "localhost.evil.com:80"] {
            assert!(!is_localhost(host), "{host}");
        }
    }
}
