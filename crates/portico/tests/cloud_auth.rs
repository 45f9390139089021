//! backendAuth `aws`, `gcp` and `azure` against loopback emulators of the clouds' credential endpoints
//! (EC2 instance metadata, the GCE metadata server, Google's token endpoint, Entra ID's token endpoint
//! and Azure's instance metadata). The fixture checks SigV4 signatures itself (`--sigv4`), and its
//! `echo_headers` tool shows what reached it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use common::*;
use serde_json::{Value, json};

/// What the emulators saw, and how they answer.
#[derive(Default)]
struct Cloud {
    hits: Mutex<HashMap<&'static str, usize>>,
    /// Lifetime of the credentials they hand out, in seconds.
    lifetime: AtomicUsize,
    /// The service account's public key (PEM), to verify its signed assertions.
    service_account_key: Mutex<Option<String>>,
    /// The last `scope`/`resource` asked of each Entra flow.
    scopes: Mutex<Vec<String>>,
}

impl Cloud {
    fn hit(&self, endpoint: &'static str) -> usize {
        let mut hits = self.hits.lock().unwrap();
        let count = hits.entry(endpoint).or_default();
        *count += 1;
        *count
    }

    fn hits(&self, endpoint: &'static str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    fn lifetime(&self) -> u64 {
        self.lifetime.load(Ordering::SeqCst) as u64
    }
}

type Shared = State<Arc<Cloud>>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT with the claims a Google or Entra ID token has; Portico reads `exp` without verifying.
fn token_jwt(audience: &str, lifetime: u64, serial: usize) -> String {
    let claims = json!({"aud": audience, "exp": now() + lifetime, "iat": now(), "serial": serial});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"emulator"),
    )
    .unwrap()
}

fn denied(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_string()).into_response()
}

fn oauth_error(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": "refused by the emulator"})),
    )
        .into_response()
}

// EC2 instance metadata service, version 2.
async fn imds_token(State(cloud): Shared, headers: HeaderMap) -> Response {
    if !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
        return (StatusCode::BAD_REQUEST, "ttl header missing").into_response();
    }
    cloud.hit("imds-token");
    "imds-session-token".into_response()
}

async fn imds_role(headers: HeaderMap) -> Response {
    if headers
        .get("x-aws-ec2-metadata-token")
        .map(|v| v.as_bytes())
        != Some(b"imds-session-token")
    {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    "portico-role\n".into_response()
}

async fn imds_credentials(
    State(cloud): Shared,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers
        .get("x-aws-ec2-metadata-token")
        .map(|v| v.as_bytes())
        != Some(b"imds-session-token")
        || role != "portico-role"
    {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    let serial = cloud.hit("imds-credentials");
    // Two key pairs, alternating, both known to the fixture.
    let key = 1 + (serial + 1) % 2;
    let expiration =
        aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(cloud.lifetime()))
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap();
    axum::Json(json!({
        "Code": "Success",
        "Type": "AWS-HMAC",
        "AccessKeyId": format!("ASIAIMDS{key}"),
        "SecretAccessKey": format!("imds-secret-{key}"),
        "Token": format!("session-token-{serial}"),
        "Expiration": expiration,
    }))
    .into_response()
}

// STS: AssumeRoleWithWebIdentity (query protocol, XML answer).
async fn sts(State(cloud): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("Action") != "AssumeRoleWithWebIdentity"
        || field("RoleArn") != "arn:aws:iam::123456789012:role/portico"
        || field("WebIdentityToken") != "k8s-projected-token"
    {
        return (
            StatusCode::FORBIDDEN,
            "<ErrorResponse><Error><Message>Not authorized</Message></Error></ErrorResponse>",
        )
            .into_response();
    }
    cloud.hit("sts");
    let expiration =
        aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(3600))
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap();
    format!(
        "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAWEB1</AccessKeyId><SecretAccessKey>web-secret-1</SecretAccessKey><SessionToken>web-session</SessionToken><Expiration>{expiration}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
    )
    .into_response()
}

// ECS / EKS Pod Identity container credentials.
async fn container_credentials(State(cloud): Shared, headers: HeaderMap) -> Response {
    if headers.get("authorization").map(|v| v.as_bytes()) != Some(b"ecs-auth-token") {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    cloud.hit("container");
    axum::Json(json!({"AccessKeyId": "ASIAECS1", "SecretAccessKey": "ecs-secret-1", "Token": "ecs-session",
        "Expiration": aws_smithy_types::DateTime::from(SystemTime::now() + Duration::from_secs(3600))
            .fmt(aws_smithy_types::date_time::Format::DateTime).unwrap()}))
    .into_response()
}

// GCE metadata server.
async fn gce_token(State(cloud): Shared, headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google") {
        return denied("Metadata-Flavor: Google is required");
    }
    let serial = cloud.hit("gce-token");
    axum::Json(json!({"access_token": format!("ya29.metadata-{serial}"), "expires_in": cloud.lifetime(), "token_type": "Bearer"}))
        .into_response()
}

async fn gce_identity(
    State(cloud): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google") {
        return denied("Metadata-Flavor: Google is required");
    }
    let Some(audience) = query.get("audience") else {
        return (StatusCode::BAD_REQUEST, "audience missing").into_response();
    };
    let serial = cloud.hit("gce-identity");
    token_jwt(audience, cloud.lifetime(), serial).into_response()
}

// Google's OAuth token endpoint: a service account trades a signed assertion (RFC 7523).
async fn google_token(State(cloud): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") == "refresh_token" {
        // gcloud's user credentials (`authorized_user`).
        if (
            field("client_id"),
            field("client_secret"),
            field("refresh_token"),
        ) != ("user-client", "user-client-secret", "user-refresh-token")
        {
            return oauth_error("invalid_grant");
        }
        let serial = cloud.hit("google-user");
        return axum::Json(
            json!({"access_token": format!("ya29.user-{serial}"), "expires_in": 3600,
            "id_token": token_jwt("user-client", 3600, serial), "token_type": "Bearer"}),
        )
        .into_response();
    }
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return oauth_error("unsupported_grant_type");
    }
    let key = cloud.service_account_key.lock().unwrap().clone().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // The audience (the token URI) is checked below, with the issuer.
    validation.validate_aud = false;
    let Ok(assertion) = jsonwebtoken::decode::<Value>(
        form.get("assertion")
            .map(String::as_str)
            .unwrap_or_default(),
        &jsonwebtoken::DecodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
        &validation,
    ) else {
        return oauth_error("invalid_grant");
    };
    let claims = assertion.claims;
    if claims["iss"] != "portico@project.iam.gserviceaccount.com"
        || !claims["aud"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/token")
    {
        return oauth_error("invalid_grant");
    }
    let serial = cloud.hit("google-token");
    match claims["target_audience"].as_str() {
        Some(audience) => {
            axum::Json(json!({"id_token": token_jwt(audience, cloud.lifetime(), serial)}))
                .into_response()
        }
        None if claims["scope"] == "https://www.googleapis.com/auth/cloud-platform" => {
            axum::Json(json!({"access_token": format!("ya29.sa-{serial}"), "expires_in": cloud.lifetime(), "token_type": "Bearer"}))
                .into_response()
        }
        None => oauth_error("invalid_scope"),
    }
}

// Entra ID's token endpoint.
async fn entra_token(
    State(cloud): Shared,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if tenant != "tenant-1" || field("grant_type") != "client_credentials" {
        return oauth_error("invalid_request");
    }
    let flow = match (
        field("client_id"),
        field("client_secret"),
        field("client_assertion"),
    ) {
        ("app-1", "app-1-secret", "") => "secret",
        ("workload-app", "", "federated-k8s-token") => "workload",
        _ => return oauth_error("invalid_client"),
    };
    cloud
        .scopes
        .lock()
        .unwrap()
        .push(field("scope").to_string());
    let serial = cloud.hit(if flow == "secret" {
        "entra-secret"
    } else {
        "entra-workload"
    });
    axum::Json(json!({"token_type": "Bearer", "expires_in": cloud.lifetime(), "access_token": format!("entra-{flow}-{serial}")}))
        .into_response()
}

// Azure instance metadata: managed identity.
async fn azure_imds(
    State(cloud): Shared,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("metadata").map(|v| v.as_bytes()) != Some(b"true") {
        return (StatusCode::BAD_REQUEST, "Metadata: true is required").into_response();
    }
    if query.get("api-version").map(String::as_str) != Some("2018-02-01") {
        return (StatusCode::BAD_REQUEST, "api-version").into_response();
    }
    let resource = query.get("resource").cloned().unwrap_or_default();
    cloud
        .scopes
        .lock()
        .unwrap()
        .push(format!("resource={resource}"));
    if let Some(client_id) = query.get("client_id") {
        cloud
            .scopes
            .lock()
            .unwrap()
            .push(format!("client_id={client_id}"));
    }
    let serial = cloud.hit("azure-imds");
    // IMDS sends its numbers as strings.
    axum::Json(json!({"access_token": format!("entra-managed-{serial}"), "expires_in": cloud.lifetime().to_string(), "resource": resource, "token_type": "Bearer"}))
        .into_response()
}

/// All the emulators on one loopback port.
async fn start_cloud(lifetime: u64) -> (String, Arc<Cloud>) {
    let cloud = Arc::new(Cloud::default());
    cloud.lifetime.store(lifetime as usize, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/latest/api/token", put(imds_token))
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(imds_role),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/{role}",
            get(imds_credentials),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(gce_token),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            get(gce_identity),
        )
        .route("/token", post(google_token))
        .route("/sts", post(sts))
        .route("/ecs-credentials", get(container_credentials))
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
        .route("/metadata/identity/oauth2/token", get(azure_imds))
        .with_state(cloud.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), cloud)
}

/// Environment that hides this machine's own cloud credentials from the gateway.
fn isolated_env() -> Vec<(&'static str, String)> {
    let home = temp_file("home", "").parent().unwrap().join("empty-home");
    vec![
        ("HOME", home.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("GOOGLE_APPLICATION_CREDENTIALS", String::new()),
    ]
}

async fn start_gateway(targets: &str, env: &[(&str, String)]) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with_env(&config_with_targets(targets, ""), &env).await
}

fn target_with_auth(name: &str, url: &str, auth: &str) -> String {
    format!(
        "{}            policies:\n              backendAuth:\n{auth}",
        http_target(name, url)
    )
}

fn assert_no_secrets(log: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

/// The headers the fixture behind `target` received with the call.
async fn seen_headers(client: &mut Client, target: &str) -> Value {
    let result = client
        .call(&format!("{target}_echo_headers"), json!({}))
        .await;
    assert_ne!(result["isError"], true, "{result}");
    serde_json::from_str(text(&result)).unwrap()
}

fn bearer(headers: &Value) -> String {
    headers["authorization"]
        .as_str()
        .unwrap_or_default()
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_string()
}

fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met in 20 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_sigv4_with_explicit_keys_and_refreshed_instance_credentials() {
    // 8 s credentials: refreshed at 4 s, long after the calls below even on a loaded machine.
    let (cloud_url, cloud) = start_cloud(8).await;
    let sigv4 = [
        "--sigv4",
        "us-east-1/bedrock-agentcore",
        "--sigv4-key",
        "AKIDPOLICY:policy-secret",
        "--sigv4-key",
        "ASIAIMDS1:imds-secret-1",
        "--sigv4-key",
        "ASIAIMDS2:imds-secret-2",
    ];
    let explicit = HttpFixture::start(&sigv4).await;
    let instance = HttpFixture::start(&sigv4).await;
    let wrong = HttpFixture::start(&sigv4).await;
    let targets = [
        target_with_auth(
            "explicit",
            &explicit.url,
            "                aws: {accessKeyId: AKIDPOLICY, secretAccessKey: policy-secret, region: us-east-1}\n",
        ),
        target_with_auth("instance", &instance.url, "                aws: {region: us-east-1}\n"),
        target_with_auth(
            "wrong",
            &wrong.url,
            "                aws: {accessKeyId: AKIDPOLICY, secretAccessKey: not-the-secret, region: us-east-1}\n",
        ),
    ]
    .concat();
    let mut env = isolated_env();
    env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT", cloud_url.clone()));
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(tools.contains(&"explicit_echo".to_string()), "{tools:?}");
    assert!(tools.contains(&"instance_echo".to_string()), "{tools:?}");
    assert!(
        !tools.iter().any(|t| t.starts_with("wrong_")),
        "a wrongly signed target is refused by the fixture: {tools:?}"
    );
    gateway.log_with("answered HTTP 403").await;

    let explicit_headers = seen_headers(&mut client, "explicit").await;
    let authorization = explicit_headers["authorization"].as_str().unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPOLICY/")
            && authorization.contains("/us-east-1/bedrock-agentcore/aws4_request"),
        "{authorization}"
    );
    assert!(explicit_headers.get("x-amz-security-token").is_none());

    let first = seen_headers(&mut client, "instance").await;
    assert!(
        first["authorization"]
            .as_str()
            .unwrap()
            .contains("Credential=ASIAIMDS1/"),
        "{first}"
    );
    assert_eq!(first["x-amz-security-token"], "session-token-1");
    let fetched = cloud.hits("imds-credentials");
    for _ in 0..10 {
        seen_headers(&mut client, "instance").await;
    }
    assert_eq!(
        cloud.hits("imds-credentials"),
        fetched,
        "cached credentials: no fetch per request"
    );
    // Refreshed in the background before they expire (at half their lifetime), without a request.
    wait_for(|| cloud.hits("imds-credentials") > fetched).await;
    let refreshed = seen_headers(&mut client, "instance").await;
    assert!(
        refreshed["authorization"]
            .as_str()
            .unwrap()
            .contains("Credential=ASIAIMDS2/"),
        "{refreshed}"
    );

    let log = gateway.log_text();
    assert_no_secrets(
        &log,
        &[
            "policy-secret",
            "not-the-secret",
            "imds-secret",
            "session-token-",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gcp_tokens_from_the_metadata_server() {
    let (cloud_url, cloud) = start_cloud(4).await;
    let run = HttpFixture::start(&[]).await;
    let api = HttpFixture::start(&[]).await;
    let targets = [
        target_with_auth("run", &run.url, "                gcp: {type: idToken}\n"),
        target_with_auth(
            "api",
            &api.url,
            "                gcp: {type: accessToken}\n",
        ),
    ]
    .concat();
    let mut env = isolated_env();
    env.push((
        "GCE_METADATA_HOST",
        cloud_url.trim_start_matches("http://").to_string(),
    ));
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let id_token = bearer(&seen_headers(&mut client, "run").await);
    let origin = run.url.trim_end_matches("/mcp");
    assert_eq!(
        jwt_claims(&id_token)["aud"],
        origin,
        "the default audience is the target's origin, as Cloud Run expects"
    );
    assert_eq!(
        bearer(&seen_headers(&mut client, "api").await),
        "ya29.metadata-1"
    );
    let fetched = cloud.hits("gce-token");
    wait_for(|| cloud.hits("gce-token") > fetched).await;
    assert_eq!(
        bearer(&seen_headers(&mut client, "api").await),
        format!("ya29.metadata-{}", fetched + 1),
        "the refreshed token is used"
    );
    assert!(!gateway.log_text().contains("ya29."));
}

#[tokio::test(flavor = "multi_thread")]
async fn gcp_tokens_from_a_service_account_key() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let (cloud_url, cloud) = start_cloud(3600).await;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private = pem(
        "PRIVATE KEY",
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .unwrap()
            .as_ref(),
    );
    *cloud.service_account_key.lock().unwrap() = Some(pem(
        "PUBLIC KEY",
        pair.public_key().as_der().unwrap().as_ref(),
    ));
    let key_file = temp_file(
        "service-account.json",
        &json!({
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "key-1",
            "private_key": private,
            "client_email": "portico@project.iam.gserviceaccount.com",
            "token_uri": format!("{cloud_url}/token"),
        })
        .to_string(),
    );
    let run = HttpFixture::start(&[]).await;
    let api = HttpFixture::start(&[]).await;
    let targets = [
        target_with_auth(
            "run",
            &run.url,
            "                gcp: {type: idToken, audience: \"https://svc-abc.a.run.app\"}\n",
        ),
        target_with_auth(
            "api",
            &api.url,
            "                gcp: {type: accessToken}\n",
        ),
    ]
    .concat();
    let mut env = isolated_env();
    env.retain(|(name, _)| *name != "GOOGLE_APPLICATION_CREDENTIALS");
    env.push((
        "GOOGLE_APPLICATION_CREDENTIALS",
        key_file.display().to_string(),
    ));
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let id_token = bearer(&seen_headers(&mut client, "run").await);
    assert_eq!(jwt_claims(&id_token)["aud"], "https://svc-abc.a.run.app");
    let access = bearer(&seen_headers(&mut client, "api").await);
    assert!(access.starts_with("ya29.sa-"), "{access}");
    assert_eq!(
        cloud.hits("google-token"),
        2,
        "one verified assertion per token"
    );

    let explain = std::process::Command::new(EXE)
        .args(["explain", "-f"])
        .arg(temp_file(
            "explain.yaml",
            &config_with_targets(&targets, "").replace("PORT", "0"),
        ))
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key_file)
        .output()
        .unwrap();
    let explain = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.contains("service account portico@project.iam.gserviceaccount.com"),
        "{explain}"
    );
    assert!(!explain.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_client_secret_managed_and_workload_identity() {
    let (cloud_url, cloud) = start_cloud(3600).await;
    let fixtures = [
        HttpFixture::start(&[]).await,
        HttpFixture::start(&[]).await,
        HttpFixture::start(&[]).await,
        HttpFixture::start(&[]).await,
    ];
    let federated = temp_file("federated-token", "federated-k8s-token\n");
    let targets = [
        target_with_auth(
            "secret",
            &fixtures[0].url,
            "                azure:\n                  clientSecret: {tenantId: tenant-1, clientId: app-1, clientSecret: \"$APP_SECRET\"}\n                  scope: api://mcp-server/.default\n",
        ),
        target_with_auth(
            "managed",
            &fixtures[1].url,
            "                azure: {managedIdentity: {}}\n",
        ),
        target_with_auth(
            "workload",
            &fixtures[2].url,
            "                azure: {workloadIdentity: {}}\n",
        ),
        target_with_auth(
            "refused",
            &fixtures[3].url,
            "                azure:\n                  clientSecret: {tenantId: tenant-1, clientId: app-1, clientSecret: wrong-secret-value}\n",
        ),
    ]
    .concat();
    let mut env = isolated_env();
    env.extend([
        ("APP_SECRET", "app-1-secret".to_string()),
        ("AZURE_AUTHORITY_HOST", cloud_url.clone()),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", cloud_url.clone()),
        ("AZURE_TENANT_ID", "tenant-1".into()),
        ("AZURE_CLIENT_ID", "workload-app".into()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            federated.display().to_string(),
        ),
    ]);
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    assert_eq!(
        bearer(&seen_headers(&mut client, "secret").await),
        "entra-secret-1"
    );
    assert_eq!(
        bearer(&seen_headers(&mut client, "managed").await),
        "entra-managed-1"
    );
    assert_eq!(
        bearer(&seen_headers(&mut client, "workload").await),
        "entra-workload-1"
    );
    let scopes = cloud.scopes.lock().unwrap().clone();
    let managed_origin = fixtures[1].url.trim_end_matches("/mcp");
    let workload_origin = fixtures[2].url.trim_end_matches("/mcp");
    assert!(
        scopes.contains(&"api://mcp-server/.default".to_string()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&format!("resource={managed_origin}")),
        "managed identity asks for the target's origin as resource: {scopes:?}"
    );
    assert!(
        scopes.contains(&format!("{workload_origin}/.default")),
        "{scopes:?}"
    );

    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert!(
        !names(&tools, "name")
            .iter()
            .any(|t| t.starts_with("refused_"))
    );
    let log = gateway.log_with("invalid_client").await;
    assert_no_secrets(
        &log,
        &[
            "app-1-secret",
            "wrong-secret-value",
            "federated-k8s-token",
            "entra-",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_web_identity_and_container_credentials() {
    let (cloud_url, cloud) = start_cloud(3600).await;
    let sigv4 = [
        "--sigv4",
        "eu-west-1/bedrock-agentcore",
        "--sigv4-key",
        "ASIAWEB1:web-secret-1",
        "--sigv4-key",
        "ASIAECS1:ecs-secret-1",
    ];
    let fixture = HttpFixture::start(&sigv4).await;
    // A sibling target, so that tool names carry the target's prefix.
    let targets = [
        target_with_auth(
            "agent",
            &fixture.url,
            "                aws: {region: eu-west-1}\n",
        ),
        stdio_target("local", &[]),
    ]
    .concat();
    let token_file = temp_file("web-identity-token", "k8s-projected-token\n");

    let mut web = isolated_env();
    web.extend([
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/portico".to_string(),
        ),
        ("AWS_ENDPOINT_URL_STS", format!("{cloud_url}/sts")),
    ]);
    let gateway = start_gateway(&targets, &web).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let seen = seen_headers(&mut client, "agent").await;
    assert!(
        seen["authorization"]
            .as_str()
            .unwrap()
            .contains("Credential=ASIAWEB1/"),
        "{seen}"
    );
    assert_eq!(seen["x-amz-security-token"], "web-session");
    assert_eq!(cloud.hits("sts"), 1);
    drop(gateway);

    let mut container = isolated_env();
    container.extend([
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{cloud_url}/ecs-credentials"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ecs-auth-token".to_string(),
        ),
    ]);
    let gateway = start_gateway(&targets, &container).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let seen = seen_headers(&mut client, "agent").await;
    assert!(
        seen["authorization"]
            .as_str()
            .unwrap()
            .contains("Credential=ASIAECS1/"),
        "{seen}"
    );
    assert_eq!(cloud.hits("container"), 1);
    let log = gateway.log_text();
    assert!(!log.contains("ecs-secret-1") && !log.contains("ecs-auth-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gcp_user_credentials_from_gcloud() {
    let (cloud_url, cloud) = start_cloud(3600).await;
    let user = temp_file(
        "application_default_credentials.json",
        &json!({"type": "authorized_user", "client_id": "user-client", "client_secret": "user-client-secret",
                "refresh_token": "user-refresh-token", "token_uri": format!("{cloud_url}/token")})
        .to_string(),
    );
    let fixture = HttpFixture::start(&[]).await;
    // A sibling target, so that tool names carry the target's prefix.
    let targets = [
        target_with_auth(
            "api",
            &fixture.url,
            "                gcp: {type: accessToken}\n",
        ),
        stdio_target("local", &[]),
    ]
    .concat();
    let mut env = isolated_env();
    env.retain(|(name, _)| *name != "GOOGLE_APPLICATION_CREDENTIALS");
    env.push(("GOOGLE_APPLICATION_CREDENTIALS", user.display().to_string()));
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(
        bearer(&seen_headers(&mut client, "api").await),
        "ya29.user-1"
    );
    assert_eq!(cloud.hits("google-user"), 1);
    assert!(!gateway.log_text().contains("user-refresh-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_tokens_are_refreshed_before_they_expire() {
    // 6 s tokens: refreshed at 3 s, in the background.
    let (cloud_url, cloud) = start_cloud(6).await;
    let fixture = HttpFixture::start(&[]).await;
    let targets = [
        target_with_auth(
            "managed",
            &fixture.url,
            "                azure: {managedIdentity: {clientId: mi-1}, scope: \"api://mcp/.default\"}\n",
        ),
        stdio_target("local", &[]),
    ]
    .concat();
    let mut env = isolated_env();
    env.push(("AZURE_POD_IDENTITY_AUTHORITY_HOST", cloud_url.clone()));
    let gateway = start_gateway(&targets, &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(
        bearer(&seen_headers(&mut client, "managed").await),
        "entra-managed-1"
    );
    assert!(
        cloud
            .scopes
            .lock()
            .unwrap()
            .contains(&"resource=api://mcp".to_string()),
        "managed identity asks for the scope's resource"
    );
    assert!(
        cloud
            .scopes
            .lock()
            .unwrap()
            .contains(&"client_id=mi-1".to_string()),
        "a user-assigned identity is named"
    );
    wait_for(|| cloud.hits("azure-imds") > 1).await;
    assert_eq!(
        bearer(&seen_headers(&mut client, "managed").await),
        "entra-managed-2",
        "the refreshed token is used"
    );
}
