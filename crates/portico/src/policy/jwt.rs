//! `jwtAuth` (listener, route): validates the client's bearer token; its claims become `jwt` in CEL.
//!
//! Keys come only from the configured JWKS, looked up by `kid` (`jku`, `x5u` and embedded `jwk` headers
//! are never used). Only asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted, so `alg: none` and
//! HMAC signed with a public key are refused. `exp` is required; `exp`, `nbf` and `iat` are checked with a
//! 60 s leeway; `iss` must match exactly; `aud` is required and matched when audiences are configured;
//! a token with `crit` headers is refused (Portico understands none).

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
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
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
}

/// What happens to requests without a valid token.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum JwksSource {
    File(String),
    Inline(Value),
    Url(String),
}

struct Provider {
    issuer: Option<String>,
    audiences: Vec<String>,
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

/// A compiled `jwtAuth` policy.
pub struct JwtAuth {
    pub mode: Mode,
    providers: Vec<Provider>,
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
    pub fn compile(config: &Config) -> Result<Self, (String, String)> {
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
            return Err(("jwks".into(), "jwtAuth needs `jwks` or `providers`".into()));
        }
        Ok(Self {
            mode: config.mode,
            providers,
        })
    }

    /// Validates the request's bearer token: `Ok(claims)` (`Value::Null` when anonymous is allowed).
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Value, Rejection> {
        let outcome = self.claims(headers);
        match (self.mode, outcome) {
            (_, Ok(claims)) => Ok(claims),
            (Mode::Permissive, Err(_)) => Ok(Value::Null),
            (Mode::Optional, Err(Rejection::Missing)) => Ok(Value::Null),
            (_, Err(rejection)) => Err(rejection),
        }
    }

    fn claims(&self, headers: &http::HeaderMap) -> Result<Value, Rejection> {
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
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(Rejection::Invalid("not a Bearer token".into())),
        };
        self.validate(token)
    }

    fn validate(&self, token: &str) -> Result<Value, Rejection> {
        let invalid = |why: &str| Rejection::Invalid(why.to_string());
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
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer.is_none() || p.issuer == issuer)
            .ok_or_else(|| invalid("unknown issuer"))?;
        let mut candidates = provider.keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || *kid == header.kid)
        });
        let (_, _, key) = candidates
            .next()
            .ok_or_else(|| invalid("no key for this kid and algorithm"))?;
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
        let data = jsonwebtoken::decode::<Value>(token, key, &validation)
            .map_err(|e| Rejection::Invalid(format!("{:?}", e.kind()).to_lowercase()))?;
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
) -> Result<Provider, (String, String)> {
    let set: JwkSet = match jwks {
        JwksSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| (format!("{at}.file"), format!("cannot read `{path}`: {e}")))?;
            serde_json::from_str(&text)
                .map_err(|e| (format!("{at}.file"), format!("`{path}` is not a JWKS: {e}")))?
        }
        JwksSource::Inline(value) => {
            let value = match value {
                Value::String(text) => serde_json::from_str(text)
                    .map_err(|e| (format!("{at}.inline"), e.to_string()))?,
                other => other.clone(),
            };
            serde_json::from_value(value)
                .map_err(|e| (format!("{at}.inline"), format!("not a JWKS: {e}")))?
        }
        JwksSource::Url(_) => {
            return Err((
                format!("{at}.url"),
                "JWKS from a URL is not supported yet; use `file` or `inline`".into(),
            ));
        }
    };
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Some(alg) = algorithm_of(jwk) else {
            return Err((
                format!("{at}.keys[{i}]"),
                "the key names no usable asymmetric algorithm (`alg`)".into(),
            ));
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| (format!("{at}.keys[{i}]"), format!("unusable key: {e}")))?;
        keys.push((jwk.common.key_id.clone(), alg, key));
    }
    if keys.is_empty() {
        return Err((at.to_string(), "the JWKS has no keys".into()));
    }
    Ok(Provider {
        issuer,
        audiences,
        keys,
    })
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
