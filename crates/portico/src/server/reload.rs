//! Hot reload: the config file is checked for changes every second (and re-read on SIGHUP). A valid
//! new config is swapped in whole; an invalid one is logged with the same file:line errors as
//! `portico validate`, counted, and the running config stays.
//!
//! What a reload changes: routes, backends, targets, policies and listener TLS certificates. Live
//! sessions move onto the new config of their backend (found by its name, `<route>/<index>`): added
//! targets are connected, removed ones closed, policies take effect, and the client hears
//! `notifications/*/list_changed`; a session whose backend is gone is closed. Binds (addresses),
//! `config.limits` and the operator endpoints need a restart; a change to them is refused with an
//! error that says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::runtime::McpBackend;
use crate::config::{self, Config};
use crate::gateway::Gateway;
use crate::telemetry::metrics::metrics;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file: its modification time and length. A Kubernetes ConfigMap
/// update (a symlink swap) changes both as seen through the path.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Watches `path` until `stop`; `refreshing` runs the current config's background tasks (JWKS
/// refresh) and is replaced by a new one for each config swapped in.
pub async fn watch(
    gateway: Arc<Gateway>,
    path: PathBuf,
    mut refreshing: CancellationToken,
    stop: CancellationToken,
) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = fingerprint(&path);
    loop {
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => false,
            Some(()) = async { hangup.as_mut()?.recv().await } => true,
        };
        let now = fingerprint(&path);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        let reason = if asked { "SIGHUP" } else { "the file changed" };
        if let Some(config) = load(&gateway, &path, reason) {
            refreshing.cancel();
            refreshing = stop.child_token();
            for jwt in super::token_validators(&config) {
                jwt.spawn_refresh(refreshing.clone());
            }
            gateway.config.store(config.clone());
            gateway.start_pools(&config);
            move_sessions(&gateway, &config).await;
        }
    }
}

/// Moves every live session onto its backend in `config`, and closes those whose backend is gone.
async fn move_sessions(gateway: &Gateway, config: &Config) {
    let backends: HashMap<&str, &Arc<McpBackend>> = config
        .binds
        .iter()
        .flat_map(|bind| &bind.listeners)
        .flat_map(|listener| &listener.matchers)
        .flat_map(|matcher| &matcher.route.backends)
        .map(|backend| (backend.mcp.name.as_str(), &backend.mcp))
        .collect();
    for session in gateway.sessions.all() {
        let name = session.mux.backend_name();
        match backends.get(name.as_str()) {
            Some(backend) => session.mux.reconfigure(Arc::clone(backend)),
            None => {
                tracing::info!(target: "portico::session", session = %session.tag, backend = %name,
                    "session closed: its route or backend is no longer in the config");
                gateway.sessions.remove(&session.id).await;
            }
        }
    }
}

/// The new config if it loads and can replace the running one; errors are logged and counted.
fn load(gateway: &Gateway, path: &Path, reason: &str) -> Option<Arc<Config>> {
    let loaded = config::load_file(path)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>());
    let outcome = loaded.and_then(|new| {
        let running = gateway.config.load();
        match restart_needed(&running, &new) {
            Some(what) => Err(vec![format!(
                "{}: error: {what} changed; that needs a restart (the running config stays)",
                path.display()
            )]),
            None => Ok(new),
        }
    });
    match outcome {
        Ok(new) => {
            for warning in &new.warnings {
                tracing::warn!(target: "portico::config", "{warning}");
            }
            let routes: usize = new
                .binds
                .iter()
                .flat_map(|b| &b.listeners)
                .map(|l| l.matchers.len())
                .sum();
            tracing::info!(target: "portico::config", file = %path.display(), reason, routes, "config reloaded");
            metrics().record_reload(true);
            Some(Arc::new(new))
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!(target: "portico::config", "{error}");
            }
            tracing::error!(target: "portico::config", file = %path.display(), reason, errors = errors.len(),
                "config reload refused; the running config stays");
            metrics().record_reload(false);
            None
        }
    }
}

/// What differs between `running` and `new` that a reload cannot change, if anything.
fn restart_needed(running: &Config, new: &Config) -> Option<&'static str> {
    let addresses = |c: &Config| c.binds.iter().map(|b| b.addr).collect::<Vec<_>>();
    if addresses(running) != addresses(new) {
        return Some("`binds` (listening addresses)");
    }
    let tls = |c: &Config| {
        c.binds
            .iter()
            .map(|b| b.listeners.iter().any(|l| l.tls.is_some()))
            .collect::<Vec<_>>()
    };
    if tls(running) != tls(new) {
        return Some("a bind's protocol (HTTP or HTTPS)");
    }
    let (old, new) = (&running.settings, &new.settings);
    let endpoints = |s: &config::runtime::Settings| [s.readiness.addr, s.stats.addr, s.admin.addr];
    if endpoints(old) != endpoints(new) {
        return Some("`config.readinessAddr`, `statsAddr` or `adminAddr`");
    }
    if old.limits != new.limits {
        return Some("`config.limits` (sessions, processes, connections, sizes)");
    }
    if old.session != new.session {
        return Some("`config.session` (session keys, lifetime)");
    }
    if old.session_ttl != new.session_ttl {
        return Some("`config.mcp.sessionTtl`");
    }
    if old.log_level != new.log_level || old.log_format != new.log_format {
        return Some("`config.logging`");
    }
    let exporter = |s: &config::runtime::Settings| {
        s.tracing
            .as_ref()
            .map(|t| (t.endpoint.to_string(), t.protocol, t.sampling.to_bits()))
    };
    if exporter(old) != exporter(new) {
        return Some("`config.tracing`");
    }
    None
}
