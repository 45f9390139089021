//! The HTTP/1 client Streamable HTTP targets are called with: hyper's connections, plain or over
//! rustls, kept open per origin. Not reqwest, which the other outbound calls use: on the path of every
//! proxied message it parsed the request's URL twice and ran redirect and retry layers a target never
//! needs. Not hyper-util's pooled client either: per request it derived the pool key from the URL,
//! hashed it twice with SipHash, built and moved a connect future of ~7 KiB it did not use, and
//! spawned a task to learn when the connection was free again. Here a connection goes back to its
//! pool when the body of its reply ends.

use std::cell::OnceCell;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::ServerName;
use tower_service::Service;

use crate::base::fast_hash::Fast;

/// A request body: the whole message, as MCP messages are sent.
pub type Body = Full<Bytes>;

/// A target's reply; its body gives the connection back to the pool when it ends.
pub type Response = http::Response<ReplyBody>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than the keep-alive of the servers targets are commonly built on (Node.js and uvicorn
/// close an idle connection after 5 s): a connection the server may be closing at that moment is not
/// reused, so a request is never sent into a closing connection ("error sending request").
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A pooled client.
#[derive(Clone)]
pub enum HttpClient {
    /// The pool of the worker that sends: a request and its upstream call stay on the thread that
    /// serves the client's connection, whichever worker made the session (a connection of another
    /// worker's pool would wake that worker twice per call, once to send and once to answer).
    Worker { https: bool },
    /// A target's own pool (`backendTLS`), shared by every worker; clones cost a reference count.
    Own(Arc<Inner>),
}

/// Why a request got no reply head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the target URL names no host")]
    NoHost,
    /// Connecting (TCP, then TLS) failed; the source says why.
    #[error("cannot connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or its reply head read.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

pub struct Inner {
    /// One connector for `http://` and `https://` (it passes plain URLs through): hyper's client code
    /// is built once into the binary, not once per connector.
    connector: HttpsConnector<HttpConnector>,
    idle: Arc<Idle>,
    /// With `backendTLS.sni` naming another host than the URL's: the `Host` header to send, so the
    /// target sees the name it is reached by.
    host: Option<HeaderValue>,
}

/// Open connections ready for a request, by origin.
#[derive(Default)]
struct Idle {
    state: Mutex<IdleState>,
}

#[derive(Default)]
struct IdleState {
    origins: HashMap<Authority, Origin, Fast>,
    /// Whether a task is closing the connections idle longer than [`POOL_IDLE_TIMEOUT`].
    sweeping: bool,
}

struct Origin {
    /// The `Host` header of requests to it.
    host: HeaderValue,
    /// Each with the time it was given back; the most recently used last.
    ready: VecDeque<(SendRequest<Body>, Instant)>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

thread_local! {
    /// Each worker's pools ([`HttpClient::Worker`]). The TLS one is made on first use only: it loads
    /// the system's roots, which a gateway with only `http://` targets never needs.
    static PLAIN: Arc<Inner> = Arc::new(Inner::plain());
    static TLS: OnceCell<Arc<Inner>> = const { OnceCell::new() };
}

thread_local! {
    /// Each worker's `reqwest` client, for SSE and OpenAPI targets without `backendTLS`: made when
    /// such a target is first connected (it loads the system's roots).
    static REQWEST: Option<reqwest::Client> = reqwest_client()
        .inspect_err(|e| tracing::error!(target: "portico::server", error = %e, "cannot build the HTTP client"))
        .ok();
}

/// This worker's `reqwest` client (`None` if it cannot be built, which is logged).
pub fn shared_reqwest() -> Option<reqwest::Client> {
    REQWEST.with(Clone::clone)
}

/// A pooled `reqwest` client for targets, as each worker gets one.
pub fn reqwest_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    http
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS settings for `https://` targets without a `backendTLS` policy: the system's roots.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            let mut config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|e| unreachable!("aws-lc-rs supports the default versions: {e}"));
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

impl Inner {
    fn plain() -> Self {
        // Never used for a TLS connection: `https://` targets get the TLS pool.
        let no_roots = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|e| unreachable!("aws-lc-rs supports the default versions: {e}"));
        Self::new(Arc::new(no_roots), None)
    }

    fn new(
        config: Arc<rustls::ClientConfig>,
        sni: Option<(ServerName<'static>, HeaderValue)>,
    ) -> Self {
        let (resolver, host): (Arc<dyn hyper_rustls::ResolveServerName + Send + Sync>, _) =
            match sni {
                Some((name, host)) => (Arc::new(FixedServerNameResolver::new(name)), Some(host)),
                None => (
                    Arc::new(hyper_rustls::DefaultServerNameResolver::default()),
                    None,
                ),
            };
        Self {
            connector: HttpsConnector::new(connector(), config, false, resolver),
            idle: Arc::default(),
            host,
        }
    }

    /// Sends `request` (its URI absolute) on a ready connection to its origin, or a new one. A
    /// request a reused connection could not take (the target closed it meanwhile) goes on a new one.
    async fn send(&self, request: Request<Body>) -> Result<Response, SendError> {
        let (mut parts, body) = request.into_parts();
        let origin = parts.uri.authority().cloned().ok_or(SendError::NoHost)?;
        let (host, mut pooled) = self.idle.take(&origin, &parts.uri);
        match &self.host {
            Some(named) => {
                parts.headers.insert(http::header::HOST, named.clone());
            }
            None => {
                parts.headers.entry(http::header::HOST).or_insert(host);
            }
        }
        let path = origin_form(&parts.uri);
        let uri = std::mem::replace(&mut parts.uri, path);
        let mut request = Request::from_parts(parts, body);
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => self.connect(&uri).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let keep = Keep {
                        sender,
                        origin,
                        idle: Arc::downgrade(&self.idle),
                    };
                    return Ok(response.map(|body| ReplyBody {
                        body,
                        keep: Some(keep),
                    }));
                }
                Err(mut refused) => match refused.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(refused.into_error())),
                },
            }
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<SendRequest<Body>, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target: "portico::upstream", error = %e, "target connection ended");
            }
        });
        Ok(sender)
    }
}

/// `/path?query` of `uri`, as an HTTP/1 request line names it.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// The `Host` header for `uri`: its host, and its port unless it is the scheme's default.
fn host_header(uri: &Uri) -> HeaderValue {
    let host = uri.host().unwrap_or_default();
    let default_port = if uri.scheme() == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    let text = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&text)
        .unwrap_or_else(|e| unreachable!("a URI's host and port are header text: {e}"))
}

impl Idle {
    /// The `Host` header for `origin`, and an open connection to it ready for a request, if there
    /// is one. Closed connections are dropped, and all of them when the newest has been idle too long.
    fn take(&self, origin: &Authority, uri: &Uri) -> (HeaderValue, Option<SendRequest<Body>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match state.origins.get_mut(origin) {
            Some(entry) => entry,
            None => state.origins.entry(origin.clone()).or_insert(Origin {
                host: host_header(uri),
                ready: VecDeque::new(),
            }),
        };
        while let Some((sender, since)) = entry.ready.pop_back() {
            if since.elapsed() >= POOL_IDLE_TIMEOUT {
                entry.ready.clear();
                break;
            }
            if sender.is_ready() {
                return (entry.host.clone(), Some(sender));
            }
        }
        (entry.host.clone(), None)
    }

    fn put(self: &Arc<Self>, origin: &Authority, sender: SendRequest<Body>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = state.origins.get_mut(origin) else {
            return;
        };
        entry.ready.push_back((sender, Instant::now()));
        if !state.sweeping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            state.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(self)));
        }
    }
}

/// Closes the connections idle longer than [`POOL_IDLE_TIMEOUT`], until none is left, so a target
/// that is no longer called does not keep sockets open.
async fn sweep(idle: Weak<Idle>) {
    loop {
        tokio::time::sleep(POOL_IDLE_TIMEOUT).await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let mut state = idle.state.lock().unwrap_or_else(|p| p.into_inner());
        for origin in state.origins.values_mut() {
            origin.ready.retain(|(sender, since)| {
                since.elapsed() < POOL_IDLE_TIMEOUT && !sender.is_closed()
            });
        }
        if state.origins.values().all(|origin| origin.ready.is_empty()) {
            state.sweeping = false;
            return;
        }
    }
}

/// A connection lent to one reply, given back when the reply's body ends.
struct Keep {
    sender: SendRequest<Body>,
    origin: Authority,
    idle: Weak<Idle>,
}

impl Keep {
    fn give_back(self) {
        let Some(idle) = self.idle.upgrade() else {
            return;
        };
        let Keep {
            mut sender, origin, ..
        } = self;
        if sender.is_ready() {
            idle.put(&origin, sender);
            return;
        }
        // The connection's task has not yet taken the reply as done: given back when it has.
        if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    idle.put(&origin, sender);
                }
            });
        }
    }
}

/// A target's reply body. Read to its end, it gives its connection back to the pool; dropped before
/// (or failed), it takes the connection with it, and hyper closes that.
pub struct ReplyBody {
    body: Incoming,
    keep: Option<Keep>,
}

impl ReplyBody {
    fn give_back(&mut self) {
        if let Some(keep) = self.keep.take() {
            keep.give_back();
        }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ReplyBody {
    /// A reply with nothing left to read (an empty body, as of `202 Accepted`) is done with.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

impl HttpClient {
    /// The sending worker's pool for `http://` or `https://` targets without `backendTLS`.
    pub fn shared(https: bool) -> Self {
        Self::Worker { https }
    }

    /// A client of its own for a target with `backendTLS`. `server_name` replaces the URL's host as
    /// the name sent and verified (`sni`); `host` is then the `Host` header that goes with it.
    pub fn with_tls(
        config: Arc<rustls::ClientConfig>,
        sni: Option<(ServerName<'static>, HeaderValue)>,
    ) -> Self {
        Self::Own(Arc::new(Inner::new(config, sni)))
    }

    /// Sends `request` (its URI absolute) on a pooled connection, or a new one.
    pub async fn send(&self, request: Request<Body>) -> Result<Response, SendError> {
        let pool = match self {
            Self::Worker { https: false } => PLAIN.with(Arc::clone),
            Self::Worker { https: true } => TLS.with(|pool| {
                pool.get_or_init(|| Arc::new(Inner::new(default_tls(), None)))
                    .clone()
            }),
            Self::Own(pool) => pool.clone(),
        };
        pool.send(request).await
    }
}

/// The next piece of a reply body; trailers are skipped. `None` at its end.
pub async fn next_chunk(body: &mut ReplyBody) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// What went wrong, with its causes (e.g. `cannot connect: invalid peer certificate: UnknownIssuer`),
/// each said once.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}
