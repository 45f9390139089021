//! The readiness endpoint (`config.readinessAddr`): `GET /healthz/ready` is 200 while the gateway
//! serves and 503 from the moment it starts draining, so a load balancer stops sending it new
//! clients; `GET /healthz/live` is 200 as long as the process answers.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::runtime::ReadinessAddr;
use crate::mcp::streamable_http::{Body, full};

/// Binds the readiness address. A configured address that cannot be bound is an error; the default
/// one is skipped with a warning (another gateway on the machine may hold it).
pub fn bind(readiness: ReadinessAddr) -> anyhow::Result<Option<std::net::TcpListener>> {
    let bound = std::net::TcpListener::bind(readiness.addr).and_then(|socket| {
        socket.set_nonblocking(true)?;
        Ok(socket)
    });
    match bound {
        Ok(socket) => Ok(Some(socket)),
        Err(e) if readiness.configured => Err(anyhow::anyhow!(
            "cannot serve readiness on {} (config.readinessAddr): {e}",
            readiness.addr
        )),
        Err(e) => {
            tracing::warn!(target: "portico::server", readiness = %readiness.addr, error = %e,
                "readiness endpoint not served; set config.readinessAddr to another address");
            Ok(None)
        }
    }
}

fn answer(request: &Request<Incoming>, draining: &CancellationToken) -> Response<Body> {
    let (status, text) = match request.uri().path() {
        "/healthz/ready" if draining.is_cancelled() => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        "/healthz/ready" => (StatusCode::OK, "ready"),
        "/healthz/live" => (StatusCode::OK, "live"),
        _ => (StatusCode::NOT_FOUND, "try /healthz/ready or /healthz/live"),
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
}

/// Serves readiness on `socket` until `stop`; readiness turns 503 once `draining` fires.
pub async fn serve(
    socket: std::net::TcpListener,
    draining: CancellationToken,
    stop: CancellationToken,
) {
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
        let draining = draining.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = answer(&request, &draining);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
        });
    }
}

/// `http://addr` of a bound socket, for the start-up line.
pub fn url(socket: &std::net::TcpListener) -> String {
    socket
        .local_addr()
        .map(|addr: SocketAddr| format!("http://{addr}/healthz/ready"))
        .unwrap_or_default()
}
