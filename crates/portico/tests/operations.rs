//! Issue #10: what a platform team needs to run Portico: JSON logs that parsers read whole.

mod common;

use common::*;
use serde_json::{Value, json};

/// With `logging.format: json` every line is one JSON object with each key once; the access log's
/// `target` is the MCP target, and the module that logged is `logger`.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_have_every_key_once() {
    let yaml = format!(
        "config:\n  logging:\n    format: json\n{}",
        config_with_targets(
            &format!("{}{}", stdio_target("one", &[]), stdio_target("two", &[])),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.call("two_echo", json!({"message": "hi"})).await;
    let log = gateway.log_with("\"tools/call\"").await;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let object = parsed.as_object().unwrap();
        // A parser folds a duplicated key into one, so count each key in the raw line.
        for key in object.keys() {
            assert_eq!(
                line.matches(&format!("\"{key}\":")).count(),
                1,
                "`{key}` twice in {line}"
            );
        }
    }
    let access: Value = log
        .lines()
        .filter(|l| l.contains("\"tools/call\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .next()
        .unwrap();
    assert_eq!(access["logger"], "portico::access");
    assert_eq!(access["target"], "two");
    assert_eq!(access["tool"], "echo");
    assert_eq!(access["method"], "tools/call");
    assert_eq!(access["route"], "test");
    assert_eq!(access["error_code"], 0);
    assert!(access["duration_ms"].is_f64(), "{access}");
    assert_eq!(access["level"], "INFO");
    assert!(
        access["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{access}"
    );
}

fn sigterm(gateway: &Gateway) {
    let pid = gateway.child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// On SIGTERM readiness turns 503, a `tools/call` in flight still gets its answer, an open GET stream
/// ends, and the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight() {
    let yaml = format!(
        "config:\n  readinessAddr: 127.0.0.1:0\n  drainTimeout: 10s\n{}",
        config_with_targets(&stdio_target("one", &[]), "")
    );
    let mut gateway = Gateway::start(&yaml).await;
    let readiness = announced(&gateway, "serving readiness", "readiness").await;
    assert_eq!(reqwest::get(&readiness).await.unwrap().status(), 200);
    let live = readiness.replace("/ready", "/live");
    assert_eq!(reqwest::get(&live).await.unwrap().status(), 200);

    let client = Client::connect(gateway.url("/mcp")).await;
    let stream = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let call = client.send(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 1500}}}));
    let terminate = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sigterm(&gateway);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        reqwest::get(&readiness).await.unwrap().status()
    };
    let (call, readiness_while_draining) = tokio::join!(call, terminate);
    assert_eq!(readiness_while_draining, 503);
    let reply = read_reply(call).await;
    assert_eq!(
        reply.response["result"]["content"][0]["text"], "slept 1500 ms",
        "{:?}",
        reply.response
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), stream.bytes()).await;
    assert!(ended.is_ok(), "the GET stream ended");
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), gateway.child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    gateway.log_with("draining requests in flight").await;
}

/// The URL a start-up line names after `field=`.
async fn announced(gateway: &Gateway, message: &str, field: &str) -> String {
    let line = gateway.log_with(message).await;
    line.split(&format!("{field}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {field}= in {line}"))
        .to_string()
}

/// The admin API: the effective config without secrets, each target's health, the policy table.
#[tokio::test(flavor = "multi_thread")]
async fn admin_api_shows_config_targets_and_policies() {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let remote = format!(
        "{}            policies:\n              backendAuth:\n                key: super-secret-key\n",
        http_target("remote", &fixture.url)
    );
    let broken =
        "          - name: broken\n            stdio:\n              cmd: /nonexistent/server\n";
    let yaml = format!(
        "config:\n  adminAddr: 127.0.0.1:0\n  readinessAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n{}",
        config_with_targets(
            &format!("{}{remote}{broken}", stdio_target("local", &[])),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    let admin = announced(&gateway, "serving the admin API", "admin").await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.list_all("tools/list", "tools").await;

    let targets: Value = reqwest::get(format!("{admin}/targets"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &targets["routes"][0];
    assert_eq!(route["route"], "test");
    assert_eq!(route["sessions"], 1);
    let target = |name: &str| {
        route["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {targets}"))
    };
    assert_eq!(target("local")["connectedSessions"], 1);
    assert_eq!(target("local")["healthy"], true);
    assert!(target("local")["tools"].as_u64().unwrap() > 10, "{targets}");
    assert!(
        target("remote")["kind"]
            .as_str()
            .unwrap()
            .starts_with("mcp"),
        "{targets}"
    );
    assert_eq!(target("broken")["healthy"], false);
    assert!(
        target("broken")["lastError"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/server"),
        "{targets}"
    );

    let dump = reqwest::get(format!("{admin}/config_dump"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !dump.contains("super-secret-key"),
        "a secret in the dump: {dump}"
    );
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["settings"]["limits"]["sessionsPerRoute"], 10_000);
    let policies: Value = reqwest::get(format!("{admin}/policies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(policies.to_string().contains("backendAuth"), "{policies}");
    assert!(!policies.to_string().contains("super-secret-key"));
    let missing = reqwest::get(format!("{admin}/nothing")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A changed config file is swapped in for new sessions while live ones keep working; an invalid one
/// is refused with its file:line error and the running config stays; SIGHUP reloads too.
#[tokio::test(flavor = "multi_thread")]
async fn config_changes_reload_without_a_restart() {
    let one = config_with_targets(&stdio_target("one", &[]), "");
    let gateway = Gateway::start(&one).await;
    let mut before = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = before.list_all("tools/list", "tools").await;
    assert!(names(&tools, "name").contains(&"echo".to_string()));

    let two = config_with_targets(
        &format!("{}{}", stdio_target("one", &[]), stdio_target("two", &[])),
        "",
    );
    gateway.rewrite_config(&two);
    gateway.log_with("config reloaded").await;
    let mut after = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = after.list_all("tools/list", "tools").await;
    assert!(
        names(&tools, "name").contains(&"two_echo".to_string()),
        "{tools:?}"
    );
    assert_eq!(
        text(&before.call("echo", json!({"message": "still"})).await),
        "still"
    );

    gateway.rewrite_config(&two.replace("stdio:", "stdo:"));
    let log = gateway.log_with("config reload refused").await;
    assert!(
        log.contains("unknown field `stdo`") && log.contains(".yaml:"),
        "{log}"
    );
    let mut third = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = third.list_all("tools/list", "tools").await;
    assert!(
        names(&tools, "name").contains(&"two_echo".to_string()),
        "the last good config serves"
    );

    gateway.rewrite_config(&two);
    gateway.log_with("config reloaded").await;
    let reloads = gateway.log_count("config reloaded");
    let pid = gateway.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if gateway.log_count("config reloaded") > reloads {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gateway.log_count("config reloaded") > reloads,
        "SIGHUP reloads"
    );
    assert!(
        gateway.log_text().contains("reason=\"SIGHUP\""),
        "{}",
        gateway.log_text()
    );
}
