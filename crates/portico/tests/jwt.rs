//! `jwtAuth` with real signed tokens (keys generated here), and the seed's "Authorization per target"
//! example: anonymous and authenticated callers see and call only what their claims allow.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "portico-tests";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    public_pem: String,
}

impl Signer {
    fn new(alg: Algorithm, kid: &str) -> Self {
        let (key, public_pem) = match alg {
            Algorithm::RS256 => {
                use aws_lc_rs::encoding::AsDer;
                use aws_lc_rs::signature::KeyPair;
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("RSA key");
                let private = pem(
                    "PRIVATE KEY",
                    AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                        .unwrap()
                        .as_ref(),
                );
                let public = pem("PUBLIC KEY", pair.public_key().as_der().unwrap().as_ref());
                (
                    EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                    public,
                )
            }
            _ => {
                let pair = rcgen::KeyPair::generate().expect("EC key");
                (
                    EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
                    pair.public_key_pem(),
                )
            }
        };
        Self {
            key,
            alg,
            kid: kid.to_string(),
            public_pem,
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles, "exp": now() + 600, "iat": now()})
}

fn jwks(signers: &[&Signer]) -> String {
    serde_json::to_string(&JwkSet {
        keys: signers.iter().map(|s| s.jwk()).collect(),
    })
    .unwrap()
}

/// The seed's example (with the fixture standing in for the npm servers) behind route-level jwtAuth.
async fn seed_gateway(signers: &[&Signer], mode: &str) -> Gateway {
    let public = format!(
        "{}            policies:\n              mcpAuthorization:\n                rules:\n                - 'true'\n",
        stdio_target("public-tools", &[])
    );
    let admin = format!(
        "{}            policies:\n              mcpAuthorization:\n                rules:\n                - 'has(jwt.sub) && \"admin\" in jwt.roles'\n",
        stdio_target("admin-tools", &[])
    );
    let policy = format!(
        "    - name: test\n      policies:\n        jwtAuth:\n          mode: {mode}\n          issuer: {ISSUER}\n          audiences: [{AUDIENCE}]\n          jwks:\n            inline: '{}'\n",
        jwks(signers)
    );
    let yaml =
        config_with_targets(&format!("{public}{admin}"), "").replace("    - name: test\n", &policy);
    Gateway::start(&yaml).await
}

async fn connect_with(url: String, token: Option<&str>) -> (u16, Option<String>, Client) {
    let mut client = Client::new(url);
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let reply = client.send(init).await;
    let status = reply.status().as_u16();
    let challenge = reply
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    client.session = reply
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, challenge, client)
}

async fn tool_names(client: &mut Client) -> Vec<String> {
    let (tools, _) = client.list_all("tools/list", "tools").await;
    names(&tools, "name")
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_see_what_their_claims_allow() {
    let rsa = Signer::new(Algorithm::RS256, "rsa-1");
    let ec = Signer::new(Algorithm::ES256, "ec-1");
    let gateway = seed_gateway(&[&rsa, &ec], "optional").await;
    let url = gateway.url("/mcp");

    let (status, _, mut anonymous) = connect_with(url.clone(), None).await;
    assert_eq!(status, 200);
    let tools = tool_names(&mut anonymous).await;
    assert!(tools.contains(&"public-tools_echo".to_string()));
    assert!(
        !tools.iter().any(|t| t.starts_with("admin-tools_")),
        "{tools:?}"
    );
    let denied = anonymous
        .request(
            "tools/call",
            json!({"name": "admin-tools_echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(
        denied.response["error"]["message"],
        "Unknown tool: admin-tools_echo"
    );

    for signer in [&rsa, &ec] {
        let admin_token = signer.sign(&claims("ada", &["admin"]));
        let (status, _, mut admin) = connect_with(url.clone(), Some(&admin_token)).await;
        assert_eq!(status, 200, "{:?}", signer.alg);
        let tools = tool_names(&mut admin).await;
        assert!(
            tools.contains(&"admin-tools_echo".to_string())
                && tools.contains(&"public-tools_echo".to_string())
        );
        assert_eq!(
            text(
                &admin
                    .call("admin-tools_echo", json!({"message": "root"}))
                    .await
            ),
            "root"
        );
        // The access log names the caller.
        gateway
            .log_line_with(&["tool=\"echo\"", "sub=\"ada\""])
            .await;

        let dev_token = signer.sign(&claims("bob", &["dev"]));
        let (_, _, mut dev) = connect_with(url.clone(), Some(&dev_token)).await;
        assert!(
            !tool_names(&mut dev)
                .await
                .iter()
                .any(|t| t.starts_with("admin-tools_"))
        );
    }
    // The token never reaches a target: the fixture's view of the process environment and requests
    // carries no Authorization (stdio targets get no headers at all), and logs never show it.
    assert!(
        !gateway
            .log_text()
            .contains(&rsa.sign(&claims("ada", &["admin"]))[..20])
    );
}

fn forge(header: Value, payload: Value, signature: &str) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", encode(&header), encode(&payload))
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_tokens_get_401() {
    let rsa = Signer::new(Algorithm::RS256, "rsa-1");
    let gateway = seed_gateway(&[&rsa], "optional").await;
    let url = gateway.url("/mcp");
    let valid = rsa.sign(&claims("ada", &["admin"]));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("ada", &["admin"]);
        f(&mut c);
        rsa.sign(&c)
    };
    let parts: Vec<&str> = valid.split('.').collect();
    let other_kid = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("unknown".into());
        jsonwebtoken::encode(&header, &claims("ada", &["admin"]), &rsa.key).unwrap()
    };
    let hmac_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &claims("ada", &["admin"]),
            &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
        )
        .unwrap()
    };
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims("mallory", &["admin"]).to_string()),
        parts[2]
    );
    let mut signature = parts[2].to_string();
    signature.replace_range(
        ..4,
        if &signature[..4] == "AAAA" {
            "BBBB"
        } else {
            "AAAA"
        },
    );
    let tampered_signature = format!("{}.{}.{signature}", parts[0], parts[1]);
    let with_crit = forge(
        json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
        claims("ada", &[]),
        parts[2],
    );
    let cases: Vec<(&str, String)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now() - 3600))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 3600))),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now() + 3600)),
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("someone-else")),
        ),
        (
            "no audience",
            with(&|c| _ = c.as_object_mut().unwrap().remove("aud")),
        ),
        (
            "missing exp",
            with(&|c| _ = c.as_object_mut().unwrap().remove("exp")),
        ),
        ("unknown kid", other_kid),
        ("tampered payload", tampered_payload),
        ("tampered signature", tampered_signature),
        (
            "alg none",
            forge(json!({"alg": "none"}), claims("ada", &["admin"]), ""),
        ),
        (
            "alg NONE",
            forge(
                json!({"alg": "NONE", "kid": "rsa-1"}),
                claims("ada", &["admin"]),
                "",
            ),
        ),
        ("HS256 with the public key", hmac_with_public_key),
        ("unknown crit header", with_crit),
        ("garbage", "not.a.token".into()),
    ];
    for (case, token) in cases {
        let (status, challenge, _) = connect_with(url.clone(), Some(&token)).await;
        assert_eq!(status, 401, "{case}");
        let challenge = challenge.unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{case}: {challenge}"
        );
    }
    // Two Authorization headers are refused rather than guessed between.
    let response = reqwest::Client::new()
        .post(&url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {valid}"))
        .header("authorization", "Bearer other")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, _, _) = connect_with(url, Some(&valid)).await;
    assert_eq!(status, 200, "the valid token still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn modes() {
    let ec = Signer::new(Algorithm::ES256, "ec-1");
    let strict = seed_gateway(&[&ec], "strict").await;
    let (status, challenge, _) = connect_with(strict.url("/mcp"), None).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")));
    let (status, _, _) =
        connect_with(strict.url("/mcp"), Some(&ec.sign(&claims("ada", &[])))).await;
    assert_eq!(status, 200);

    let permissive = seed_gateway(&[&ec], "permissive").await;
    let (status, _, mut client) = connect_with(permissive.url("/mcp"), Some("not.a.token")).await;
    assert_eq!(status, 200, "permissive never rejects");
    assert!(
        !tool_names(&mut client)
            .await
            .iter()
            .any(|t| t.starts_with("admin-tools_")),
        "and the caller is anonymous"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_authentication_publishes_metadata_and_challenges() {
    let ec = Signer::new(Algorithm::ES256, "ec-1");
    let policy = format!(
        "    - name: test\n      policies:\n        mcpAuthentication:\n          issuer: {ISSUER}\n          audiences: [{AUDIENCE}]\n          jwks:\n            inline: '{}'\n          resourceMetadata:\n            scopes_supported: [mcp]\n",
        jwks(&[&ec])
    );
    let targets = format!(
        "{}            policies:\n              mcpAuthorization:\n                rules: ['has(jwt.sub)']\n",
        stdio_target("a", &[])
    );
    let yaml = config_with_targets(&targets, "").replace("    - name: test\n", &policy);
    let gateway = Gateway::start(&yaml).await;

    let metadata_url = gateway.url("/.well-known/oauth-protected-resource/mcp");
    let metadata: Value = reqwest::get(&metadata_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], gateway.url("/mcp"));
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    assert_eq!(metadata["scopes_supported"], json!(["mcp"]));
    assert_eq!(
        reqwest::get(gateway.url("/.well-known/oauth-protected-resource/other"))
            .await
            .unwrap()
            .status(),
        404
    );

    let (status, challenge, _) = connect_with(gateway.url("/mcp"), None).await;
    assert_eq!(status, 401, "strict by default");
    assert_eq!(
        challenge.as_deref(),
        Some(format!("Bearer resource_metadata=\"{metadata_url}\"").as_str())
    );
    let (status, challenge, _) = connect_with(gateway.url("/mcp"), Some("not.a.token")).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));

    let (status, _, mut client) =
        connect_with(gateway.url("/mcp"), Some(&ec.sign(&claims("ada", &[])))).await;
    assert_eq!(status, 200);
    assert_eq!(
        text(&client.call("echo", json!({"message": "in"})).await),
        "in"
    );
}

/// A JWKS endpoint on loopback whose key set the test can change; counts fetches.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = std::sync::Arc::new(std::sync::Mutex::new(body));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        Self { url, body, hits }
    }
}

/// One stdio target behind a strict `jwtAuth` whose keys come from `url`.
fn strict_with_jwks_url(url: &str) -> String {
    let policy = format!(
        "    - name: test\n      policies:\n        jwtAuth:\n          mode: strict\n          issuer: {ISSUER}\n          audiences: [{AUDIENCE}]\n          jwks:\n            url: {url}\n"
    );
    config_with_targets(&stdio_target("a", &[]), "").replace("    - name: test\n", &policy)
}

async fn status_with(url: &str, token: &str) -> u16 {
    connect_with(url.to_string(), Some(token)).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_jwks_is_fetched_and_rotated_keys_are_picked_up() {
    let first = Signer::new(Algorithm::ES256, "first");
    let second = Signer::new(Algorithm::ES256, "second");
    let server = JwksServer::start(jwks(&[&first])).await;
    let gateway = Gateway::start(&strict_with_jwks_url(&server.url)).await;
    let url = gateway.url("/mcp");
    // Fetched at start, in the background.
    for _ in 0..50 {
        if server.hits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut status = 0;
    for _ in 0..50 {
        status = status_with(&url, &first.sign(&claims("ada", &[]))).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    let fetched = server.hits.load(std::sync::atomic::Ordering::SeqCst);

    // The issuer rotates to a new key: the first token naming it makes Portico fetch the JWKS again.
    *server.body.lock().unwrap() = jwks(&[&second]);
    assert_eq!(
        status_with(&url, &second.sign(&claims("ada", &[]))).await,
        200
    );
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        fetched + 1
    );
    // Unknown kids do not make Portico fetch on every request.
    let stranger = Signer::new(Algorithm::ES256, "stranger");
    assert_eq!(
        status_with(&url, &stranger.sign(&claims("eve", &[]))).await,
        401
    );
    assert_eq!(
        status_with(&url, &stranger.sign(&claims("eve", &[]))).await,
        401
    );
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        fetched + 1
    );
}

/// A JWKS document over 1 MiB is refused, not read whole: its keys are not used.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_jwks_document_is_refused() {
    let signer = Signer::new(Algorithm::ES256, "k");
    let padded =
        jwks(&[&signer]).replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(2 << 20)), 1);
    let server = JwksServer::start(padded).await;
    let gateway = Gateway::start(&strict_with_jwks_url(&server.url)).await;
    assert_eq!(
        status_with(&gateway.url("/mcp"), &signer.sign(&claims("ada", &[]))).await,
        401
    );
    gateway.log_with("larger than 1048576 bytes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_jwks_url_does_not_stop_the_gateway() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let policy = format!(
        "    - name: test\n      policies:\n        jwtAuth:\n          mode: optional\n          issuer: {ISSUER}\n          jwks:\n            url: http://{unused}/jwks.json\n"
    );
    let yaml =
        config_with_targets(&stdio_target("a", &[]), "").replace("    - name: test\n", &policy);
    let gateway = Gateway::start(&yaml).await;
    let signer = Signer::new(Algorithm::ES256, "k");
    assert_eq!(
        status_with(&gateway.url("/mcp"), &signer.sign(&claims("ada", &[]))).await,
        401
    );
    let (status, _, mut client) = connect_with(gateway.url("/mcp"), None).await;
    assert_eq!(status, 200, "anonymous callers are still served");
    assert_eq!(
        text(&client.call("echo", json!({"message": "up"})).await),
        "up"
    );
    gateway.log_with("JWKS fetch failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_providers_each_with_their_own_keys() {
    let a = Signer::new(Algorithm::ES256, "a-key");
    let b = Signer::new(Algorithm::RS256, "b-key");
    let policy = format!(
        "    - name: test\n      policies:\n        jwtAuth:\n          mode: strict\n          providers:\n          - issuer: https://a.test\n            audiences: [{AUDIENCE}]\n            jwks:\n              inline: '{}'\n          - issuer: https://b.test\n            audiences: [{AUDIENCE}]\n            jwks:\n              inline: '{}'\n",
        jwks(&[&a]),
        jwks(&[&b])
    );
    let yaml =
        config_with_targets(&stdio_target("t", &[]), "").replace("    - name: test\n", &policy);
    let gateway = Gateway::start(&yaml).await;
    let url = gateway.url("/mcp");
    let from = |issuer: &str| {
        let mut c = claims("ada", &[]);
        c["iss"] = json!(issuer);
        c
    };
    assert_eq!(
        status_with(&url, &a.sign(&from("https://a.test"))).await,
        200
    );
    assert_eq!(
        status_with(&url, &b.sign(&from("https://b.test"))).await,
        200
    );
    // A token claiming issuer b but signed with a's key is refused.
    let mut forged = Header::new(Algorithm::ES256);
    forged.kid = Some("a-key".into());
    let forged = jsonwebtoken::encode(&forged, &from("https://b.test"), &a.key).unwrap();
    assert_eq!(status_with(&url, &forged).await, 401);
    assert_eq!(
        status_with(&url, &a.sign(&from("https://c.test"))).await,
        401,
        "unknown issuer"
    );
}
