//! Interop with the official MCP tooling: the Python SDK as a client, the reference server
//! `@modelcontextprotocol/server-everything` as a stdio target, and the MCP conformance suite run
//! against the fixture directly and through Portico.
//!
//! `scripts/setup.sh` installs the tools (into `$PORTICO_TOOLS`, default `~/.cache/portico-tools`).
//! Without them these tests fail and say so; `PORTICO_SKIP_INTEROP=1` skips them on purpose.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;

/// Two stdio targets: `fixture` (Portico's) and `everything` (the reference server).
fn fixture_and_everything(tools: &std::path::Path) -> String {
    format!(
        "{}          - name: everything\n            stdio:\n              cmd: \"{}\"\n              args: [\"{}\", \"stdio\"]\n",
        stdio_target("fixture", &[]),
        node(tools).display(),
        everything(tools)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_client_and_server_everything_target() {
    let Some(tools) = interop_tools() else { return };
    let targets = fixture_and_everything(&tools);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_client.py"
    );
    let url = gateway.url("/mcp");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(tools.join("venv/bin/python"))
            .args([script, &url])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python client: ok"),
        "python client failed:\n{stdout}\n{}\n--- gateway log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        gateway.log_text()
    );
}

/// Runs the conformance suite's server scenarios against `url`; returns (passed, failed) scenario names.
fn conformance(tools: &std::path::Path, url: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let bin = tools.join("npm/node_modules/.bin/conformance");
    let node_dir = node(tools).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        node_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(bin)
        .args(["server", "--url", url])
        .env("PATH", path)
        .current_dir(tools.join("npm"))
        .output()
        .expect("run conformance");
    let text = String::from_utf8_lossy(&output.stdout);
    let scenario = |line: &str, mark: &str| {
        line.strip_prefix(mark)
            .and_then(|rest| rest.split(':').next())
            .map(|s| s.trim().to_string())
    };
    let passed = text.lines().filter_map(|l| scenario(l, "✓ ")).collect();
    let failed = text.lines().filter_map(|l| scenario(l, "✗ ")).collect();
    (passed, failed)
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_through_portico_matches_the_fixture_directly() {
    let Some(tools) = interop_tools() else { return };
    let fixture = HttpFixture::start(&[]).await;
    let yaml = config_with_targets(
        &http_target("fixture", &fixture.url),
        "          dnsRebindingProtection: true\n",
    );
    let gateway = Gateway::start(&yaml).await;
    let (direct_url, gateway_url) = (fixture.url.clone(), gateway.url("/mcp"));
    let (direct, through) = tokio::task::spawn_blocking(move || {
        (
            conformance(&tools, &direct_url),
            conformance(&tools, &gateway_url),
        )
    })
    .await
    .unwrap();
    assert!(
        direct.0.len() >= 29,
        "the fixture passes the suite directly: {direct:?}"
    );
    assert_eq!(
        through.0, direct.0,
        "scenarios passing through Portico == directly; failed: {:?}",
        through.1
    );
    assert!(
        through.1.is_empty(),
        "failed through Portico: {:?}",
        through.1
    );
}

/// Per (scenario, check id): how many of its checks passed (`SUCCESS`, or `INFO` for an optional
/// form not taken), from a run of the 2026-07-28 requirements against `url`.
type Checks = BTreeMap<(String, String), usize>;

/// Runs the scenarios the 2026-07-28 revision requires (conformance 0.2.0-alpha.12) against `url`:
/// (passed checks, every check that did not pass, as `scenario/check: status: message`).
fn conformance_2026(tools: &std::path::Path, url: &str) -> (Checks, Vec<String>) {
    conformance_checks(tools, url, &["--requirements", "2026-07-28"])
}

/// Runs conformance 0.2.0-alpha.12 with `selection` (which scenarios) against `url`.
fn conformance_checks(
    tools: &std::path::Path,
    url: &str,
    selection: &[&str],
) -> (Checks, Vec<String>) {
    let suite = tools.join("conformance-2026");
    let port = url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .replace("/mcp", "");
    let out =
        std::env::temp_dir().join(format!("portico-conformance-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let node_dir = node(tools).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        node_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(suite.join("node_modules/.bin/conformance"))
        .args(["server", "--url", url])
        .args(selection)
        .arg("-o")
        .arg(&out)
        .env("PATH", path)
        .current_dir(&suite)
        .output()
        .expect("run conformance");
    let (mut passed, mut failed) = (Checks::new(), Vec::new());
    for run in std::fs::read_dir(&out).expect("results") {
        let run = run.unwrap().path();
        let dir = run.file_name().unwrap().to_string_lossy().to_string();
        // `server-<scenario>-<24-character timestamp>`
        let scenario = dir
            .strip_prefix("server-")
            .and_then(|rest| rest.get(..rest.len().saturating_sub(25)))
            .unwrap_or(&dir)
            .to_string();
        let text = std::fs::read_to_string(run.join("checks.json")).expect("checks.json");
        let checks: Vec<serde_json::Value> = serde_json::from_str(&text).expect("checks are JSON");
        for check in checks {
            let id = check["id"].as_str().unwrap_or_default().to_string();
            let status = check["status"].as_str().unwrap_or_default();
            if matches!(status, "SUCCESS" | "INFO") {
                *passed.entry((scenario.clone(), id)).or_default() += 1;
            } else {
                let message = check["errorMessage"].as_str().unwrap_or_default();
                failed.push(format!("{scenario}/{id}: {status}: {message}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    (passed, failed)
}

/// The checks that pass against the fixture directly but not through Portico.
fn lost(direct: &Checks, through: &Checks) -> Vec<String> {
    direct
        .iter()
        .filter(|(key, count)| through.get(*key).copied().unwrap_or_default() < **count)
        .map(|((scenario, id), _)| format!("{scenario}/{id}"))
        .collect()
}

/// The suite's 2026-07-28 requirements: every check the fixture passes directly (rmcp serves the
/// revision itself) passes through Portico, which serves the revision and speaks the session-based
/// ones to the fixture. One target, then two (the fixture and server-everything) with
/// `prefixMode: never`, so the names the scenarios call reach the client as the fixture gives them.
#[tokio::test(flavor = "multi_thread")]
async fn conformance_2026_07_28_through_portico_matches_the_fixture_directly() {
    let Some(tools) = interop_tools() else { return };
    let fixture = HttpFixture::start(&[]).await;
    let guard = "          dnsRebindingProtection: true\n";
    let one = Gateway::start(&config_with_targets(
        &http_target("fixture", &fixture.url),
        guard,
    ))
    .await;
    let everything = format!(
        "          - name: everything\n            stdio:\n              cmd: \"{}\"\n              args: [\"{}\", \"stdio\"]\n",
        node(&tools).display(),
        everything(&tools)
    );
    let two = Gateway::start(&config_with_targets(
        &(http_target("fixture", &fixture.url) + &everything),
        &format!("{guard}          prefixMode: never\n"),
    ))
    .await;
    let urls = [fixture.url.clone(), one.url("/mcp"), two.url("/mcp")];
    let [direct, one_target, two_targets] =
        tokio::task::spawn_blocking(move || urls.map(|url| conformance_2026(&tools, &url)))
            .await
            .unwrap();
    let passed = |checks: &Checks| checks.values().sum::<usize>();
    assert!(
        passed(&direct.0) >= 100,
        "the fixture passes most checks directly: {:?}",
        direct.1
    );
    for (name, through) in [("one target", &one_target), ("two targets", &two_targets)] {
        assert_eq!(
            lost(&direct.0, &through.0),
            Vec::<String>::new(),
            "checks passing directly but not through Portico ({name}); failed through it: {:#?}",
            through.1
        );
        // What the fixture cannot do (2026-only test tools), Portico cannot either; Portico adds the
        // revision's `resultType` and cache hints that rmcp 3.11 leaves out.
        assert!(passed(&through.0) > passed(&direct.0), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_authorization_example_with_server_everything() {
    let Some(tools) = interop_tools() else { return };
    let everything = everything(&tools);
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed/authorization-per-target.yaml"
    );
    let yaml = std::fs::read_to_string(seed)
        .unwrap()
        .replace("port: 3000", "port: PORT")
        .replacen(
            "cmd: npx",
            &format!("cmd: \"{}\"", node(&tools).display()),
            1,
        )
        .replace(
            r#"args: ["@modelcontextprotocol/server-everything"]"#,
            &format!(r#"args: ["{everything}", "stdio"]"#),
        )
        .replace("cmd: npx", &format!("cmd: \"{EXE}\""))
        .replace(
            r#"args: ["@mycompany/admin-server"]"#,
            r#"args: ["fixture"]"#,
        );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (listed, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&listed, "name");
    assert!(
        listed.contains(&"public-tools_echo".to_string())
            && listed.contains(&"public-tools_get-sum".to_string()),
        "{listed:?}"
    );
    assert!(
        !listed.iter().any(|t| t.starts_with("admin-tools_")),
        "anonymous callers do not see admin-tools: {listed:?}"
    );
    let echoed = client
        .call("public-tools_echo", serde_json::json!({"message": "hello"}))
        .await;
    assert!(text(&echoed).contains("hello"), "{echoed}");
    let denied = client
        .request(
            "tools/call",
            serde_json::json!({"name": "admin-tools_echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(
        denied.response["error"]["message"],
        "Unknown tool: admin-tools_echo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_links_in_results_point_back_through_portico() {
    let Some(tools) = interop_tools() else { return };
    let targets = fixture_and_everything(&tools);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let result = client
        .call(
            "everything_get-resource-links",
            serde_json::json!({"count": 2}),
        )
        .await;
    let links: Vec<&str> = result["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "resource_link")
        .filter_map(|c| c["uri"].as_str())
        .collect();
    assert!(!links.is_empty(), "{result}");
    assert!(
        links.iter().all(|uri| uri.starts_with("everything+")),
        "{links:?}"
    );
    let read = client
        .request("resources/read", serde_json::json!({"uri": links[0]}))
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["uri"], links[0],
        "{}",
        read.response
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_sse_target_server_everything() {
    let Some(tools) = interop_tools() else { return };
    let (server, port) = start_everything(&tools, "sse").await;

    let targets = format!(
        "{}          - name: legacy\n            sse:\n              host: http://127.0.0.1:{port}/sse\n",
        stdio_target("fixture", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (listed, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&listed, "name");
    assert!(
        listed.contains(&"legacy_echo".to_string()) && listed.contains(&"fixture_echo".to_string()),
        "{listed:?}"
    );
    let echoed = client
        .call("legacy_echo", serde_json::json!({"message": "over sse"}))
        .await;
    assert!(text(&echoed).contains("over sse"), "{echoed}");
    let sum = client
        .call("legacy_get-sum", serde_json::json!({"a": 20, "b": 22}))
        .await;
    assert!(text(&sum).contains("42"), "{sum}");
    drop(server);
}

/// `backendAuth` and `requestHeaderModifier` reach a legacy SSE server (the Python SDK's) on the GET
/// stream and on every POST; the server refuses anything without its token.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_sse_target_gets_its_credentials_and_headers() {
    let Some(tools) = interop_tools() else { return };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/sse_server.py");
    let (server, port) = start_service(|port| {
        let mut command = tokio::process::Command::new(tools.join("venv/bin/python"));
        command.args([script, &port.to_string(), "Bearer sse-target-key"]);
        command
    })
    .await;
    let target = |name: &str, key: &str| {
        format!(
            "          - name: {name}\n            sse:\n              host: http://127.0.0.1:{port}/sse\n            policies:\n              backendAuth:\n                key: {key}\n              requestHeaderModifier:\n                set: {{x-tenant: blue}}\n"
        )
    };
    let targets = [
        target("legacy", "sse-target-key"),
        target("refused", "another-key"),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (listed, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&listed, "name");
    assert_eq!(listed, vec!["legacy_seen_headers".to_string()]);
    let result = client
        .call("legacy_seen_headers", serde_json::json!({}))
        .await;
    let seen: serde_json::Value = serde_json::from_str(text(&result)).unwrap();
    assert_eq!(seen["authorization"], "Bearer sse-target-key");
    assert_eq!(seen["x-tenant"], "blue");
    gateway.log_with("answered HTTP 401").await;
    assert!(!gateway.log_text().contains("sse-target-key"));
    drop(server);
}

/// The seed's "LLM policies per target" example, unchanged but for its two hosts, which both point
/// at one `server-everything` over Streamable HTTP: `password` is refused on `production-llm` and
/// echoed on `sandbox-llm`.
#[tokio::test(flavor = "multi_thread")]
async fn seed_llm_policies_with_server_everything() {
    let Some(tools) = interop_tools() else { return };
    let (server, port) = start_everything(&tools, "streamableHttp").await;

    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed/llm-policies-per-target.yaml"
    ))
    .unwrap();
    let local = format!("http://127.0.0.1:{port}/mcp");
    let yaml = seed
        .replace("https://prod-llm.example.com", &local)
        .replace("https://sandbox-llm.example.com", &local)
        .replace("port: 3000", "port: PORT")
        .replace("- port: PORT", "- port: PORT\n  address: 127.0.0.1");
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let refused = client
        .request(
            "tools/call",
            serde_json::json!({"name": "production-llm_echo", "arguments": {"message": "my password is hunter2"}}),
        )
        .await;
    assert_eq!(
        refused.response["error"]["code"], -32001,
        "{}",
        refused.response
    );
    let echoed = client
        .call(
            "sandbox-llm_echo",
            serde_json::json!({"message": "my password is hunter2"}),
        )
        .await;
    assert!(text(&echoed).contains("my password is hunter2"), "{echoed}");
    let fine = client
        .call(
            "production-llm_echo",
            serde_json::json!({"message": "hello"}),
        )
        .await;
    assert!(text(&fine).contains("hello"), "{fine}");
    drop(server);
}

/// `a2a` on a `host` backend: the official A2A SDK's client reads the agent card through Portico,
/// finds the gateway's address in it, and its message reaches the SDK's agent through the gateway;
/// the access log records the A2A method.
#[tokio::test(flavor = "multi_thread")]
async fn a2a_agent_behind_a_host_backend() {
    let Some(tools) = interop_tools() else { return };
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/");
    let python = tools.join("venv/bin/python");
    let (agent, port) = start_service(|port| {
        let mut command = tokio::process::Command::new(&python);
        command.args([&format!("{scripts}a2a_agent.py"), &port.to_string()]);
        command
    })
    .await;
    let yaml = format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: agents\n      backends:\n      - host: 127.0.0.1:{port}\n        policies:\n          a2a: {{}}\n"
    );
    let gateway = Gateway::start(&yaml).await;
    let output = tokio::process::Command::new(&python)
        .args([
            &format!("{scripts}a2a_client.py"),
            &gateway.url(""),
            "hello agent",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen["card_url"],
        format!("{}/a2a", gateway.url("")),
        "the card names the gateway, not the agent"
    );
    assert_eq!(
        seen["replies"][0]["message"]["parts"][0]["text"],
        "echo: hello agent"
    );
    let log = gateway.log_with("a2a_method=\"SendMessage\"").await;
    assert!(log.contains("protocol=\"a2a\""), "{log}");
    drop(agent);
}

/// The Python SDK's legacy HTTP+SSE client (`mcp.client.sse`) through Portico: listing, calls on two
/// targets, and a sampling request answered over the same stream.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_legacy_sse_client() {
    let Some(tools) = interop_tools() else { return };
    let targets = [stdio_target("a", &[]), stdio_target("b", &[])].concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_sse_client.py"
    );
    let output = tokio::process::Command::new(tools.join("venv/bin/python"))
        .args([script, &gateway.url("/mcp/sse")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("python sse client: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A call without `arguments` reaches the target without them (issue #9): the reference server
/// refuses `"arguments": null`, so every one of its tools that takes no arguments, called without the
/// field, must succeed through Portico as it does directly. The same for `completion/complete`
/// without `context`.
#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_target_as_the_client_sent_them() {
    let Some(tools) = interop_tools() else { return };
    let target = format!(
        "          - name: everything\n            stdio:\n              cmd: \"{}\"\n              args: [\"{}\", \"stdio\"]\n",
        node(&tools).display(),
        everything(&tools)
    );
    let gateway = Gateway::start(&config_with_targets(&target, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (listed, _) = client.list_all("tools/list", "tools").await;
    let argumentless: Vec<String> = listed
        .iter()
        .filter(|tool| {
            let schema = &tool["inputSchema"];
            schema["properties"]
                .as_object()
                .is_none_or(|p| p.is_empty())
                && schema["required"].as_array().is_none_or(|r| r.is_empty())
        })
        .filter_map(|tool| tool["name"].as_str().map(str::to_string))
        // These wait for the client to answer a request of their own; this client answers none.
        .filter(|name| {
            !["elicitation", "sampling", "roots"]
                .iter()
                .any(|w| name.contains(w))
        })
        .collect();
    assert!(
        argumentless.iter().any(|name| name == "get-env"),
        "{argumentless:?}"
    );
    for name in &argumentless {
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            client.request("tools/call", serde_json::json!({"name": name})),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer in 20 s"));
        let response = &reply.response;
        assert!(
            response.get("result").is_some() && response["result"]["isError"] != true,
            "{name} called without `arguments`: {response}"
        );
    }
    let (prompts, _) = client.list_all("prompts/list", "prompts").await;
    let with_arguments = prompts
        .iter()
        .find(|p| p["arguments"].as_array().is_some_and(|a| !a.is_empty()))
        .expect("a prompt with arguments");
    let completion = client
        .request(
            "completion/complete",
            serde_json::json!({
                "ref": {"type": "ref/prompt", "name": with_arguments["name"]},
                "argument": {"name": with_arguments["arguments"][0]["name"], "value": ""}
            }),
        )
        .await;
    assert!(
        completion.response.get("result").is_some(),
        "{}",
        completion.response
    );
}

/// `/metrics` read by Prometheus' own Python parser after calls through two targets: the OTel MCP
/// operation histograms with their attributes, sessions, and process metrics.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_with_prometheus_and_carry_the_mcp_conventions() {
    let Some(tools) = interop_tools() else { return };
    let yaml = format!(
        "config:\n  statsAddr: 127.0.0.1:0\n  readinessAddr: 127.0.0.1:0\n{}",
        config_with_targets(
            &format!(
                "{}{}            policies:\n              mcpAuthorization:\n                rules: [\"true\"]\n",
                stdio_target("one", &[]),
                stdio_target("two", &[])
            ),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    let line = gateway.log_with("serving metrics").await;
    let stats = line
        .split("stats=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the start-up line names the metrics URL")
        .to_string();
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client
        .call("two_echo", serde_json::json!({"message": "hi"}))
        .await;
    client.list_all("tools/list", "tools").await;
    let unknown = client
        .request(
            "tools/call",
            serde_json::json!({"name": "two_nope", "arguments": {}}),
        )
        .await;
    assert_eq!(unknown.response["error"]["code"], -32602);
    let text = reqwest::get(&stats).await.unwrap().text().await.unwrap();
    let parsed = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(tools.join("venv/bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/interop/parse_metrics.py"
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        parsed.status.success(),
        "prometheus_client could not parse /metrics: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let samples: Vec<serde_json::Value> = serde_json::from_slice(&parsed.stdout).unwrap();
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
    };
    let call = find(
        "mcp_server_operation_duration_seconds_count",
        &[
            ("route", "test"),
            ("mcp_method_name", "tools/call"),
            ("gen_ai_tool_name", "echo"),
            ("target", "two"),
            ("error_type", ""),
            ("mcp_protocol_version", "2025-06-18"),
            ("network_transport", "tcp"),
        ],
    )
    .unwrap_or_else(|| panic!("no server operation sample for the call: {samples:#?}"));
    assert_eq!(call["value"], 1.0);
    let upstream = find(
        "mcp_client_operation_duration_seconds_count",
        &[
            ("target", "two"),
            ("mcp_method_name", "tools/call"),
            ("network_transport", "pipe"),
        ],
    )
    .expect("the upstream call is recorded");
    assert_eq!(upstream["value"], 1.0);
    // 50 µs resolution: the first bucket bound.
    assert!(
        find(
            "mcp_server_operation_duration_seconds_bucket",
            &[("le", "0.00005")]
        )
        .is_some()
    );
    // An unknown tool name is not a label value.
    assert!(
        !samples
            .iter()
            .any(|s| s["labels"]["gen_ai_tool_name"] == "nope"),
        "unbounded label"
    );
    assert!(
        find(
            "mcp_server_operation_duration_seconds_count",
            &[("error_type", "-32602")]
        )
        .is_some()
    );
    assert_eq!(
        find("portico_sessions_active", &[("route", "test")]).unwrap()["value"],
        1.0
    );
    assert_eq!(
        find("portico_target_up", &[("route", "test"), ("target", "one")]).unwrap()["value"],
        1.0
    );
    assert!(find("portico_target_restarts_total", &[("target", "two")]).is_some());
    let allowed = find(
        "portico_authorization_decisions_total",
        &[
            ("target", "two"),
            ("decision", "allow"),
            ("rule", "target:0"),
        ],
    )
    .unwrap_or_else(|| panic!("the decision is counted: {samples:#?}"));
    // `two_echo`, and `two_nope`, which the rule allows and the target then does not know.
    assert_eq!(allowed["value"], 2.0);
    // CPU time is counted in clock ticks (10 ms): a gateway that has just started may have used none.
    for (process, least) in [
        ("process_resident_memory_bytes", 1.0),
        ("process_open_fds", 1.0),
        ("process_cpu_seconds_total", 0.0),
    ] {
        let sample = samples
            .iter()
            .find(|s| s["name"] == process)
            .unwrap_or_else(|| panic!("{process}"));
        assert!(sample["value"].as_f64().unwrap() >= least, "{sample}");
    }
}

/// A target that closes its response stream mid-call and answers on the reconnection (SSE polling,
/// SEP-1699; the Python SDK's server with an event store): Portico resumes the stream with a GET
/// naming the last event, after the `retry:` the target asked for, and the client gets the answer on
/// its own stream as if nothing had happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_closes_its_stream_mid_call_is_resumed() {
    let Some(tools) = interop_tools() else { return };
    let (_server, port) = start_service(|port| {
        let mut command = tokio::process::Command::new(tools.join("venv/bin/python"));
        command.args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/py_server.py"),
            "streamable-http",
            &port.to_string(),
        ]);
        command
    })
    .await;
    let target = http_target("py", &format!("http://127.0.0.1:{port}/mcp"));
    let gateway = Gateway::start(&config_with_targets(&target, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let reply = client
        .request(
            "tools/call",
            serde_json::json!({"name": "test_reconnection", "arguments": {}, "_meta": {"progressToken": 1}}),
        )
        .await;
    assert_eq!(
        text(&reply.response["result"]),
        "answered after the reconnection",
        "{reply:?}\n{}",
        gateway.log_text()
    );
    assert!(
        reply
            .before
            .iter()
            .any(|m| m["method"] == "notifications/progress"),
        "what came before the close reached the client: {reply:?}"
    );
    let echoed = client
        .call("echo", serde_json::json!({"message": "after"}))
        .await;
    assert_eq!(text(&echoed), "after");

    // The conformance suite's SSE-polling scenario: directly, the server closes the stream and the
    // suite resumes it; through Portico the call outlasts `post_stream::STREAM_AFTER`, so its reply
    // is a resumable stream too (priming event, retry), and the answer arrives on it.
    let (direct, through) = (format!("http://127.0.0.1:{port}/mcp"), gateway.url("/mcp"));
    let polling = [
        "--scenario",
        "server-sse-polling",
        "--spec-version",
        "2025-11-25",
    ];
    let [direct, through] = tokio::task::spawn_blocking(move || {
        [direct, through].map(|url| conformance_checks(&tools, &url, &polling))
    })
    .await
    .unwrap();
    for (name, (passed, failed)) in [("directly", &direct), ("through Portico", &through)] {
        for check in ["server-sse-priming-event", "server-sse-retry-field"] {
            let key = ("server-sse-polling".to_string(), check.to_string());
            assert_eq!(
                passed.get(&key),
                Some(&1),
                "{check} {name}: {passed:?} {failed:?}"
            );
        }
        assert!(failed.is_empty(), "{name}: {failed:?}");
    }
}
