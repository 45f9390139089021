//! The `config:` section: operator endpoints, limits, logging, tracing, timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use super::Resolver;
use crate::base::units::{parse_duration, parse_size};
use crate::config::model::{self};
use crate::config::runtime::{self, Settings};
use crate::telemetry::traces::OtlpProtocol;

pub(super) fn settings(r: &mut Resolver, config: &model::Settings) -> Settings {
    let mut settings = Settings {
        session: session_setting(r, config.session.as_ref()),
        ..Settings::default()
    };
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
    let grace = &config.limits.stream_resume_grace;
    let path = "config.limits.streamResumeGrace";
    if let Some(grace) = duration_setting(r, grace, path) {
        limits.stream_resume_grace = grace;
    }
    settings
}

/// Where spans go: `config.tracing`, else the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
/// is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` for OTLP/HTTP); `None` when neither is set.
/// The protocol: `otlpProtocol`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http`.
pub(super) fn tracing_setting(
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
pub(super) fn endpoint_setting(
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
/// `config.session`; `PORTICO_SESSION_KEY` (when set and not empty) replaces `key`.
fn session_setting(
    r: &mut Resolver,
    config: Option<&model::SessionSettings>,
) -> runtime::SessionSettings {
    let mut session = runtime::SessionSettings::default();
    let from_env = std::env::var("PORTICO_SESSION_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty());
    let configured = config.and_then(|c| c.key.clone());
    let (key, key_path) = match (from_env, configured) {
        (Some(key), _) => (Some(key), "PORTICO_SESSION_KEY"),
        (None, key) => (key, "config.session.key"),
    };
    let previous = config.map(|c| c.previous_keys.clone()).unwrap_or_default();
    if let Some(lifetime) = duration_setting(
        r,
        &config.and_then(|c| c.lifetime.clone()),
        "config.session.lifetime",
    ) {
        session.lifetime = lifetime;
    }
    let mut valid = true;
    let mut check = |r: &mut Resolver, path: String, hex: &str| {
        if let Err(e) = crate::mcp::session_token::check_key(hex) {
            valid = false;
            r.error(&path, e.to_string()).hint =
                Some("make one with `openssl rand -hex 32`".into());
        }
    };
    if let Some(key) = &key {
        check(r, key_path.to_string(), key);
    }
    for (i, old) in previous.iter().enumerate() {
        check(r, format!("config.session.previousKeys[{i}]"), old);
    }
    if key.is_none() && !previous.is_empty() {
        r.error(
            "config.session.previousKeys",
            "previous keys without a current key",
        )
        .hint =
            Some("set config.session.key (or PORTICO_SESSION_KEY) to the key to seal with".into());
    }
    if valid && let Some(key) = key {
        session.keys = Some((key.trim().to_string(), previous));
    }
    session
}

pub(super) fn duration_setting(
    r: &mut Resolver,
    text: &Option<String>,
    path: &str,
) -> Option<Duration> {
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
pub(super) fn size_setting(
    r: &mut Resolver,
    value: &Option<serde_json::Value>,
    name: &str,
) -> Option<usize> {
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
