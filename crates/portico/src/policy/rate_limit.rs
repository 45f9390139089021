//! `localRateLimit` (route, backend, target): token buckets counted in this process.
//!
//! One request is one JSON-RPC request: notifications, responses and the GET stream are not counted.
//! At the route every MCP request (and every HTTP request of a `host` route) takes a token; over the
//! limit the client gets HTTP 429 with `Retry-After`. At a backend or target every request Portico
//! sends to that target takes one (a list fans out to each target, so it takes one at each); over the
//! limit that call gets a JSON-RPC error saying when to retry, and the session carries on. A policy
//! set at the backend is one budget shared by the backend's targets that inherit it.

use crate::policy::FieldError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::base::units::parse_duration;

/// The YAML form: a list of buckets (agentgateway's shape); a request needs a token from each.
pub type Config = Vec<BucketConfig>;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BucketConfig {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: String,
    #[serde(default, rename = "type")]
    pub kind: BucketKind,
}

/// What a token stands for. Only requests are counted (LLM tokens do not apply to MCP).
#[derive(Debug, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BucketKind {
    #[default]
    Requests,
    Tokens,
}

struct Bucket {
    max: f64,
    per_fill: f64,
    interval: Duration,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// Tokens now, after refilling for the time since the last look.
    fn refill(&self, state: &mut (f64, Instant), now: Instant) {
        let fills = now.duration_since(state.1).as_secs_f64() / self.interval.as_secs_f64();
        state.0 = (state.0 + fills * self.per_fill).min(self.max);
        state.1 = now;
    }

    /// How long until one token is there.
    fn wait(&self, tokens: f64) -> Duration {
        let missing = (1.0 - tokens).max(0.0);
        self.interval.mul_f64(missing / self.per_fill)
    }
}

/// A compiled `localRateLimit`: its buckets, shared by everything the policy applies to.
pub struct RateLimit {
    buckets: Vec<Bucket>,
}

/// What `explain` shows: each bucket's size and refill, not its live count.
impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let buckets: Vec<String> = self
            .buckets
            .iter()
            .map(|b| format!("{} requests, +{} every {:?}", b.max, b.per_fill, b.interval))
            .collect();
        f.write_str(&buckets.join("; "))
    }
}

impl RateLimit {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        if config.is_empty() {
            return Err(FieldError::new("", "needs at least one bucket"));
        }
        let mut buckets = Vec::with_capacity(config.len());
        for (i, bucket) in config.iter().enumerate() {
            let field = |name: &str| format!("[{i}].{name}");
            if bucket.kind == BucketKind::Tokens {
                return Err(FieldError::new(
                    field("type"),
                    "`type: tokens` counts LLM tokens, which MCP traffic does not have; use `type: requests`",
                ));
            }
            if bucket.max_tokens == 0 || bucket.tokens_per_fill == 0 {
                return Err(FieldError::new(
                    field("maxTokens"),
                    "`maxTokens` and `tokensPerFill` must be at least 1",
                ));
            }
            let interval = parse_duration(&bucket.fill_interval)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    FieldError::new(
                        field("fillInterval"),
                        format!(
                            "`{}` is not a duration (write e.g. `1s`, `1m`)",
                            bucket.fill_interval
                        ),
                    )
                })?;
            let max = bucket.max_tokens as f64;
            buckets.push(Bucket {
                max,
                per_fill: bucket.tokens_per_fill as f64,
                interval,
                state: Mutex::new((max, Instant::now())),
            });
        }
        Ok(Self { buckets })
    }

    /// Takes a token from every bucket, or none: `Err` is how long until every bucket has one.
    pub fn take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut states: Vec<_> = self
            .buckets
            .iter()
            .map(|b| b.state.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut wait = Duration::ZERO;
        for (bucket, state) in self.buckets.iter().zip(states.iter_mut()) {
            bucket.refill(state, now);
            if state.0 < 1.0 {
                wait = wait.max(bucket.wait(state.0));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for state in &mut states {
            state.0 -= 1.0;
        }
        Ok(())
    }
}

/// Whole seconds to wait, at least 1: what `Retry-After` carries.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u64, per_fill: u64, interval: &str) -> RateLimit {
        RateLimit::compile(&vec![BucketConfig {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval: interval.to_string(),
            kind: BucketKind::Requests,
        }])
        .unwrap()
    }

    #[test]
    fn a_bucket_empties_and_says_when_it_refills() {
        let limit = limit(2, 1, "60s");
        assert!(limit.take().is_ok() && limit.take().is_ok());
        let wait = limit.take().unwrap_err();
        assert!(
            wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 60);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn refills_over_time() {
        let limit = limit(1, 1, "50ms");
        assert!(limit.take().is_ok());
        assert!(limit.take().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limit.take().is_ok());
    }
}
