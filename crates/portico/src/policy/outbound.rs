//! What every HTTP request to a target (`mcp` or `sse`) gets once it is built: the target's
//! `requestHeaderModifier`, then its `backendAuth`. Credentials go last so that no header change can
//! replace them, and so that a SigV4 signature covers the request as sent.

use std::sync::Arc;

use super::TargetPolicies;
use super::backend_auth::TargetAuth;
use super::headers::HeaderModifier;

/// The client's current `Authorization` header, for targets with `backendAuth: passthrough`; shared
/// by a session's connections and replaced when the client presents a new token.
pub type ClientToken = Arc<arc_swap::ArcSwapOption<http::HeaderValue>>;

/// Why a request could not be finished: it could not be built, or no credentials could be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutboundError(pub String);

pub struct Outbound {
    request_headers: Option<Arc<HeaderModifier>>,
    auth: Option<TargetAuth>,
    /// The session's current client token (`backendAuth: passthrough`); `None` where each request
    /// brings its own (`host` backends).
    client_token: Option<ClientToken>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbound")
    }
}

impl Outbound {
    /// `url` is the target's URL as configured (before any `backendTLS.sni` rewrite): the default
    /// audience of its cloud tokens.
    pub fn new(
        policies: &TargetPolicies,
        url: &reqwest::Url,
        client_token: Option<ClientToken>,
    ) -> Self {
        Self {
            request_headers: policies.request_headers.as_ref().map(|s| s.policy.clone()),
            auth: policies
                .backend_auth
                .as_ref()
                .map(|s| s.policy.for_target(url)),
            client_token,
        }
    }

    /// Finishes a request of the session, with the session's client token.
    pub async fn finish(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Request, OutboundError> {
        let token = self.client_token.as_ref().and_then(|t| t.load_full());
        self.finish_with(request, token.as_deref()).await
    }

    /// Finishes a request whose client token (for `passthrough`) is `client_token`.
    pub async fn finish_with(
        &self,
        request: reqwest::RequestBuilder,
        client_token: Option<&http::HeaderValue>,
    ) -> Result<reqwest::Request, OutboundError> {
        let mut request = request
            .build()
            .map_err(|e| OutboundError(e.without_url().to_string()))?;
        if let Some(modifier) = &self.request_headers {
            modifier.apply(request.headers_mut());
        }
        if let Some(auth) = &self.auth {
            auth.apply(&mut request, client_token)
                .await
                .map_err(|e| OutboundError(format!("backendAuth: {e}")))?;
        }
        Ok(request)
    }
}
