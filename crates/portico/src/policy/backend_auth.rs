//! `backendAuth` (route, backend, target): the credentials Portico presents to an HTTP target.
//!
//! Built: `key` (a secret inline, from a file, or from `$ENV`; sent as `Authorization: Bearer` unless
//! `location` names a header or a query parameter) and `passthrough` (the client's own bearer token).
//! `aws`, `gcp` and `azure` are refused at load until they are built. Secrets never reach logs,
//! `explain` or error messages: this type's `Debug` redacts them.

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The YAML form: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub key: Option<KeyConfig>,
    pub passthrough: Option<Empty>,
    pub aws: Option<IgnoredAny>,
    pub gcp: Option<IgnoredAny>,
    pub azure: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `key: "<secret>"` or `key: {value | file, location?}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum KeyConfig {
    Inline(String),
    Detailed(KeyDetail),
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyConfig(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDetail {
    pub value: Option<String>,
    pub file: Option<String>,
    pub location: Option<Location>,
}

/// Where the key goes: `{header: X-Api-Key}` or `{query: api_key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Location {
    Header(String),
    Query(String),
}

/// A compiled `backendAuth` policy.
pub enum BackendAuth {
    Key(Key),
    /// The client's bearer token, forwarded as it came.
    Passthrough,
}

pub enum Key {
    /// A ready header (`Authorization: Bearer <key>` or the raw key in a named header), marked sensitive.
    Header(HeaderName, HeaderValue),
    Query(String, String),
}

impl std::fmt::Debug for BackendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAuth::Key(Key::Header(name, _)) => {
                write!(f, "key in header `{name}` (redacted)")
            }
            BackendAuth::Key(Key::Query(name, _)) => {
                write!(f, "key in query parameter `{name}` (redacted)")
            }
            BackendAuth::Passthrough => f.write_str("passthrough of the client's bearer token"),
        }
    }
}

impl BackendAuth {
    /// `Err` names the field (relative to the policy) and what is wrong, never the secret.
    pub fn compile(config: &Config) -> Result<Self, (String, String)> {
        let set = [
            config.key.is_some(),
            config.passthrough.is_some(),
            config.aws.is_some(),
            config.gcp.is_some(),
            config.azure.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err((
                String::new(),
                "set exactly one of `key`, `passthrough`, `aws`, `gcp`, `azure`".into(),
            ));
        }
        for (name, present) in [
            ("aws", config.aws.is_some()),
            ("gcp", config.gcp.is_some()),
            ("azure", config.azure.is_some()),
        ] {
            if present {
                return Err((
                    name.to_string(),
                    format!("backendAuth `{name}` is not supported yet"),
                ));
            }
        }
        match &config.key {
            Some(key) => compile_key(key).map(BackendAuth::Key),
            None => Ok(BackendAuth::Passthrough),
        }
    }

    /// Adds the credentials to a request for a target; `client_token` is the client's bearer token.
    pub fn apply(&self, request: &mut reqwest::Request, client_token: Option<&HeaderValue>) {
        match self {
            BackendAuth::Key(Key::Header(name, value)) => {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            BackendAuth::Key(Key::Query(name, value)) => {
                request.url_mut().query_pairs_mut().append_pair(name, value);
            }
            BackendAuth::Passthrough => {
                if let Some(token) = client_token {
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, token.clone());
                }
            }
        }
    }
}

fn compile_key(config: &KeyConfig) -> Result<Key, (String, String)> {
    let (secret, location) = match config {
        KeyConfig::Inline(secret) => (secret.clone(), None),
        KeyConfig::Detailed(detail) => {
            let secret = match (&detail.value, &detail.file) {
                (Some(value), None) => value.clone(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| ("key.file".to_string(), format!("cannot read `{file}`: {e}")))?,
                _ => return Err(("key".into(), "set exactly one of `value` and `file`".into())),
            };
            (secret, detail.location.as_ref())
        }
    };
    if secret.is_empty() {
        return Err(("key".into(), "the key is empty".into()));
    }
    let invalid = || {
        (
            "key".to_string(),
            "the key cannot be sent in an HTTP header (control characters)".to_string(),
        )
    };
    match location {
        None => {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {secret}")).map_err(|_| invalid())?;
            value.set_sensitive(true);
            Ok(Key::Header(http::header::AUTHORIZATION, value))
        }
        Some(Location::Header(name)) => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                (
                    "key.location.header".to_string(),
                    format!("`{name}` is not a header name"),
                )
            })?;
            let mut value = HeaderValue::from_str(&secret).map_err(|_| invalid())?;
            value.set_sensitive(true);
            Ok(Key::Header(name, value))
        }
        Some(Location::Query(name)) => Ok(Key::Query(name.clone(), secret)),
    }
}
