//! Issue #9's defences, each against the attack that found its absence: paths that try to reach a
//! route their plain form would not, requests altered on the way through, malformed params.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` as written (no client-side path clean-up) and returns the status and body.
async fn raw_http(base: &str, request: &str) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

async fn get_raw(base: &str, path: &str) -> (u16, String) {
    raw_http(
        base,
        &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n"),
    )
    .await
}

/// `/public` is open, `/admin` needs a token: no spelling of `/admin` may reach it through `/public`.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_and_escapes_cannot_walk_past_a_route() {
    let rest = HttpFixture::start_rest().await;
    let host = rest.url.replace("http://", "");
    let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    let yaml = format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: public\n      matches: [{{path: {{pathPrefix: /public}}}}]\n      backends:\n      - host: {host}\n    - name: admin\n      matches: [{{path: {{pathPrefix: /admin}}}}]\n      policies:\n        jwtAuth:\n          mode: strict\n          issuer: https://issuer.test\n          jwks:\n            inline: '{jwks}'\n      backends:\n      - host: {host}\n"
    );
    let gateway = Gateway::start(&yaml).await;
    for path in [
        "/public/../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/%2E%2E/admin/secret",
        "/public/.%2e/admin/secret",
        "//admin/secret",
        "/%61dmin/secret",
    ] {
        let (status, body) = get_raw(&gateway.base, path).await;
        assert_eq!(status, 401, "{path} must be the admin route's: {body}");
    }
    for path in [
        "/public/..%2Fadmin/secret",
        "/public%5c..%5cadmin",
        "/public/a\\b",
        "/public/%zz",
    ] {
        let (status, body) = get_raw(&gateway.base, path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // The backend receives the same normalised path the route was chosen by.
    let (status, body) = get_raw(&gateway.base, "/public/./a//b/../c%7e").await;
    assert_eq!(status, 404, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/public/a/c~");
}

const METHODS: [&str; 13] = [
    "initialize",
    "ping",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "tools/call",
    "prompts/get",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// `params` of every JSON type, and objects whose fields have the wrong types.
fn params_shapes() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(7),
        json!("x"),
        json!([1]),
        json!({}),
        json!({"name": 7, "uri": []}),
        json!({"name": "one_echo", "arguments": "x"}),
        json!({"ref": "x"}),
        json!({"ref": {"type": "ref/prompt", "name": 1}}),
        json!({"ref": {"type": "ref/other"}, "argument": 3}),
        json!({"cursor": 5}),
        json!({"level": {}, "_meta": 1}),
    ]
}

/// Every method the gateway reads, with every shape of `params`, on one and on two targets: each
/// gets an answer (non-object `params` a `-32602`), and the session keeps working afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_params_are_answered_never_dropped() {
    for (targets, echo) in [
        (stdio_target("one", &[]), "echo"),
        (
            format!("{}{}", stdio_target("one", &[]), stdio_target("two", &[])),
            "one_echo",
        ),
    ] {
        let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
        let mut client = Client::connect(gateway.url("/mcp")).await;
        for method in METHODS {
            for params in params_shapes() {
                let id = client.next_id();
                let message =
                    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
                let sent =
                    tokio::time::timeout(Duration::from_secs(5), client.send(message.clone()))
                        .await
                        .unwrap_or_else(|_| panic!("no answer in 5 s to {message}"));
                let reply = read_reply(sent).await;
                assert_eq!(reply.status, 200, "{message}");
                assert_eq!(reply.response["id"], id, "{message} → {:?}", reply.response);
                let must_refuse = match &params {
                    Value::Object(_) => false,
                    Value::Null => !(method == "ping" || method.ends_with("/list")),
                    _ => true,
                };
                if must_refuse {
                    assert_eq!(
                        reply.response["error"]["code"], -32602,
                        "{message} → {}",
                        reply.response
                    );
                }
            }
        }
        let echoed = client.call(echo, json!({"message": "still here"})).await;
        assert!(text(&echoed).contains("still here"), "{echoed}");
        assert!(
            !gateway.log_text().contains("panicked"),
            "{}",
            gateway.log_text()
        );
    }
}

/// A session made with one caller's token is an unknown session to any other caller, anonymous
/// included; its owner keeps using it.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_answer_only_to_the_caller_that_made_them() {
    let issuer = Issuer::new();
    let yaml = config_with_targets(&stdio_target("one", &[]), "").replace(
        "    - name: test\n",
        &format!(
            "    - name: test\n      policies:\n{}",
            issuer.policy("optional")
        ),
    );
    let gateway = Gateway::start(&yaml).await;
    let (ada, bob) = (issuer.token("ada"), issuer.token("bob"));
    let http = reqwest::Client::new();
    let url = gateway.url("/mcp");
    let session = session_as(&url, &ada).await;
    assert_eq!(
        ping_status(&url, &session, Some(&bob)).await,
        404,
        "another caller's session"
    );
    assert_eq!(
        ping_status(&url, &session, None).await,
        404,
        "an anonymous caller"
    );
    assert_eq!(
        ping_status(&url, &session, Some(&ada)).await,
        200,
        "its owner"
    );
    let stolen_delete = http
        .delete(gateway.url("/mcp"))
        .header("mcp-session-id", &session)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(stolen_delete.status(), 404);
    assert_eq!(
        ping_status(&url, &session, Some(&ada)).await,
        200,
        "not ended by another caller"
    );
}

/// URLs written for clients never come from a forged `Host`: without `publicUrl` a non-loopback Host
/// gets the listener's own address; with it, the configured origin.
#[tokio::test(flavor = "multi_thread")]
async fn client_facing_urls_do_not_trust_the_host_header() {
    let issuer = Issuer::new();
    let authn = format!(
        "        mcpAuthentication:\n          issuer: https://issuer.test\n          audiences: [portico]\n          jwks:\n            inline: '{}'\n",
        issuer.jwks
    );
    let base = config_with_targets(&stdio_target("one", &[]), "").replace(
        "    - name: test\n",
        &format!("    - name: test\n      policies:\n{authn}"),
    );
    let gateway = Gateway::start(&base).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let reply = raw_http_headers(&gateway.base, "evil.example.com").await;
    assert!(!reply.contains("evil.example.com"), "{reply}");
    // The listener's configured address (port 0 here: the test lets the kernel pick).
    assert!(
        reply.contains("resource_metadata=\"http://127.0.0.1:0/.well-known/"),
        "{reply}"
    );
    let local = raw_http_headers(&gateway.base, &address).await;
    assert!(
        local.contains(&format!("resource_metadata=\"http://{address}/.well-known")),
        "{local}"
    );

    let public = base.replace(
        "  - routes:\n",
        "  - publicUrl: https://mcp.example.com\n    routes:\n",
    );
    let gateway = Gateway::start(&public).await;
    let reply = raw_http_headers(&gateway.base, "evil.example.com").await;
    assert!(
        reply.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        ),
        "{reply}"
    );
    let (status, metadata) = raw_http(
        &gateway.base,
        "GET /.well-known/oauth-protected-resource/mcp HTTP/1.0\r\nHost: evil.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["resource"], "https://mcp.example.com/mcp");

    let text = validate_failure(&base.replace(
        "  - routes:\n",
        "  - publicUrl: https://mcp.example.com/base\n    routes:\n",
    ));
    assert!(
        text.contains("publicUrl") && text.contains("is not an origin"),
        "{text}"
    );
}

/// The response head of an unauthenticated POST carrying `Host: host`.
async fn raw_http_headers(base: &str, host: &str) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.0\r\nHost: {host}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    reply
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A deny rule that cannot be evaluated denies, and says why in the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_deny_rule_denies() {
    let target = format!(
        "{}            policies:\n              mcpAuthorization:\n                rules:\n                - deny: \"jwt.sub == 'mallory'\"\n",
        stdio_target("one", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&target, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert!(
        tools.is_empty(),
        "anonymous callers have no `sub`: {tools:?}"
    );
    let reply = client
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(
        reply.response["error"]["code"], -32602,
        "{}",
        reply.response
    );
    let log = gateway.log_with("could not be evaluated").await;
    assert!(log.contains("jwt.sub == 'mallory'"), "{log}");
}

/// `cors` and `responseHeaderModifier` act on `host` routes; `*` with credentials is refused.
#[tokio::test(flavor = "multi_thread")]
async fn cors_and_response_headers_apply_to_host_routes() {
    let rest = HttpFixture::start_rest().await;
    let yaml = format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: api\n      policies:\n        cors:\n          allowOrigins: [https://app.example]\n        responseHeaderModifier:\n          set: {{x-served-by: portico}}\n      backends:\n      - host: {}\n",
        rest.url.replace("http://", "")
    );
    let gateway = Gateway::start(&yaml).await;
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, gateway.url("/echo"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = http
        .get(gateway.url("/echo"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(allowed.headers()["x-served-by"], "portico");
    let other = http
        .get(gateway.url("/echo"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let wildcard = yaml.replace(
        "allowOrigins: [https://app.example]",
        "allowOrigins: [\"*\"]\n          allowCredentials: true",
    );
    let text = validate_failure(&wildcard);
    assert!(
        text.contains("allowCredentials") && text.contains("cannot go with"),
        "{text}"
    );
}

/// A target with a `timeout` policy that does not answer in time: the client gets `-32603` naming the
/// target and the limit, the target is told to cancel, and the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_timeout_is_answered_and_cancelled_at_the_target() {
    let target = format!(
        "{}            policies:\n              timeout:\n                requestTimeout: 30s\n                backendRequestTimeout: 300ms\n",
        stdio_target("slow", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&target, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let started = std::time::Instant::now();
    let reply = client
        .request(
            "tools/call",
            json!({"name": "sleep", "arguments": {"ms": 10_000}}),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        reply.response["error"]["code"], -32603,
        "{}",
        reply.response
    );
    let message = reply.response["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("target slow")
            && message.contains("300ms")
            && message.contains("backendRequestTimeout"),
        "{message}"
    );
    gateway.log_with("fixture slow: sleep cancelled").await;
    let echoed = client.call("echo", json!({"message": "after"})).await;
    assert_eq!(text(&echoed), "after");
}

/// Without any policy, a client that disconnects mid-call (before its reply began: a reply stream
/// can be resumed, see `transport::a_broken_reply_stream_is_resumed_from_its_last_event`) cancels
/// the call at the target, and the call's bookkeeping is freed (with one request in flight allowed,
/// the session takes the next one).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_its_calls() {
    let yaml = with_limits(
        "    requestsInFlightPerSession: 1\n",
        config_with_targets(&stdio_target("slow", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let abandoned = client
        .post()
        .timeout(Duration::from_millis(100))
        .body(
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": 30_000}}})
            .to_string(),
        )
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up");
    gateway.log_with("fixture slow: sleep cancelled").await;
    assert_eq!(client.request("ping", json!({})).await.status, 200);
}

/// A route's `localRateLimit` answers 429 with `Retry-After` past its budget; only requests count.
#[tokio::test(flavor = "multi_thread")]
async fn route_rate_limit_is_a_429_with_retry_after() {
    let yaml = config_with_targets(&stdio_target("one", &[]), "").replace(
        "    - name: test\n",
        "    - name: test\n      policies:\n        localRateLimit:\n        - maxTokens: 3\n          tokensPerFill: 1\n          fillInterval: 60s\n          type: requests\n",
    );
    let gateway = Gateway::start(&yaml).await;
    // `initialize` takes one token; `notifications/initialized` none.
    let mut client = Client::connect(gateway.url("/mcp")).await;
    for _ in 0..3 {
        let note = client
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(note.status(), 202, "notifications are not counted");
    }
    assert_eq!(client.request("ping", json!({})).await.status, 200);
    assert_eq!(client.request("ping", json!({})).await.status, 200);
    let over = client
        .send(json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
        .await;
    assert_eq!(over.status(), 429);
    let retry: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = over.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("localRateLimit"),
        "{body}"
    );
}

/// A target's `localRateLimit` refuses that target's calls with a JSON-RPC error saying when to
/// retry; the other target and the session are unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn target_rate_limit_refuses_that_targets_calls_only() {
    let targets = format!(
        "{}            policies:\n              localRateLimit:\n              - maxTokens: 1\n                tokensPerFill: 1\n                fillInterval: 1m\n{}",
        stdio_target("limited", &[]),
        stdio_target("free", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.call("limited_echo", json!({"message": "1"})).await;
    let refused = client
        .request(
            "tools/call",
            json!({"name": "limited_echo", "arguments": {"message": "2"}}),
        )
        .await;
    assert_eq!(refused.status, 200);
    let error = &refused.response["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of target limited"),
        "{error}"
    );
    assert!(
        error["data"]["retryAfter"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{error}"
    );
    for n in 0..5 {
        let echoed = client
            .call("free_echo", json!({"message": n.to_string()}))
            .await;
        assert_eq!(text(&echoed), n.to_string());
    }
}

/// `config.limits` in front of a one-route config.
fn with_limits(limits: &str, config: String) -> String {
    format!("config:\n  limits:\n{limits}{config}")
}

async fn initialize_status(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Past `sessionsPerRoute` a new session gets 503 + `Retry-After` naming the limit; live sessions keep
/// working, and a deleted one gives its place back.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_per_route_are_capped() {
    let yaml = with_limits(
        "    sessionsPerRoute: 2\n",
        config_with_targets(&stdio_target("one", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let mut first = Client::connect(gateway.url("/mcp")).await;
    let _second = Client::connect(gateway.url("/mcp")).await;
    let (status, headers, body) = initialize_status(&gateway.url("/mcp")).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config.limits.sessionsPerRoute (2)"),
        "{body}"
    );
    assert_eq!(
        text(&first.call("echo", json!({"message": "ok"})).await),
        "ok"
    );
    let deleted = first
        .http
        .delete(&first.url)
        .header("mcp-session-id", first.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, _, body) = initialize_status(&gateway.url("/mcp")).await;
    assert_eq!(status, 200, "{body}");
}

/// An unauthenticated client looping `initialize` on a route of three stdio targets cannot push the
/// process count past `stdioProcesses`.
#[tokio::test(flavor = "multi_thread")]
async fn stdio_processes_are_capped() {
    let targets = format!(
        "{}{}{}",
        stdio_target("a", &[]),
        stdio_target("b", &[]),
        stdio_target("c", &[])
    );
    let yaml = with_limits("    stdioProcesses: 7\n", config_with_targets(&targets, ""));
    let gateway = Gateway::start(&yaml).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _, body) = initialize_status(&gateway.url("/mcp")).await;
        if status == 503 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("stdioProcesses"),
                "{body}"
            );
        }
        statuses.push(status);
        assert!(
            gateway.children().len() <= 7,
            "{} processes",
            gateway.children().len()
        );
    }
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503]);
}

/// Past `requestsInFlightPerSession` a request gets 503 naming the limit; the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_per_session_are_capped() {
    let yaml = with_limits(
        "    requestsInFlightPerSession: 1\n",
        config_with_targets(&stdio_target("one", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let slow = client.send(json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 1500}}}));
    let busy = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .send(json!({"jsonrpc": "2.0", "id": 51, "method": "ping"}))
            .await
    };
    let (slow, busy) = tokio::join!(slow, busy);
    assert_eq!(busy.status(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    let body: Value = busy.json().await.unwrap();
    assert_eq!(body["id"], 51);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requestsInFlightPerSession"),
        "{body}"
    );
    assert_eq!(
        read_reply(slow).await.response["result"]["content"][0]["text"],
        "slept 1500 ms"
    );
    assert_eq!(client.request("ping", json!({})).await.status, 200);
}

/// Requests a target sends to the client are capped per session; the target hears why.
#[tokio::test(flavor = "multi_thread")]
async fn unanswered_requests_to_the_client_are_capped() {
    let yaml = with_limits(
        "    pendingClientRequestsPerSession: 1\n",
        config_with_targets(&stdio_target("one", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let mut first = client
        .send(json!({"jsonrpc": "2.0", "id": 60, "method": "tools/call",
            "params": {"name": "test_sampling", "arguments": {"prompt": "one"}}}))
        .await;
    // The stream's priming event, then the target's request.
    let mut seen = String::new();
    while !seen.contains("sampling/createMessage") {
        let chunk = first.chunk().await.unwrap().expect("the target's request");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let second = read_reply(
        client
            .send(json!({"jsonrpc": "2.0", "id": 61, "method": "tools/call",
                "params": {"name": "test_sampling", "arguments": {"prompt": "two"}}}))
            .await,
    )
    .await;
    let answer = second.response.to_string();
    assert!(
        answer.contains("pendingClientRequestsPerSession"),
        "{answer}"
    );
}

/// Past `connectionsPerListener` a connection is answered 503 and closed; the ones open are served.
#[tokio::test(flavor = "multi_thread")]
async fn connections_per_listener_are_capped() {
    let yaml = with_limits(
        "    connectionsPerListener: 3\n",
        config_with_targets(&stdio_target("one", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // Connections are counted as the gateway accepts them: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = raw_http(&gateway.base, "GET /mcp HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("connectionsPerListener"), "{body}");
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = raw_http(
        &gateway.base,
        "GET /mcp HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "served again: no session id");
}

/// A target that sends more than `upstreamResponse`: the call gets `-32603` naming the target, the
/// connection is dropped, and the target serves again afterwards (stdio: a new process).
#[tokio::test(flavor = "multi_thread")]
async fn oversized_replies_from_targets_are_refused() {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let targets = format!(
        "{}{}",
        stdio_target("local", &[]),
        http_target("remote", &fixture.url)
    );
    let yaml = with_limits(
        "    upstreamResponse: 64KiB\n",
        config_with_targets(&targets, ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let big = "x".repeat(100_000);
    for target in ["local", "remote"] {
        let reply = client
            .request(
                "tools/call",
                json!({"name": format!("{target}_echo"), "arguments": {"message": big}}),
            )
            .await;
        assert_eq!(reply.response["error"]["code"], -32603, "{target}");
        let message = reply.response["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("target {target}")) && message.contains("upstreamResponse"),
            "{message}"
        );
    }
    let small = client.call("remote_echo", json!({"message": "fits"})).await;
    assert_eq!(text(&small), "fits");
    for attempt in 0.. {
        let reply = client
            .request(
                "tools/call",
                json!({"name": "local_echo", "arguments": {"message": "back"}}),
            )
            .await;
        if reply.response["result"]["content"][0]["text"] == "back" {
            break;
        }
        assert!(
            attempt < 50,
            "the stdio target never came back: {}",
            reply.response
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 1,000 connections that send nothing, or one byte at a time, do not stop a normal client.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_do_not_starve_clients() {
    let gateway = Gateway::start(&config_with_targets(&stdio_target("one", &[]), "")).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for i in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"P").await.unwrap();
        }
        slow.push(stream);
    }
    let dribble = async {
        for byte in b"OST /mcp HTTP/1.1\r\nHost: x\r\n".iter().take(5) {
            for stream in slow.iter_mut().step_by(2) {
                let _ = stream.write_all(&[*byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let served = async {
        let mut client = Client::connect(gateway.url("/mcp")).await;
        for _ in 0..20 {
            let reply =
                tokio::time::timeout(Duration::from_secs(2), client.request("ping", json!({})))
                    .await
                    .expect("served while 1,000 slow connections are open");
            assert_eq!(reply.status, 200);
        }
    };
    tokio::join!(dribble, served);
}

/// A `timeout` on a `host` backend bounds the proxied request: 504 past it.
#[tokio::test(flavor = "multi_thread")]
async fn host_routes_answer_504_past_their_timeout() {
    let rest = HttpFixture::start_rest().await;
    let yaml = format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: api\n      backends:\n      - host: {}\n        policies:\n          timeout: {{requestTimeout: 300ms}}\n",
        rest.url.replace("http://", "")
    );
    let gateway = Gateway::start(&yaml).await;
    let fast = reqwest::get(gateway.url("/slow?ms=10")).await.unwrap();
    assert_eq!(fast.status(), 200);
    let slow = reqwest::get(gateway.url("/slow?ms=3000")).await.unwrap();
    assert_eq!(slow.status(), 504);
    assert!(
        slow.text()
            .await
            .unwrap()
            .contains("timeout.requestTimeout")
    );
}

/// A connection that sends no request head, or sends it a byte at a time, is closed after the header
/// read timeout (10 s) instead of being held open.
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_slow_connections_are_closed() {
    let gateway = Gateway::start(&config_with_targets(&stdio_target("one", &[]), "")).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let silent = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(15), stream.read(&mut byte))
            .await
            .expect("closed within 15 s")
            .map(|n| n == 0)
            .unwrap_or(true)
    };
    let dribbling = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let started = std::time::Instant::now();
        for byte in b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nX-Slow: yes\r\n"
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "still open after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        true
    };
    let (silent_closed, slow_closed) = tokio::join!(silent, dribbling);
    assert!(silent_closed && slow_closed);
}

/// A request a target sent to the client that the client never answers expires: the target hears it
/// and the client's call ends instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn unanswered_requests_to_the_client_expire() {
    let yaml = with_limits(
        "    pendingClientRequestTimeout: 500ms\n",
        config_with_targets(&stdio_target("one", &[]), ""),
    );
    let gateway = Gateway::start(&yaml).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.send(json!({"jsonrpc": "2.0", "id": 70, "method": "tools/call",
            "params": {"name": "test_sampling", "arguments": {"prompt": "anyone?"}}})),
    )
    .await
    .expect("answered");
    let reply = read_reply(reply).await;
    assert_eq!(reply.before[0]["method"], "sampling/createMessage");
    let answer = reply.response.to_string();
    assert!(answer.contains("did not answer within 500ms"), "{answer}");
    gateway.log_with("pendingClientRequestTimeout").await;
}

/// A burst of sessions leaves free memory between live allocations, which glibc keeps; the gateway
/// gives it back to the system once it has been quiet for a second.
#[tokio::test(flavor = "multi_thread")]
async fn memory_a_burst_took_goes_back_once_the_gateway_is_quiet() {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let gateway = Gateway::start(&config_with_targets(
        &http_target("remote", &fixture.url),
        "",
    ))
    .await;
    let pid = gateway.child.id().expect("the gateway runs").to_string();
    let anonymous_kib = || portico::base::process::status_kib(&pid, "RssAnon:");
    let url = gateway.url("/mcp");
    let churn = |sessions: usize| {
        let workers = (0..8).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..sessions / 8 {
                    let client = Client::connect(url.clone()).await;
                    let session = client.session.clone().expect("a session");
                    let deleted = client
                        .http
                        .delete(&client.url)
                        .header("mcp-session-id", session)
                        .send()
                        .await
                        .expect("DELETE");
                    assert!(deleted.status().is_success(), "{}", deleted.status());
                }
            })
        });
        futures::future::join_all(workers)
    };
    churn(40).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    churn(400).await;
    let after_burst = anonymous_kib();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let later = anonymous_kib();
    assert!(
        later + 200 <= after_burst,
        "{after_burst} KiB after the burst, {later} KiB 3.5 s later"
    );
}
