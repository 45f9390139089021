//! `backendAuth.azure`: Entra ID access tokens from a client secret, a managed identity or a workload
//! identity, cached and refreshed before they expire.
//!
//! The endpoints are Azure's, overridable the way Azure's own SDKs allow: `AZURE_AUTHORITY_HOST` (the
//! login endpoint, e.g. for sovereign clouds), `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service and
//! Functions managed identity) and `AZURE_POD_IDENTITY_AUTHORITY_HOST` (the instance metadata service).

use crate::policy::FieldError;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::cache::{self, Fetched, Source};

/// `azure: {clientSecret | managedIdentity | workloadIdentity, scope?}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub client_secret: Option<ClientSecret>,
    pub managed_identity: Option<ManagedIdentity>,
    pub workload_identity: Option<super::Empty>,
    /// The token's scope; by default the target's origin + `/.default`.
    pub scope: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientSecret {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientSecret(client {}, <redacted>)", self.client_id)
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagedIdentity {
    pub client_id: Option<String>,
}

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// How this target's tokens are obtained.
pub enum Identity {
    ClientSecret {
        authority: String,
        tenant_id: String,
        client_id: String,
        client_secret: String,
    },
    Workload {
        authority: String,
        tenant_id: String,
        client_id: String,
        token_file: String,
    },
    /// App Service / Functions (`IDENTITY_ENDPOINT`) or the VM instance metadata service.
    Managed {
        endpoint: String,
        app_service_header: Option<String>,
        client_id: Option<String>,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn authority() -> String {
    env("AZURE_AUTHORITY_HOST")
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into())
        .trim_end_matches('/')
        .to_string()
}

impl Identity {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let set = [
            config.client_secret.is_some(),
            config.managed_identity.is_some(),
            config.workload_identity.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(FieldError::new(
                "azure",
                "set exactly one of `clientSecret`, `managedIdentity`, `workloadIdentity`",
            ));
        }
        if let Some(secret) = &config.client_secret {
            return Ok(Identity::ClientSecret {
                authority: authority(),
                tenant_id: secret.tenant_id.clone(),
                client_id: secret.client_id.clone(),
                client_secret: secret.client_secret.clone(),
            });
        }
        if let Some(managed) = &config.managed_identity {
            let (endpoint, app_service_header) =
                match (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
                    (Some(endpoint), Some(header)) => (endpoint, Some(header)),
                    _ => {
                        let host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                            .unwrap_or_else(|| DEFAULT_IMDS.into());
                        let host = host.trim_end_matches('/');
                        (format!("{host}/metadata/identity/oauth2/token"), None)
                    }
                };
            return Ok(Identity::Managed {
                endpoint,
                app_service_header,
                client_id: managed.client_id.clone(),
            });
        }
        let missing = [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
        ]
        .into_iter()
        .filter(|name| env(name).is_none())
        .collect::<Vec<_>>();
        match (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_FEDERATED_TOKEN_FILE"),
        ) {
            (Some(tenant_id), Some(client_id), Some(token_file)) => Ok(Identity::Workload {
                authority: authority(),
                tenant_id,
                client_id,
                token_file,
            }),
            _ => Err(FieldError::new(
                "azure.workloadIdentity",
                format!(
                    "workload identity needs {} in the environment (the Azure Workload Identity webhook sets them)",
                    missing.join(", ")
                ),
            )),
        }
    }

    /// What `explain` shows (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Identity::ClientSecret { client_id, .. } => format!("client secret of {client_id}"),
            Identity::Workload { client_id, .. } => format!("workload identity {client_id}"),
            Identity::Managed {
                client_id: Some(id),
                ..
            } => format!("managed identity {id}"),
            Identity::Managed { .. } => "the system-assigned managed identity".into(),
        }
    }
}

/// An Entra ID token for one scope.
pub struct Token {
    pub client: reqwest::Client,
    pub identity: std::sync::Arc<Identity>,
    pub scope: String,
}

impl Source<String> for Token {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<String>, String>> {
        Box::pin(async move {
            let response = match &*self.identity {
                Identity::ClientSecret {
                    authority,
                    tenant_id,
                    client_id,
                    client_secret,
                } => {
                    self.client
                        .post(format!("{authority}/{tenant_id}/oauth2/v2.0/token"))
                        .form(&[
                            ("grant_type", "client_credentials"),
                            ("client_id", client_id),
                            ("client_secret", client_secret),
                            ("scope", &self.scope),
                        ])
                        .send()
                        .await
                }
                Identity::Workload {
                    authority,
                    tenant_id,
                    client_id,
                    token_file,
                } => {
                    // Read on every fetch: the platform rotates the file.
                    let assertion = std::fs::read_to_string(token_file)
                        .map_err(|e| format!("cannot read `{token_file}`: {e}"))?;
                    self.client
                        .post(format!("{authority}/{tenant_id}/oauth2/v2.0/token"))
                        .form(&[
                            ("grant_type", "client_credentials"),
                            ("client_id", client_id),
                            (
                                "client_assertion_type",
                                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            ),
                            ("client_assertion", assertion.trim()),
                            ("scope", &self.scope),
                        ])
                        .send()
                        .await
                }
                Identity::Managed {
                    endpoint,
                    app_service_header,
                    client_id,
                } => {
                    // Managed identity endpoints take a resource, not a scope.
                    let resource = self.scope.trim_end_matches("/.default");
                    let mut request = self.client.get(endpoint).query(&[("resource", resource)]);
                    request = match app_service_header {
                        Some(header) => request
                            .query(&[("api-version", "2019-08-01")])
                            .header("x-identity-header", header),
                        None => request
                            .query(&[("api-version", "2018-02-01")])
                            .header("metadata", "true"),
                    };
                    if let Some(id) = client_id {
                        request = request.query(&[("client_id", id)]);
                    }
                    request.send().await
                }
            };
            let json = cache::json_response(response).await?;
            let token = cache::field(&json, "access_token")?;
            let lifetime = json
                .get("expires_in")
                .and_then(cache::seconds)
                .or_else(|| cache::jwt_lifetime(&token))
                .unwrap_or(std::time::Duration::from_secs(3600));
            Ok(Fetched {
                value: token,
                lifetime: Some(lifetime),
            })
        })
    }
}
