//! `backendAuth` (route, backend, target): the credentials Portico presents to an HTTP target.
//!
//! - `key`: a static secret ([`key`]).
//! - `passthrough`: the client's own bearer token, as it came.
//! - `aws`: SigV4 on every request ([`aws`]).
//! - `gcp`: a Google ID or access token ([`gcp`]).
//! - `azure`: an Entra ID token ([`azure`]).
//!
//! Cloud credentials are fetched once per target (or per audience/scope), cached and refreshed in the
//! background before they expire ([`cache`]), so the request path only reads them. Secrets never reach
//! logs, `explain` or error messages: the `Debug` forms here redact them.

pub mod aws;
pub mod azure;
mod cache;
pub mod gcp;
pub mod key;

use crate::policy::FieldError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::HeaderValue;
use serde::Deserialize;

use crate::policy::outbound::{OutboundError, OutgoingRequest};

use cache::{Cache, Fetched, Source};

/// The YAML form: exactly one of the fields.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub key: Option<key::KeyConfig>,
    pub passthrough: Option<Empty>,
    pub aws: Option<aws::Config>,
    pub gcp: Option<gcp::Config>,
    pub azure: Option<azure::Config>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A compiled `backendAuth` policy.
pub enum BackendAuth {
    Key(key::Key),
    /// The client's bearer token, forwarded as it came.
    Passthrough,
    Aws(aws::Signer),
    /// Bearer tokens from a cloud identity (Google or Entra ID).
    Tokens(Tokens),
}

impl std::fmt::Debug for BackendAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAuth::Key(key) => key.fmt(f),
            BackendAuth::Passthrough => f.write_str("passthrough of the client's bearer token"),
            BackendAuth::Aws(signer) => signer.fmt(f),
            BackendAuth::Tokens(tokens) => f.write_str(&tokens.description),
        }
    }
}

impl BackendAuth {
    /// `Err` names the field (relative to the policy) and what is wrong, never the secret.
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let set = [
            config.key.is_some(),
            config.passthrough.is_some(),
            config.aws.is_some(),
            config.gcp.is_some(),
            config.azure.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(FieldError::new(
                "",
                "set exactly one of `key`, `passthrough`, `aws`, `gcp`, `azure`",
            ));
        }
        if let Some(key) = &config.key {
            return key::compile_key(key).map(BackendAuth::Key);
        }
        if let Some(aws) = &config.aws {
            return aws::Signer::compile(aws).map(BackendAuth::Aws);
        }
        if let Some(gcp) = &config.gcp {
            return Tokens::gcp(gcp).map(BackendAuth::Tokens);
        }
        if let Some(azure) = &config.azure {
            return Tokens::azure(azure).map(BackendAuth::Tokens);
        }
        Ok(BackendAuth::Passthrough)
    }

    /// The credentials for the target at `url`. What depends on the target (the default audience of
    /// an ID token, the default scope of an Entra token) is settled here, once per connection.
    pub fn for_target(self: &Arc<Self>, url: &reqwest::Url) -> TargetAuth {
        let tokens = match &**self {
            BackendAuth::Tokens(tokens) => Some(tokens.for_url(url)),
            _ => None,
        };
        TargetAuth {
            policy: self.clone(),
            tokens,
        }
    }
}

/// `backendAuth` bound to one target.
pub struct TargetAuth {
    policy: Arc<BackendAuth>,
    tokens: Option<Arc<Cache<HeaderValue>>>,
}

impl TargetAuth {
    /// Adds the credentials to a request for the target; `client_token` is the client's bearer token.
    /// Runs after every other change to the request: a SigV4 signature covers its final form.
    pub async fn apply(
        &self,
        request: &mut impl OutgoingRequest,
        client_token: Option<&HeaderValue>,
    ) -> Result<(), OutboundError> {
        let refused = |e: String| OutboundError(format!("backendAuth: {e}"));
        match &*self.policy {
            BackendAuth::Key(key) => key.apply(request)?,
            BackendAuth::Passthrough => {
                if let Some(token) = client_token {
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, token.clone());
                }
            }
            BackendAuth::Aws(signer) => signer.sign(request).await.map_err(refused)?,
            BackendAuth::Tokens(_) => {
                if let Some(tokens) = &self.tokens {
                    let bearer = tokens.get().await.map_err(refused)?;
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, bearer);
                }
            }
        }
        Ok(())
    }
}

/// Bearer tokens of one cloud identity, one cache per audience (Google) or scope (Entra ID).
pub struct Tokens {
    description: String,
    /// The configured audience or scope; without one, each target's origin is used.
    fixed: Option<String>,
    make: Box<dyn Fn(String) -> Arc<Cache<HeaderValue>> + Send + Sync>,
    by_audience: Mutex<HashMap<String, Arc<Cache<HeaderValue>>>>,
}

impl Tokens {
    fn gcp(config: &gcp::Config) -> Result<Self, FieldError> {
        let credentials =
            Arc::new(gcp::Credentials::discover().map_err(|e| FieldError::new("gcp", e))?);
        let client = cache::http_client().map_err(|e| FieldError::new("gcp", e))?;
        let kind = config.kind;
        let description = match kind {
            gcp::TokenType::IdToken => format!("gcp idToken from {}", credentials.describe()),
            gcp::TokenType::AccessToken => {
                format!("gcp accessToken from {}", credentials.describe())
            }
        };
        // An access token does not depend on the target: one for all.
        let fixed = match kind {
            gcp::TokenType::AccessToken => Some(String::new()),
            gcp::TokenType::IdToken => config.audience.clone(),
        };
        Ok(Self {
            description,
            fixed,
            make: Box::new(move |audience| {
                let label = match kind {
                    gcp::TokenType::IdToken => format!("gcp idToken for {audience}"),
                    gcp::TokenType::AccessToken => "gcp accessToken".to_string(),
                };
                Cache::new(
                    label,
                    Bearer(gcp::Token {
                        client: client.clone(),
                        credentials: credentials.clone(),
                        kind,
                        audience,
                    }),
                )
            }),
            by_audience: Mutex::new(HashMap::new()),
        })
    }

    fn azure(config: &azure::Config) -> Result<Self, FieldError> {
        let identity = Arc::new(azure::Identity::compile(config)?);
        let client = cache::http_client().map_err(|e| FieldError::new("azure", e))?;
        Ok(Self {
            description: format!("azure token from {}", identity.describe()),
            fixed: config.scope.clone(),
            make: Box::new(move |origin| {
                let scope = if origin.ends_with("/.default") || origin.contains(' ') {
                    origin
                } else {
                    format!("{origin}/.default")
                };
                Cache::new(
                    format!("azure token for {scope}"),
                    Bearer(azure::Token {
                        client: client.clone(),
                        identity: identity.clone(),
                        scope,
                    }),
                )
            }),
            by_audience: Mutex::new(HashMap::new()),
        })
    }

    fn for_url(&self, url: &reqwest::Url) -> Arc<Cache<HeaderValue>> {
        let audience = self
            .fixed
            .clone()
            .unwrap_or_else(|| url.origin().ascii_serialization());
        let mut caches = self.by_audience.lock().unwrap_or_else(|p| p.into_inner());
        caches
            .entry(audience)
            .or_insert_with_key(|audience| (self.make)(audience.clone()))
            .clone()
    }
}

/// A token source whose tokens are sent as `Authorization: Bearer`.
struct Bearer<S>(S);

impl<S: Source<String>> Source<HeaderValue> for Bearer<S> {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Fetched<HeaderValue>, String>> {
        Box::pin(async move {
            let fetched = self.0.fetch().await?;
            let mut value = HeaderValue::from_str(&format!("Bearer {}", fetched.value))
                .map_err(|_| "the token cannot be sent in an HTTP header".to_string())?;
            value.set_sensitive(true);
            Ok(Fetched {
                value,
                lifetime: fetched.lifetime,
            })
        })
    }
}
