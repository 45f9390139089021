//! Listeners: sockets, TLS, HTTP/1.1 and HTTP/2, and the hand-off of each request to its route.

mod router;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::runtime::{Bind, TargetKind};
use crate::mcp::jsonrpc::code;
use crate::mcp::session::Sessions;
use crate::mcp::streamable_http::{self, Body};

/// What every request handler shares.
pub struct Gateway {
    pub config: Arc<Config>,
    pub sessions: Arc<Sessions>,
    /// One pooled client for every HTTP target, so keep-alive connections are reused across sessions.
    pub http: reqwest::Client,
}

/// A running gateway: its bound addresses, and how to stop it.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub gateway: Arc<Gateway>,
    stop: CancellationToken,
}

impl Running {
    /// Stops accepting, then closes every session (stopping stdio targets).
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.gateway.sessions.close_all().await;
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build()?)
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let stop = CancellationToken::new();
    let sessions = Sessions::new(config.settings.session_ttl);
    sessions.spawn_sweeper(stop.clone());
    let gateway = Arc::new(Gateway {
        config: config.clone(),
        sessions,
        http: http_client()?,
    });
    let mut addrs = Vec::new();
    for (index, bind) in config.binds.iter().enumerate() {
        let listener = TcpListener::bind(bind.addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (is another process using the port?)",
                bind.addr
            )
        })?;
        let addr = listener.local_addr()?;
        announce(bind, addr);
        addrs.push(addr);
        tokio::spawn(accept_loop(listener, index, gateway.clone(), stop.clone()));
    }
    Ok(Running {
        addrs,
        gateway,
        stop,
    })
}

/// One line per listener and per target: what is served where.
fn announce(bind: &Bind, addr: SocketAddr) {
    for listener in &bind.listeners {
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut routes: Vec<&str> = listener
            .matchers
            .iter()
            .map(|m| m.route.name.as_str())
            .collect();
        routes.dedup();
        tracing::info!(target: "portico::server", listener = %listener.name, address = %format!("{scheme}://{addr}"),
            routes = %routes.join(","), "listening");
        let mut seen = std::collections::HashSet::new();
        for matcher in &listener.matchers {
            if !seen.insert(Arc::as_ptr(&matcher.route)) {
                continue;
            }
            for backend in &matcher.route.backends {
                for target in &backend.mcp.targets {
                    let upstream = match &target.kind {
                        TargetKind::Stdio(spec) => {
                            format!("stdio: {} {}", spec.cmd.display(), spec.args.join(" "))
                        }
                        TargetKind::Http { url } => format!("mcp: {url}"),
                    };
                    tracing::info!(target: "portico::server", route = %matcher.route.name, target = %target.name,
                        upstream = %upstream.trim_end(), prefix = backend.mcp.prefixed, "target");
                }
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    bind: usize,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(target: "portico::server", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            bind,
            gateway.clone(),
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    bind: usize,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) {
    // Without NODELAY, delayed ACKs against small SSE writes cost ~40 ms per request.
    let _ = stream.set_nodelay(true);
    let tls = gateway.config.binds[bind]
        .listeners
        .iter()
        .find_map(|l| l.tls.clone());
    let service_gateway = gateway.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let gateway = service_gateway.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&gateway, bind, request, peer).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        None => {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => result,
                _ = stop.cancelled() => return,
            }
        }
        Some(tls) => {
            let stream = match tokio_rustls::TlsAcceptor::from(tls).accept(stream).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(target: "portico::server", %peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => result,
                _ = stop.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "portico::server", %peer, error = %e, "connection ended with an error");
    }
}

async fn route(
    gateway: &Arc<Gateway>,
    bind: usize,
    request: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<Body> {
    let listeners = &gateway.config.binds[bind].listeners;
    let Some(route) = router::find(listeners, &request) else {
        let body = crate::mcp::jsonrpc::error(
            serde_json::Value::Null,
            code::INVALID_REQUEST,
            "no route matches this request",
        );
        let mut response = Response::new(streamable_http::full(body.to_string()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let route = route.clone();
    streamable_http::handle(gateway, &route, request).await
}
