//! Operator endpoints, each on its own address: readiness (`config.readinessAddr`: `GET
//! /healthz/ready` is 200 while the gateway serves and 503 from the moment it starts draining, so a load
//! balancer stops sending it new clients; `GET /healthz/live` is 200 while the process answers) and
//! metrics (`config.statsAddr`: `GET /metrics`, Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::runtime::EndpointAddr;
use crate::mcp::streamable_http::{Body, full};

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
