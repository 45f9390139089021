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
    pub async fn finish<R: OutgoingRequest>(&self, request: R) -> Result<R, OutboundError> {
        let token = self.client_token.as_ref().and_then(|t| t.load_full());
        self.finish_with(request, token.as_deref()).await
    }

    /// Finishes a request whose client token (for `passthrough`) is `client_token`.
    pub async fn finish_with<R: OutgoingRequest>(
        &self,
        mut request: R,
        client_token: Option<&http::HeaderValue>,
    ) -> Result<R, OutboundError> {
        if let Some(modifier) = &self.request_headers {
            modifier.apply(request.headers_mut());
        }
        if let Some(auth) = &self.auth {
            auth.apply(&mut request, client_token).await?;
        }
        Ok(request)
    }
}

/// Builds a `reqwest` request for [`Outbound::finish`].
pub fn build(request: reqwest::RequestBuilder) -> Result<reqwest::Request, OutboundError> {
    request
        .build()
        .map_err(|e| OutboundError(e.without_url().to_string()))
}

/// A request to a target as the outbound policies see it, whichever client sends it: `reqwest`'s, or
/// the hyper client of Streamable HTTP targets (with the whole body at hand).
pub trait OutgoingRequest: Send {
    fn method(&self) -> &http::Method;
    /// The full URL, as signed.
    fn url(&self) -> std::borrow::Cow<'_, str>;
    fn headers(&self) -> &http::HeaderMap;
    fn headers_mut(&mut self) -> &mut http::HeaderMap;
    /// The whole body; `None` when it is streamed.
    fn body(&self) -> Option<&[u8]>;
    /// Adds `name=value` to the query string.
    fn append_query(&mut self, name: &str, value: &str) -> Result<(), OutboundError>;
}

impl OutgoingRequest for reqwest::Request {
    fn method(&self) -> &http::Method {
        self.method()
    }
    fn url(&self) -> std::borrow::Cow<'_, str> {
        self.url().as_str().into()
    }
    fn headers(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.headers_mut()
    }
    fn body(&self) -> Option<&[u8]> {
        match self.body() {
            None => Some(&[]),
            Some(body) => body.as_bytes(),
        }
    }
    fn append_query(&mut self, name: &str, value: &str) -> Result<(), OutboundError> {
        self.url_mut().query_pairs_mut().append_pair(name, value);
        Ok(())
    }
}

impl OutgoingRequest for http::Request<bytes::Bytes> {
    fn method(&self) -> &http::Method {
        self.method()
    }
    fn url(&self) -> std::borrow::Cow<'_, str> {
        self.uri().to_string().into()
    }
    fn headers(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.headers_mut()
    }
    fn body(&self) -> Option<&[u8]> {
        Some(self.body())
    }
    fn append_query(&mut self, name: &str, value: &str) -> Result<(), OutboundError> {
        let unusable = |e: &dyn std::fmt::Display| {
            OutboundError(format!(
                "backendAuth: cannot add query parameter `{name}`: {e}"
            ))
        };
        let mut parts = self.uri().clone().into_parts();
        let (path, query) = match &parts.path_and_query {
            Some(pq) => (pq.path(), pq.query()),
            None => ("/", None),
        };
        let mut query = form_urlencoded::Serializer::new(query.unwrap_or_default().to_string());
        query.append_pair(name, value);
        let path_and_query = format!("{path}?{}", query.finish())
            .parse()
            .map_err(|e| unusable(&e))?;
        parts.path_and_query = Some(path_and_query);
        *self.uri_mut() = http::Uri::from_parts(parts).map_err(|e| unusable(&e))?;
        Ok(())
    }
}
