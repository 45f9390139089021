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
