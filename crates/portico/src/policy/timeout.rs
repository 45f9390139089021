//! `timeout` (route, backend, target): how long a target may take to answer one request.
//!
//! `requestTimeout` bounds the client's whole request at that target (a transparent re-initialize of
//! an expired upstream session included); `backendRequestTimeout` bounds one call to the target. As
//! Portico makes one call per request (it does not retry calls), a request is bounded by the smaller of
//! the two. On expiry the client gets `-32603` naming the target and the limit, and the target gets
//! `notifications/cancelled`. Without a policy there is no limit: MCP tools may run for minutes (with
//! progress), and a client that disconnects, cancels or deletes its session ends its calls.

use crate::policy::FieldError;
use std::time::Duration;

use serde::Deserialize;

use crate::base::units::parse_duration;

/// The YAML form (agentgateway's shape).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub request_timeout: Option<String>,
    pub backend_request_timeout: Option<String>,
}

/// A compiled `timeout` policy: the limit of one request and the field that set it.
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    pub limit: Duration,
    pub field: &'static str,
}

impl Timeout {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let parse = |field: &'static str, text: &Option<String>| match text {
            None => Ok(None),
            Some(text) => match parse_duration(text) {
                Some(limit) if !limit.is_zero() => Ok(Some(Timeout { limit, field })),
                _ => Err(FieldError::new(
                    field.to_string(),
                    format!("`{text}` is not a duration (write e.g. `500ms`, `30s`, `5m`)"),
                )),
            },
        };
        let request = parse("requestTimeout", &config.request_timeout)?;
        let backend = parse("backendRequestTimeout", &config.backend_request_timeout)?;
        match (request, backend) {
            (Some(r), Some(b)) => Ok(if b.limit < r.limit { b } else { r }),
            (Some(one), None) | (None, Some(one)) => Ok(one),
            (None, None) => Err(FieldError::new(
                "",
                "set `requestTimeout`, `backendRequestTimeout` or both",
            )),
        }
    }

    /// What the client is told on expiry.
    pub fn expired(&self, target: &str) -> String {
        format!(
            "target {target} did not answer within {:?} (timeout.{})",
            self.limit, self.field
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(request: Option<&str>, backend: Option<&str>) -> Result<Timeout, FieldError> {
        Timeout::compile(&Config {
            request_timeout: request.map(str::to_string),
            backend_request_timeout: backend.map(str::to_string),
        })
    }

    #[test]
    fn the_smaller_limit_applies() {
        let both = compile(Some("30s"), Some("10s")).unwrap();
        assert_eq!(
            (both.limit, both.field),
            (Duration::from_secs(10), "backendRequestTimeout")
        );
        let one = compile(Some("250ms"), None).unwrap();
        assert_eq!(
            (one.limit, one.field),
            (Duration::from_millis(250), "requestTimeout")
        );
        assert_eq!(
            compile(Some("soon"), None).unwrap_err().field,
            "requestTimeout"
        );
        assert!(compile(None, None).is_err());
        assert!(compile(Some("0s"), None).is_err());
    }
}
