//! Operator endpoints, each on its own address: readiness (`config.readinessAddr`: `GET
//! /healthz/ready` is 200 while the gateway serves and 503 from the moment it starts draining, so a load
//! balancer stops sending it new clients; `GET /healthz/live` is 200 while the process answers) and
//! metrics (`config.statsAddr`: `GET /metrics`, Prometheus text), and the admin API (`config.adminAddr`,
//! loopback by default: `GET /config_dump`, `/targets`, `/policies`, JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::runtime::EndpointAddr;
use crate::mcp::respond::{Body, full};

/// Binds an operator endpoint. A configured address that cannot be bound is an error (`setting`
/// names it); a default one is skipped with a warning (another gateway on the machine may hold it).
pub fn bind(
    endpoint: EndpointAddr,
    setting: &str,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    let bound = std::net::TcpListener::bind(endpoint.addr).and_then(|socket| {
        socket.set_nonblocking(true)?;
        Ok(socket)
    });
    match bound {
        Ok(socket) => Ok(Some(socket)),
        Err(e) if endpoint.configured => Err(anyhow::anyhow!(
            "cannot listen on {} ({setting}): {e}",
            endpoint.addr
        )),
        Err(e) => {
            tracing::warn!(target: "portico::server", endpoint = %endpoint.addr, error = %e,
                "{setting}: not served (address taken); set it to another address");
            Ok(None)
        }
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// The readiness endpoint's answers.
pub fn readiness(draining: CancellationToken) -> Handler {
    Arc::new(move |request| match request.uri().path() {
        "/healthz/ready" if draining.is_cancelled() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        "/healthz/ready" => text(StatusCode::OK, "ready"),
        "/healthz/live" => text(StatusCode::OK, "live"),
        _ => text(StatusCode::NOT_FOUND, "try /healthz/ready or /healthz/live"),
    })
}

/// The metrics endpoint's answers.
pub fn stats() -> Handler {
    Arc::new(|request| match request.uri().path() {
        "/metrics" => {
            // One body serves both: OpenMetrics is Prometheus text plus `# UNIT` and `# EOF` lines,
            // which text parsers read as comments.
            let openmetrics = request
                .headers()
                .get_all(http::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            let content_type = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            let body = crate::telemetry::metrics::metrics().render();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "try /metrics"),
    })
}

fn json(value: &serde_json::Value) -> Response<Body> {
    let mut response = text(
        StatusCode::OK,
        serde_json::to_string_pretty(value).unwrap_or_default(),
    );
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The admin API's answers, read from the running config and sessions.
pub fn admin(gateway: Arc<crate::gateway::Gateway>) -> Handler {
    Arc::new(move |request| match request.uri().path() {
        "/config_dump" => json(&config_dump(&gateway.config.load())),
        "/targets" => json(&targets(&gateway)),
        "/policies" => json(&crate::explain::explain(&gateway.config.load(), None, None)),
        _ => text(
            StatusCode::NOT_FOUND,
            "try /config_dump, /targets or /policies",
        ),
    })
}

/// The effective config: settings, listeners, routes and targets with their effective policies.
/// Built from the same redacted view as `portico explain`, so no secret can appear in it.
fn config_dump(config: &crate::config::Config) -> serde_json::Value {
    let settings = &config.settings;
    let limits = &settings.limits;
    serde_json::json!({
        "settings": {
            "sessionTtl": format!("{:?}", settings.session_ttl),
            // Whether a key is set, never the key.
            "session": {
                "portable": settings.session.keys.is_some(),
                "previousKeys": settings.session.keys.as_ref().map_or(0, |(_, previous)| previous.len()),
                "lifetime": format!("{:?}", settings.session.lifetime),
            },
            "drainTimeout": format!("{:?}", settings.drain_timeout),
            "readinessAddr": settings.readiness.addr.to_string(),
            "statsAddr": settings.stats.addr.to_string(),
            "adminAddr": settings.admin.addr.to_string(),
            "logging": {"level": settings.log_level, "format": format!("{:?}", settings.log_format)},
            "limits": {
                "requestBody": settings.max_body_bytes,
                "jsonDepth": settings.max_json_depth,
                "sessionsPerRoute": limits.sessions_per_route,
                "stdioProcesses": limits.stdio_processes,
                "requestsInFlightPerSession": limits.requests_in_flight_per_session,
                "pendingClientRequestsPerSession": limits.pending_client_requests_per_session,
                "pendingClientRequestTimeout": format!("{:?}", limits.pending_client_request_timeout),
                "streamResumeGrace": format!("{:?}", limits.stream_resume_grace),
                "connectionsPerListener": limits.connections_per_listener,
                "upstreamResponse": limits.upstream_response_bytes,
            },
        },
        "routes": crate::explain::explain(config, None, None),
    })
}

/// Per route and target: kind, live sessions, how many are connected to it now, restarts, the last
/// error, and the tool count of its last complete list.
fn targets(gateway: &crate::gateway::Gateway) -> serde_json::Value {
    let sessions = gateway.sessions.all();
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let config = gateway.config.load_full();
    for bind in &config.binds {
        for matcher in bind.listeners.iter().flat_map(|l| &l.matchers) {
            let route = &matcher.route;
            if !seen.insert(Arc::as_ptr(route)) {
                continue;
            }
            let on_route: Vec<_> = sessions
                .iter()
                .filter(|s| *s.route == *route.name)
                .map(|s| s.mux.connected_targets())
                .collect();
            let targets: Vec<serde_json::Value> = route
                .backends
                .iter()
                .flat_map(|b| &b.mcp.targets)
                .map(|target| {
                    let connected = on_route
                        .iter()
                        .filter(|names| names.contains(&target.name))
                        .count();
                    let health = &target.health;
                    serde_json::json!({
                        "name": &*target.name,
                        "kind": target.kind.describe(),
                        "connectedSessions": connected,
                        "healthy": on_route.is_empty() || connected > 0,
                        "restarts": health.restarts.load(std::sync::atomic::Ordering::Relaxed),
                        "lastError": health.last_error(),
                        "tools": health.tools.load(std::sync::atomic::Ordering::Relaxed),
                    })
                })
                .collect();
            routes.push(serde_json::json!({
                "route": route.name,
                "sessions": on_route.len(),
                "targets": targets,
            }));
        }
    }
    serde_json::json!({ "routes": routes })
}

/// Each target's health for the metrics, from the same view as `/targets`.
pub fn target_states(
    gateway: &crate::gateway::Gateway,
) -> Vec<crate::telemetry::metrics::TargetState> {
    let view = targets(gateway);
    let mut states = Vec::new();
    for route in view["routes"].as_array().into_iter().flatten() {
        for target in route["targets"].as_array().into_iter().flatten() {
            states.push(crate::telemetry::metrics::TargetState {
                route: route["route"].as_str().unwrap_or_default().to_string(),
                target: target["name"].as_str().unwrap_or_default().to_string(),
                up: target["healthy"] == true,
                restarts: target["restarts"].as_u64().unwrap_or_default(),
            });
        }
    }
    states
}

/// What an operator endpoint answers to a request.
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Body> + Send + Sync>;

/// Serves `handler` on `socket` (HTTP/1.1) until `stop`.
pub async fn serve(socket: std::net::TcpListener, handler: Handler, stop: CancellationToken) {
    let Ok(listener) = TcpListener::from_std(socket) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = handler(&request);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
        });
    }
}

/// `http://addr{path}` of a bound socket, for the start-up line.
pub fn url(socket: &std::net::TcpListener, path: &str) -> String {
    socket
        .local_addr()
        .map(|addr: SocketAddr| format!("http://{addr}{path}"))
        .unwrap_or_default()
}
