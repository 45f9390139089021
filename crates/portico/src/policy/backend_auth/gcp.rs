//! `backendAuth.gcp`: Google ID tokens (Cloud Run, IAP) or OAuth access tokens (Google APIs).
//!
//! Credentials come from Google's standard chain: the file named by `GOOGLE_APPLICATION_CREDENTIALS`
//! (a service-account key, or an `authorized_user` from `gcloud auth application-default login`), then
//! gcloud's well-known file, then the metadata server (`GCE_METADATA_HOST`, default
//! `metadata.google.internal`). Tokens are cached and refreshed before they expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::cache::{self, Fetched, Source};

/// `gcp: {type: idToken | accessToken, audience?}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "type")]
    pub kind: TokenType,
    pub audience: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TokenType {
    IdToken,
    AccessToken,
}

const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Where this machine's Google credentials are.
pub enum Credentials {
    ServiceAccount(ServiceAccount),
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    /// The metadata server's base URL, e.g. `http://metadata.google.internal`.
    MetadataServer(String),
}

pub struct ServiceAccount {
    email: String,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    token_uri: String,
}

impl Credentials {
    /// What `explain` shows (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Credentials::ServiceAccount(account) => format!("service account {}", account.email),
            Credentials::AuthorizedUser { .. } => "gcloud user credentials".into(),
            Credentials::MetadataServer(url) => format!("the metadata server at {url}"),
        }
    }

    /// Google's chain, read at load so that a broken key file is a config error.
    pub fn discover() -> Result<Self, String> {
        if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
            && !path.is_empty()
        {
            return Self::from_file(&path);
        }
        if let Ok(home) = std::env::var("HOME") {
            let well_known = std::path::Path::new(&home)
                .join(".config/gcloud/application_default_credentials.json");
            if well_known.exists() {
                return Self::from_file(&well_known.to_string_lossy());
            }
        }
        let host = std::env::var("GCE_METADATA_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "metadata.google.internal".into());
        Ok(Credentials::MetadataServer(format!("http://{host}")))
    }

    fn from_file(path: &str) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("`{path}` is not a JSON credentials file: {e}"))?;
        let field =
            |name: &str| cache::field(&json, name).map_err(|_| format!("`{path}` has no `{name}`"));
        let token_uri = field("token_uri").unwrap_or_else(|_| DEFAULT_TOKEN_URI.into());
        match json.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(field("private_key")?.as_bytes())
                    .map_err(|e| format!("the private key in `{path}` cannot be read: {e}"))?;
                Ok(Credentials::ServiceAccount(ServiceAccount {
                    email: field("client_email")?,
                    key,
                    key_id: field("private_key_id").ok(),
                    token_uri,
                }))
            }
            Some("authorized_user") => Ok(Credentials::AuthorizedUser {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                refresh_token: field("refresh_token")?,
                token_uri,
            }),
            other => Err(format!(
                "`{path}` has credentials of type {other:?}; Portico reads `service_account` and `authorized_user`"
            )),
        }
    }
}

/// One token: an access token (any target) or an ID token for one audience.
pub struct Token {
    pub client: reqwest::Client,
    pub credentials: std::sync::Arc<Credentials>,
    pub kind: TokenType,
    pub audience: String,
}

impl Source<String> for Token {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<String>, String>> {
        Box::pin(async move {
            match &*self.credentials {
                Credentials::ServiceAccount(account) => self.via_service_account(account).await,
                Credentials::AuthorizedUser {
                    client_id,
                    client_secret,
                    refresh_token,
                    token_uri,
                } => {
                    let response = self
                        .client
                        .post(token_uri)
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("client_id", client_id),
                            ("client_secret", client_secret),
                            ("refresh_token", refresh_token),
                        ])
                        .send()
                        .await;
                    self.read_token_response(cache::json_response(response).await?)
                }
                Credentials::MetadataServer(base) => self.via_metadata_server(base).await,
            }
        })
    }
}

#[derive(serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_audience: Option<&'a str>,
}

impl Token {
    /// The service account signs a JWT and trades it at the token endpoint (RFC 7523).
    async fn via_service_account(
        &self,
        account: &ServiceAccount,
    ) -> Result<Fetched<String>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let id_token = self.kind == TokenType::IdToken;
        let claims = Assertion {
            iss: &account.email,
            sub: &account.email,
            aud: &account.token_uri,
            iat: now,
            exp: now + 3600,
            scope: (!id_token).then_some(CLOUD_PLATFORM_SCOPE),
            target_audience: id_token.then_some(self.audience.as_str()),
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = account.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &account.key)
            .map_err(|e| format!("cannot sign the service-account assertion: {e}"))?;
        let response = self
            .client
            .post(&account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await;
        self.read_token_response(cache::json_response(response).await?)
    }

    fn read_token_response(&self, json: serde_json::Value) -> Result<Fetched<String>, String> {
        match self.kind {
            TokenType::AccessToken => Ok(Fetched {
                value: cache::field(&json, "access_token")?,
                lifetime: Some(
                    json.get("expires_in")
                        .and_then(cache::seconds)
                        .unwrap_or(Duration::from_secs(3600)),
                ),
            }),
            TokenType::IdToken => id_token(cache::field(&json, "id_token")?),
        }
    }

    async fn via_metadata_server(&self, base: &str) -> Result<Fetched<String>, String> {
        let account = format!("{base}/computeMetadata/v1/instance/service-accounts/default");
        let request = match self.kind {
            TokenType::AccessToken => self.client.get(format!("{account}/token")),
            TokenType::IdToken => self
                .client
                .get(format!("{account}/identity"))
                .query(&[("audience", self.audience.as_str()), ("format", "full")]),
        };
        let response = request.header("metadata-flavor", "Google").send().await;
        match self.kind {
            TokenType::AccessToken => {
                self.read_token_response(cache::json_response(response).await?)
            }
            TokenType::IdToken => {
                let response = response
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("metadata server: {}", e.without_url()))?;
                let token = response
                    .text()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                id_token(token.trim().to_string())
            }
        }
    }
}

fn id_token(token: String) -> Result<Fetched<String>, String> {
    let lifetime = cache::jwt_lifetime(&token).ok_or("the ID token has no readable `exp` claim")?;
    Ok(Fetched {
        value: token,
        lifetime: Some(lifetime),
    })
}
