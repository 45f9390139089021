//! An MCP route's entry: origin and CORS checks, the DNS-rebinding guard, the protocol version
//! header, authentication, then the transport the request speaks (Streamable HTTP or legacy SSE), and
//! the route's and the target's response header changes on the way out.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::config::runtime::Route;
use crate::gateway::Gateway;
use crate::mcp::handling::authenticate;
use crate::mcp::header_names::{SESSION_HEADER, VERSION_HEADER};
use crate::mcp::jsonrpc::{self, code};
use crate::mcp::multiplex::SUPPORTED_VERSIONS;
use crate::mcp::respond::{
    Body, TargetHeaders, accepts, after_body, empty, header, json_response, refuse,
};
use crate::mcp::{legacy_sse, per_request, streamable_http};

pub(crate) fn is_localhost(host: &str) -> bool {
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
pub(crate) fn origin_allowed(route: &Route, origin: &str) -> bool {
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
        let refused = refuse(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            format!("origin `{origin}` is not allowed; add it to the route's cors.allowOrigins"),
        );
        return after_body(request, refused).await;
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

/// The route's `responseHeaderModifier`, then the answering target's, so the more specific wins.
pub(crate) fn modify_response(route: &Route, mut response: Response<Body>) -> Response<Body> {
    if let Some(modifier) = &route.response_headers {
        modifier.apply(response.headers_mut());
    }
    if let Some(TargetHeaders(modifier)) = response.extensions_mut().remove::<TargetHeaders>() {
        modifier.apply(response.headers_mut());
    }
    response
}

pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let response = dispatch(gateway, route, request, peer).await;
    modify_response(route, response)
}

/// The checks every request on the route passes before its transport sees it: the DNS-rebinding
/// guard, the protocol version header, authentication. Returns the caller's claims.
async fn admit(
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Value, Response<Body>> {
    let rebinding_guard = route
        .backends
        .iter()
        .any(|b| b.mcp.dns_rebinding_protection);
    if rebinding_guard && !header(headers, HOST).is_some_and(is_localhost) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "Host is not localhost (dnsRebindingProtection)",
        ));
    }
    // A POST's version is checked once its body says which revision it speaks (and its id).
    if *method != Method::POST
        && let Some(version) = header(headers, VERSION_HEADER)
        && !SUPPORTED_VERSIONS.contains(&version)
    {
        return Err(unsupported_version(Value::Null, version));
    }
    authenticate(route, headers).await
}

/// 400 for a request in a protocol version Portico does not speak, in the 2026-07-28 form (code,
/// `data.supported`), which clients that negotiate read to fall back to a version both sides
/// speak; older revisions only ask for the 400.
pub(crate) fn unsupported_version(id: Value, version: &str) -> Response<Body> {
    let supported = per_request::all_versions();
    let message = format!(
        "unsupported MCP-Protocol-Version `{version}`; supported: {}",
        supported.join(", ")
    );
    let mut refusal = jsonrpc::error(id, code::UNSUPPORTED_PROTOCOL_VERSION, message);
    refusal["error"]["data"] = json!({"supported": supported, "requested": version});
    json_response(StatusCode::BAD_REQUEST, &refusal)
}

pub(crate) async fn dispatch(
    gateway: &Arc<Gateway>,
    route: &Arc<Route>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let claims = match admit(route, request.method(), request.headers()).await {
        Ok(claims) => claims,
        Err(refused) => return after_body(request, refused).await,
    };
    if route.is_stateless() && *request.method() != Method::POST {
        // No session: no stream to GET, nothing to DELETE.
        return after_body(request, method_not_allowed("POST")).await;
    }
    if *request.method() == Method::POST
        && !request.headers().contains_key(SESSION_HEADER)
        && let Some(id) = legacy_sse::message_session(request.uri())
    {
        let parts = request.into_parts();
        // Boxed, so a Streamable HTTP request's future is not sized for this transport's.
        return Box::pin(legacy_sse::message(
            gateway, route, &id, parts, peer, claims,
        ))
        .await;
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
        Method::POST => streamable_http::post(gateway, route, request, peer, claims).await,
        Method::GET => streamable_http::get(gateway, route, request.headers(), &claims).await,
        Method::DELETE => streamable_http::delete(gateway, route, request.headers(), &claims).await,
        _ => after_body(request, method_not_allowed("GET, POST, DELETE")).await,
    }
}

/// 405 with the methods the route takes.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = empty(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
