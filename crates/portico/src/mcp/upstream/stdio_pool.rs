//! Warm stdio processes (`stdio.pool.size`): started ahead of demand, so a new session does not wait
//! for a slow server to start (node-based ones take 100-300 ms). A session takes one and the pool
//! starts another in the background. Waiting processes count against `config.limits.stdioProcesses`,
//! but never take its last place, which stays for sessions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::stdio::Process;
use crate::config::runtime::StdioSpec;

/// How long a pool that could not start a process (no room under the cap, or the command failed)
/// waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// The warm processes of one stdio target.
pub struct StdioPool {
    target: Arc<str>,
    spec: StdioSpec,
    size: usize,
    warm: Mutex<VecDeque<Warm>>,
    /// Wakes the refill task when a process was taken.
    taken: Arc<Notify>,
    started: std::sync::Once,
}

/// A waiting process and its place under `stdioProcesses`; one nobody took is stopped.
struct Warm {
    process: Option<Process>,
    _place: OwnedSemaphorePermit,
}

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            process.kill();
        }
    }
}

impl std::fmt::Debug for StdioPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioPool")
            .field("target", &self.target)
            .field("size", &self.size)
            .finish()
    }
}

impl StdioPool {
    pub fn new(target: Arc<str>, spec: StdioSpec, size: usize) -> Arc<Self> {
        Arc::new(Self {
            target,
            spec,
            size,
            warm: Mutex::default(),
            taken: Arc::default(),
            started: std::sync::Once::new(),
        })
    }

    /// Starts filling the pool (once), taking places under `processes`. The task ends with the pool
    /// (when a reload drops the target).
    pub fn start(self: &Arc<Self>, processes: Arc<Semaphore>) {
        self.started.call_once(|| {
            tokio::spawn(refill(Arc::downgrade(self), processes));
        });
    }

    /// How many processes the pool keeps started.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A warm, running process, if one is ready; the pool starts another.
    pub fn take(&self) -> Option<Process> {
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        let taken = loop {
            let mut next = warm.pop_front()?;
            let mut process = next.process.take()?;
            if process.is_running() {
                break process;
            }
            tracing::warn!(target: "portico::pool", target = %self.target, "a warm process had exited; discarded");
        };
        drop(warm);
        self.taken.notify_one();
        tracing::info!(target: "portico::pool", target = %self.target, pid = taken.pid(), "warm process handed to a session");
        Some(taken)
    }

    fn missing(&self) -> usize {
        let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        self.size.saturating_sub(warm.len())
    }
}

async fn refill(pool: Weak<StdioPool>, processes: Arc<Semaphore>) {
    loop {
        let Some(strong) = pool.upgrade() else { return };
        let mut short = false;
        for _ in 0..strong.missing() {
            // The last place under the cap is left to sessions: a pool never starves them.
            if processes.available_permits() < 2 {
                short = true;
                break;
            }
            let Ok(place) = processes.clone().try_acquire_owned() else {
                short = true;
                break;
            };
            match Process::start(&strong.target, &strong.spec) {
                Ok(process) => {
                    tracing::info!(target: "portico::pool", target = %strong.target, pid = process.pid(), "warm process started");
                    strong
                        .warm
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(Warm {
                            process: Some(process),
                            _place: place,
                        });
                }
                Err(e) => {
                    tracing::warn!(target: "portico::pool", target = %strong.target, error = %e, "could not start a warm process");
                    short = true;
                    break;
                }
            }
        }
        // Not holding the pool while waiting: a reload that drops it ends this task.
        let taken = strong.taken.clone();
        drop(strong);
        let wait = if short { RETRY } else { Duration::from_secs(5) };
        let _ = tokio::time::timeout(wait, taken.notified()).await;
    }
}
