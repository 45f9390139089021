//! The session table: ids that seal the session's state ([`crate::mcp::session_token`]), idle
//! expiry, and closing sessions (and their targets).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::mcp::multiplex::Mux;
use crate::mcp::session_token::{SessionKeys, Ticket};
use crate::telemetry::metrics::{RouteLabel, metrics};

/// Random bytes in an id that is not a session's (the legacy transport's stream ids: 192 bits).
const ID_BYTES: usize = 24;

/// A random id: bytes from a CSPRNG, base64url.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Resumptions of one id wait for each other (striped by the id's hash; a collision only makes two
/// resumptions take turns).
const RESUME_STRIPES: usize = 64;

/// A short, non-reversible tag for a session id, for logs (the id itself is a credential).
fn log_tag(id: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

/// Who a session belongs to: the validated token's `iss` and `sub`, or `None` for an anonymous caller.
/// A session answers only to requests of the same caller (the MCP spec's session-hijacking defence).
pub type Owner = Option<Arc<str>>;

/// The owner a request's claims (`Null` when anonymous) make.
pub fn owner(claims: &serde_json::Value) -> Owner {
    let iss = claims.get("iss").and_then(serde_json::Value::as_str);
    let sub = claims.get("sub").and_then(serde_json::Value::as_str);
    if iss.is_none() && sub.is_none() {
        return None;
    }
    // NUL cannot appear in either claim's JSON string unescaped, so the pair is unambiguous.
    Some(format!("{}\0{}", iss.unwrap_or_default(), sub.unwrap_or_default()).into())
}

/// One client session.
pub struct Session {
    pub id: Arc<str>,
    /// The name of the route that created it; the session is only valid there.
    pub route: Arc<str>,
    /// The caller that created it; requests of any other caller are answered as for an unknown id.
    pub owner: Owner,
    pub mux: Arc<Mux>,
    /// For logs in place of the id.
    pub tag: String,
    /// Its requests' reply streams a client can resume.
    pub post_streams: crate::mcp::post_stream::PostStreams,
    /// Milliseconds since the table's epoch at the last request.
    last_active: AtomicU64,
    started: Instant,
    /// One request's session on a stateless route: in no table, closed when the request is done.
    transient: bool,
    /// The session shared by 2026-07-28 requests of one context ([`crate::mcp::per_request`]): no
    /// client holds its id, so no other replica resumes it, and it is closed (not released) when idle.
    per_request: bool,
}

impl Session {
    /// The session of one request on a `statefulMode: stateless` route: in no table, not counted as
    /// a session, and closed (its upstream sessions deleted) once the request has been answered.
    pub fn transient(route: Arc<str>, owner: Owner, mux: Arc<Mux>) -> Self {
        Self {
            id: "".into(),
            route,
            owner,
            mux,
            tag: "-".into(),
            post_streams: Default::default(),
            last_active: AtomicU64::new(0),
            started: Instant::now(),
            transient: true,
            per_request: false,
        }
    }

    fn route_label(&self) -> RouteLabel {
        RouteLabel {
            route: self.route.to_string(),
        }
    }
}

/// A session ends for the metrics when the last reference to it goes, however it was closed.
impl Drop for Session {
    fn drop(&mut self) {
        if self.transient {
            let mux = self.mux.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { mux.close().await });
            }
            return;
        }
        let registry = metrics();
        let route = self.route_label();
        registry.sessions_active.get_or_create(&route).dec();
        crate::telemetry::metrics::observe(
            &registry.session_duration.get_or_create(&route),
            self.started.elapsed(),
        );
    }
}

/// Every live session of the gateway.
pub struct Sessions {
    /// Hashed fast: every id in it was made here (sealed with a random nonce, or a keyed digest),
    /// so no client can pick ids that collide.
    map: RwLock<HashMap<Arc<str>, Arc<Session>, crate::base::fast_hash::Fast>>,
    epoch: Instant,
    ttl: Duration,
    /// Sessions being closed after the client deleted them; shutdown waits for them.
    closing: tokio_util::task::TaskTracker,
    keys: SessionKeys,
    resuming: [tokio::sync::Mutex<()>; RESUME_STRIPES],
    /// Sessions the client deleted here, so this replica does not resume them: a keyed hash of the
    /// id → when its lifetime ends (milliseconds on the table's clock).
    deleted: Mutex<HashMap<u64, u64>>,
    deleted_keys: std::collections::hash_map::RandomState,
}

/// The most deleted sessions remembered; past it the oldest half is forgotten.
const DELETED_REMEMBERED: usize = 100_000;

impl Sessions {
    pub fn new(ttl: Duration, keys: SessionKeys) -> Arc<Self> {
        Arc::new(Self {
            map: RwLock::default(),
            epoch: Instant::now(),
            ttl,
            closing: tokio_util::task::TaskTracker::new(),
            keys,
            resuming: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            deleted: Mutex::default(),
            deleted_keys: Default::default(),
        })
    }

    fn deleted_key(&self, id: &str) -> u64 {
        use std::hash::BuildHasher;
        self.deleted_keys.hash_one(id)
    }

    /// Remembers that the client deleted `id`, until its lifetime ends.
    fn forget_for_good(&self, id: &str) {
        if !self.keys.portable {
            return;
        }
        let until =
            self.now_ms() + u64::try_from(self.keys.lifetime.as_millis()).unwrap_or(u64::MAX / 2);
        let mut deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        if deleted.len() >= DELETED_REMEMBERED {
            let mut ends: Vec<u64> = deleted.values().copied().collect();
            let (_, median, _) = ends.select_nth_unstable(DELETED_REMEMBERED / 2);
            let median = *median;
            deleted.retain(|_, end| *end > median);
        }
        deleted.insert(self.deleted_key(id), until);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the ids are sealed with a configured key, so that other replicas (and this process
    /// after a restart) can resume the sessions.
    pub fn portable(&self) -> bool {
        self.keys.portable
    }

    /// The state sealed in `id`, if it is a session id of this fleet still young enough that the
    /// client has not deleted here. Without a configured key nothing is resumed: the process holds
    /// every session it made, and one it no longer holds has ended.
    pub fn open(&self, id: &str) -> Option<Ticket> {
        if !self.keys.portable {
            return None;
        }
        let deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        if deleted.contains_key(&self.deleted_key(id)) {
            return None;
        }
        drop(deleted);
        self.keys.open(id)
    }

    /// Held while `id` is resumed, so that concurrent requests of one session resume it once.
    pub async fn resuming(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % RESUME_STRIPES as u64) as usize;
        self.resuming[stripe].lock().await
    }

    /// Adds a new session; its id seals `ticket` with the targets' upstream sessions added.
    pub fn insert(&self, mut ticket: Ticket, owner: Owner, mux: Arc<Mux>) -> Arc<Session> {
        ticket.targets = mux.target_tickets();
        let id: Arc<str> = self.keys.seal(&ticket).into();
        self.add(id, ticket.route.into(), owner, mux, false)
    }

    /// Adds the session of a 2026-07-28 request context under `id`, an id no client is given.
    pub fn insert_per_request(
        &self,
        id: &str,
        route: Arc<str>,
        owner: Owner,
        mux: Arc<Mux>,
    ) -> Arc<Session> {
        self.add(id.into(), route, owner, mux, true)
    }

    /// Adds a session resumed from its `id`.
    pub fn insert_resumed(
        &self,
        id: &str,
        route: Arc<str>,
        owner: Owner,
        mux: Arc<Mux>,
    ) -> Arc<Session> {
        self.add(id.into(), route, owner, mux, false)
    }

    fn add(
        &self,
        id: Arc<str>,
        route: Arc<str>,
        owner: Owner,
        mux: Arc<Mux>,
        per_request: bool,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            tag: log_tag(&id),
            post_streams: Default::default(),
            id: id.clone(),
            route,
            owner,
            mux,
            last_active: AtomicU64::new(self.now_ms()),
            started: Instant::now(),
            transient: false,
            per_request,
        });
        metrics()
            .sessions_active
            .get_or_create(&session.route_label())
            .inc();
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, session.clone());
        session
    }

    /// The live session with `id`, marked active.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let session = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        if session.mux.is_closed() {
            self.take(id);
            return None;
        }
        session.last_active.store(self.now_ms(), Ordering::Relaxed);
        Some(session)
    }

    /// Removes and closes a session; `false` if there was none.
    pub async fn remove(&self, id: &str) -> bool {
        let Some(session) = self.take(id) else {
            return false;
        };
        self.forget_for_good(id);
        session.mux.close().await;
        true
    }

    /// Removes a session at once and closes it (its targets) in the background, so the client's
    /// `DELETE` does not wait for remote targets or processes to stop; `false` if there was none.
    pub fn end(&self, id: &str) -> bool {
        let Some(session) = self.take(id) else {
            return false;
        };
        self.forget_for_good(id);
        self.closing.spawn(async move { session.mux.close().await });
        true
    }

    /// Takes a session out of the table, leaving it to the caller to close.
    fn take(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Every live session, for the admin API.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Ends every session's GET stream (the sessions themselves stay).
    pub fn end_streams(&self) {
        for session in self.map.read().unwrap_or_else(|p| p.into_inner()).values() {
            session.mux.downlink.detach();
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes sessions idle for longer than the TTL, periodically, until `stop`.
    pub fn spawn_sweeper(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let sessions = self.clone();
        let period = (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                sessions.sweep().await;
            }
        });
    }

    async fn sweep(&self) {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let expired: Vec<Arc<Session>> = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<Arc<str>> = map
                .values()
                .filter(|s| {
                    s.mux.is_closed()
                        || now.saturating_sub(s.last_active.load(Ordering::Relaxed)) > ttl_ms
                })
                .map(|s| s.id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, end| *end > now);
        for session in expired {
            tracing::info!(target: "portico::session", session = %session.tag, "session expired");
            self.let_go(&session).await;
        }
    }

    /// Ends a session in this process that the client did not end: with portable ids another
    /// replica may be serving it, so its HTTP targets' upstream sessions are kept.
    async fn let_go(&self, session: &Session) {
        if self.keys.portable && !session.per_request {
            session.mux.release().await;
        } else {
            session.mux.close().await;
        }
    }

    /// Closes every session (on shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Arc<Session>> = self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        futures::future::join_all(all.iter().map(|s| self.let_go(s))).await;
        self.closing.close();
        self.closing.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_long_and_distinct() {
        let a = new_session_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_session_id());
    }
}
