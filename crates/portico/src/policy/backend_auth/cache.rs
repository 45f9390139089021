//! Short-lived cloud credentials (Google and Entra ID tokens, AWS role credentials), fetched once,
//! shared by every request, and refreshed in the background before they expire, so that no request
//! waits for a token fetch once the first one has landed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;

/// A credential and how long it is valid (`None`: until the process ends).
pub struct Fetched<T> {
    pub value: T,
    pub lifetime: Option<Duration>,
}

/// Where a credential comes from: a token endpoint, a metadata server, a file.
pub trait Source<T>: Send + Sync + 'static {
    /// Fetches a fresh credential. The error says what failed and never contains a secret.
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<T>, String>>;
}

impl<T, S: Source<T> + ?Sized> Source<T> for Box<S> {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<T>, String>> {
        (**self).fetch()
    }
}

struct Entry<T> {
    value: T,
    /// Past this, the entry is not handed out (a margin before the real expiry covers clock skew and
    /// requests in flight).
    usable_until: Option<Instant>,
    /// When the background task fetches the next one.
    refresh_at: Option<Instant>,
}

/// One credential, its source, and the background refresh.
pub struct Cache<T> {
    /// What this is, for logs: `gcp idToken for https://svc.example.com`.
    label: String,
    source: Box<dyn Source<T>>,
    current: ArcSwapOption<Entry<T>>,
    /// One fetch at a time: concurrent first requests share it.
    fetching: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longer lifetimes are taken as this: an endpoint's number is not trusted to be sane, and a
/// credential is worth re-checking at least this often.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

impl<T: Clone + Send + Sync + 'static> Cache<T> {
    pub fn new(label: String, source: impl Source<T>) -> Arc<Self> {
        Arc::new(Self {
            label,
            source: Box::new(source),
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The current credential; fetches it only when there is none that is still valid.
    pub async fn get(self: &Arc<Self>) -> Result<T, String> {
        if let Some(value) = self.valid() {
            return Ok(value);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(value) = self.valid() {
            return Ok(value);
        }
        let value = self.fetch().await?;
        self.start_refreshing();
        Ok(value)
    }

    fn valid(&self) -> Option<T> {
        let entry = self.current.load();
        let entry = entry.as_ref()?;
        match entry.usable_until {
            Some(until) if Instant::now() >= until => None,
            _ => Some(entry.value.clone()),
        }
    }

    async fn fetch(&self) -> Result<T, String> {
        let fetched = self
            .source
            .fetch()
            .await
            .map_err(|e| format!("{}: {e}", self.label))?;
        let now = Instant::now();
        let (usable_until, refresh_at) = match fetched.lifetime.map(|l| l.min(MAX_LIFETIME)) {
            Some(lifetime) => (
                Some(now + lifetime - (lifetime / 10).min(Duration::from_secs(60))),
                // Never sooner than a second: an endpoint that hands out instantly expiring
                // credentials must not turn the refresh into a busy loop.
                Some(
                    now + (lifetime - (lifetime / 2).min(Duration::from_secs(300)))
                        .max(MIN_REFRESH),
                ),
            ),
            None => (None, None),
        };
        tracing::debug!(target: "portico::backend_auth", credential = %self.label, lifetime_s = fetched.lifetime.map(|l| l.as_secs()), "credential fetched");
        self.current.store(Some(Arc::new(Entry {
            value: fetched.value.clone(),
            usable_until,
            refresh_at,
        })));
        Ok(fetched.value)
    }

    /// Starts the task that keeps the credential fresh; it ends when the cache is dropped.
    fn start_refreshing(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut retry_delay = Duration::from_secs(1);
            loop {
                let Some(refresh_at) = cache.upgrade().and_then(|c| c.next_refresh()) else {
                    return;
                };
                tokio::time::sleep_until(refresh_at.into()).await;
                let Some(this) = cache.upgrade() else { return };
                let _one_at_a_time = this.fetching.lock().await;
                match this.fetch().await {
                    Ok(_) => retry_delay = Duration::from_secs(1),
                    Err(error) => {
                        tracing::warn!(target: "portico::backend_auth", %error, retry_in_s = retry_delay.as_secs(), "credential refresh failed; the current one is used until it expires");
                        // The failed entry keeps its refresh time: wait before trying again.
                        drop(_one_at_a_time);
                        drop(this);
                        tokio::time::sleep(retry_delay).await;
                        retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
                    }
                }
            }
        });
    }

    fn next_refresh(&self) -> Option<Instant> {
        self.current.load().as_ref()?.refresh_at
    }
}

/// Reads `expires_in` as a number or a string of digits (Azure's IMDS sends strings).
pub fn seconds(value: &serde_json::Value) -> Option<Duration> {
    let seconds = match value {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// The lifetime left of a JWT from its `exp` claim, read without verifying it (the issuer is trusted:
/// Portico fetched the token from it).
pub fn jwt_lifetime(token: &str) -> Option<Duration> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// Reads a JSON token response, or says what the endpoint answered instead (never the body of a
/// successful response, which holds the token).
pub async fn json_response(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<serde_json::Value, String> {
    let response = response.map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "the endpoint answered HTTP {status}: {}",
            error_summary(&body)
        ));
    }
    response
        .json()
        .await
        .map_err(|e| format!("the endpoint's answer is not JSON: {}", e.without_url()))
}

/// The `error`/`error_description` of an OAuth error body, or its first 200 characters.
fn error_summary(body: &str) -> String {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(body) {
        let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(error) = field("error") {
            return match field("error_description") {
                Some(description) => format!("{error}: {description}"),
                None => error,
            };
        }
    }
    body.chars().take(200).collect()
}

/// The string field `name` of a token response.
pub fn field(json: &serde_json::Value, name: &str) -> Result<String, String> {
    json.get(name)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("the answer has no `{name}`"))
}

/// The HTTP client for token endpoints and metadata servers: short timeouts, since a request may be
/// waiting for it.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(std::sync::atomic::AtomicUsize, Option<Duration>);

    impl Cache<usize> {
        fn source_fetches(&self) -> usize {
            self.current.load().as_ref().map_or(0, |e| e.value)
        }
    }

    impl Source<usize> for Counting {
        fn fetch(&self) -> BoxFuture<'_, Result<Fetched<usize>, String>> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                Ok(Fetched {
                    value: n,
                    lifetime: self.1,
                })
            })
        }
    }

    #[tokio::test]
    async fn one_fetch_serves_every_request_until_refresh() {
        let cache = Cache::new(
            "test".into(),
            Counting(Default::default(), Some(Duration::from_secs(3600))),
        );
        let firsts = futures::future::join_all((0..10).map(|_| cache.get())).await;
        assert!(firsts.iter().all(|v| v == &Ok(1)), "{firsts:?}");
    }

    #[tokio::test]
    async fn an_absurd_lifetime_is_capped_not_a_panic() {
        let cache = Cache::new(
            "test".into(),
            Counting(Default::default(), Some(Duration::from_secs(u64::MAX))),
        );
        assert_eq!(cache.get().await, Ok(1));
        assert_eq!(cache.get().await, Ok(1));
    }

    #[tokio::test]
    async fn an_expired_credential_is_fetched_again_but_not_in_a_loop() {
        let cache = Cache::new(
            "test".into(),
            Counting(Default::default(), Some(Duration::ZERO)),
        );
        assert_eq!(cache.get().await, Ok(1));
        assert_eq!(cache.get().await, Ok(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            cache.source_fetches(),
            2,
            "the background refresh waits at least a second"
        );
    }
}
