//! The user's document (`mcp-target-policies.md`): its examples load unchanged, and the "Inheritance"
//! example behaves as it says, with the fixture standing in for the npm servers.

mod common;

use common::*;
use serde_json::json;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed/");

fn validate(name: &str) -> std::process::Output {
    std::process::Command::new(EXE)
        .args(["validate", "-f", &format!("{EXAMPLES}{name}")])
        .output()
        .unwrap()
}

#[test]
fn authentication_example_loads_unchanged_with_its_keys_set() {
    let output = std::process::Command::new(EXE)
        .args([
            "validate",
            "-f",
            &format!("{EXAMPLES}authentication-per-target.yaml"),
        ])
        .env("SERVICE_A_API_KEY", "key-a")
        .env("SERVICE_B_API_KEY", "key-b")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let unset = std::process::Command::new(EXE)
        .args([
            "validate",
            "-f",
            &format!("{EXAMPLES}authentication-per-target.yaml"),
        ])
        .env_remove("SERVICE_A_API_KEY")
        .env("SERVICE_B_API_KEY", "key-b")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unset.stderr).contains("`SERVICE_A_API_KEY` is not set"));
}

#[test]
fn policy_examples_load_unchanged() {
    for example in [
        "authorization-per-target.yaml",
        "inheritance.yaml",
        "llm-policies-per-target.yaml",
    ] {
        let output = validate(example);
        assert!(
            output.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The example's YAML with each `npx` server replaced by the fixture and a free port.
fn with_fixtures(example: &str) -> String {
    let yaml = std::fs::read_to_string(format!("{EXAMPLES}{example}")).unwrap();
    yaml.replace("port: 3000", "port: PORT")
        .replace("cmd: npx", &format!("cmd: \"{EXE}\""))
        .replace(
            r#"args: ["@modelcontextprotocol/server-everything"]"#,
            r#"args: ["fixture"]"#,
        )
        .replace(
            r#"args: ["@mycompany/restricted-server"]"#,
            r#"args: ["fixture"]"#,
        )
        .replace(
            r#"args: ["@mycompany/admin-server"]"#,
            r#"args: ["fixture"]"#,
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn inheritance_example_behaves_as_documented() {
    let gateway = Gateway::start(&with_fixtures("inheritance.yaml")).await;
    let url = gateway.url("/mcp");
    let mut client = Client::connect(url.clone()).await;
    // public-server: its own 'true' overrides the backend's 'has(jwt.sub)'.
    // restricted-server: inherits 'has(jwt.sub)', so an anonymous caller sees and calls nothing of it.
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(
        tools.contains(&"public-server_echo".to_string()),
        "{tools:?}"
    );
    assert!(
        !tools.iter().any(|t| t.starts_with("restricted-server_")),
        "{tools:?}"
    );
    assert_eq!(
        text(
            &client
                .call("public-server_echo", json!({"message": "hi"}))
                .await
        ),
        "hi"
    );
    let denied = client
        .request(
            "tools/call",
            json!({"name": "restricted-server_echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(
        denied.response["error"]["message"],
        "Unknown tool: restricted-server_echo"
    );

    // Route-level cors: allowOrigins ["*"]; preflight answered by Portico, headers on responses.
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, mcp-session-id",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type, mcp-session-id"
    );
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let response = client
        .post()
        .header("origin", "https://app.example")
        .body(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a browser origin allowed by cors passes the DNS-rebinding check"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("mcp-session-id"), "{exposed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_refuses_origins_it_does_not_list() {
    let yaml = with_fixtures("inheritance.yaml").replace(
        r#"allowOrigins: ["*"]"#,
        r#"allowOrigins: ["https://app.example"]"#,
    );
    let gateway = Gateway::start(&yaml).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let ping = r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
    let evil = client
        .post()
        .header("origin", "https://evil.example")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let good = client
        .post()
        .header("origin", "https://app.example")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}
