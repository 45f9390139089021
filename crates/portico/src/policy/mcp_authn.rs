//! `mcpAuthentication` (route): Portico as an OAuth 2.1 resource server, the way MCP clients expect.
//!
//! It validates bearer tokens like `jwtAuth` (default mode `strict`), serves the RFC 9728 protected
//! resource metadata at `/.well-known/oauth-protected-resource<route path>`, and answers requests
//! without a valid token 401 with `WWW-Authenticate: Bearer resource_metadata="<that URL>"`, from which
//! an OAuth-capable client finds the authorization server.

use crate::policy::FieldError;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::jwt::{self, JwtAuth, Mode};

/// Where the metadata lives, before the route's path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The YAML form.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: jwt::JwksSource,
    #[serde(default = "strict")]
    pub mode: Mode,
    /// Extra RFC 9728 fields (e.g. `scopes_supported`, `resource_documentation`), or overrides.
    #[serde(default)]
    pub resource_metadata: Map<String, Value>,
}

fn strict() -> Mode {
    Mode::Strict
}

/// A compiled `mcpAuthentication` policy.
#[derive(Debug)]
pub struct McpAuthentication {
    pub jwt: Arc<JwtAuth>,
    issuer: String,
    extra: Map<String, Value>,
}

impl McpAuthentication {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let jwt = Arc::new(JwtAuth::compile(&jwt::Config {
            mode: config.mode,
            issuer: Some(config.issuer.clone()),
            audiences: config.audiences.clone(),
            jwks: Some(config.jwks.clone()),
            providers: vec![],
        })?);
        Ok(Self {
            jwt,
            issuer: config.issuer.clone(),
            extra: config.resource_metadata.clone(),
        })
    }

    /// The metadata URL for the resource at `base` (`scheme://host`) + `path`.
    pub fn metadata_url(base: &str, path: &str) -> String {
        format!("{base}{WELL_KNOWN}{}", if path == "/" { "" } else { path })
    }

    /// The RFC 9728 document for the resource `base` + `path`.
    pub fn metadata(&self, base: &str, path: &str) -> Value {
        let mut document = json!({
            "resource": format!("{base}{}", if path == "/" { "" } else { path }),
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
        });
        if let Some(object) = document.as_object_mut() {
            object.extend(self.extra.clone());
        }
        document
    }
}
