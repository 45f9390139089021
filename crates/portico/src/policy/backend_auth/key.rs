//! `backendAuth.key`: a static secret, inline, from `$ENV` or from a file, sent as
//! `Authorization: Bearer` unless `location` names a header or a query parameter.

use crate::policy::FieldError;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::policy::outbound::{OutboundError, OutgoingRequest};

/// `key: "<secret>"` or `key: {value | file, location?}`.
#[derive(Deserialize, schemars::JsonSchema)]
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDetail {
    pub value: Option<String>,
    pub file: Option<String>,
    pub location: Option<Location>,
}

/// Where the key goes: `{header: X-Api-Key}` or `{query: api_key}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Location {
    Header(String),
    Query(String),
}

pub enum Key {
    /// A ready header (`Authorization: Bearer <key>` or the raw key in a named header), marked sensitive.
    Header(HeaderName, HeaderValue),
    Query(String, String),
}

impl Key {
    pub fn apply(&self, request: &mut impl OutgoingRequest) -> Result<(), OutboundError> {
        match self {
            Key::Header(name, value) => {
                request.headers_mut().insert(name.clone(), value.clone());
                Ok(())
            }
            Key::Query(name, value) => request.append_query(name, value),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Header(name, _) => write!(f, "key in header `{name}` (redacted)"),
            Key::Query(name, _) => write!(f, "key in query parameter `{name}` (redacted)"),
        }
    }
}

pub fn compile_key(config: &KeyConfig) -> Result<Key, FieldError> {
    let (secret, location) = match config {
        KeyConfig::Inline(secret) => (secret.clone(), None),
        KeyConfig::Detailed(detail) => {
            let secret = match (&detail.value, &detail.file) {
                (Some(value), None) => value.clone(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        FieldError::new("key.file", format!("cannot read `{file}`: {e}"))
                    })?,
                _ => {
                    return Err(FieldError::new(
                        "key",
                        "set exactly one of `value` and `file`",
                    ));
                }
            };
            (secret, detail.location.as_ref())
        }
    };
    if secret.is_empty() {
        return Err(FieldError::new("key", "the key is empty"));
    }
    let invalid = || {
        FieldError::new(
            "key",
            "the key cannot be sent in an HTTP header (control characters)",
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
                FieldError::new(
                    "key.location.header",
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
