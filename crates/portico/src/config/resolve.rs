//! Checks a parsed [`File`] and builds the runtime [`Config`], collecting every error on the way.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::model::{self, File, Policies, PrefixMode, Protocol, StatefulMode};
use super::runtime::{self, Config, Settings};
use crate::base::diagnostic::ConfigError;
use crate::base::units::{parse_duration, parse_size};
use crate::policy::{Level, LevelPolicies, Sourced, TargetPolicies};
use crate::telemetry::traces::OtlpProtocol;

#[derive(Default)]
struct Resolver {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Resolver {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) -> &mut ConfigError {
        self.errors.push(ConfigError::new(path, message));
        self.errors.last_mut().expect("just pushed")
    }

    /// Checks and compiles a `policies` object at `level`.
    fn policies(&mut self, policies: Option<&Policies>, level: Level, path: &str) -> LevelPolicies {
        LevelPolicies::compile(policies, level, path, &mut self.errors)
    }

    fn both_backend_spellings(
        &mut self,
        outer: Option<&Policies>,
        inner: Option<&Policies>,
        path: &str,
    ) {
        let (Some(outer), Some(inner)) = (outer, inner) else {
            return;
        };
        let inner_types = inner.present();
        for policy in outer
            .present()
            .into_iter()
            .filter(|p| inner_types.contains(p))
        {
            self.error(
                format!("{path}.policies.{policy}"),
                format!("policy `{policy}` is set both in `backends[].policies` and `backends[].mcp.policies`"),
            )
            .hint = Some("keep one of the two; they are the same level".into());
        }
    }
}

/// Builds the runtime config; `Err` holds every error found.
pub fn resolve(file: File) -> Result<Config, Vec<ConfigError>> {
    let mut r = Resolver::default();
    let settings = settings(&mut r, &file.config);
    let mut binds = Vec::new();
    let mut seen_addrs = HashSet::new();
    let file_binds = with_shorthand(file.binds, file.mcp, &mut r);
    if file_binds.is_empty() {
        r.error(
            "binds",
            "nothing to serve: the file has no `binds` and no `mcp` shorthand",
        )
        .hint = Some("see examples/quickstart.yaml".into());
    }
    for (b, bind) in file_binds.iter().enumerate() {
        let path = format!("binds[{b}]");
        let Some(addr) = bind_addr(&mut r, bind, &path) else {
            continue;
        };
        if !seen_addrs.insert(addr) {
            r.error(format!("{path}.port"), format!("{addr} is bound twice"))
                .hint = Some("merge the listeners into one bind".into());
        }
        if bind.listeners.is_empty() {
            r.error(
                format!("{path}.listeners"),
                "a bind needs at least one listener",
            );
        }
        let listeners = bind
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(l, listener)| {
                listener_rt(&mut r, listener, &format!("{path}.listeners[{l}]"), l, addr)
            })
            .collect();
        binds.push(runtime::Bind { addr, listeners });
    }
    if r.errors.is_empty() {
        Ok(Config {
            binds,
            settings,
            warnings: r.warnings,
        })
    } else {
        Err(r.errors)
    }
}

/// The `mcp:` shorthand becomes one more bind, so the rest of the code sees one shape.
fn with_shorthand(
    mut binds: Vec<model::Bind>,
    mcp: Option<model::McpShorthand>,
    r: &mut Resolver,
) -> Vec<model::Bind> {
    let Some(mcp) = mcp else { return binds };
    if !binds.is_empty() {
        r.error("mcp", "`mcp` shorthand and `binds` cannot be used together")
            .hint = Some("move the shorthand's targets into a route of `binds`".into());
    }
    binds.push(model::Bind {
        port: mcp.port,
        address: mcp.address,
        listeners: vec![model::Listener {
            name: None,
            hostname: None,
            public_url: mcp.public_url,
            protocol: Protocol::HTTP,
            tls: None,
            policies: None,
            routes: vec![model::Route {
                name: None,
                hostnames: vec![],
                matches: vec![],
                policies: None,
                backends: vec![model::Backend {
                    weight: None,
                    policies: None,
                    host: None,
                    mcp: Some(model::McpBackend {
                        targets: mcp.targets,
                        policies: mcp.policies,
                        prefix_mode: mcp.prefix_mode,
                        failure_mode: mcp.failure_mode,
                        stateful_mode: mcp.stateful_mode,
                        dns_rebinding_protection: mcp.dns_rebinding_protection,
                    }),
                }],
            }],
        }],
    });
    binds
}

fn settings(r: &mut Resolver, config: &model::Settings) -> Settings {
    let mut settings = Settings::default();
    let unsupported = [("config.session", config.session.is_some())];
    for (path, set) in unsupported {
        if set {
            r.error(path, "this setting is not supported yet").hint =
                Some("remove it; this build of Portico refuses it rather than ignore it".into());
        }
    }
    if let Some(ttl) = duration_setting(r, &config.mcp.session_ttl, "config.mcp.sessionTtl") {
        settings.session_ttl = ttl;
    }
    if let Some(drain) = duration_setting(r, &config.drain_timeout, "config.drainTimeout") {
        settings.drain_timeout = drain;
    }
    if let Some(addr) = endpoint_setting(r, &config.readiness_addr, "config.readinessAddr") {
        settings.readiness = addr;
    }
    if let Some(addr) = endpoint_setting(r, &config.stats_addr, "config.statsAddr") {
        settings.stats = addr;
    }
    if let Some(addr) = endpoint_setting(r, &config.admin_addr, "config.adminAddr") {
        settings.admin = addr;
    }
    settings.tracing = tracing_setting(r, config.tracing.as_ref());
    if let Some(level) = &config.logging.level {
        if tracing_subscriber::EnvFilter::try_new(level).is_err() {
            r.error(
                "config.logging.level",
                format!("`{level}` is not a log level or filter"),
            )
            .hint = Some("use error, warn, info, debug or trace".into());
        }
        settings.log_level = Some(level.clone());
    }
    settings.log_format = config.logging.format;
    if let Some(bytes) = size_setting(r, &config.limits.request_body, "requestBody") {
        settings.max_body_bytes = bytes;
    }
    match config.limits.json_depth {
        Some(0) => {
            r.error("config.limits.jsonDepth", "must be at least 1");
        }
        Some(depth) => settings.max_json_depth = depth,
        None => {}
    }
    let limits = &mut settings.limits;
    let counts = [
        (
            "sessionsPerRoute",
            config.limits.sessions_per_route,
            &mut limits.sessions_per_route,
        ),
        (
            "stdioProcesses",
            config.limits.stdio_processes,
            &mut limits.stdio_processes,
        ),
        (
            "requestsInFlightPerSession",
            config.limits.requests_in_flight_per_session,
            &mut limits.requests_in_flight_per_session,
        ),
        (
            "pendingClientRequestsPerSession",
            config.limits.pending_client_requests_per_session,
            &mut limits.pending_client_requests_per_session,
        ),
        (
            "connectionsPerListener",
            config.limits.connections_per_listener,
            &mut limits.connections_per_listener,
        ),
    ];
    for (name, value, setting) in counts {
        match value {
            Some(0) => {
                r.error(format!("config.limits.{name}"), "must be at least 1");
            }
            Some(n) => *setting = n,
            None => {}
        }
    }
    if let Some(bytes) = size_setting(r, &config.limits.upstream_response, "upstreamResponse") {
        limits.upstream_response_bytes = bytes;
    }
    let pending_timeout = &config.limits.pending_client_request_timeout;
    let path = "config.limits.pendingClientRequestTimeout";
    if let Some(timeout) = duration_setting(r, pending_timeout, path) {
        limits.pending_client_request_timeout = timeout;
    }
    settings
}

/// Where spans go: `config.tracing`, else the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
/// is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` for OTLP/HTTP); `None` when neither is set.
/// The protocol: `otlpProtocol`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http`.
fn tracing_setting(
    r: &mut Resolver,
    config: Option<&model::TracingSettings>,
) -> Option<crate::telemetry::traces::TracingSettings> {
    let protocol = config
        .and_then(|c| c.otlp_protocol.clone())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok());
    let protocol = match protocol.as_deref() {
        None | Some("http") | Some("http/protobuf") => OtlpProtocol::Http,
        Some("grpc") => OtlpProtocol::Grpc,
        Some(other) => {
            r.error(
                "config.tracing.otlpProtocol",
                format!("`{other}` is not an OTLP protocol"),
            )
            .hint = Some("use `http` or `grpc`".into());
            return None;
        }
    };
    let configured = config.and_then(|c| c.otlp_endpoint.clone());
    let (text, as_is) = match configured {
        Some(text) => (text, false),
        None => match std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Ok(text) => (text, true),
            Err(_) => (std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?, false),
        },
    };
    let Ok(mut endpoint) = reqwest::Url::parse(&text) else {
        r.error(
            "config.tracing.otlpEndpoint",
            format!("`{text}` is not a URL"),
        )
        .hint = Some("e.g. `http://otel-collector:4318`".into());
        return None;
    };
    // gRPC names its method itself; only OTLP/HTTP has a path to add.
    if protocol == OtlpProtocol::Http && !as_is && matches!(endpoint.path(), "" | "/") {
        endpoint.set_path("/v1/traces");
    }
    let sampling = config.and_then(|c| c.sampling_rate).unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sampling) {
        r.error(
            "config.tracing.samplingRate",
            format!("{sampling} is not between 0 and 1"),
        );
        return None;
    }
    Some(crate::telemetry::traces::TracingSettings {
        endpoint,
        protocol,
        sampling,
    })
}

/// An operator endpoint's `ip:port` at `path`, if set and valid; an invalid one is reported.
fn endpoint_setting(
    r: &mut Resolver,
    text: &Option<String>,
    path: &str,
) -> Option<runtime::EndpointAddr> {
    let text = text.as_ref()?;
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(runtime::EndpointAddr {
            addr,
            configured: true,
        }),
        Err(_) => {
            r.error(path, format!("`{text}` is not an address")).hint =
                Some("write `ip:port`, e.g. `0.0.0.0:15020` or `127.0.0.1:0`".into());
            None
        }
    }
}

/// A duration setting at `path`, if set and valid (not zero); an invalid one is reported.
fn duration_setting(r: &mut Resolver, text: &Option<String>, path: &str) -> Option<Duration> {
    let text = text.as_ref()?;
    match parse_duration(text) {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            r.error(path, format!("`{text}` is not a duration")).hint =
                Some("write e.g. `90s`, `30m` or `2h`".into());
            None
        }
    }
}

/// A size under `config.limits` (`name`), if set and valid; an invalid one is reported.
fn size_setting(r: &mut Resolver, value: &Option<serde_json::Value>, name: &str) -> Option<usize> {
    let value = value.as_ref()?;
    match parse_size(value) {
        Some(bytes) if bytes > 0 => Some(bytes),
        _ => {
            r.error(
                format!("config.limits.{name}"),
                format!("`{value}` is not a size"),
            )
            .hint = Some("write bytes, or e.g. `512KiB`, `4MiB`".into());
            None
        }
    }
}

fn bind_addr(r: &mut Resolver, bind: &model::Bind, path: &str) -> Option<SocketAddr> {
    let Some(address) = &bind.address else {
        return Some(SocketAddr::from(([0, 0, 0, 0], bind.port)));
    };
    let host = if address == "localhost" {
        "127.0.0.1"
    } else {
        address.as_str()
    };
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, bind.port)),
        Err(_) => {
            r.error(
                format!("{path}.address"),
                format!("`{address}` is not an IP address"),
            )
            .hint = Some("write e.g. `127.0.0.1`, `0.0.0.0` or `::`".into());
            None
        }
    }
}

fn listener_rt(
    r: &mut Resolver,
    listener: &model::Listener,
    path: &str,
    index: usize,
    addr: SocketAddr,
) -> Option<runtime::Listener> {
    let listener_policies = r.policies(
        listener.policies.as_ref(),
        Level::Listener,
        &format!("{path}.policies"),
    );
    let tls = match (listener.protocol, &listener.tls) {
        (Protocol::HTTPS, Some(tls)) => load_tls(r, tls, &format!("{path}.tls")),
        (Protocol::HTTPS, None) => {
            r.error(
                format!("{path}.tls"),
                "an HTTPS listener needs `tls: {cert, key}`",
            );
            None
        }
        (Protocol::HTTP, Some(_)) => {
            r.error(format!("{path}.tls"), "`tls` is set on an HTTP listener")
                .hint = Some("set `protocol: HTTPS`, or remove `tls`".into());
            None
        }
        (Protocol::HTTP, None) => None,
    };
    if listener.routes.is_empty() {
        r.error(
            format!("{path}.routes"),
            "a listener needs at least one route",
        );
    }
    let origin = public_origin(r, listener, path, addr, tls.is_some());
    let mut matchers = Vec::new();
    for (i, route) in listener.routes.iter().enumerate() {
        let route_path = format!("{path}.routes[{i}]");
        let name = route.name.clone().unwrap_or_else(|| format!("route{i}"));
        let Some(route_rt) = route_rt(
            r,
            route,
            &route_path,
            &name,
            &listener_policies,
            origin.clone(),
        ) else {
            continue;
        };
        let route_rt = Arc::new(route_rt);
        if route.matches.is_empty() {
            matchers.push(runtime::RouteMatcher {
                route: route_rt.clone(),
                path: runtime::PathMatch::Prefix("/".into()),
                headers: vec![],
                method: None,
                query: vec![],
            });
        }
        for (m, matcher) in route.matches.iter().enumerate() {
            if let Some(matcher) =
                matcher_rt(r, matcher, &format!("{route_path}.matches[{m}]"), &route_rt)
            {
                matchers.push(matcher);
            }
        }
    }
    // Stable sort keeps config order among equally specific matches.
    matchers.sort_by_key(|m| m.path.rank());
    Some(runtime::Listener {
        name: listener
            .name
            .clone()
            .unwrap_or_else(|| format!("listener{index}")),
        hostname: listener.hostname.clone(),
        tls,
        matchers,
    })
}

/// Where the listener's client-facing URLs point: `publicUrl`, else the `Host` when the listener
/// names its host, else its own address (see [`runtime::PublicOrigin`]).
fn public_origin(
    r: &mut Resolver,
    listener: &model::Listener,
    path: &str,
    addr: SocketAddr,
    tls: bool,
) -> runtime::PublicOrigin {
    let scheme = if tls { "https" } else { "http" };
    if let Some(url) = &listener.public_url {
        let origin = url.trim_end_matches('/');
        match reqwest::Url::parse(origin) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https")
                    && parsed.host().is_some()
                    && parsed.path() == "/"
                    && parsed.query().is_none() =>
            {
                return runtime::PublicOrigin::Configured(origin.to_string());
            }
            _ => {
                r.error(
                    format!("{path}.publicUrl"),
                    format!("`{url}` is not an origin (scheme://host[:port], no path)"),
                )
                .hint = Some("e.g. `publicUrl: https://mcp.example.com`".into());
            }
        }
    }
    if listener.hostname.is_some() {
        return runtime::PublicOrigin::FromHost { scheme };
    }
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    runtime::PublicOrigin::Local {
        scheme,
        fallback: format!("{scheme}://{host}:{}", addr.port()),
    }
}

fn load_tls(
    r: &mut Resolver,
    tls: &model::ListenerTls,
    path: &str,
) -> Option<Arc<rustls::ServerConfig>> {
    let certs = crate::base::pem::certificates(&tls.cert);
    let key = crate::base::pem::private_key(&tls.key);
    let (certs, key) = match (certs, key) {
        (Ok(certs), Ok(key)) => (certs, key),
        (certs, key) => {
            for (field, error) in [("cert", certs.err()), ("key", key.err())] {
                if let Some(error) = error {
                    r.error(format!("{path}.{field}"), error);
                }
            }
            return None;
        }
    };
    match rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
    {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(Arc::new(config))
        }
        Err(e) => {
            r.error(
                path,
                format!("certificate and key do not form a usable TLS identity: {e}"),
            );
            None
        }
    }
}

fn compile(r: &mut Resolver, pattern: &str, path: &str) -> Option<Regex> {
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            r.error(path, format!("invalid regex: {e}"));
            None
        }
    }
}

fn string_match(
    r: &mut Resolver,
    m: &model::StringMatch,
    path: &str,
) -> Option<runtime::StringMatch> {
    match m {
        model::StringMatch::Exact(s) => Some(runtime::StringMatch::Exact(s.clone())),
        model::StringMatch::Regex(p) => {
            compile(r, p, &format!("{path}.regex")).map(runtime::StringMatch::Regex)
        }
    }
}

fn matcher_rt(
    r: &mut Resolver,
    m: &model::Match,
    path: &str,
    route: &Arc<runtime::Route>,
) -> Option<runtime::RouteMatcher> {
    let path_match = match &m.path {
        None => runtime::PathMatch::Prefix("/".into()),
        Some(model::PathMatch::Exact(p)) => runtime::PathMatch::Exact(p.clone()),
        Some(model::PathMatch::PathPrefix(p)) => runtime::PathMatch::Prefix(p.clone()),
        Some(model::PathMatch::Regex(p)) => runtime::PathMatch::Regex(compile(
            r,
            &format!("^(?:{p})$"),
            &format!("{path}.path.regex"),
        )?),
    };
    let mut headers = Vec::new();
    for (h, header) in m.headers.iter().enumerate() {
        let hpath = format!("{path}.headers[{h}]");
        let Ok(name) = http::HeaderName::from_bytes(header.name.as_bytes()) else {
            r.error(
                format!("{hpath}.name"),
                format!("`{}` is not a header name", header.name),
            );
            continue;
        };
        if let Some(value) = string_match(r, &header.value, &format!("{hpath}.value")) {
            headers.push((name, value));
        }
    }
    let query = m
        .query
        .iter()
        .enumerate()
        .filter_map(|(q, query)| {
            string_match(r, &query.value, &format!("{path}.query[{q}].value"))
                .map(|v| (query.name.clone(), v))
        })
        .collect();
    let method = match &m.method {
        None => None,
        Some(method) => match http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                r.error(
                    format!("{path}.method"),
                    format!("`{method}` is not an HTTP method"),
                );
                None
            }
        },
    };
    Some(runtime::RouteMatcher {
        route: route.clone(),
        path: path_match,
        headers,
        method,
        query,
    })
}

/// The path a client calls on this route: the first exact or prefix path it matches, else `/`.
fn resource_path(route: &model::Route) -> String {
    route
        .matches
        .iter()
        .find_map(|m| match &m.path {
            Some(model::PathMatch::Exact(p) | model::PathMatch::PathPrefix(p)) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "/".into())
}

fn route_rt(
    r: &mut Resolver,
    route: &model::Route,
    path: &str,
    name: &str,
    listener_policies: &LevelPolicies,
    origin: runtime::PublicOrigin,
) -> Option<runtime::Route> {
    let route_policies = r.policies(
        route.policies.as_ref(),
        Level::Route,
        &format!("{path}.policies"),
    );
    if route.backends.is_empty() {
        r.error(
            format!("{path}.backends"),
            "a route needs at least one backend",
        );
        return None;
    }
    let resolved: Vec<_> = route
        .backends
        .iter()
        .enumerate()
        .filter_map(|(b, backend)| {
            backend_rt(
                r,
                backend,
                &format!("{path}.backends[{b}]"),
                &format!("{name}/{b}"),
                &route_policies,
            )
        })
        .collect();
    let complete = resolved.len() == route.backends.len();
    let mut backends = Vec::new();
    let mut hosts: Vec<Arc<runtime::HostBackend>> = Vec::new();
    for backend in resolved {
        match backend {
            Resolved::Mcp(mcp) => backends.push(mcp),
            Resolved::Host(host) => hosts.push(Arc::from(host)),
        }
    }
    if !backends.is_empty() && !hosts.is_empty() {
        r.error(
            format!("{path}.backends"),
            "a route's backends are either all `mcp` or all `host`",
        )
        .hint = Some("put the `host` backends on a route of their own".into());
    }
    let weights: Vec<u32> = backends
        .iter()
        .map(|b| b.weight)
        .chain(hosts.iter().map(|h| h.weight))
        .collect();
    if weights.len() > 1 && weights.iter().all(|w| *w == 0) {
        r.error(
            format!("{path}.backends"),
            "every backend has weight 0, so none can be picked",
        );
    }
    let jwt = crate::policy::resolve([
        Sourced::at(&listener_policies.jwt, Level::Listener),
        Sourced::at(&route_policies.jwt, Level::Route),
    ]);
    let cors = crate::policy::resolve([
        Sourced::at(&listener_policies.cors, Level::Listener),
        Sourced::at(&route_policies.cors, Level::Route),
    ]);
    let origin = match origin {
        runtime::PublicOrigin::Local { scheme, .. } if !route.hostnames.is_empty() => {
            runtime::PublicOrigin::FromHost { scheme }
        }
        origin => origin,
    };
    let writes_urls = route_policies.mcp_authentication.is_some()
        || hosts.iter().any(|h| h.policies.a2a.is_some());
    if writes_urls && let runtime::PublicOrigin::Local { fallback, .. } = &origin {
        r.warnings.push(ConfigError::warning(
            path.to_string(),
            format!("this route writes URLs for clients (resource metadata, agent cards) but its listener has no `publicUrl` or `hostname` and the route no `hostnames`: clients that do not call it as localhost get `{fallback}`"),
        ));
    }
    complete.then(|| runtime::Route {
        name: name.to_string(),
        hostnames: route.hostnames.clone(),
        jwt,
        cors,
        response_headers: route_policies.response_headers.clone(),
        rate_limit: route_policies.rate_limit.clone(),
        authentication: route_policies.mcp_authentication.clone(),
        resource_path: resource_path(route),
        origin,
        backends,
        hosts,
    })
}

enum Resolved {
    Mcp(runtime::Backend),
    Host(Box<runtime::HostBackend>),
}

fn backend_rt(
    r: &mut Resolver,
    backend: &model::Backend,
    path: &str,
    name: &str,
    route_policies: &LevelPolicies,
) -> Option<Resolved> {
    let outer = r.policies(
        backend.policies.as_ref(),
        Level::Backend,
        &format!("{path}.policies"),
    );
    match (&backend.mcp, &backend.host) {
        (Some(mcp), None) => {
            let inner = r.policies(
                mcp.policies.as_ref(),
                Level::Backend,
                &format!("{path}.mcp.policies"),
            );
            r.both_backend_spellings(backend.policies.as_ref(), mcp.policies.as_ref(), path);
            let inherited = [route_policies, &outer.or(inner)];
            let mcp = mcp_backend_rt(r, mcp, &format!("{path}.mcp"), name, inherited)?;
            Some(Resolved::Mcp(runtime::Backend {
                weight: backend.weight.unwrap_or(1),
                mcp: Arc::new(mcp),
            }))
        }
        (None, Some(host)) => {
            let own = LevelPolicies::default();
            let policies = TargetPolicies::resolve(route_policies, &outer, &own);
            if policies.authorization.is_some() || policies.ai.is_some() {
                r.error(
                    format!("{path}.policies"),
                    "`mcpAuthorization` and `ai` apply to MCP traffic, not to a `host` backend",
                );
            }
            let base = if host.contains("://") {
                host.clone()
            } else {
                format!("http://{host}")
            };
            let url = http_url(r, &base, &format!("{path}.host"))?;
            let tls_client = match &policies.backend_tls {
                Some(tls) if url.scheme() == "https" => match tls.policy.client(&url) {
                    Ok(client) => Some(client),
                    Err(message) => {
                        r.error(format!("{path}.host"), message);
                        return None;
                    }
                },
                _ => None,
            };
            let outbound = crate::mcp::upstream::outbound::Outbound::new(&policies, &url, None);
            Some(Resolved::Host(Box::new(runtime::HostBackend {
                name: name.to_string(),
                weight: backend.weight.unwrap_or(1),
                url,
                policies,
                tls_client,
                outbound,
            })))
        }
        _ => {
            r.error(path, "a backend needs exactly one of `mcp` or `host`");
            None
        }
    }
}

fn mcp_backend_rt(
    r: &mut Resolver,
    mcp: &model::McpBackend,
    path: &str,
    name: &str,
    inherited: [&LevelPolicies; 2],
) -> Option<runtime::McpBackend> {
    if mcp.stateful_mode == StatefulMode::Stateless {
        r.error(
            format!("{path}.statefulMode"),
            "`stateless` is not supported yet",
        )
        .hint = Some("remove it to use the default, `stateful`".into());
    }
    if mcp.targets.is_empty() {
        r.error(
            format!("{path}.targets"),
            "an MCP backend needs at least one target",
        );
        return None;
    }
    let mut names = HashSet::new();
    let mut targets = Vec::new();
    for (t, target) in mcp.targets.iter().enumerate() {
        let tpath = format!("{path}.targets[{t}]");
        if !names.insert(target.name.as_str()) {
            r.error(
                format!("{tpath}.name"),
                format!(
                    "target name `{}` is used twice in this backend",
                    target.name
                ),
            );
        }
        if let Some(target) = target_rt(r, target, &tpath, inherited) {
            if target.policies.authorization.is_none() {
                r.warnings.push(
                    ConfigError::warning(&tpath, format!("target `{}` has no mcpAuthorization at any level: every caller sees and calls everything it serves", target.name))
                        .hint("be explicit, even when permissive: `policies: {mcpAuthorization: {rules: [\"true\"]}}`"),
                );
            }
            targets.push(Arc::new(target));
        }
    }
    let prefixed = match mcp.prefix_mode {
        PrefixMode::Always => true,
        PrefixMode::Never => false,
        PrefixMode::Conditional => mcp.targets.len() > 1,
    };
    (targets.len() == mcp.targets.len()).then(|| runtime::McpBackend {
        name: name.to_string(),
        targets,
        prefixed,
        prefix_mode: mcp.prefix_mode,
        failure_mode: mcp.failure_mode,
        dns_rebinding_protection: mcp.dns_rebinding_protection,
    })
}

fn target_name_error(name: &str) -> Option<(String, &'static str)> {
    if name.is_empty() {
        return Some((
            "a target name cannot be empty".into(),
            "use e.g. `github` or `files-1`",
        ));
    }
    if let Some(sep) = name.chars().find(|c| *c == '_' || *c == '+') {
        return Some((
            format!("target name `{name}` contains `{sep}`, a multiplexing separator"),
            "use lowercase letters, digits, `-` and `.`",
        ));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    (!valid).then(|| {
        (
            format!("target name `{name}` may only contain lowercase letters, digits, `-` and `.`"),
            "e.g. `public-tools`",
        )
    })
}

fn target_rt(
    r: &mut Resolver,
    target: &model::Target,
    path: &str,
    [route_policies, backend_policies]: [&LevelPolicies; 2],
) -> Option<runtime::Target> {
    if let Some((message, hint)) = target_name_error(&target.name) {
        r.error(format!("{path}.name"), message).hint = Some(hint.into());
    }
    let own = r.policies(
        target.policies.as_ref(),
        Level::Target,
        &format!("{path}.policies"),
    );
    if target.stdio.is_some() && own.backend_tls.is_some() {
        r.error(
            format!("{path}.policies.backendTLS"),
            "backendTLS does not apply to stdio targets: there is no connection to secure",
        );
    }
    if let Some(tls) = &own.backend_tls {
        let relaxed = [
            (
                tls.insecure,
                "insecure",
                "TLS certificates of this target are not verified",
            ),
            (
                tls.insecure_host && !tls.insecure,
                "insecureHost",
                "the server name in this target's TLS certificate is not verified",
            ),
        ];
        for (set, field, message) in relaxed {
            if set {
                r.warnings.push(ConfigError::warning(
                    format!("{path}.policies.backendTLS.{field}"),
                    message,
                ));
            }
        }
    }
    if target.stdio.is_some() && own.backend_auth.is_some() {
        r.error(
            format!("{path}.policies.backendAuth"),
            "backendAuth does not apply to stdio targets: Portico starts them itself, there is nothing to authenticate to",
        )
        .hint = Some("pass credentials in `stdio.env` instead".into());
    }
    if target.stdio.is_some() && own.request_headers.is_some() {
        r.error(
            format!("{path}.policies.requestHeaderModifier"),
            "requestHeaderModifier does not apply to stdio targets: Portico talks to them over stdin, not HTTP",
        )
        .hint = Some("set it on an `mcp` (HTTP) target, or remove it".into());
    }
    let policies = TargetPolicies::resolve(route_policies, backend_policies, &own);
    let kinds = [
        target.stdio.is_some(),
        target.mcp.is_some(),
        target.sse.is_some(),
        target.openapi.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        r.error(
            path,
            "a target needs exactly one of `stdio`, `mcp`, `sse`, `openapi`",
        );
        return None;
    }
    let kind = if let Some(stdio) = &target.stdio {
        if stdio.cmd.trim().is_empty() {
            r.error(format!("{path}.stdio.cmd"), "the command is empty");
            return None;
        }
        runtime::TargetKind::Stdio(runtime::StdioSpec {
            cmd: stdio.cmd.clone().into(),
            args: stdio.args.clone(),
            env: stdio.env.clone(),
            clear_env: stdio.clear_env,
        })
    } else if let Some(http) = &target.mcp {
        runtime::TargetKind::Http {
            url: http_url(r, &http.host, &format!("{path}.mcp.host"))?,
        }
    } else if let Some(sse) = &target.sse {
        runtime::TargetKind::Sse {
            url: http_url(r, &sse.host, &format!("{path}.sse.host"))?,
        }
    } else if let Some(openapi) = &target.openapi {
        let path = format!("{path}.openapi");
        let host = if openapi.host.contains("://") {
            openapi.host.clone()
        } else {
            format!("http://{}", openapi.host)
        };
        let url = http_url(r, &host, &format!("{path}.host"))?;
        let api = match super::documents::openapi_document(&openapi.schema).and_then(
            |(field, document)| {
                crate::mcp::upstream::openapi::spec::read(&document).map_err(|e| (field, e))
            },
        ) {
            Ok(api) => api,
            Err((field, message)) => {
                r.error(format!("{path}.schema{field}"), message);
                return None;
            }
        };
        runtime::TargetKind::OpenApi {
            url,
            api: std::sync::Arc::new(api),
        }
    } else {
        return None;
    };
    let remote_url = match &kind {
        runtime::TargetKind::Http { url }
        | runtime::TargetKind::Sse { url }
        | runtime::TargetKind::OpenApi { url, .. } => Some(url),
        runtime::TargetKind::Stdio(_) => None,
    };
    let tls_client = match (remote_url, &policies.backend_tls) {
        (Some(url), Some(tls)) if url.scheme() == "https" => match tls.policy.client(url) {
            Ok(client) => Some(client),
            Err(message) => {
                r.error(format!("{path}.{}.host", kind.config_key()), message);
                return None;
            }
        },
        (Some(url), Some(_)) if own.backend_tls.is_some() => {
            r.error(
                format!("{path}.policies.backendTLS"),
                format!("`{url}` is not an https:// URL"),
            );
            return None;
        }
        _ => None,
    };
    let connection = crate::policy::fingerprint(&(
        (&target.stdio, &target.mcp, &target.sse, &target.openapi),
        [route_policies, backend_policies, &own].map(|level| level.connection),
    ));
    let revision = crate::policy::fingerprint(&(
        connection,
        [route_policies, backend_policies, &own].map(|level| level.revision),
    ));
    Some(runtime::Target {
        name: target.name.as_str().into(),
        kind,
        policies,
        tls_client,
        health: Default::default(),
        connection,
        revision,
    })
}

fn http_url(r: &mut Resolver, host: &str, path: &str) -> Option<reqwest::Url> {
    match reqwest::Url::parse(host) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) | Err(_) => {
            r.error(path, format!("`{host}` is not an http:// or https:// URL"))
                .hint = Some("write the full endpoint, e.g. `http://127.0.0.1:8080/mcp`".into());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {}

    #[test]
    fn target_names() {
        assert!(target_name_error("files-1.eu").is_none());
        assert!(
            target_name_error("my_tools")
                .unwrap()
                .0
                .contains("separator")
        );
        assert!(target_name_error("a+b").unwrap().0.contains("separator"));
        assert!(target_name_error("Tools").is_some());
    }

    #[test]
    fn prefix_paths_match_whole_segments() {
        let p = runtime::PathMatch::Prefix("/mcp".into());
        assert!(p.matches("/mcp"));
        assert!(p.matches("/mcp/x"));
        assert!(!p.matches("/mcpx"));
        assert!(runtime::PathMatch::Prefix("/".into()).matches("/anything"));
    }
}
