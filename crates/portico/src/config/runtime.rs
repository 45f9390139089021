//! The immutable runtime form of a config: built once per load, read by every request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::model::{FailureMode, LogFormat, PrefixMode};

/// Everything the gateway serves.
#[derive(Debug)]
pub struct Config {
    pub binds: Vec<Bind>,
    pub settings: Settings,
    /// Problems that do not stop the gateway (shown by `validate` and logged at start).
    pub warnings: Vec<super::ConfigError>,
}

#[derive(Debug)]
pub struct Settings {
    pub session_ttl: Duration,
    /// `config.session`: the keys that seal session ids, and how long an id can be resumed.
    pub session: SessionSettings,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub log_level: Option<String>,
    pub log_format: LogFormat,
    pub limits: LimitSettings,
    /// Where `/healthz/ready` and `/healthz/live` are served.
    pub readiness: EndpointAddr,
    /// Where `/metrics` is served.
    pub stats: EndpointAddr,
    /// Where the admin API (`/config_dump`, `/targets`, `/policies`) is served.
    pub admin: EndpointAddr,
    /// How long a shutdown waits for requests in flight before it closes what is left.
    pub drain_timeout: Duration,
    /// Where spans are exported, if anywhere.
    pub tracing: Option<crate::telemetry::traces::TracingSettings>,
}

/// `config.session`, checked. The keys are secrets: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// The current key (hex) and the previous ones; `None` when no key is configured.
    pub keys: Option<(String, Vec<String>)>,
    pub lifetime: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            keys: None,
            lifetime: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field(
                "keys",
                &self.keys.as_ref().map(|(_, previous)| 1 + previous.len()),
            )
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl SessionSettings {
    /// The keys that seal and open this gateway's session ids: the configured ones, or a random one.
    pub fn keys(&self) -> crate::mcp::session_token::SessionKeys {
        use crate::mcp::session_token::SessionKeys;
        self.keys
            .as_ref()
            .and_then(|(current, previous)| {
                SessionKeys::configured(current, previous, self.lifetime).ok()
            })
            .unwrap_or_else(|| SessionKeys::random(self.lifetime))
    }
}

/// An operator endpoint's address, and whether the config named it: the default is skipped with a
/// warning when it is taken (another gateway on the machine), a configured one is required.
#[derive(Debug, Clone, Copy)]
pub struct EndpointAddr {
    pub addr: SocketAddr,
    pub configured: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(30 * 60),
            session: SessionSettings::default(),
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            log_level: None,
            log_format: LogFormat::Text,
            limits: LimitSettings::default(),
            readiness: EndpointAddr {
                addr: SocketAddr::from(([0, 0, 0, 0], 15021)),
                configured: false,
            },
            stats: EndpointAddr {
                addr: SocketAddr::from(([0, 0, 0, 0], 15020)),
                configured: false,
            },
            admin: EndpointAddr {
                addr: SocketAddr::from(([127, 0, 0, 1], 15000)),
                configured: false,
            },
            drain_timeout: Duration::from_secs(20),
            tracing: None,
        }
    }
}

/// `config.limits` past the request's own size and depth (docs/security.md explains each default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub sessions_per_route: usize,
    /// Live stdio target processes, all sessions together.
    pub stdio_processes: usize,
    pub requests_in_flight_per_session: usize,
    /// Requests targets sent to the client that it has not answered yet.
    pub pending_client_requests_per_session: usize,
    /// How long such a request waits for the client's answer before its target is told it expired.
    pub pending_client_request_timeout: Duration,
    /// How long a request goes on after its client lost its reply stream, for the client to resume it.
    pub stream_resume_grace: Duration,
    pub connections_per_listener: usize,
    /// Largest message a target may send: an HTTP reply body, an SSE event, a stdio line.
    pub upstream_response_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            sessions_per_route: 10_000,
            stdio_processes: 256,
            requests_in_flight_per_session: 64,
            pending_client_requests_per_session: 32,
            // Long enough for a person to answer an elicitation.
            pending_client_request_timeout: Duration::from_secs(10 * 60),
            // Several of a client's reconnection attempts (`retry: 1000`).
            stream_resume_grace: Duration::from_secs(30),
            connections_per_listener: 10_000,
            upstream_response_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
pub struct Bind {
    pub addr: SocketAddr,
    pub listeners: Vec<Listener>,
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// `None` matches any host; `*.example.com` matches subdomains.
    pub hostname: Option<String>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Route matches, most specific first.
    pub matchers: Vec<RouteMatcher>,
}

/// One `matches[]` entry of a route, ranked for lookup.
#[derive(Debug)]
pub struct RouteMatcher {
    pub route: Arc<Route>,
    pub path: PathMatch,
    pub headers: Vec<(http::HeaderName, StringMatch)>,
    pub method: Option<http::Method>,
    pub query: Vec<(String, StringMatch)>,
}

#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// Sort key: exact first, then longer prefixes, then regexes.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            PathMatch::Exact(_) => (0, 0),
            PathMatch::Prefix(p) => (1, usize::MAX - p.len()),
            PathMatch::Regex(_) => (2, 0),
        }
    }
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String),
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(e) => e == value,
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub hostnames: Vec<String>,
    /// The effective `jwtAuth` (route over listener).
    pub jwt: Option<crate::policy::Sourced<crate::policy::jwt::JwtAuth>>,
    /// The effective `cors` (route over listener).
    pub cors: Option<crate::policy::Sourced<crate::policy::cors::Cors>>,
    /// The route's `responseHeaderModifier`, applied to every response.
    pub response_headers: Option<Arc<crate::policy::headers::HeaderModifier>>,
    /// The route's own `localRateLimit`: every request on the route takes a token (HTTP 429 when none).
    pub rate_limit: Option<Arc<crate::policy::rate_limit::RateLimit>>,
    /// `mcpAuthentication`: validates tokens in place of `jwtAuth` and publishes resource metadata.
    pub authentication: Option<Arc<crate::policy::mcp_authn::McpAuthentication>>,
    /// The path clients call, e.g. `/mcp` (the first `matches[].path`), for the resource metadata.
    pub resource_path: String,
    /// Where URLs written for clients point: never simply the client's `Host` header.
    pub origin: PublicOrigin,
    /// MCP backends; empty on a route of `host` backends.
    pub backends: Vec<Backend>,
    /// Plain HTTP backends (`host:`), proxied as they are; empty on an MCP route.
    pub hosts: Vec<Arc<HostBackend>>,
}

/// The `scheme://host[:port]` that URLs written for clients (resource metadata, `WWW-Authenticate`,
/// agent cards) start with. A client's `Host` header is only used where the config vouches for it,
/// so a forged one cannot point other clients (or a shared cache) elsewhere.
#[derive(Debug, Clone)]
pub enum PublicOrigin {
    /// The listener's `publicUrl`.
    Configured(String),
    /// The route or listener lists its host names, so a request reached it only with one of them.
    FromHost { scheme: &'static str },
    /// Neither: a loopback `Host` is used (local development), anything else gets the listener's
    /// own address.
    Local {
        scheme: &'static str,
        fallback: String,
    },
}

impl PublicOrigin {
    /// The origin for a request carrying `host` (its `Host` header).
    pub fn resolve(&self, host: Option<&str>) -> String {
        match (self, host) {
            (PublicOrigin::Configured(origin), _) => origin.clone(),
            (PublicOrigin::FromHost { scheme }, Some(host)) => format!("{scheme}://{host}"),
            (PublicOrigin::Local { scheme, .. }, Some(host)) if is_loopback_authority(host) => {
                format!("{scheme}://{host}")
            }
            (PublicOrigin::FromHost { scheme }, None) => format!("{scheme}://localhost"),
            (PublicOrigin::Local { fallback, .. }, _) => fallback.clone(),
        }
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with an optional port.
fn is_loopback_authority(authority: &str) -> bool {
    let Ok(authority) = authority.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = authority.host().trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl McpBackend {
    /// How many processes a session of this backend starts.
    pub fn stdio_targets(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| matches!(t.kind, TargetKind::Stdio(_)))
            .count()
    }
}

impl Route {
    /// Whether the route serves without sessions (`statefulMode: stateless`; a route's backends agree).
    pub fn is_stateless(&self) -> bool {
        self.backends.first().is_some_and(|b| b.mcp.stateless)
    }

    /// Picks a backend for a new session, by weight.
    pub fn pick_backend(&self) -> &Backend {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 || self.backends.len() == 1 {
            return &self.backends[0];
        }
        let mut pick = rand::random_range(0..total);
        for backend in &self.backends {
            let weight = u64::from(backend.weight);
            if pick < weight {
                return backend;
            }
            pick -= weight;
        }
        &self.backends[0]
    }
}

#[derive(Debug)]
pub struct Backend {
    pub weight: u32,
    pub mcp: Arc<McpBackend>,
}

/// A plain HTTP backend: requests are proxied to `url` with their path and query.
#[derive(Debug)]
pub struct HostBackend {
    /// `<route>/<backend index>`, for logs.
    pub name: String,
    pub weight: u32,
    /// The backend's base URL, e.g. `http://127.0.0.1:9999`.
    pub url: reqwest::Url,
    /// Effective policies (route over backend): headers, credentials, TLS, `a2a`.
    pub policies: crate::policy::TargetPolicies,
    /// With `backendTLS`: the backend's own HTTP client and the URL it calls.
    pub tls_client: Option<(reqwest::Client, reqwest::Url)>,
    /// Header changes and credentials, bound to this backend once.
    pub outbound: crate::policy::outbound::Outbound,
}

impl Route {
    /// Picks a `host` backend for a request, by weight.
    pub fn pick_host(&self) -> Option<&Arc<HostBackend>> {
        let total: u64 = self.hosts.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 || self.hosts.len() <= 1 {
            return self.hosts.first();
        }
        let mut pick = rand::random_range(0..total);
        for backend in &self.hosts {
            if pick < u64::from(backend.weight) {
                return Some(backend);
            }
            pick -= u64::from(backend.weight);
        }
        self.hosts.first()
    }
}

/// An MCP backend: the targets multiplexed behind one endpoint.
#[derive(Debug)]
pub struct McpBackend {
    /// `<route>/<backend index>`, for logs.
    pub name: String,
    pub targets: Vec<Arc<Target>>,
    /// Whether names carry the `<target>_` prefix (resolved from `prefixMode` and the target count).
    pub prefixed: bool,
    pub prefix_mode: PrefixMode,
    pub failure_mode: FailureMode,
    pub dns_rebinding_protection: bool,
    /// `statefulMode: stateless`: no sessions; each request is served on its own.
    pub stateless: bool,
}

#[derive(Debug)]
pub struct Target {
    pub name: Arc<str>,
    pub kind: TargetKind,
    /// Effective policies, inheritance already applied.
    pub policies: crate::policy::TargetPolicies,
    /// With `backendTLS`: this target's own HTTP client.
    pub tls_client: Option<TlsClient>,
    /// With `stdio.pool`: processes started ahead of the sessions that take them.
    pub pool: Option<Arc<crate::mcp::upstream::stdio_pool::StdioPool>>,
    /// What sessions observed of this target, for the admin API (the one mutable part: counters).
    pub health: TargetHealth,
    /// Fingerprint of what a connection to the target depends on (its kind and address or command,
    /// `backendAuth`, `backendTLS`, `requestHeaderModifier` at every level). On reload a live session
    /// keeps its connection to a target whose name and fingerprint stay, and reconnects otherwise.
    pub connection: u64,
    /// Fingerprint of the target's whole effective config, policies included.
    pub revision: u64,
}

/// A target's health as its sessions saw it: lost connections (each one restarted or retried), the
/// last error, and how many tools its last list had.
#[derive(Debug, Default)]
pub struct TargetHealth {
    pub restarts: std::sync::atomic::AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
    pub tools: std::sync::atomic::AtomicUsize,
}

impl TargetHealth {
    pub fn failed(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug)]
pub enum TargetKind {
    Stdio(StdioSpec),
    Http {
        url: reqwest::Url,
        /// `url` as the hyper client takes it, parsed once.
        uri: http::Uri,
    },
    /// The legacy HTTP+SSE transport: `url` is the event stream (e.g. `http://h/sse`).
    Sse {
        url: reqwest::Url,
    },
    /// A REST service: `url` is its base URL, `api` its operations as tools.
    OpenApi {
        url: reqwest::Url,
        api: std::sync::Arc<crate::config::openapi::Api>,
    },
}

impl TargetKind {
    /// A Streamable HTTP target: its upstream sessions can be carried on by any replica.
    pub fn is_streamable_http(&self) -> bool {
        matches!(self, TargetKind::Http { .. })
    }

    /// What and where, for people: `stdio: npx server`, `mcp: https://h/mcp`, `sse: http://h/sse`.
    pub fn describe(&self) -> String {
        match self {
            TargetKind::Stdio(spec) => {
                format!("stdio: {} {}", spec.cmd.display(), spec.args.join(" "))
                    .trim_end()
                    .to_string()
            }
            TargetKind::Http { url, .. } => format!("mcp: {url}"),
            TargetKind::Sse { url } => format!("sse: {url}"),
            TargetKind::OpenApi { url, api } => match api.operations.len() {
                1 => format!("openapi: {url} (1 operation)"),
                n => format!("openapi: {url} ({n} operations)"),
            },
        }
    }

    /// The target's field in the config: `stdio`, `mcp`, `sse`.
    pub fn config_key(&self) -> &'static str {
        match self {
            TargetKind::Stdio(_) => "stdio",
            TargetKind::Http { .. } => "mcp",
            TargetKind::Sse { .. } => "sse",
            TargetKind::OpenApi { .. } => "openapi",
        }
    }
}

/// A remote target's own client, made once at load for its `backendTLS` policy.
#[derive(Debug)]
pub enum TlsClient {
    /// For a Streamable HTTP target.
    Mcp(crate::base::http_client::HttpClient),
    /// For SSE and OpenAPI targets: the client, and the URL it calls (another host than the
    /// configured one when `sni` names one).
    Reqwest(reqwest::Client, reqwest::Url),
}

#[derive(Debug, Clone)]
pub struct StdioSpec {
    pub cmd: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub clear_env: bool,
}
