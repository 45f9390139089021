//! `backendAuth.aws`: SigV4 on every request (e.g. Bedrock AgentCore MCP servers).
//!
//! Credentials are the explicit keys of the policy, or the AWS default chain in its usual order:
//! environment (`AWS_ACCESS_KEY_ID`, ...), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
//! as on EKS), the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`), container
//! credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI`, as on ECS) and the EC2 instance
//! metadata service (IMDSv2, `AWS_EC2_METADATA_SERVICE_ENDPOINT`). Temporary credentials are cached and
//! refreshed before they expire ([`super::cache`]). The signing itself is the `aws-sigv4` crate's.

use crate::policy::FieldError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::policy::outbound::OutgoingRequest;

use super::cache::{self, Cache, Fetched, Source};

/// `aws: {accessKeyId?, secretAccessKey?, sessionToken?, region, service?}`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: String,
    pub service: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "aws(region {}, <keys redacted>)", self.region)
    }
}

/// Bedrock AgentCore, the AWS service that hosts MCP servers.
const DEFAULT_SERVICE: &str = "bedrock-agentcore";

pub struct Signer {
    region: String,
    service: String,
    credentials: Arc<Cache<Credentials>>,
    /// Where the credentials come from, for `explain` and logs.
    origin: &'static str,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "aws SigV4 (region {}, service {}, credentials from {})",
            self.region, self.service, self.origin
        )
    }
}

impl Signer {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let service = config
            .service
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        if config.region.trim().is_empty() {
            return Err(FieldError::new("aws.region", "the region is empty"));
        }
        let (origin, source) = credential_source(config, &config.region)?;
        let label = format!("aws credentials ({origin})");
        Ok(Self {
            region: config.region.clone(),
            service,
            credentials: Cache::new(label, source),
            origin,
        })
    }

    /// Signs `request` (method, URL, the headers it has now, and its body) and adds the signature
    /// headers. Anything that changes the request afterwards would break the signature, so this runs last.
    pub async fn sign(&self, request: &mut impl OutgoingRequest) -> Result<(), String> {
        let credentials = self.credentials.get().await?;
        sign_at(
            request,
            &credentials,
            &self.region,
            &self.service,
            SystemTime::now(),
        )
    }
}

fn sign_at(
    request: &mut impl OutgoingRequest,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let Some(body) = request.body() else {
        return Err("cannot sign a streamed body".into());
    };
    let body = SignableBody::Bytes(body);
    let url = request.url();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable = SignableRequest::new(request.method().as_str(), url.as_ref(), headers, body)
        .map_err(|e| format!("cannot sign: {e}"))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| format!("cannot sign: {e}"))?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    for header in headers {
        let mut value = http::HeaderValue::from_str(header.value())
            .map_err(|_| "the signature is not a valid header value".to_string())?;
        value.set_sensitive(header.sensitive() || header.name() == "authorization");
        request
            .headers_mut()
            .insert(http::HeaderName::from_static(header.name()), value);
    }
    Ok(())
}

/// Keys that do not expire: the policy's, the environment's, the shared credentials file's.
struct Fixed(Credentials);

impl Source<Credentials> for Fixed {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<Credentials>, String>> {
        Box::pin(async {
            Ok(Fetched {
                value: self.0.clone(),
                lifetime: None,
            })
        })
    }
}

type CredentialSource = Box<dyn Source<Credentials>>;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn credentials(key: String, secret: String, token: Option<String>) -> Credentials {
    Credentials::new(key, secret, token, None, "portico")
}

/// The first source of the chain that is configured on this machine. Static sources are read now,
/// so a broken file is a config error rather than a failure on the first request.
fn credential_source(
    config: &Config,
    region: &str,
) -> Result<(&'static str, CredentialSource), FieldError> {
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(key), Some(secret)) => {
            let static_keys =
                credentials(key.clone(), secret.clone(), config.session_token.clone());
            return Ok(("the policy", Box::new(Fixed(static_keys))));
        }
        (None, None) if config.session_token.is_none() => {}
        _ => {
            return Err(FieldError::new(
                "aws",
                "set both `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`), or none to use the AWS default credential chain",
            ));
        }
    }
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        let from_env = credentials(key, secret, env("AWS_SESSION_TOKEN"));
        return Ok(("the environment", Box::new(Fixed(from_env))));
    }
    let client = cache::http_client().map_err(|e| FieldError::new("aws", e))?;
    if let (Some(token_file), Some(role_arn)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        let endpoint = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let source = WebIdentity {
            client,
            endpoint,
            token_file,
            role_arn,
            session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "portico".into()),
        };
        return Ok(("web identity", Box::new(source)));
    }
    if let Some(found) = shared_credentials_file()? {
        return Ok(("the shared credentials file", Box::new(Fixed(found))));
    }
    if let Some(source) = ContainerCredentials::from_env(client.clone()) {
        return Ok(("the container credentials endpoint", Box::new(source)));
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(FieldError::new(
            "aws",
            "no AWS credentials found: set `accessKeyId`/`secretAccessKey`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE, a shared credentials file, or enable the instance metadata service",
        ));
    }
    let endpoint =
        env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
    let source = InstanceMetadata {
        client,
        endpoint: endpoint.trim_end_matches('/').to_string(),
    };
    Ok(("the EC2 instance metadata service", Box::new(source)))
}

/// `[profile]` of the shared credentials file, if the file exists.
fn shared_credentials_file() -> Result<Option<Credentials>, FieldError> {
    let path = match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => std::path::PathBuf::from(path),
        None => match env("HOME") {
            Some(home) => std::path::Path::new(&home).join(".aws/credentials"),
            None => return Ok(None),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let values = ini_section(&text, &profile);
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key), Some(secret)) => Ok(Some(credentials(key, secret, get("aws_session_token")))),
        _ => Err(FieldError::new(
            "aws",
            format!(
                "the shared credentials file `{}` has no `aws_access_key_id` and `aws_secret_access_key` in profile `{profile}`",
                path.display()
            ),
        )),
    }
}

fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((key, value)) = line.split_once('=') {
            values.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    values
}

/// Credentials with an RFC 3339 `Expiration`, as the container endpoint, IMDS and STS give them.
fn temporary(
    key: String,
    secret: String,
    token: Option<String>,
    expiration: Option<&str>,
) -> Fetched<Credentials> {
    let lifetime = expiration
        .and_then(|e| {
            aws_smithy_types::DateTime::from_str(e, aws_smithy_types::date_time::Format::DateTime)
                .ok()
        })
        .and_then(|e| SystemTime::try_from(e).ok())
        .map(|e| {
            e.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
    Fetched {
        value: credentials(key, secret, token),
        // Without an expiry, refetch hourly rather than never.
        lifetime: Some(lifetime.unwrap_or(Duration::from_secs(3600))),
    }
}

fn from_json(json: &serde_json::Value) -> Result<Fetched<Credentials>, String> {
    Ok(temporary(
        cache::field(json, "AccessKeyId")?,
        cache::field(json, "SecretAccessKey")?,
        cache::field(json, "Token").ok(),
        json.get("Expiration").and_then(|v| v.as_str()),
    ))
}

/// ECS and EKS Pod Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI` (or the relative form on
/// 169.254.170.2) with an optional authorization token.
struct ContainerCredentials {
    client: reqwest::Client,
    url: String,
}

impl ContainerCredentials {
    fn from_env(client: reqwest::Client) -> Option<Self> {
        let url = env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
            env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                .map(|path| format!("http://169.254.170.2{path}"))
        })?;
        Some(Self { client, url })
    }
}

impl Source<Credentials> for ContainerCredentials {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<Credentials>, String>> {
        Box::pin(async move {
            let mut request = self.client.get(&self.url);
            let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
                Some(file) => Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| format!("cannot read `{file}`: {e}"))?
                        .trim()
                        .to_string(),
                ),
                None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            };
            if let Some(token) = token {
                request = request.header(http::header::AUTHORIZATION, token);
            }
            from_json(&cache::json_response(request.send().await).await?)
        })
    }
}

/// The EC2 instance metadata service, version 2 (a session token first, then the role's credentials).
struct InstanceMetadata {
    client: reqwest::Client,
    endpoint: String,
}

const IMDS_ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

impl Source<Credentials> for InstanceMetadata {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<Credentials>, String>> {
        Box::pin(async move {
            let session = self
                .client
                .put(format!("{}/latest/api/token", self.endpoint))
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("instance metadata token: {}", e.without_url()))?
                .text()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let get = |path: String| {
                self.client
                    .get(format!("{}{path}", self.endpoint))
                    .header("x-aws-ec2-metadata-token", session.trim())
                    .send()
            };
            let role = get(IMDS_ROLE_PATH.to_string())
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("instance role: {}", e.without_url()))?
                .text()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let role = role.lines().next().unwrap_or_default().trim().to_string();
            if role.is_empty() {
                return Err("the instance has no IAM role".into());
            }
            from_json(&cache::json_response(get(format!("{IMDS_ROLE_PATH}{role}")).await).await?)
        })
    }
}

/// `sts:AssumeRoleWithWebIdentity` with the token file a Kubernetes service account mounts.
struct WebIdentity {
    client: reqwest::Client,
    endpoint: String,
    token_file: String,
    role_arn: String,
    session_name: String,
}

impl Source<Credentials> for WebIdentity {
    fn fetch(&self) -> BoxFuture<'_, Result<Fetched<Credentials>, String>> {
        Box::pin(async move {
            // Read on every fetch: the platform rotates the file.
            let token = std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("cannot read `{}`: {e}", self.token_file))?;
            let response = self
                .client
                .post(&self.endpoint)
                .form(&[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", self.role_arn.as_str()),
                    ("RoleSessionName", self.session_name.as_str()),
                    ("WebIdentityToken", token.trim()),
                ])
                .send()
                .await
                .map_err(|e| format!("STS: {}", e.without_url()))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| e.without_url().to_string())?;
            let element = |name: &str| xml_element(&body, name);
            if !status.is_success() {
                let reason = element("Message").unwrap_or_else(|| format!("HTTP {status}"));
                return Err(format!("STS refused AssumeRoleWithWebIdentity: {reason}"));
            }
            match (element("AccessKeyId"), element("SecretAccessKey")) {
                (Some(key), Some(secret)) => Ok(temporary(
                    key,
                    secret,
                    element("SessionToken"),
                    element("Expiration").as_deref(),
                )),
                _ => Err("STS answered without credentials".into()),
            }
        })
    }
}

/// The text of the first `<name>` element: STS answers in a small, fixed XML shape.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite (`aws-sig-v4-test-suite`): credentials, time, region and
    /// service shared by every case.
    fn suite_sign(method: &str, url: &str, body: &'static [u8]) -> String {
        let mut request = reqwest::Request::new(method.parse().unwrap(), url.parse().unwrap());
        request
            .headers_mut()
            .insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        if !body.is_empty() {
            *request.body_mut() = Some(body.into());
            request.headers_mut().insert(
                "content-type",
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
        }
        let credentials = credentials(
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            None,
        );
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign_at(&mut request, &credentials, "us-east-1", "service", time).unwrap();
        request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_string()
    }

    const SCOPE: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    #[test]
    fn signatures_match_the_published_test_suite() {
        let cases = [
            (
                "get-vanilla",
                "GET",
                "https://example.amazonaws.com/",
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "post-vanilla",
                "POST",
                "https://example.amazonaws.com/",
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "post-vanilla-query",
                "POST",
                "https://example.amazonaws.com/?Param1=value1",
                "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
            ),
        ];
        for (name, method, url, signed, signature) in cases {
            assert_eq!(
                suite_sign(method, url, b""),
                format!("{SCOPE}, SignedHeaders={signed}, Signature={signature}"),
                "{name}"
            );
        }
    }

    #[test]
    fn a_form_body_is_part_of_the_signature() {
        // post-x-www-form-urlencoded.
        assert_eq!(
            suite_sign("POST", "https://example.amazonaws.com/", b"Param1=value1"),
            format!(
                "{SCOPE}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
    }

    #[test]
    fn the_shared_credentials_file_is_read_by_profile() {
        let text = "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\n\n[work]\naws_access_key_id=AKIDWORK\naws_secret_access_key = s3cret\n";
        let work = ini_section(text, "work");
        assert_eq!(
            work,
            vec![
                ("aws_access_key_id".to_string(), "AKIDWORK".to_string()),
                ("aws_secret_access_key".to_string(), "s3cret".to_string())
            ]
        );
        assert_eq!(ini_section(text, "default").len(), 1);
    }

    #[test]
    fn sts_credentials_are_read_from_its_xml() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>sec</SecretAccessKey><SessionToken>tok</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_element(xml, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(
            xml_element(xml, "Expiration").as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(xml_element(xml, "Missing"), None);
    }
}
