//! `jwtAuth` (listener, route): validates the client's bearer token; its claims become `jwt` in CEL.
//!
//! Keys come only from the configured JWKS, looked up by `kid` (`jku`, `x5u` and embedded `jwk` headers
//! are never used). Only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted, so `alg: none` and
//! HMAC signed with a public key are refused. `exp` is required; `exp`, `nbf` and `iat` are checked with a
//! 60 s leeway; `iss` must match exactly; `aud` is required and matched when audiences are configured;
//! a token with `crit` headers is refused (Portico understands none).

use crate::policy::FieldError;
use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_json::Value;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY: u64 = 60;

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The YAML form: one provider inline, or a list of `providers`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: Option<JwksSource>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
}

/// What happens to requests without a valid token.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// No valid token: 401.
    Strict,
    /// No token: anonymous; an invalid token: 401.
    #[default]
    Optional,
    /// Never rejects; an invalid token is treated as none.
    Permissive,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum JwksSource {
    File(String),
    Inline(Value),
    Url(String),
}

type Keys = Vec<(Option<String>, Algorithm, DecodingKey)>;

struct Provider {
    issuer: Option<String>,
    audiences: Vec<String>,
    /// Swapped whole when a remote JWKS is fetched again.
    keys: ArcSwap<Keys>,
    remote: Option<Remote>,
}

/// A JWKS fetched from a URL: refreshed periodically, and early (at most every
/// [`MIN_REFRESH`]) when a token names a key it does not have.
struct Remote {
    url: String,
    /// The last fetch caused by an unknown key.
    last_demand: Mutex<Option<Instant>>,
    refreshing: tokio::sync::Mutex<()>,
}

/// How often a remote JWKS is fetched again.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// The least time between two fetches caused by unknown keys.
const MIN_REFRESH: Duration = Duration::from_secs(30);
/// How long a request waits for a JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A compiled `jwtAuth` policy.
pub struct JwtAuth {
    pub mode: Mode,
    providers: Vec<Provider>,
    /// For remote JWKS, made on first use.
    client: std::sync::OnceLock<reqwest::Client>,
    /// Tokens already verified, by SHA-256, until they expire: a signature is checked once per token.
    verified: VerifiedTokens,
}

/// At most this many verified tokens are remembered; past it the memory starts over.
const VERIFIED_LIMIT: usize = 4096;

#[derive(Default)]
struct VerifiedTokens(Mutex<std::collections::HashMap<[u8; 32], (Value, u64)>>);

impl VerifiedTokens {
    fn get(&self, key: &[u8; 32]) -> Option<Value> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (claims, until) = map.get(key)?;
        (jsonwebtoken::get_current_timestamp() <= *until).then(|| claims.clone())
    }

    fn insert(&self, key: [u8; 32], claims: &Value) {
        // `exp` is required, so it is there; the same leeway as validation applies.
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return;
        };
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_LIMIT {
            map.clear();
        }
        map.insert(key, (claims.clone(), exp.saturating_add(LEEWAY)));
    }
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers: Vec<_> = self
            .providers
            .iter()
            .map(|p| p.issuer.as_deref().unwrap_or("*"))
            .collect();
        write!(f, "jwtAuth(mode: {:?}, issuers: {issuers:?})", self.mode)
    }
}

/// Why a request was refused (the 401's `error_description`; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("a bearer token is required")]
    Missing,
    #[error("more than one Authorization header")]
    Ambiguous,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl JwtAuth {
    /// Loads the keys; `Err` says what is wrong with the config (path suffix, message).
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let mut providers = Vec::new();
        if let Some(jwks) = &config.jwks {
            providers.push(provider(
                config.issuer.clone(),
                config.audiences.clone(),
                jwks,
                "jwks",
            )?);
        }
        for (i, p) in config.providers.iter().enumerate() {
            providers.push(provider(
                p.issuer.clone(),
                p.audiences.clone(),
                &p.jwks,
                &format!("providers[{i}].jwks"),
            )?);
        }
        if providers.is_empty() {
            return Err(FieldError::new(
                "jwks",
                "jwtAuth needs `jwks` or `providers`",
            ));
        }
        Ok(Self {
            mode: config.mode,
            providers,
            client: std::sync::OnceLock::new(),
            verified: VerifiedTokens::default(),
        })
    }

    /// Validates the request's bearer token: `Ok(claims)` (`Value::Null` when anonymous is allowed).
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Value, Rejection> {
        let outcome = match bearer(headers) {
            Ok(token) => self.validate_refreshing(token).await,
            Err(rejection) => Err(rejection),
        };
        match (self.mode, outcome) {
            (_, Ok(claims)) => Ok(claims),
            (Mode::Permissive, Err(_)) => Ok(Value::Null),
            (Mode::Optional, Err(Rejection::Missing)) => Ok(Value::Null),
            (_, Err(rejection)) => Err(rejection),
        }
    }

    /// Validates `token`; a key missing from a remote JWKS makes it fetch the JWKS again (at most every
    /// [`MIN_REFRESH`]) and try once more, so rotated keys are picked up at their first use.
    async fn validate_refreshing(&self, token: &str) -> Result<Value, Rejection> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().unwrap_or_default();
        if let Some(claims) = self.verified.get(&key) {
            return Ok(claims);
        }
        let claims = self.validate_uncached(token).await?;
        self.verified.insert(key, &claims);
        Ok(claims)
    }

    async fn validate_uncached(&self, token: &str) -> Result<Value, Rejection> {
        match self.validate(token) {
            Err(Unverified::MissingKey(provider)) => {
                let provider = &self.providers[provider];
                // A fetch under way (the one at start) may bring the key.
                provider.settled().await;
                if let Err(Unverified::MissingKey(_)) = self.validate(token) {
                    provider.refresh(self.client(), true).await;
                }
                self.validate(token).map_err(Unverified::into_rejection)
            }
            other => other.map_err(Unverified::into_rejection),
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(reqwest::Client::new)
    }

    /// Fetches every remote JWKS now and then every [`REFRESH_EVERY`] until `stop`; sooner after a
    /// failed fetch while no keys are held.
    pub fn spawn_refresh(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.providers.iter().all(|p| p.remote.is_none()) {
            return;
        }
        let auth = self.clone();
        tokio::spawn(async move {
            loop {
                for provider in &auth.providers {
                    provider.refresh(auth.client(), false).await;
                }
                let starved = auth
                    .providers
                    .iter()
                    .any(|p| p.remote.is_some() && p.keys.load().is_empty());
                let wait = if starved {
                    Duration::from_secs(5)
                } else {
                    REFRESH_EVERY
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    fn validate(&self, token: &str) -> Result<Value, Unverified> {
        let invalid = |why: &str| Unverified::Rejected(Rejection::Invalid(why.to_string()));
        let raw_header = token
            .split('.')
            .next()
            .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
        let raw_header: Value = raw_header
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| invalid("malformed header"))?;
        if raw_header.get("crit").is_some() {
            return Err(invalid("unsupported critical header"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("unsupported algorithm"))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(invalid("unsupported algorithm"));
        }
        let issuer = unverified_issuer(token);
        let (index, provider) = self
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.issuer.is_none() || p.issuer == issuer)
            .ok_or_else(|| invalid("unknown issuer"))?;
        let keys = provider.keys.load();
        let mut candidates = keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || *kid == header.kid)
        });
        let Some((_, _, key)) = candidates.next() else {
            if provider.remote.is_some() {
                return Err(Unverified::MissingKey(index));
            }
            return Err(invalid("no key for this kid and algorithm"));
        };
        if header.kid.is_none() && candidates.next().is_some() {
            return Err(invalid("token has no kid and several keys match"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_string()]);
        match &provider.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        if provider.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&provider.audiences);
            validation.required_spec_claims.insert("aud".into());
        }
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| {
            Unverified::Rejected(Rejection::Invalid(format!("{:?}", e.kind()).to_lowercase()))
        })?;
        let now = jsonwebtoken::get_current_timestamp();
        if data
            .claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now + LEEWAY)
        {
            return Err(invalid("issued in the future"));
        }
        Ok(data.claims)
    }
}

/// Why [`JwtAuth::validate`] did not accept a token.
enum Unverified {
    Rejected(Rejection),
    /// The token names a key the provider's remote JWKS may have gained since it was fetched.
    MissingKey(usize),
}

impl Unverified {
    fn into_rejection(self) -> Rejection {
        match self {
            Unverified::Rejected(rejection) => rejection,
            Unverified::MissingKey(_) => {
                Rejection::Invalid("no key for this kid and algorithm".into())
            }
        }
    }
}

/// The bearer token of the request.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::Missing);
    };
    if values.next().is_some() {
        return Err(Rejection::Ambiguous);
    }
    let value = value
        .to_str()
        .map_err(|_| Rejection::Invalid("malformed Authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(Rejection::Invalid("not a Bearer token".into())),
    }
}

fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

fn provider(
    issuer: Option<String>,
    audiences: Vec<String>,
    jwks: &JwksSource,
    at: &str,
) -> Result<Provider, FieldError> {
    let set: JwkSet = match jwks {
        JwksSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                FieldError::new(format!("{at}.file"), format!("cannot read `{path}`: {e}"))
            })?;
            serde_json::from_str(&text).map_err(|e| {
                FieldError::new(format!("{at}.file"), format!("`{path}` is not a JWKS: {e}"))
            })?
        }
        JwksSource::Inline(value) => {
            let value = match value {
                Value::String(text) => serde_json::from_str(text)
                    .map_err(|e| FieldError::new(format!("{at}.inline"), e.to_string()))?,
                other => other.clone(),
            };
            serde_json::from_value(value)
                .map_err(|e| FieldError::new(format!("{at}.inline"), format!("not a JWKS: {e}")))?
        }
        JwksSource::Url(url) => {
            if reqwest::Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false)
            {
                return Ok(Provider {
                    issuer,
                    audiences,
                    keys: ArcSwap::from_pointee(Vec::new()),
                    remote: Some(Remote {
                        url: url.clone(),
                        last_demand: Mutex::new(None),
                        refreshing: tokio::sync::Mutex::new(()),
                    }),
                });
            }
            return Err(FieldError::new(
                format!("{at}.url"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
    };
    let keys = parse_keys(&set).map_err(|(i, message)| match i {
        Some(i) => FieldError::new(format!("{at}.keys[{i}]"), message),
        None => FieldError::new(at, message),
    })?;
    Ok(Provider {
        issuer,
        audiences,
        keys: ArcSwap::from_pointee(keys),
        remote: None,
    })
}

/// The usable keys of a JWKS; `Err` names the bad key (its index) and why.
fn parse_keys(set: &JwkSet) -> Result<Keys, (Option<usize>, String)> {
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = algorithm_of(jwk).ok_or((
            Some(i),
            "the key names no usable asymmetric algorithm (`alg`)".to_string(),
        ))?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| (Some(i), format!("unusable key: {e}")))?;
        keys.push((jwk.common.key_id.clone(), alg, key));
    }
    if keys.is_empty() {
        return Err((None, "the JWKS has no keys".into()));
    }
    Ok(keys)
}

impl Provider {
    /// Waits for a fetch in progress, if any.
    async fn settled(&self) {
        if let Some(remote) = &self.remote {
            drop(remote.refreshing.lock().await);
        }
    }

    /// Fetches the remote JWKS now; `on_demand` (an unknown key) fetches at most every
    /// [`MIN_REFRESH`], so tokens naming keys that do not exist cannot make Portico fetch on every request.
    async fn refresh(&self, client: &reqwest::Client, on_demand: bool) {
        let Some(remote) = &self.remote else { return };
        let _one_at_a_time = remote.refreshing.lock().await;
        if on_demand {
            let mut last = remote.last_demand.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
                return;
            }
            *last = Some(Instant::now());
        }
        match fetch(client, &remote.url).await {
            Ok(keys) => {
                tracing::info!(target: "portico::jwt", url = %remote.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
            }
            // The keys already held stay in use.
            Err(e) => {
                tracing::warn!(target: "portico::jwt", url = %remote.url, error = %e, "JWKS fetch failed; retrying later")
            }
        }
    }
}

/// The largest JWKS document accepted: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Keys, String> {
    let response = client
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let body = crate::base::http::read_capped(reqwest::Body::from(response), MAX_JWKS_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
    parse_keys(&set).map_err(|(_, message)| message)
}

/// The key's `alg`, or for keys without one, the algorithm its type implies (RSA keys: RS256).
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(declared) = jwk.common.key_algorithm {
        let name = format!("{declared:?}");
        return ASYMMETRIC
            .into_iter()
            .find(|alg| format!("{alg:?}") == name);
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}
