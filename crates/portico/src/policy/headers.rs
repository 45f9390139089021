//! `requestHeaderModifier` and `responseHeaderModifier` (route, backend, target): `{add, set, remove}`.
//!
//! A request modifier changes the HTTP requests Portico sends to a target (the effective one per target:
//! target over backend over route); it needs an HTTP target, so setting one on a `stdio` target is an
//! error. A response modifier changes Portico's HTTP response to the client: the route's on every
//! response, a target's (or its backend's) on JSON replies to requests that target answered alone.
//! Hop-by-hop and MCP session headers cannot be modified; values cannot contain CR or LF.

use crate::policy::FieldError;
use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

/// The YAML form.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub add: Headers,
    #[serde(default)]
    pub set: Headers,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `{name: value}` or `[{name, value}]`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Headers {
    Map(BTreeMap<String, String>),
    List(Vec<NamedValue>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::Map(BTreeMap::new())
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    pub name: String,
    pub value: String,
}

impl Headers {
    fn pairs(&self) -> Vec<(&str, &str)> {
        match self {
            Headers::Map(map) => map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            Headers::List(list) => list
                .iter()
                .map(|nv| (nv.name.as_str(), nv.value.as_str()))
                .collect(),
        }
    }
}

/// Headers no modifier may touch: hop-by-hop, framing, and the MCP session.
const PROTECTED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "mcp-session-id",
    "mcp-protocol-version",
];

/// A compiled modifier.
#[derive(Debug, Default)]
pub struct HeaderModifier {
    add: Vec<(HeaderName, HeaderValue)>,
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

fn name(field: &str, raw: &str) -> Result<HeaderName, FieldError> {
    let name = HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| FieldError::new(field.to_string(), format!("`{raw}` is not a header name")))?;
    if PROTECTED.contains(&name.as_str()) {
        return Err(FieldError::new(
            field.to_string(),
            format!("`{raw}` is a hop-by-hop or MCP session header and cannot be modified"),
        ));
    }
    Ok(name)
}

fn pairs(field: &str, headers: &Headers) -> Result<Vec<(HeaderName, HeaderValue)>, FieldError> {
    headers
        .pairs()
        .into_iter()
        .map(|(raw, value)| {
            let at = format!("{field}.{raw}");
            if value.contains(['\r', '\n']) {
                return Err(FieldError::new(at, "header values cannot contain CR or LF"));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                FieldError::new(at.clone(), format!("`{value}` is not a header value"))
            })?;
            Ok((name(&at, raw)?, value))
        })
        .collect()
}

impl HeaderModifier {
    /// `Err` names the field (relative to the policy) and what is wrong.
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        Ok(Self {
            add: pairs("add", &config.add)?,
            set: pairs("set", &config.set)?,
            remove: config
                .remove
                .iter()
                .enumerate()
                .map(|(i, raw)| name(&format!("remove[{i}]"), raw))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: serde_json::Value) -> Result<HeaderModifier, FieldError> {
        HeaderModifier::compile(&serde_json::from_value(yaml).unwrap())
    }

    #[test]
    fn set_add_remove() {
        let m = compile(serde_json::json!({"set": {"x-team": "blue"}, "add": [{"name": "x-tag", "value": "b"}], "remove": ["x-drop"]})).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-team", HeaderValue::from_static("red"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        headers.insert("x-drop", HeaderValue::from_static("1"));
        m.apply(&mut headers);
        assert_eq!(headers["x-team"], "blue");
        assert_eq!(headers.get_all("x-tag").iter().count(), 2);
        assert!(headers.get("x-drop").is_none());
    }

    #[test]
    fn refuses_protected_headers_and_line_breaks() {
        assert!(
            compile(serde_json::json!({"set": {"Mcp-Session-Id": "x"}}))
                .unwrap_err()
                .message
                .contains("cannot be modified")
        );
        assert!(compile(serde_json::json!({"remove": ["connection"]})).is_err());
        let super::super::FieldError { field, message } =
            compile(serde_json::json!({"add": {"x-a": "1\r\nx-b: 2"}})).unwrap_err();
        assert_eq!(field, "add.x-a");
        assert!(message.contains("CR or LF"));
    }
}
