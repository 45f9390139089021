//! The HTTP/1 client Streamable HTTP targets are called with: hyper's pooled client, plain or over
//! rustls. Not reqwest, which the other outbound calls use: on the path of every proxied message it
//! parsed the request's URL twice and ran redirect and retry layers a target never needs, a sixth of
//! the instructions of a proxied `tools/call`.

use std::cell::OnceCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

/// A request body: the whole message, as MCP messages are sent.
pub type Body = Full<Bytes>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than the keep-alive of the servers targets are commonly built on (Node.js and uvicorn
/// close an idle connection after 5 s): a connection the server may be closing at that moment is not
/// reused, so a request is never sent into a closing connection ("error sending request").
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

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

pub struct Inner {
    /// One client type for `http://` and `https://` (the connector passes plain URLs through): hyper's
    /// client code is built once into the binary, not once per connector.
    pool: Client<HttpsConnector<HttpConnector>, Body>,
    /// With `backendTLS.sni` naming another host than the URL's: the `Host` header to send, so the
    /// target sees the name it is reached by.
    host: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

thread_local! {
    /// Each worker's pools ([`HttpClient::Worker`]). The TLS one is made on first use only: it loads
    /// the system's roots, which a gateway with only `http://` targets never needs.
    static PLAIN: Inner = Inner::plain();
    static TLS: OnceCell<Inner> = const { OnceCell::new() };
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

fn builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new());
    builder
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
        let https = HttpsConnector::new(connector(), config, false, resolver);
        Self {
            pool: builder().build(https),
            host,
        }
    }

    fn request(&self, mut request: http::Request<Body>) -> ResponseFuture {
        if let Some(host) = &self.host {
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
        }
        self.pool.request(request)
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

    /// Sends `request` on a pooled connection (or a new one).
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        let sending = match self {
            Self::Worker { https: false } => PLAIN.with(|pool| pool.request(request)),
            Self::Worker { https: true } => TLS.with(|pool| {
                pool.get_or_init(|| Inner::new(default_tls(), None))
                    .request(request)
            }),
            Self::Own(pool) => pool.request(request),
        };
        sending.await
    }
}

/// The next piece of a reply body; trailers are skipped. `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// What went wrong, with its causes (e.g. `client error (Connect): invalid peer certificate:
/// UnknownIssuer`), each said once.
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
