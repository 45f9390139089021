//! requestHeaderModifier / responseHeaderModifier at route, backend and target level, seen by the
//! fixture's `echo_headers` tool and by the client.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_target_modifier_changes_only_that_targets_requests() {
    let a = HttpFixture::start(&["--name", "a"]).await;
    let b = HttpFixture::start(&["--name", "b"]).await;
    let targets = format!(
        "{}            policies:\n              requestHeaderModifier:\n                set: {{x-team: blue}}\n                add: [{{name: x-tag, value: one}}]\n              responseHeaderModifier:\n                set: {{x-answered-by: a}}\n{}",
        http_target("a", &a.url),
        http_target("b", &b.url)
    );
    let backend = "          policies:\n            requestHeaderModifier:\n              set: {x-backend: yes}\n";
    let yaml = config_with_targets(&targets, backend).replace(
        "    - name: test\n",
        "    - name: test\n      policies:\n        responseHeaderModifier:\n          set: {x-served-by: portico}\n",
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let seen = |result: Value| -> Value { serde_json::from_str(text(&result)).unwrap() };
    let at_a = seen(client.call("a_echo_headers", json!({})).await);
    assert_eq!(at_a["x-team"], "blue");
    assert_eq!(at_a["x-tag"], "one");
    assert!(
        at_a.get("x-backend").is_none(),
        "the target's own modifier replaces the backend's, whole"
    );
    let at_b = seen(client.call("b_echo_headers", json!({})).await);
    assert!(at_b.get("x-team").is_none(), "{at_b}");
    assert_eq!(
        at_b["x-backend"], "yes",
        "b inherits the backend's modifier"
    );
    assert!(at_b.get("authorization").is_none());

    let call = |tool: &'static str| json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "x"}}});
    let from_a = client.send(call("a_echo")).await;
    assert_eq!(from_a.headers()["x-served-by"], "portico");
    assert_eq!(from_a.headers()["x-answered-by"], "a");
    let from_b = client.send(call("b_echo")).await;
    assert_eq!(from_b.headers()["x-served-by"], "portico");
    assert!(from_b.headers().get("x-answered-by").is_none());
}

#[test]
fn invalid_modifiers_are_config_errors() {
    let stdio = format!(
        "{}            policies:\n              requestHeaderModifier:\n                set: {{x-a: b}}\n",
        stdio_target("local", &[])
    );
    let text = validate_failure(&config_with_targets(&stdio, ""));
    assert!(
        text.contains("requestHeaderModifier does not apply to stdio targets"),
        "{text}"
    );

    let http = format!(
        "{}            policies:\n              requestHeaderModifier:\n                set: {{Mcp-Session-Id: stolen}}\n",
        http_target("r", "http://127.0.0.1:9/mcp")
    );
    let text = validate_failure(&config_with_targets(&http, ""));
    assert!(
        text.contains("requestHeaderModifier.set.Mcp-Session-Id")
            && text.contains("cannot be modified"),
        "{text}"
    );

    let http = format!(
        "{}            policies:\n              responseHeaderModifier:\n                add: {{x-a: \"one\\r\\nx-b: two\"}}\n",
        http_target("r", "http://127.0.0.1:9/mcp")
    );
    let text = validate_failure(&config_with_targets(&http, ""));
    assert!(text.contains("CR or LF"), "{text}");
}
