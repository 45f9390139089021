//! `statefulMode: stateless`: no `Mcp-Session-Id`; each request is served on its own (issue #12).

mod common;

use common::*;
use serde_json::{Value, json};

async fn stateless_gateway() -> (Gateway, HttpFixture, HttpFixture) {
    let b = HttpFixture::start(&["--name", "b", "--page-size", "4"]).await;
    let c = HttpFixture::start(&["--name", "c"]).await;
    let targets = http_target("b", &b.url) + &http_target("c", &c.url);
    let yaml = config_with_targets(&targets, "          statefulMode: stateless\n");
    (Gateway::start(&yaml).await, b, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_served_without_a_session() {
    let (gateway, _b, _c) = stateless_gateway().await;
    let mut client = Client::new(gateway.url("/mcp"));
    let init = client
        .send(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .await;
    assert_eq!(init.status(), 200);
    assert!(init.headers().get("mcp-session-id").is_none());
    let init: Value = init.json().await.unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "portico", "{init}");
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    let ack = client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(ack.status(), 202);

    // Every page, each request on its own.
    let (tools, pages) = client.list_all("tools/list", "tools").await;
    assert!(pages > 3, "{pages}");
    let names = names(&tools, "name");
    assert!(names.contains(&"b_echo".to_string()) && names.contains(&"c_echo".to_string()));
    assert_eq!(
        text(&client.call("b_echo", json!({"message": "one"})).await),
        "one"
    );
    assert_eq!(
        text(&client.call("c_echo", json!({"message": "two"})).await),
        "two"
    );
    let prompt = client
        .request(
            "prompts/get",
            json!({"name": "c_test_prompt_with_arguments", "arguments": {"arg1": "x", "arg2": "y"}}),
        )
        .await;
    assert_eq!(
        prompt.response["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='x', arg2='y'"
    );
    let read = client
        .request("resources/read", json!({"uri": "b+test://static-text"}))
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    let ping = client.request("ping", json!({})).await;
    assert_eq!(ping.response["result"], json!({}));

    // Nothing is left behind: no session is held, and no request counted as one.
    let access = gateway.log_count("portico::access");
    assert!(access >= 6, "{}", gateway.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_needs_a_session_is_refused_clearly() {
    let (gateway, _b, _c) = stateless_gateway().await;
    let mut client = Client::new(gateway.url("/mcp"));
    let subscribe = client
        .request(
            "resources/subscribe",
            json!({"uri": "b+test://static-text"}),
        )
        .await;
    assert_eq!(subscribe.response["error"]["code"], -32600);
    assert!(
        subscribe.response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("statefulMode: stateless"),
        "{:?}",
        subscribe.response
    );
    // A target's request to the client cannot be answered: the target hears so at once.
    let sampled = client
        .request(
            "tools/call",
            json!({"name": "b_test_sampling", "arguments": {"prompt": "hi"}}),
        )
        .await;
    let reply = sampled.response.to_string();
    assert!(reply.contains("stateless"), "{reply}");

    for method in ["GET", "DELETE"] {
        let response = client
            .http
            .request(method.parse().unwrap(), gateway.url("/mcp"))
            .header("accept", ACCEPT_BOTH)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST");
    }
}

#[test]
fn stdio_targets_and_mixed_routes_are_config_errors() {
    let stdio = config_with_targets(
        &(http_target("b", "http://127.0.0.1:9/mcp") + &stdio_target("s", &[])),
        "          statefulMode: stateless\n",
    );
    let error = validate_failure(&stdio);
    assert!(error.contains("targets[1]"), "{error}");
    assert!(error.contains("stdio target"), "{error}");
    assert!(error.contains("statefulMode: stateful"), "{error}");

    let mixed = format!(
        "{}      - mcp:\n          targets:\n{}",
        config_with_targets(
            &http_target("b", "http://127.0.0.1:9/mcp"),
            "          statefulMode: stateless\n"
        ),
        http_target("c", "http://127.0.0.1:9/mcp")
    );
    let error = validate_failure(&mixed);
    assert!(
        error.contains("either all `statefulMode: stateless` or all stateful"),
        "{error}"
    );
}

/// The official Python SDK client works against a stateless route (it gets no session id and sends
/// none).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_client_works_without_a_session() {
    let Some(tools) = interop_tools() else { return };
    let (gateway, _b, _c) = stateless_gateway().await;
    let output = fleet_client(&tools, &[&gateway.url("/mcp"), "calls", "1"]).await;
    let summary = calls_summary(&output);
    assert_eq!(summary["failed"], json!([]), "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 5, "{summary}");
}
