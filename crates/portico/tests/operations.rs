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
    let line = gateway.log_with("serving readiness").await;
    let readiness = line
        .split("readiness=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the start-up line names the readiness URL")
        .to_string();
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
