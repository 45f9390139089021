//! `host` backends: plain HTTP proxied to a service (the fixture's REST pet store), with the
//! backend's policies applied and the client's credentials kept to itself.

mod common;

use common::*;
use serde_json::Value;

fn host_route(host: &str, policies: &str) -> String {
    format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: api\n      backends:\n      - host: {host}\n{policies}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_proxied_with_path_query_and_the_backends_credentials() {
    let rest = HttpFixture::start_rest().await;
    let policies = "        policies:\n          backendAuth:\n            key: backend-key\n          requestHeaderModifier:\n            set: {x-via: portico}\n";
    let gateway = Gateway::start(&host_route(&rest.url.replace("http://", ""), policies)).await;
    let response = reqwest::Client::new()
        .get(gateway.url("/echo?q=a%20b"))
        .header("x-request-tag", "blue")
        .header("authorization", "Bearer the-clients-own")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["query"]["q"], "a b");
    assert_eq!(seen["headers"]["x-request-tag"], "blue");
    assert_eq!(seen["headers"]["x-via"], "portico");
    assert_eq!(
        seen["headers"]["authorization"], "Bearer backend-key",
        "the backend's key, never the client's token"
    );
    assert!(seen["headers"]["x-forwarded-for"].is_string());

    let created = reqwest::Client::new()
        .post(gateway.url("/pets"))
        .json(&serde_json::json!({"name": "Rex"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "status codes pass through");
    let missing = reqwest::get(gateway.url("/pets/99")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let log = gateway.log_with("path=/pets/99").await;
    assert!(
        log.contains("protocol=\"http\"") && log.contains("status=404"),
        "{log}"
    );
    assert!(!log.contains("backend-key") && !log.contains("the-clients-own"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_backend_is_a_502() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = Gateway::start(&host_route(&unused.to_string(), "")).await;
    let response = reqwest::get(gateway.url("/anything")).await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.text().await.unwrap().contains("backend api/0"));
}

#[test]
fn host_and_mcp_backends_do_not_mix_on_a_route() {
    let yaml = format!(
        "{}      - mcp:\n          targets:\n{}",
        host_route("127.0.0.1:9", ""),
        stdio_target("a", &[])
    );
    let text = validate_failure(&yaml);
    assert!(
        text.contains("a route's backends are either all `mcp` or all `host`"),
        "{text}"
    );
    let guarded = host_route(
        "127.0.0.1:9",
        "        policies:\n          ai:\n            promptGuard: [{regex: {deny: [{pattern: x}]}}]\n",
    );
    assert!(validate_failure(&guarded).contains("not to a `host` backend"));
}

/// The route's `jwtAuth` guards a `host` backend as it guards MCP: no valid token, no request.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_auth_guards_host_routes() {
    let rest = HttpFixture::start_rest().await;
    let issuer = Issuer::new();
    let yaml = host_route(&rest.url.replace("http://", ""), "").replace(
        "    - name: api\n",
        &format!(
            "    - name: api\n      policies:\n{}",
            issuer.policy("strict")
        ),
    );
    let gateway = Gateway::start(&yaml).await;
    let anonymous = reqwest::get(gateway.url("/echo")).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let token = issuer.token("ada");
    let response = reqwest::Client::new()
        .get(gateway.url("/echo"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert!(
        seen["headers"].get("authorization").is_none(),
        "the validated token stays with the gateway: {seen}"
    );
    gateway.log_with("sub=\"ada\"").await;
}
