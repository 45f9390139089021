//! The session's targets: the slot table, connecting and reconnecting, moving onto a reloaded config,
//! and closing.

use super::*;
use crate::base::coarse_timer;

impl Mux {
    /// Connects the targets of `slots` concurrently; the ones that failed, with why.
    pub(super) async fn connect_all(&self, slots: &[usize]) -> Vec<(usize, UpstreamError)> {
        let results = join_all(slots.iter().map(|t| self.connect(*t))).await;
        slots
            .iter()
            .zip(results)
            .filter_map(|(t, r)| r.err().map(|e| (*t, e)))
            .collect()
    }

    /// Leaves targets that could not be connected out of the session for now, and retries them.
    pub(super) fn retry_later(self: &Arc<Self>, failed: Vec<(usize, UpstreamError)>) {
        for (t, e) in failed {
            let target = self.target(t);
            target.health.failed(&e.to_string());
            tracing::warn!(target: "portico::mux", target = %target.name, error = %e,
                "target unavailable; left out of this session and retried with backoff");
            self.spawn_reconnect(t);
        }
    }

    /// The slot of target index `t`. Indices come from the table, which only grows.
    pub(super) fn slot(&self, t: usize) -> Arc<Slot> {
        self.table.load().slots[t].clone()
    }

    /// The current config of target index `t`.
    pub(super) fn target(&self, t: usize) -> Arc<Target> {
        self.slot(t).target.load_full()
    }

    /// The indices of the session's current targets, in config order.
    pub(super) fn live(&self) -> Vec<usize> {
        self.table.load().live.clone()
    }

    pub(super) async fn connect(&self, i: usize) -> Result<(), UpstreamError> {
        let slot = self.slot(i);
        let target = slot.target.load_full();
        let sink = self.next_sink(i, &slot);
        let connect = Upstream::connect(
            &target,
            &self.init_params,
            sink,
            &self.client_token,
            self.limits.upstream_response_bytes,
        );
        let upstream = coarse_timer::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                UpstreamError::Initialize(format!("no answer within {CONNECT_TIMEOUT:?}"))
            })??;
        if self.closed.is_cancelled() || slot.is_retired() {
            upstream.close().await;
            return Err(UpstreamError::Closed);
        }
        slot.upstream.store(Some(upstream));
        // A reload may have retired the slot meanwhile; whichever side comes second closes.
        if slot.is_retired()
            && let Some(upstream) = slot.upstream.swap(None)
        {
            upstream.close().await;
            return Err(UpstreamError::Closed);
        }
        if self.listening.load(Ordering::Acquire)
            && let Some(upstream) = slot.upstream.load_full()
        {
            upstream.listen();
        }
        tracing::info!(target: "portico::mux", target = %target.name, "target connected");
        Ok(())
    }

    /// Makes `stream` the client's stream for messages outside requests (its GET stream, or the
    /// legacy SSE stream), and opens each target's own.
    pub fn attach_stream(&self, stream: mpsc::Sender<downlink::Event>, last_event_id: Option<u64>) {
        self.downlink.attach(stream, last_event_id);
        self.listen_to_targets();
    }

    /// Opens each target's own stream for messages outside requests (and those of targets
    /// connected later). A 2026-07-28 context calls it without a stream of its own: its targets
    /// may send their questions to the client there, and they reach the call they belong to.
    pub fn listen_to_targets(&self) {
        self.listening.store(true, Ordering::Release);
        for t in self.live() {
            if let Some(upstream) = self.slot(t).upstream.load_full() {
                upstream.listen();
            }
        }
    }

    /// Retries a target with exponential backoff until it answers or the session ends; the client
    /// then hears that the lists changed.
    pub(super) fn spawn_reconnect(self: &Arc<Self>, i: usize) {
        let slot = self.slot(i);
        if slot.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let mux = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                tokio::select! {
                    _ = mux.closed.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                if slot.is_retired() {
                    break;
                }
                match mux.connect(i).await {
                    Ok(()) => {
                        mux.lists_changed();
                        break;
                    }
                    Err(e) => {
                        let target = slot.target.load();
                        target.health.failed(&e.to_string());
                        tracing::warn!(target: "portico::mux", target = %target.name,
                        error = %e, retry_in = ?backoff * 2, "target still unavailable")
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            slot.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Tells the client (on its GET stream) that every list may have changed.
    pub(super) fn lists_changed(&self) {
        for list in ["tools", "prompts", "resources"] {
            let method = format!("notifications/{list}/list_changed");
            self.downlink
                .send(jsonrpc::notification(&method, json!({})).to_string());
        }
    }

    /// Moves the live session onto a reloaded config of its backend. A target whose name and
    /// connection fingerprint stay keeps its connection and takes the new policies; a removed or
    /// re-addressed one is retired (its calls in flight finish first, within [`RETIRE_GRACE`]); a new
    /// one is connected. The client hears `notifications/*/list_changed` when anything changed.
    pub fn reconfigure(self: &Arc<Self>, backend: Arc<McpBackend>) {
        if self.is_closed() {
            return;
        }
        let old = self.backend.swap(backend.clone());
        let table = self.table.load_full();
        let mut changed =
            old.prefixed != backend.prefixed || old.prefix_mode != backend.prefix_mode;
        let mut successor_of: Vec<Option<usize>> = vec![None; backend.targets.len()];
        for &t in &table.live {
            let slot = &table.slots[t];
            let current = slot.target.load_full();
            let successor = backend
                .targets
                .iter()
                .position(|new| new.name == current.name && new.connection == current.connection);
            match successor {
                Some(n) => {
                    changed |= backend.targets[n].revision != current.revision;
                    slot.target.store(backend.targets[n].clone());
                    successor_of[n] = Some(t);
                }
                None => {
                    changed = true;
                    self.retire(t, slot.clone());
                }
            }
        }
        let mut slots = table.slots.clone();
        let mut live = Vec::with_capacity(backend.targets.len());
        let mut added = Vec::new();
        for (target, kept) in backend.targets.iter().zip(successor_of) {
            if let Some(t) = kept {
                live.push(t);
                continue;
            }
            let Some(process) = self.process_for(target) else {
                continue;
            };
            changed = true;
            slots.push(Slot::new(target.clone(), process));
            live.push(slots.len() - 1);
            added.push(slots.len() - 1);
        }
        self.table.store(Arc::new(Table { slots, live }));
        lock(&self.decisions).clear();
        lock(&self.bare_names).clear();
        if !changed {
            return;
        }
        let mux = self.clone();
        tokio::spawn(async move {
            let failed = mux.connect_all(&added).await;
            mux.retry_later(failed);
            mux.lists_changed();
        });
    }

    /// A stdio target's place under `stdioProcesses` (`Some(None)` for other targets); `None` when the
    /// limit leaves no room, and the target stays out of the session.
    pub(super) fn process_for(&self, target: &Target) -> Option<Option<OwnedSemaphorePermit>> {
        if !is_stdio(target) {
            return Some(None);
        }
        let quota = lock(&self.quota);
        match quota.as_ref().map(SessionQuota::admit_process) {
            Some(Ok(permit)) => Some(Some(permit)),
            Some(Err(over)) => {
                tracing::warn!(target: "portico::mux", target = %target.name, %over,
                    "target added by the reload left out of this live session");
                None
            }
            None => None,
        }
    }

    /// Takes slot `t` out of the session: nothing new is routed to it, its calls in flight get
    /// [`RETIRE_GRACE`] to finish, then its connection closes (a stdio process is stopped).
    pub(super) fn retire(self: &Arc<Self>, t: usize, slot: Arc<Slot>) {
        slot.retired.store(true, Ordering::Release);
        // A close reported by the connection being retired is not a crash to recover from.
        slot.generation.fetch_add(1, Ordering::Relaxed);
        let mux = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + RETIRE_GRACE;
            while mux.has_calls_at(t) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(upstream) = slot.upstream.swap(None) {
                upstream.close().await;
            }
            lock(&slot.process).take();
            tracing::info!(target: "portico::mux", target = %slot.target.load().name,
                "target left the session (config reloaded)");
        });
    }

    /// Whether target index `t` has requests in flight.
    pub(super) fn has_calls_at(&self, t: usize) -> bool {
        lock(&self.inflight)
            .by_upstream
            .keys()
            .any(|(target, _)| *target == t)
    }

    /// The names of the targets this session is connected to now.
    pub fn connected_targets(&self) -> Vec<Arc<str>> {
        let table = self.table.load();
        table
            .live
            .iter()
            .map(|t| &table.slots[*t])
            .filter(|s| s.upstream.load().is_some())
            .map(|s| s.target.load().name.clone())
            .collect()
    }

    /// Ends the session: every target connection is closed (stdio processes stopped and reaped).
    /// Requests still in flight are cancelled at their targets first, so remote targets stop work
    /// that nobody will read.
    pub async fn close(&self) {
        self.end(Ending::Closed).await;
    }

    /// Lets go of the session in this process when it may go on in another replica: as
    /// [`Self::close`], except that HTTP targets' upstream sessions are kept.
    pub async fn release(&self) {
        self.end(Ending::Released).await;
    }

    async fn end(&self, ending: Ending) {
        self.closed.cancel();
        let inflight: Vec<(usize, u64)> =
            lock(&self.inflight).by_upstream.keys().copied().collect();
        let cancels = inflight.into_iter().filter_map(|(t, upstream_id)| {
            let upstream = self.slot(t).upstream.load_full()?;
            let message = jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": upstream_id, "reason": "the session ended"}),
            );
            Some(async move { upstream.notify(message).await })
        });
        join_all(cancels).await;
        let table = self.table.load_full();
        let upstreams: Vec<_> = table
            .slots
            .iter()
            .filter_map(|s| s.upstream.swap(None))
            .collect();
        join_all(upstreams.iter().map(|u| async move {
            match ending {
                Ending::Closed => u.close().await,
                Ending::Released => u.release().await,
            }
        }))
        .await;
        for slot in &table.slots {
            lock(&slot.process).take();
        }
        lock(&self.quota).take();
    }

    pub(super) fn target_index(&self, name: &str) -> Option<usize> {
        let table = self.table.load();
        table
            .live
            .iter()
            .copied()
            .find(|t| &*table.slots[*t].target.load().name == name)
    }

    /// The target of a backend that has just one: it serves every method, named or not.
    pub(super) fn single_target(&self) -> Option<usize> {
        match self.table.load().live[..] {
            [t] => Some(t),
            _ => None,
        }
    }

    pub(super) async fn target_closed(self: &Arc<Self>, t: usize, generation: u64, reason: &str) {
        let slot = self.slot(t);
        let target = slot.target.load_full();
        if slot.generation.load(Ordering::Relaxed) != generation || self.closed.is_cancelled() {
            return;
        }
        let Some(old) = slot.upstream.swap(None) else {
            return;
        };
        tracing::warn!(target: "portico::mux", target = %target.name, reason, "target connection lost");
        target.health.restarts.fetch_add(1, Ordering::Relaxed);
        target.health.failed(reason);
        old.close().await;
        if self.backend.load().failure_mode == FailureMode::FailClosed {
            self.close().await;
            return;
        }
        self.spawn_reconnect(t);
    }

    pub(super) fn weak_self(&self) -> Weak<dyn InboundHandler> {
        self.me.clone()
    }

    /// Where a new connection to target `t` reports, as the slot's next generation.
    pub(super) fn next_sink(&self, t: usize, slot: &Slot) -> InboundSink {
        InboundSink {
            target: t,
            generation: slot.generation.fetch_add(1, Ordering::Relaxed) + 1,
            handler: self.weak_self(),
        }
    }
}

/// How a session's connections end.
#[derive(Clone, Copy)]
enum Ending {
    /// For good: upstream sessions are deleted.
    Closed,
    /// In this process only: HTTP targets' upstream sessions stay for other replicas.
    Released,
}

/// How long a target gets to start and answer `initialize`.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// One target's connection for this session.
pub(super) struct Slot {
    /// The target's current config: a reload that changes only what does not touch the connection
    /// (authorization, guards, limits) swaps it in place.
    pub(super) target: ArcSwap<Target>,
    pub(super) upstream: ArcSwapOption<Upstream>,
    /// Counts connections, so a close reported by an old one is ignored.
    pub(super) generation: AtomicU64,
    pub(super) reconnecting: AtomicBool,
    /// Set when a reload took the target out of the session. The slot stays (its index is named by
    /// requests still in flight) but serves nothing new.
    pub(super) retired: AtomicBool,
    /// A stdio target's place under `config.limits.stdioProcesses`, given back when the slot retires.
    pub(super) process: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    pub(super) fn new(target: Arc<Target>, process: Option<OwnedSemaphorePermit>) -> Arc<Self> {
        Arc::new(Self {
            target: ArcSwap::new(target),
            upstream: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            process: Mutex::new(process),
        })
    }

    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// The session's targets. Slots are only ever added, so an index (`t`) names the same slot for the
/// session's life; `live` lists the current targets' slots in config order.
pub(super) struct Table {
    pub(super) slots: Vec<Arc<Slot>>,
    pub(super) live: Vec<usize>,
}

/// How long a target a reload removed keeps serving the calls already in flight at it.
pub(super) const RETIRE_GRACE: Duration = Duration::from_secs(30);

pub(super) fn is_stdio(target: &Target) -> bool {
    matches!(target.kind, crate::config::runtime::TargetKind::Stdio(_))
}
