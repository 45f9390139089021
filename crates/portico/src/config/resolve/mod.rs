//! Checks a parsed [`File`] and builds the runtime [`Config`], collecting every error on the way.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use regex::Regex;

use super::model::{self, File, Policies, Protocol};
use super::runtime::{self, Config};
use crate::base::diagnostic::ConfigError;
use crate::policy::{Level, LevelPolicies, Sourced};

mod settings;
mod targets;

use settings::settings;
use targets::{Resolved, backend_rt};

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
    if backends.iter().any(|b| b.mcp.stateless) && !backends.iter().all(|b| b.mcp.stateless) {
        r.error(
            format!("{path}.backends"),
            "a route's `mcp` backends are either all `statefulMode: stateless` or all stateful",
        )
        .hint = Some(
            "a client either keeps a session on a route or it does not: split the route".into(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_paths_match_whole_segments() {
        let p = runtime::PathMatch::Prefix("/mcp".into());
        assert!(p.matches("/mcp"));
        assert!(p.matches("/mcp/x"));
        assert!(!p.matches("/mcpx"));
        assert!(runtime::PathMatch::Prefix("/".into()).matches("/anything"));
    }
}
