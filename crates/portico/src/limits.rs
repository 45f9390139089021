//! `config.limits`: how much of the gateway one route, session or listener may take, so that no
//! client (authenticated or not) can exhaust processes, memory or sockets.
//!
//! Each limit is counted here and released by a guard, so a session or connection that ends however it
//! ends (closed, expired, dropped mid-request) gives its share back.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::runtime::LimitSettings;

/// A limit that was reached: which, its value, and how long a client should wait before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// The setting's name under `config.limits`.
    pub limit: &'static str,
    pub value: usize,
    pub retry_after_secs: u64,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "limit reached: config.limits.{} ({}); retry in {} s",
            self.limit, self.value, self.retry_after_secs
        )
    }
}

/// The gateway-wide counters behind `config.limits`.
pub struct Limits {
    pub settings: LimitSettings,
    stdio: Arc<Semaphore>,
    sessions: Mutex<HashMap<Arc<str>, usize>>,
    /// Open connections per bind (every worker's share of one address counts together).
    connections: Vec<AtomicUsize>,
}

/// What a live session holds: its place on its route and its stdio processes. Dropping it gives both
/// back.
pub struct SessionQuota {
    limits: Arc<Limits>,
    route: Arc<str>,
    stdio: Option<OwnedSemaphorePermit>,
}

impl SessionQuota {
    /// One of the stdio places admitted with the session, to be held by the target that uses it.
    pub fn take_process(&mut self) -> Option<OwnedSemaphorePermit> {
        let permits = self.stdio.as_mut()?;
        if permits.num_permits() > 1 {
            return permits.split(1);
        }
        self.stdio.take()
    }

    /// A place for one more stdio process, for a target a reload added to the live session.
    pub fn admit_process(&self) -> Result<OwnedSemaphorePermit, Exceeded> {
        self.limits
            .stdio
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.limits.stdio_exceeded())
    }
}

impl Drop for SessionQuota {
    fn drop(&mut self) {
        let mut sessions = self
            .limits
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = sessions.get_mut(&self.route) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sessions.remove(&self.route);
            }
        }
    }
}

/// One open connection on a bind; dropping it closes its place.
pub struct ConnectionSlot {
    limits: Arc<Limits>,
    bind: usize,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.connections[self.bind].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn new(settings: LimitSettings, binds: usize) -> Arc<Self> {
        Arc::new(Self {
            stdio: Arc::new(Semaphore::new(settings.stdio_processes)),
            sessions: Mutex::default(),
            connections: (0..binds).map(|_| AtomicUsize::new(0)).collect(),
            settings,
        })
    }

    /// Admits a new session on `route` that starts `stdio` processes, or says which limit stops it.
    pub fn admit_session(
        self: &Arc<Self>,
        route: &str,
        stdio: usize,
    ) -> Result<SessionQuota, Exceeded> {
        let permits = match stdio {
            0 => None,
            n => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                let permit = self
                    .stdio
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| self.stdio_exceeded())?;
                Some(permit)
            }
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let route: Arc<str> = route.into();
        let count = sessions.entry(route.clone()).or_default();
        if *count >= self.settings.sessions_per_route {
            return Err(Exceeded {
                limit: "sessionsPerRoute",
                value: self.settings.sessions_per_route,
                retry_after_secs: 10,
            });
        }
        *count += 1;
        Ok(SessionQuota {
            limits: self.clone(),
            route,
            stdio: permits,
        })
    }

    fn stdio_exceeded(&self) -> Exceeded {
        Exceeded {
            limit: "stdioProcesses",
            value: self.settings.stdio_processes,
            retry_after_secs: 10,
        }
    }

    /// Admits one more connection on bind `bind`.
    pub fn admit_connection(self: &Arc<Self>, bind: usize) -> Result<ConnectionSlot, Exceeded> {
        let cap = self.settings.connections_per_listener;
        if !take_one(&self.connections[bind], cap) {
            return Err(Exceeded {
                limit: "connectionsPerListener",
                value: cap,
                retry_after_secs: 1,
            });
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            bind,
        })
    }

    /// The places under `stdioProcesses`, for the warm processes of stdio pools.
    pub fn processes(&self) -> Arc<Semaphore> {
        self.stdio.clone()
    }

    /// Live stdio processes counted against `stdioProcesses`.
    pub fn stdio_in_use(&self) -> usize {
        self.settings.stdio_processes - self.stdio.available_permits()
    }
}

/// One request in flight in a session; dropping it frees its place.
pub struct RequestSlot {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits one more request in flight on a session's counter, up to `cap`.
pub fn admit_request(in_flight: &Arc<AtomicUsize>, cap: usize) -> Result<RequestSlot, Exceeded> {
    if !take_one(in_flight, cap) {
        return Err(Exceeded {
            limit: "requestsInFlightPerSession",
            value: cap,
            retry_after_secs: 1,
        });
    }
    Ok(RequestSlot {
        in_flight: in_flight.clone(),
    })
}

/// Counts one more on `counter` unless it is at `cap` already.
fn take_one(counter: &AtomicUsize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(sessions: usize, stdio: usize) -> Arc<Limits> {
        Limits::new(
            LimitSettings {
                sessions_per_route: sessions,
                stdio_processes: stdio,
                ..LimitSettings::default()
            },
            1,
        )
    }

    #[test]
    fn sessions_and_processes_are_given_back_on_drop() {
        let limits = limits(2, 5);
        let a = limits.admit_session("r", 3).unwrap();
        assert_eq!(
            limits.admit_session("r", 3).err().map(|e| e.limit),
            Some("stdioProcesses")
        );
        let b = limits.admit_session("r", 2).unwrap();
        assert_eq!(limits.stdio_in_use(), 5);
        assert_eq!(
            limits.admit_session("r", 0).err().map(|e| e.limit),
            Some("sessionsPerRoute")
        );
        assert!(limits.admit_session("other", 0).is_ok(), "per route");
        drop((a, b));
        assert_eq!(limits.stdio_in_use(), 0);
        assert!(limits.admit_session("r", 5).is_ok());
    }

    #[test]
    fn requests_in_flight_are_capped() {
        let counter = Arc::new(AtomicUsize::new(0));
        let first = admit_request(&counter, 1).unwrap();
        assert!(admit_request(&counter, 1).is_err());
        drop(first);
        assert!(admit_request(&counter, 1).is_ok());
    }
}
