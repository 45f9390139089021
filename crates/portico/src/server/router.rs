//! Picks the listener by host name and the route by its matches (most specific first).

use std::sync::Arc;

use http::Request;

use crate::config::runtime::{Listener, Route, RouteMatcher};

/// The request's host name without port, lower-case.
fn host_of<B>(request: &Request<B>) -> Option<String> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().host())?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    Some(name.trim_matches(['[', ']']).to_ascii_lowercase())
}

/// `*.example.com` matches any subdomain; anything else matches exactly.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn matcher_matches<B>(m: &RouteMatcher, request: &Request<B>, host: Option<&str>) -> bool {
    if !m.route.hostnames.is_empty()
        && !host.is_some_and(|h| m.route.hostnames.iter().any(|p| host_matches(p, h)))
    {
        return false;
    }
    if !m.path.matches(request.uri().path()) {
        return false;
    }
    if m.method
        .as_ref()
        .is_some_and(|method| method != request.method())
    {
        return false;
    }
    let headers_match = m.headers.iter().all(|(name, value)| {
        request
            .headers()
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| value.matches(v)))
    });
    if !headers_match {
        return false;
    }
    m.query.iter().all(|(name, value)| {
        let query = request.uri().query().unwrap_or_default();
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .any(|(k, v)| k == name && value.matches(v))
    })
}

/// The route for `request`, if any.
pub fn find<'a, B>(listeners: &'a [Listener], request: &Request<B>) -> Option<&'a Arc<Route>> {
    let host = host_of(request);
    let by_host = listeners.iter().find(|l| {
        l.hostname
            .as_deref()
            .is_some_and(|p| host.as_deref().is_some_and(|h| host_matches(p, h)))
    });
    let listener = by_host.or_else(|| listeners.iter().find(|l| l.hostname.is_none()))?;
    listener
        .matchers
        .iter()
        .find(|m| matcher_matches(m, request, host.as_deref()))
        .map(|m| &m.route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(host_matches("api.example.com", "API.example.com"));
    }
}
