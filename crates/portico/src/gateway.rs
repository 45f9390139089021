//! The running gateway's shared state: the current config, the session table, the legacy SSE
//! streams, the limits, and the shutdown signals. The server fills it in; the MCP transports and the
//! host proxy read it. It holds data, no behaviour that calls back up.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::limits::Limits;
use crate::mcp::session::Sessions;

/// What every request handler shares.
pub struct Gateway {
    /// The running config, swapped whole by a reload; a request loads it once.
    pub config: ArcSwap<Config>,
    pub sessions: Arc<Sessions>,
    /// 2026-07-28 calls waiting for their clients' answers ([`crate::mcp::per_request`]).
    pub parked: Arc<crate::mcp::per_request::Parked>,
    /// Open event streams of the legacy HTTP+SSE transport.
    pub legacy: crate::mcp::legacy_sse::Connections,
    /// `config.limits`: sessions, processes, connections.
    pub limits: Arc<Limits>,
    /// Fired when a shutdown begins: readiness turns 503 and connections finish what is in flight.
    pub draining: CancellationToken,
    /// Every open client connection, so a shutdown can wait for them.
    pub connections: TaskTracker,
}

impl Gateway {
    /// Starts filling the stdio pools of `config` (each pool once; a reload's new targets get theirs).
    pub fn start_pools(&self, config: &crate::config::Config) {
        let targets = config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .flat_map(|l| &l.matchers)
            .flat_map(|m| &m.route.backends)
            .flat_map(|b| &b.mcp.targets);
        for target in targets {
            if let Some(pool) = &target.pool {
                pool.start(self.limits.processes());
            }
        }
    }

    /// Ends every event stream (GET streams, legacy SSE streams), so that their connections can close.
    pub fn end_streams(&self) {
        self.sessions.end_streams();
        self.legacy.end_all();
    }
}
