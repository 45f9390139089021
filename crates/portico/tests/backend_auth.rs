//! backendAuth `key` and `passthrough`: each target gets its own credentials, seen by the fixture's
//! `echo_headers` tool; secrets never reach logs or `explain`.

mod common;

use common::*;
use serde_json::{Value, json};

const KEY_A: &str = "sk-a-0123456789";
const KEY_B: &str = "sk-b-9876543210";
const KEY_C: &str = "sk-c-file-secret";

#[tokio::test(flavor = "multi_thread")]
async fn every_target_gets_its_own_credentials() {
    let fixtures = [
        HttpFixture::start(&["--name", "a"]).await,
        HttpFixture::start(&["--name", "b"]).await,
        HttpFixture::start(&["--name", "c"]).await,
        HttpFixture::start(&["--name", "d"]).await,
        HttpFixture::start(&["--name", "e"]).await,
    ];
    let key_file = temp_file("key-c", &format!("{KEY_C}\n"));
    let policy = |body: &str| format!("            policies:\n              backendAuth:\n{body}");
    let targets = [
        format!("{}{}", http_target("a", &fixtures[0].url), policy("                key: \"$SERVICE_A_API_KEY\"\n")),
        format!(
            "{}{}",
            http_target("b", &fixtures[1].url),
            policy("                key:\n                  value: \"${SERVICE_B_API_KEY}\"\n                  location: {header: x-api-key}\n")
        ),
        format!(
            "{}{}",
            http_target("c", &fixtures[2].url),
            policy(&format!("                key:\n                  file: {}\n                  location: {{query: api_key}}\n", key_file.display()))
        ),
        format!("{}{}", http_target("d", &fixtures[3].url), policy("                passthrough: {}\n")),
        http_target("e", &fixtures[4].url),
    ]
    .concat();
    let env = [("SERVICE_A_API_KEY", KEY_A), ("SERVICE_B_API_KEY", KEY_B)];
    let gateway = Gateway::start_with_env(&config_with_targets(&targets, ""), &env).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", "Bearer client-own-token".parse().unwrap());
    client.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();

    let mut seen = async |tool: &'static str| -> Value {
        let result = client.call(tool, json!({})).await;
        serde_json::from_str(text(&result)).unwrap()
    };
    let a = seen("a_echo_headers").await;
    assert_eq!(a["authorization"], format!("Bearer {KEY_A}"));
    let b = seen("b_echo_headers").await;
    assert_eq!(b["x-api-key"], KEY_B);
    assert!(b.get("authorization").is_none(), "{b}");
    let c = seen("c_echo_headers").await;
    assert!(
        c[":uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?api_key={KEY_C}")),
        "{c}"
    );
    let d = seen("d_echo_headers").await;
    assert_eq!(
        d["authorization"], "Bearer client-own-token",
        "passthrough forwards the client's token"
    );
    let e = seen("e_echo_headers").await;
    assert!(
        e.get("authorization").is_none(),
        "without backendAuth nothing is sent: {e}"
    );

    let log = gateway.log_text();
    for secret in [KEY_A, KEY_B, KEY_C, "client-own-token"] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn explain_and_errors_never_show_secrets() {
    let targets = format!(
        "{}            policies:\n              backendAuth:\n                key: \"{KEY_A}\"\n",
        http_target("a", "http://127.0.0.1:9/mcp")
    );
    let path = temp_file(
        "auth.yaml",
        &config_with_targets(&targets, "").replace("PORT", "0"),
    );
    let output = std::process::Command::new(EXE)
        .args(["explain", "-f", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("backendAuth") && text.contains("redacted"),
        "{text}"
    );
    assert!(!text.contains(KEY_A), "{text}");

    let stdio = format!(
        "{}            policies:\n              backendAuth:\n                key: \"{KEY_A}\"\n",
        stdio_target("local", &[])
    );
    let half_keys = format!(
        "{}            policies:\n              backendAuth:\n                aws: {{region: us-east-1, secretAccessKey: \"{KEY_A}\"}}\n",
        http_target("r", "http://127.0.0.1:9/mcp")
    );
    let two_identities = format!(
        "{}            policies:\n              backendAuth:\n                azure:\n                  clientSecret: {{tenantId: t, clientId: c, clientSecret: \"{KEY_A}\"}}\n                  managedIdentity: {{}}\n",
        http_target("z", "http://127.0.0.1:9/mcp")
    );
    for (yaml, expected) in [
        (stdio, "backendAuth does not apply to stdio targets"),
        (half_keys, "set both `accessKeyId` and `secretAccessKey`"),
        (
            two_identities,
            "set exactly one of `clientSecret`, `managedIdentity`, `workloadIdentity`",
        ),
    ] {
        let text = validate_failure(&config_with_targets(&yaml, ""));
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains(KEY_A), "{text}");
    }
}
