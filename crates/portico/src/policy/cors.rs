//! `cors` (listener, route): which browser origins may call the route, preflight answered by Portico.
//!
//! It also decides the MCP DNS-rebinding check: with a cors policy, a request's `Origin` must be one of
//! `allowOrigins` (`*` allows any); without one, only localhost origins pass.

use crate::policy::FieldError;
use http::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

/// The YAML form.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight answer.
    pub max_age: Option<u64>,
}

/// A compiled `cors` policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<String>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: HeaderValue,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// Headers browsers need to read from MCP responses, exposed unless `exposeHeaders` says otherwise.
const MCP_EXPOSED: &str = "mcp-session-id, mcp-protocol-version";

impl Cors {
    /// `Err` names the field and what is wrong with it.
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let list = |field: &str, values: &[String], default: &str| {
            let joined = if values.is_empty() {
                default.to_string()
            } else {
                values.join(", ")
            };
            HeaderValue::from_str(&joined).map_err(|_| {
                FieldError::new(
                    field.to_string(),
                    format!("`{joined}` is not a valid header value"),
                )
            })
        };
        for (i, origin) in config.allow_origins.iter().enumerate() {
            if origin.contains(['\r', '\n', ' ']) {
                return Err(FieldError::new(
                    format!("allowOrigins[{i}]"),
                    format!("`{origin}` is not an origin"),
                ));
            }
        }
        if config.allow_credentials && config.allow_origins.iter().any(|o| o == "*") {
            // Browsers refuse the pair, and echoing any origin instead would hand every site the
            // caller's cookies and credentials.
            return Err(FieldError::new(
                "allowCredentials",
                "`allowCredentials: true` cannot go with `allowOrigins: [\"*\"]`; list the origins that may send credentials",
            ));
        }
        Ok(Self {
            origins: config
                .allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            methods: list(
                "allowMethods",
                &config.allow_methods,
                "GET, POST, DELETE, OPTIONS",
            )?,
            headers: (!config.allow_headers.is_empty())
                .then(|| list("allowHeaders", &config.allow_headers, ""))
                .transpose()?,
            expose: list("exposeHeaders", &config.expose_headers, MCP_EXPOSED)?,
            credentials: config.allow_credentials,
            max_age: config.max_age.map(HeaderValue::from),
        })
    }

    /// Whether `origin` (an `Origin` header value) may call the route.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.origins.iter().any(|allowed| {
            if allowed == "*" {
                return true;
            }
            match allowed.split_once("://*.") {
                // `https://*.example.com` matches any subdomain, same scheme.
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .is_some_and(|host| host.ends_with(&format!(".{domain}"))),
                None => *allowed == origin,
            }
        })
    }

    fn allow_origin(&self, origin: &str) -> HeaderValue {
        // `*` never goes with credentials (refused at load), so it can be answered as is.
        if self.origins.iter().any(|o| o == "*") {
            return HeaderValue::from_static("*");
        }
        HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null"))
    }

    /// The headers of a preflight answer for an allowed `origin`.
    pub fn preflight(&self, origin: &str, request: &HeaderMap) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        // Without a configured list, the headers the browser asks for are allowed.
        let asked = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        if let Some(allowed) = self.headers.clone().or(asked) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        self.common(&mut headers);
        headers
    }

    /// Adds the CORS headers of an actual response for an allowed `origin`.
    pub fn decorate(&self, origin: &str, headers: &mut HeaderMap) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
        self.common(headers);
    }

    fn common(&self, headers: &mut HeaderMap) {
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        let config = Config {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_methods: vec![],
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: Some(600),
        };
        Cors::compile(&config).unwrap()
    }

    #[test]
    fn origins() {
        let c = cors(&["https://app.example.com", "https://*.tools.dev"]);
        assert!(c.allows("https://app.example.com"));
        assert!(c.allows("https://APP.example.com/"));
        assert!(c.allows("https://a.tools.dev"));
        assert!(!c.allows("http://a.tools.dev"));
        assert!(!c.allows("https://tools.dev"));
        assert!(!c.allows("https://evil.com"));
        assert!(cors(&["*"]).allows("https://anything.example"));
    }

    #[test]
    fn preflight_and_response_headers() {
        let c = cors(&["*"]);
        let mut request = HeaderMap::new();
        request.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("content-type, mcp-session-id"),
        );
        let answer = c.preflight("https://x.dev", &request);
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            answer[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, mcp-session-id"
        );
        assert_eq!(answer[header::ACCESS_CONTROL_MAX_AGE], "600");
        let mut response = HeaderMap::new();
        c.decorate("https://x.dev", &mut response);
        assert_eq!(response[header::ACCESS_CONTROL_EXPOSE_HEADERS], MCP_EXPOSED);
    }
}
