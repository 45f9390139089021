//! Routes of `host` backends: plain HTTP proxied to the backend with its path and query, the route's
//! `jwtAuth` checked first, and the backend's header changes and credentials added. With `a2a` the
//! proxy is also an A2A proxy: the agent card's URLs are rewritten to the gateway, and each request's
//! A2A method is recorded in the access log.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::config::runtime::{HostBackend, Route};
use crate::gateway::Gateway;
use crate::mcp::handling;
use crate::mcp::respond::{self, Body};
use crate::policy::a2a;
use crate::policy::outbound::build;

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and the ones the
/// proxy sets itself.
const NOT_FORWARDED: [header::HeaderName; 9] = [
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(respond::full(text));
    *response.status_mut() = status;
    response
}

/// Serves one request on a route of `host` backends: the route's `cors` (preflights answered here,
/// allowed origins' responses decorated; other origins get no CORS headers, so browsers block them),
/// then the proxy.
pub async fn serve(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cors = route.cors.as_ref().map(|c| &c.policy);
    let Some((cors, origin)) = cors.zip(origin).filter(|(cors, o)| cors.allows(o)) else {
        return proxy(gateway, route, request, peer).await;
    };
    if request.method() == http::Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = plain(StatusCode::NO_CONTENT, Bytes::new());
        *response.headers_mut() = cors.preflight(&origin, request.headers());
        return response;
    }
    let mut response = proxy(gateway, route, request, peer).await;
    cors.decorate(&origin, response.headers_mut());
    response
}

async fn proxy(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let Some(backend) = route.pick_host() else {
        return respond::after_body(request, plain(StatusCode::BAD_GATEWAY, "no backend")).await;
    };
    if let Some(refused) = handling::over_rate_limit(route) {
        return respond::after_body(request, refused).await;
    }
    let a2a = backend.policies.a2a.is_some();
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let sub = match handling::authenticate(route, request.headers()).await {
        Ok(claims) => claims["sub"].as_str().map(str::to_string),
        Err(refused) => return respond::after_body(request, refused).await,
    };
    let (parts, body) = request.into_parts();
    let limit = gateway.config.load().settings.max_body_bytes;
    let read = Limited::new(body, limit).collect();
    let Ok(read) = tokio::time::timeout(handling::BODY_READ_TIMEOUT, read).await else {
        return plain(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        );
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes"),
            );
        }
    };
    let a2a_method = a2a.then(|| a2a::method(&body)).flatten();
    let public_origin = handling::base_url(route, &parts.headers);
    let outcome = forward(backend, &parts, body, peer).await;
    let response = match outcome {
        Ok(response) => {
            let max_card = gateway.limits.settings.upstream_response_bytes;
            respond(max_card, response, backend, a2a, &path, &public_origin).await
        }
        Err((status, message)) => {
            tracing::warn!(target: "portico::host", backend = %backend.name, error = %message, "backend call failed");
            plain(status, format!("backend {}: {message}", backend.name))
        }
    };
    tracing::info!(
        target: "portico::access",
        route = %route.name,
        backend = %backend.name,
        method = %method,
        path = %path,
        a2a_method = a2a_method.as_deref().unwrap_or("-"),
        protocol = if a2a { "a2a" } else { "http" },
        sub = sub.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "http request",
    );
    response
}

async fn forward(
    backend: &HostBackend,
    parts: &http::request::Parts,
    body: Bytes,
    peer: std::net::SocketAddr,
) -> Result<reqwest::Response, (StatusCode, String)> {
    let failed = |message: String| (StatusCode::BAD_GATEWAY, message);
    let (client, base) = match &backend.tls_client {
        Some((client, url)) => (client.clone(), url.clone()),
        None => (
            crate::base::http_client::shared_reqwest()
                .ok_or_else(|| failed("no HTTP client".into()))?,
            backend.url.clone(),
        ),
    };
    let mut url = base;
    let joined = format!("{}{}", url.path().trim_end_matches('/'), parts.uri.path());
    url.set_path(&joined);
    url.set_query(parts.uri.query());
    let mut request = client.request(parts.method.clone(), url).body(body);
    request = request.headers(forwarded_headers(&parts.headers, peer));
    let timeout = backend.policies.timeout.as_ref().map(|t| *t.policy);
    if let Some(timeout) = timeout {
        request = request.timeout(timeout.limit);
    }
    let request = backend
        .outbound
        .finish_with(
            build(request).map_err(|e| failed(e.to_string()))?,
            parts.headers.get(header::AUTHORIZATION),
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    client.execute(request).await.map_err(|e| match timeout {
        Some(timeout) if e.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer within {:?} (timeout.{})",
                timeout.limit, timeout.field
            ),
        ),
        _ => failed(e.without_url().to_string()),
    })
}

/// The client's headers without the connection's own, plus `X-Forwarded-*`. The client's
/// `Authorization` is not forwarded: like for MCP targets, only `backendAuth: passthrough` sends it.
fn forwarded_headers(incoming: &HeaderMap, peer: std::net::SocketAddr) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in incoming {
        if NOT_FORWARDED.contains(name) || name == header::AUTHORIZATION {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if let Some(host) = incoming.get(header::HOST) {
        headers.insert("x-forwarded-host", host.clone());
    }
    if let Ok(address) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.append("x-forwarded-for", address);
    }
    headers
}

async fn respond(
    max_card: usize,
    response: reqwest::Response,
    backend: &HostBackend,
    a2a: bool,
    path: &str,
    public_origin: &str,
) -> Response<Body> {
    let status = response.status();
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if !NOT_FORWARDED.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = if a2a && status.is_success() && a2a::is_agent_card(path) {
        let Ok(card) =
            crate::base::http::read_capped(reqwest::Body::from(response), max_card).await
        else {
            return plain(
                StatusCode::BAD_GATEWAY,
                "the agent card is too large or broke off",
            );
        };
        let rewritten = a2a::rewrite_card(&card, &backend.url, public_origin);
        respond::full(rewritten.unwrap_or_else(|| card.to_vec()))
    } else {
        // Streamed as it comes (A2A's `message/stream` answers with SSE); a broken upstream ends it.
        let frames = response
            .bytes_stream()
            .take_while(|chunk| std::future::ready(chunk.is_ok()))
            .filter_map(|chunk| std::future::ready(chunk.ok().map(|c| Ok(Frame::data(c)))));
        StreamBody::new(frames).boxed_unsync()
    };
    // The effective `responseHeaderModifier` (backend over route), as on MCP routes.
    if let Some(modifier) = &backend.policies.response_headers {
        modifier.policy.apply(&mut headers);
    }
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
