//! Listeners: sockets, TLS, HTTP/1.1 and HTTP/2, and the hand-off of each request to its route.

mod host;
mod ops;
pub mod path;
mod reload;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::runtime::{Bind, Listener};
use crate::gateway::Gateway;
use crate::limits::Limits;
use crate::mcp::jsonrpc::code;
use crate::mcp::respond::{self, Body};
use crate::mcp::session::Sessions;
use crate::mcp::{endpoint, handling};
use crate::policy::jwt::JwtAuth;
use crate::policy::mcp_authn::WELL_KNOWN;

/// One listening socket per bind per worker: the same address, shared with `SO_REUSEPORT`, so the
/// kernel spreads connections over the workers.
fn bind_sockets(
    config: &Config,
    workers: usize,
) -> anyhow::Result<Vec<Vec<std::net::TcpListener>>> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    for bind in &config.binds {
        let mut addr = bind.addr;
        for sockets in &mut per_worker {
            let socket = reuseport_listener(addr).map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr}: {e} (is another process using the port?)")
            })?;
            // Port 0 picks a port once; the other workers join it.
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        announce(bind, addr);
    }
    Ok(per_worker)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn worker_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs the gateway until `shutdown` completes: binds every listener, serves on `workers` threads
/// (one single-threaded runtime each, so a request and its upstream call stay on one core), then drains:
/// readiness turns 503, accepting stops, event streams end, requests in flight finish (up to
/// `config.drainTimeout`), every session is closed (stopping stdio targets), and it returns.
/// `source` is the config file, watched for changes (and re-read on SIGHUP) when given.
pub fn run(
    config: Config,
    source: Option<std::path::PathBuf>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let workers = workers.max(1);
    let main = worker_runtime()?;
    // Registered now, so that the last-load time is the start.
    crate::telemetry::metrics::metrics();
    let config = Arc::new(config);
    let mut sockets = bind_sockets(&config, workers)?.into_iter();
    let readiness = ops::bind(config.settings.readiness, "config.readinessAddr")?;
    if let Some(socket) = &readiness {
        tracing::info!(target: "portico::server", readiness = %ops::url(socket, "/healthz/ready"), "serving readiness");
    }
    let stats = ops::bind(config.settings.stats, "config.statsAddr")?;
    if let Some(socket) = &stats {
        tracing::info!(target: "portico::server", stats = %ops::url(socket, "/metrics"), "serving metrics");
    }
    let admin = ops::bind(config.settings.admin, "config.adminAddr")?;
    if let Some(socket) = &admin {
        tracing::info!(target: "portico::server", admin = %ops::url(socket, ""), "serving the admin API (/config_dump, /targets, /policies)");
    }
    let gateway = Arc::new(Gateway {
        config: ArcSwap::new(config.clone()),
        sessions: Sessions::new(config.settings.session_ttl, config.settings.session.keys()),
        parked: Default::default(),
        legacy: Default::default(),
        limits: Limits::new(config.settings.limits, config.binds.len()),
        draining: CancellationToken::new(),
        connections: TaskTracker::new(),
    });
    let view = Arc::downgrade(&gateway);
    crate::telemetry::metrics::watch_targets(Box::new(move || {
        view.upgrade()
            .map(|gateway| ops::target_states(&gateway))
            .unwrap_or_default()
    }));
    // Accepting stops first; runtimes stay up until the sessions they host are closed.
    let accepting = CancellationToken::new();
    let running = CancellationToken::new();
    let first = sockets.next().unwrap_or_default();
    let mut threads = Vec::new();
    for (index, listeners) in sockets.enumerate() {
        let (gateway, accepting, running) = (gateway.clone(), accepting.clone(), running.clone());
        let runtime = worker_runtime()?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("portico-worker-{}", index + 1))
                .spawn(move || runtime.block_on(serve(listeners, gateway, accepting, running)))?,
        );
    }
    tracing::info!(target: "portico::server", workers, "serving");
    if gateway.sessions.portable() {
        tracing::info!(target: "portico::server", lifetime = ?config.settings.session.lifetime,
            "sessions are portable: any replica with the same config.session.key serves them (stdio targets are started afresh on another replica)");
    } else {
        tracing::warn!(target: "portico::server",
            "sessions are not portable: no config.session.key (or PORTICO_SESSION_KEY), so a random key was made; sessions do not survive a restart or move to other replicas");
    }
    main.block_on(async {
        gateway.sessions.spawn_sweeper(running.clone());
        gateway.start_pools(&config);
        if let Some(tracing) = &config.settings.tracing {
            match crate::base::http_client::reqwest_client() {
                Ok(http) => {
                    crate::telemetry::traces::start(tracing, http);
                    tracing::info!(target: "portico::server", otlp = %tracing.endpoint, protocol = tracing.protocol.name(), sampling = tracing.sampling, "exporting traces");
                }
                Err(e) => {
                    tracing::error!(target: "portico::server", error = %e, "cannot export traces")
                }
            }
        }
        let refreshing = running.child_token();
        for jwt in token_validators(&config) {
            jwt.spawn_refresh(refreshing.clone());
        }
        if let Some(path) = source {
            tokio::spawn(reload::watch(
                gateway.clone(),
                path,
                refreshing,
                running.clone(),
            ));
        }
        if let Some(socket) = readiness {
            let handler = ops::readiness(gateway.draining.clone());
            tokio::spawn(ops::serve(socket, handler, running.clone()));
        }
        if let Some(socket) = stats {
            tokio::spawn(ops::serve(socket, ops::stats(), running.clone()));
        }
        if let Some(socket) = admin {
            tokio::spawn(ops::serve(
                socket,
                ops::admin(gateway.clone()),
                running.clone(),
            ));
        }
        tokio::spawn(serve(
            first,
            gateway.clone(),
            accepting.clone(),
            running.clone(),
        ));
        shutdown.await;
        drain(&gateway, &accepting).await;
        gateway.parked.clear();
        gateway.sessions.close_all().await;
        running.cancel();
    });
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// Stops taking new work and lets the work in flight finish, for up to `config.drainTimeout`.
async fn drain(gateway: &Gateway, accepting: &CancellationToken) {
    let limit = gateway.config.load().settings.drain_timeout;
    tracing::info!(target: "portico::server", sessions = gateway.sessions.len(), drain_timeout = ?limit,
        "shutting down: draining requests in flight");
    gateway.draining.cancel();
    accepting.cancel();
    gateway.end_streams();
    gateway.connections.close();
    if tokio::time::timeout(limit, gateway.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(target: "portico::server", open = gateway.connections.len(), drain_timeout = ?limit,
            "drain timeout: closing connections with requests still in flight");
    }
}

/// Every token validator of the config, once each.
pub(crate) fn token_validators(config: &Config) -> Vec<Arc<JwtAuth>> {
    let mut validators: Vec<Arc<JwtAuth>> = Vec::new();
    let routes = config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.matchers)
        .map(|m| &m.route);
    for route in routes {
        let candidates = [
            route.jwt.as_ref().map(|s| s.policy.clone()),
            route.authentication.as_ref().map(|a| a.jwt.clone()),
        ];
        for jwt in candidates.into_iter().flatten() {
            if !validators.iter().any(|v| Arc::ptr_eq(v, &jwt)) {
                validators.push(jwt);
            }
        }
    }
    validators
}

/// One worker: accepts on its sockets until `accepting` ends, keeps running until `running` ends.
async fn serve(
    listeners: Vec<std::net::TcpListener>,
    gateway: Arc<Gateway>,
    accepting: CancellationToken,
    running: CancellationToken,
) {
    for (bind, listener) in listeners.into_iter().enumerate() {
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                tokio::spawn(accept_loop(
                    listener,
                    bind,
                    gateway.clone(),
                    accepting.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(target: "portico::server", error = %e, "cannot use a listening socket")
            }
        }
    }
    running.cancelled().await;
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
                    let upstream = target.kind.describe();
                    let pool = target.pool.as_ref().map_or(0, |p| p.size());
                    tracing::info!(target: "portico::server", route = %matcher.route.name, target = %target.name,
                        upstream = %upstream, prefix = backend.mcp.prefixed, pool, "target");
                }
            }
            for host in &matcher.route.hosts {
                let protocol = if host.policies.a2a.is_some() {
                    "a2a"
                } else {
                    "http"
                };
                tracing::info!(target: "portico::server", route = %matcher.route.name, backend = %host.name,
                    upstream = %format!("host: {}", host.url), protocol, "backend");
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
            _ = stop.cancelled() => {
                // Connections the kernel has completed but not handed over yet would be reset when
                // the socket closes, after their clients sent a request that a load balancer then
                // cannot retry: they are taken and served (one request each) instead.
                while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
                    take_connection(stream, peer, bind, &gateway);
                }
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(target: "portico::server", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        take_connection(stream, peer, bind, &gateway);
    }
}

fn take_connection(stream: TcpStream, peer: SocketAddr, bind: usize, gateway: &Arc<Gateway>) {
    let slot = match gateway.limits.admit_connection(bind) {
        Ok(slot) => slot,
        Err(over) => {
            tokio::spawn(refuse_connection(stream, over));
            return;
        }
    };
    gateway
        .connections
        .spawn(serve_connection(stream, peer, bind, gateway.clone(), slot));
}

/// Answers a connection over `connectionsPerListener` with a 503 and closes it, without reading it:
/// an HTTP/1 client reads the answer, anything else sees the connection close.
async fn refuse_connection(mut stream: TcpStream, over: crate::limits::Exceeded) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = crate::mcp::jsonrpc::error(
        serde_json::Value::Null,
        code::INTERNAL_ERROR,
        over.to_string(),
    )
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        over.retry_after_secs,
        body.len()
    );
    // Debug, not warn: under a flood this would be one line per refused connection.
    tracing::debug!(target: "portico::server", %over, "connection refused");
    // Written, then the client's unread request drained before closing: closing a socket with
    // unread input sends a reset, which can destroy the answer before the client reads it.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// How long a new connection may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send its first request head (HTTP version detection
/// included): slow or silent connections are closed, not kept.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive HTTP/1 connection may wait for, and take to send, its next request head.
/// Longer than the first: clients keep pooled connections idle between requests, and closing them
/// sooner only makes clients race the close.
const KEEP_ALIVE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Streams one HTTP/2 connection may have open at once.
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    bind: usize,
    gateway: Arc<Gateway>,
    _slot: crate::limits::ConnectionSlot,
) {
    // Without NODELAY, delayed ACKs against small SSE writes cost ~40 ms per request.
    let _ = stream.set_nodelay(true);
    let tls = gateway.config.load().binds[bind]
        .listeners
        .iter()
        .find_map(|l| l.tls.clone());
    let Some(tls) = tls else {
        let protocol = match tokio::time::timeout(HEADER_READ_TIMEOUT, sniff(&stream)).await {
            Ok(Some(protocol)) => protocol,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(target: "portico::server", %peer, "no request within the header read timeout; connection closed");
                return;
            }
        };
        return serve_http(TokioIo::new(stream), protocol, peer, bind, gateway).await;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => {
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                Some(b"http/1.1") => Protocol::Http1,
                _ => Protocol::Detect,
            };
            serve_http(TokioIo::new(stream), protocol, peer, bind, gateway).await
        }
        Ok(Err(e)) => {
            tracing::debug!(target: "portico::server", %peer, error = %e, "TLS handshake failed")
        }
        Err(_) => {
            tracing::debug!(target: "portico::server", %peer, "TLS handshake timed out; connection closed")
        }
    }
}

/// Which HTTP a connection speaks, when it is known before the first request is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// Not known yet: hyper reads the first bytes to tell.
    Detect,
}

/// The first bytes of an HTTP/2 connection (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain-text client speaks, from its first bytes, which are left in the socket: HTTP/2 with
/// prior knowledge starts with the preface, anything else is HTTP/1. Known before hyper reads, the
/// connection does not go through hyper's version detection, whose replayed bytes made hyper's read
/// buffer grow to 16 KiB for every connection. `None` if the client closed without a byte.
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let read = stream.peek(&mut first).await.ok().filter(|n| *n > 0)?;
    Some(match &first[..read] {
        start if !HTTP2_PREFACE.starts_with(start) => Protocol::Http1,
        whole if whole.len() == HTTP2_PREFACE.len() => Protocol::Http2,
        // A part of the preface: hyper waits for the rest.
        _ => Protocol::Detect,
    })
}

/// Serves HTTP/1.1 or HTTP/2 on one connection until it ends, or the client does not send its first
/// request head within [`HEADER_READ_TIMEOUT`]. When the gateway drains, the connection finishes the
/// requests in flight and closes.
async fn serve_http<I>(
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    bind: usize,
    gateway: Arc<Gateway>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let draining = gateway.draining.clone();
    let first_request = Arc::new(tokio::sync::Notify::new());
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        seen.notify_one();
        // Boxed: hyper keeps the slot for a request's future as long as the connection lives, so an
        // idle keep-alive connection would hold the whole request path's state (5.7 KiB).
        let routing = Box::pin(async move { route(&gateway, bind, request, peer).await });
        async move { Ok::<_, std::convert::Infallible>(routing.await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(KEEP_ALIVE_HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    let builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        Protocol::Detect => builder,
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let first_deadline = tokio::time::sleep(HEADER_READ_TIMEOUT);
    tokio::pin!(first_deadline);
    let (mut started, mut closing) = (false, false);
    let result = loop {
        tokio::select! {
            result = &mut connection => break result,
            // A connection taken while draining still gets its first request answered.
            _ = draining.cancelled(), if !closing && started => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = first_request.notified(), if !started => started = true,
            _ = &mut first_deadline, if !started => {
                tracing::debug!(target: "portico::server", %peer, "no request within the header read timeout; connection closed");
                return;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "portico::server", %peer, error = %e, "connection ended with an error");
    }
}

/// RFC 9728 metadata of the route whose resource path is `resource`, if it has `mcpAuthentication`.
fn protected_resource_metadata(
    listeners: &[Listener],
    request: &Request<Incoming>,
    resource: &str,
) -> Response<Body> {
    let resource = if resource.is_empty() { "/" } else { resource };
    let route = listeners
        .iter()
        .flat_map(|l| &l.matchers)
        .map(|m| &m.route)
        .find(|r| r.authentication.is_some() && r.resource_path == resource);
    let Some((route, authn)) = route.and_then(|r| r.authentication.as_ref().map(|a| (r, a))) else {
        let mut response = Response::new(respond::full("no protected resource here"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let base = handling::base_url(route, request.headers());
    let mut response = Response::new(respond::full(
        authn.metadata(&base, &route.resource_path).to_string(),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn route(
    gateway: &Arc<Gateway>,
    bind: usize,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    match normalized_uri(request.uri()) {
        Ok(Some(uri)) => *request.uri_mut() = uri,
        Ok(None) => {}
        Err(refused) => {
            let refused = respond::refuse(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                format!("{refused}; send the plain path"),
            );
            return respond::after_body(request, refused).await;
        }
    }
    let config = gateway.config.load_full();
    let listeners = &config.binds[bind].listeners;
    if let Some(resource) = request.uri().path().strip_prefix(WELL_KNOWN) {
        let metadata = protected_resource_metadata(listeners, &request, resource);
        return respond::after_body(request, metadata).await;
    }
    let Some(route) = router::find(listeners, &request) else {
        let refused = respond::refuse(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "no route matches this request",
        );
        return respond::after_body(request, refused).await;
    };
    let route = route.clone();
    if !route.hosts.is_empty() {
        return host::serve(gateway, &route, request, peer).await;
    }
    endpoint::handle(gateway, &route, request, peer).await
}

/// The request's URI with its path in canonical form ([`path::normalize`]), if that differs: routes
/// are matched on it, and `host` backends receive it.
fn normalized_uri(uri: &http::Uri) -> Result<Option<http::Uri>, path::Refused> {
    match path::normalize(uri.path())? {
        std::borrow::Cow::Owned(normalized) if normalized != uri.path() => {
            with_path(uri, normalized)
                .map(Some)
                .ok_or(path::Refused::BadEscape)
        }
        _ => Ok(None),
    }
}

fn with_path(uri: &http::Uri, path: String) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}
