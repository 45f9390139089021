//! Warm stdio pools (`stdio.pool.size`): processes started ahead of the sessions that take them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn pooled(size: usize, cap: &str) -> String {
    let target = format!(
        "          - name: s\n            stdio:\n              cmd: \"{EXE}\"\n              args: [fixture, --name, s, --startup-delay, \"300\"]\n              pool: {{size: {size}}}\n"
    );
    format!("{cap}{}", config_with_targets(&target, ""))
}

async fn wait_for_count(gateway: &Gateway, needle: &str, count: usize) {
    for _ in 0..100 {
        if gateway.log_count(needle) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} × `{needle}` expected:\n{}", gateway.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_take_warm_processes_and_the_pool_refills() {
    let gateway = Gateway::start(&pooled(2, "")).await;
    assert!(gateway.log_with("target=s").await.contains("pool=2"));
    wait_for_count(&gateway, "warm process started", 2).await;
    assert_eq!(gateway.children().len(), 2, "two processes wait");

    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(
        text(&client.call("echo", json!({"message": "warm"})).await),
        "warm"
    );
    assert_eq!(gateway.log_count("warm process handed to a session"), 1);
    // The pool starts another in place of the one taken: the session's and two warm ones.
    wait_for_count(&gateway, "warm process started", 3).await;
    assert_eq!(gateway.children().len(), 3);

    // Ending the session stops its process; the warm ones stay.
    let deleted = client
        .http
        .delete(client.url.clone())
        .header("mcp-session-id", client.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    for _ in 0..100 {
        if gateway.children().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.children().len(), 2);
}

/// Warm processes count against `stdioProcesses` but leave its last place to sessions.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_respects_the_process_cap() {
    let cap = "config:\n  limits:\n    stdioProcesses: 2\n";
    let gateway = Gateway::start(&pooled(3, cap)).await;
    wait_for_count(&gateway, "warm process started", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gateway.log_count("warm process started"),
        1,
        "one place stays free"
    );
    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(
        text(&client.call("echo", json!({"message": "capped"})).await),
        "capped"
    );
    assert!(gateway.children().len() <= 2, "{:?}", gateway.children());
}
