//! The 2026-07-28 revision served on the same endpoint, bridged to session-based targets:
//! `server/discover`, requests without sessions carrying their context in `_meta`, the revision's
//! checks (HTTP 400 with -32602, -32020, -32022; 404 with -32601), cache hints, log levels, and a
//! target's questions to the client returned as `input_required` and answered by a retry.

mod common;

use common::*;
use serde_json::{Value, json};

const REVISION: &str = "2026-07-28";

/// A client of the revision: no session; every request carries the headers and `_meta` it requires.
struct Client26 {
    http: reqwest::Client,
    url: String,
    capabilities: Value,
    next_id: i64,
}

impl Client26 {
    fn new(url: String, capabilities: Value) -> Self {
        Self {
            http: reqwest::Client::new(),
            url,
            capabilities,
            next_id: 0,
        }
    }

    fn meta(&self) -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": REVISION,
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "portico-tests", "version": "1"},
        })
    }

    /// The request with `params` (their `_meta` completed), and the headers the revision asks for.
    fn build(&mut self, method: &str, params: Value) -> reqwest::RequestBuilder {
        self.build_with(method, params, None)
    }

    /// As [`Client26::build`], with one header's value replaced.
    fn build_with(
        &mut self,
        method: &str,
        mut params: Value,
        replaced: Option<(&str, &str)>,
    ) -> reqwest::RequestBuilder {
        let meta = params["_meta"].as_object().cloned().unwrap_or_default();
        params["_meta"] = self.meta();
        for (key, value) in meta {
            params["_meta"][key] = value;
        }
        self.next_id += 1;
        let body =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str);
        let mut headers = vec![("mcp-protocol-version", REVISION), ("mcp-method", method)];
        if let Some(name) = name {
            headers.push(("mcp-name", name));
        }
        let mut request = self.raw(&body);
        for (header, value) in headers {
            let value = match replaced {
                Some((replaced, by)) if replaced == header => by,
                _ => value,
            };
            request = request.header(header, value);
        }
        request
    }

    /// A POST of `body` with only the transport's own headers.
    fn raw(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    async fn request(&mut self, method: &str, params: Value) -> Reply {
        let response = self.build(method, params).send().await.expect("POST");
        assert!(
            response.headers().get("mcp-session-id").is_none(),
            "the revision has no sessions"
        );
        read_reply(response).await
    }

    async fn result(&mut self, method: &str, params: Value) -> Value {
        let reply = self.request(method, params).await;
        assert_eq!(reply.status, 200, "{method}: {reply:?}");
        reply
            .response
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method} failed: {}", reply.response))
    }
}

/// (HTTP status, JSON-RPC error code, id) of a refusal.
fn refusal(reply: &Reply) -> (u16, i64, Value) {
    let code = reply.response["error"]["code"].as_i64().unwrap_or_default();
    (reply.status, code, reply.response["id"].clone())
}

async fn two_stdio_targets() -> Gateway {
    let targets = stdio_target("one", &[]) + &stdio_target("two", &[]);
    Gateway::start(&config_with_targets(&targets, "")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_then_requests_without_a_session() {
    let gateway = two_stdio_targets().await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({}));

    let discovered = client.result("server/discover", json!({})).await;
    let versions = discovered["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!(REVISION)), "{discovered}");
    assert!(versions.contains(&json!("2025-11-25")), "{discovered}");
    assert_eq!(
        discovered["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "portico"
    );
    assert_eq!(discovered["resultType"], "complete");
    assert_eq!(
        discovered["capabilities"]["tools"]["listChanged"], true,
        "heard on subscriptions/listen: {discovered}"
    );
    assert!(
        discovered["capabilities"]["resources"]
            .get("subscribe")
            .is_none(),
        "resource subscriptions are not served: {discovered}"
    );

    let listed = client.result("tools/list", json!({})).await;
    let tools = names(listed["tools"].as_array().unwrap(), "name");
    assert!(tools.contains(&"one_echo".to_string()), "{tools:?}");
    assert!(tools.contains(&"two_echo".to_string()), "{tools:?}");
    assert_eq!(listed["resultType"], "complete");
    assert_eq!(listed["ttlMs"], 0);
    assert_eq!(listed["cacheScope"], "private");

    let called = client
        .result(
            "tools/call",
            json!({"name": "two_echo", "arguments": {"message": "hi"}}),
        )
        .await;
    assert_eq!(text(&called), "hi");
    assert_eq!(called["resultType"], "complete");
    assert!(called.get("ttlMs").is_none(), "a call is not cacheable");

    let read = client
        .result("resources/read", json!({"uri": "one+test://static-text"}))
        .await;
    assert_eq!(
        read["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    assert_eq!(read["cacheScope"], "private");

    // The requests of one context share the targets: two processes, started once.
    for _ in 0..3 {
        client.result("prompts/list", json!({})).await;
    }
    assert_eq!(gateway.children().len(), 2, "{}", gateway.log_text());
    assert_eq!(gateway.log_count("target connected target=one"), 1);
    // Another context (other capabilities) gets targets of its own.
    let mut other = Client26::new(gateway.url("/mcp"), json!({"sampling": {}}));
    other.result("tools/list", json!({})).await;
    assert_eq!(gateway.children().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_revisions_checks_answer_400_or_404_with_the_request_id() {
    let gateway = two_stdio_targets().await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({}));
    let echo = json!({"name": "one_echo", "arguments": {"message": "x"}});

    let no_meta = json!({"jsonrpc": "2.0", "id": 41, "method": "server/discover", "params": {}});
    let reply = read_reply(
        client
            .raw(&no_meta)
            .header("mcp-protocol-version", REVISION)
            .header("mcp-method", "server/discover")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refusal(&reply), (400, -32602, json!(41)), "{reply:?}");

    let without_capabilities = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": REVISION}}});
    let reply = read_reply(
        client
            .raw(&without_capabilities)
            .header("mcp-protocol-version", REVISION)
            .header("mcp-method", "tools/list")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refusal(&reply), (400, -32602, json!(42)), "{reply:?}");

    let mismatches = [
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-method", "tools/list"),
        ("mcp-name", "two_echo"),
    ];
    for (name, value) in mismatches {
        let request = client.build_with("tools/call", echo.clone(), Some((name, value)));
        let reply = read_reply(request.send().await.unwrap()).await;
        let id = json!(client.next_id);
        assert_eq!(refusal(&reply), (400, -32020, id), "{name}: {reply:?}");
    }
    let encoded = client.build_with(
        "tools/call",
        echo.clone(),
        Some(("mcp-name", "=?base64?b25lX2VjaG8=?=")),
    );
    let reply = read_reply(encoded.send().await.unwrap()).await;
    assert_eq!(text(&reply.response["result"]), "x", "{reply:?}");

    let future = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}});
    let request = client.build_with(
        "server/discover",
        future,
        Some(("mcp-protocol-version", "2099-01-01")),
    );
    let reply = read_reply(request.send().await.unwrap()).await;
    assert_eq!(
        refusal(&reply),
        (400, -32022, json!(client.next_id)),
        "{reply:?}"
    );
    assert_eq!(reply.response["error"]["data"]["requested"], "2099-01-01");
    assert!(
        reply.response["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(REVISION))
    );

    for removed in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "no/such/method",
    ] {
        let reply = client.request(removed, json!({})).await;
        assert_eq!(
            refusal(&reply),
            (404, -32601, json!(client.next_id)),
            "{removed}: {reply:?}"
        );
    }

    let unknown = client
        .request("resources/read", json!({"uri": "one+test://nothing-here"}))
        .await;
    assert_eq!(unknown.response["error"]["code"], -32602, "{unknown:?}");
    assert_eq!(
        unknown.response["error"]["data"]["uri"],
        "one+test://nothing-here"
    );

    let notification = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
        "requestId": 1, "_meta": client.meta()}});
    let accepted = client
        .raw(&notification)
        .header("mcp-protocol-version", REVISION)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_targets_question_to_the_client_comes_back_as_input_required() {
    let gateway = two_stdio_targets().await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({"sampling": {}}));
    let call = json!({"name": "one_test_sampling", "arguments": {"prompt": "capital of France?"}});

    let asked = client.result("tools/call", call.clone()).await;
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let questions = asked["inputRequests"].as_object().unwrap();
    assert_eq!(questions.len(), 1, "{asked}");
    let (key, question) = questions.iter().next().unwrap();
    assert_eq!(question["method"], "sampling/createMessage");
    assert_eq!(
        question["params"]["messages"][0]["content"]["text"],
        "capital of France?"
    );
    let state = asked["requestState"].as_str().unwrap().to_string();

    // A retry without the answer is asked again; a made-up state is refused.
    let mut unanswered = call.clone();
    unanswered["inputResponses"] = json!({});
    unanswered["requestState"] = json!(state);
    let again = client.result("tools/call", unanswered).await;
    assert_eq!(again["resultType"], "input_required", "{again}");
    assert_eq!(again["inputRequests"][key], *question);
    let mut forged = call.clone();
    forged["requestState"] = json!("made-up");
    let refused = client.request("tools/call", forged).await;
    assert_eq!(refused.response["error"]["code"], -32602, "{refused:?}");

    let mut answered = call.clone();
    answered["requestState"] = again["requestState"].clone();
    answered["inputResponses"] = json!({key: {
        "role": "assistant", "content": {"type": "text", "text": "Paris"},
        "model": "test-model", "stopReason": "endTurn"}});
    let done = client.result("tools/call", answered).await;
    assert_eq!(done["resultType"], "complete", "{done}");
    assert_eq!(text(&done), "LLM response: Paris");

    // A state is good for one retry.
    let mut replayed = call;
    replayed["requestState"] = again["requestState"].clone();
    let replay = client.request("tools/call", replayed).await;
    assert_eq!(replay.response["error"]["code"], -32602, "{replay:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_messages_only_at_the_level_the_request_asks_for() {
    let gateway = two_stdio_targets().await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({}));
    let call = json!({"name": "one_test_tool_with_logging", "arguments": {}});
    let quiet = client.request("tools/call", call.clone()).await;
    assert!(quiet.response["result"].is_object(), "{quiet:?}");
    assert!(
        quiet
            .before
            .iter()
            .all(|m| m["method"] != "notifications/message"),
        "{quiet:?}"
    );

    let mut verbose = call;
    verbose["_meta"] = json!({"io.modelcontextprotocol/logLevel": "info"});
    let logged = client.request("tools/call", verbose).await;
    let messages = logged
        .before
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .count();
    assert_eq!(messages, 3, "{logged:?}");

    let progress = json!({"name": "one_test_tool_with_progress", "arguments": {},
        "_meta": {"progressToken": "p1"}});
    let reply = client.request("tools/call", progress).await;
    let updates: Vec<&Value> = reply
        .before
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(updates.len(), 3, "{reply:?}");
    assert_eq!(updates[0]["params"]["progressToken"], "p1");
    assert_eq!(reply.response["result"]["resultType"], "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stateless_route_serves_the_revision_with_a_session_per_request() {
    let fixture = HttpFixture::start(&[]).await;
    let yaml = config_with_targets(
        &http_target("remote", &fixture.url),
        "          statefulMode: stateless\n",
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({}));
    let called = client
        .result(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "both"}}),
        )
        .await;
    assert_eq!(text(&called), "both");
    let discovered = client.result("server/discover", json!({})).await;
    assert!(discovered["capabilities"]["tools"].is_object());
    assert!(
        discovered["capabilities"]["tools"]
            .get("listChanged")
            .is_none(),
        "a stateless route has no subscriptions/listen: {discovered}"
    );
    let listen = client
        .request(
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        )
        .await;
    assert_eq!(refusal(&listen).0, 404, "{listen:?}");
}

/// A target of the 2026-07-28 revision only (it answers `initialize` but keeps no session and wants
/// every request's context in `_meta`): Portico discovers it and speaks the revision to it. A
/// session-based client uses it beside a session-based target, and the target's `input_required`
/// question reaches that client as a sampling request whose answer completes the call; a client of
/// the revision gets the question as `input_required` itself.
#[tokio::test(flavor = "multi_thread")]
async fn clients_of_either_kind_use_a_target_of_the_revision_only() {
    let modern = HttpFixture::start(&["--only-2026", "--name", "modern"]).await;
    let targets = http_target("modern", &modern.url) + &stdio_target("classic", &[]);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;

    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(
        tools.contains(&"modern_echo".to_string()) && tools.contains(&"classic_echo".to_string()),
        "{tools:?}"
    );
    let echoed = client.call("modern_echo", json!({"message": "hi"})).await;
    assert_eq!(text(&echoed), "hi");
    let read = client
        .request(
            "resources/read",
            json!({"uri": "modern+test://static-text"}),
        )
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    let answer = json!({"role": "assistant", "content": {"type": "text", "text": "Paris"},
        "model": "m", "stopReason": "endTurn"});
    let (asked, done) = call_answering(
        &client,
        "modern_test_sampling",
        json!({"prompt": "capital?"}),
        answer.clone(),
    )
    .await;
    assert_eq!(asked["method"], "sampling/createMessage");
    assert_eq!(
        asked["params"]["messages"][0]["content"]["text"],
        "capital?"
    );
    assert_eq!(text(&done["result"]), "LLM response: Paris", "{done}");

    let mut client = Client26::new(gateway.url("/mcp"), json!({"sampling": {}}));
    let call = json!({"name": "modern_test_sampling", "arguments": {"prompt": "capital?"}});
    let asked = client.result("tools/call", call.clone()).await;
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    let (key, _) = asked["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let mut answered = call;
    answered["inputResponses"] = json!({ key.clone(): answer });
    answered["requestState"] = asked["requestState"].clone();
    let done = client.result("tools/call", answered).await;
    assert_eq!(text(&done), "LLM response: Paris", "{done}");
}

/// `subscriptions/listen`: the acknowledgement first (what is served), then the list changes asked
/// for, from any of the context's targets, tagged with the subscription's id; changes not asked for
/// are not sent. `server/discover` offers list changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_listen_stream_hears_the_list_changes_it_asked_for() {
    let targets =
        stdio_target("quiet", &[]) + &stdio_target("changing", &["--list-changed-after", "300"]);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({}));
    let discovered = client.result("server/discover", json!({})).await;
    assert_eq!(discovered["capabilities"]["tools"]["listChanged"], true);

    let read_for = |mut stream: reqwest::Response, window: std::time::Duration| async move {
        let mut seen = String::new();
        let _ = tokio::time::timeout(window, async {
            while let Ok(Some(chunk)) = stream.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains("notifications/tools/list_changed") {
                    return;
                }
            }
        })
        .await;
        seen
    };
    let listen = |filter: Value| {
        let mut client = Client26::new(gateway.url("/mcp"), json!({"roots": {}}));
        async move {
            if filter["promptsListChanged"] == true {
                // Another context: targets (and their list change) of its own.
                client.capabilities = json!({"elicitation": {}});
            }
            let id = client.next_id + 1;
            let stream = client
                .build("subscriptions/listen", json!({"notifications": filter}))
                .send()
                .await
                .unwrap();
            assert_eq!(stream.status(), 200);
            (id, stream)
        }
    };
    let (id, stream) =
        listen(json!({"toolsListChanged": true, "resourceSubscriptions": ["x"]})).await;
    let seen = read_for(stream, std::time::Duration::from_secs(10)).await;
    let ack = seen
        .find("notifications/subscriptions/acknowledged")
        .expect(&seen);
    let change = seen.find("notifications/tools/list_changed").expect(&seen);
    assert!(ack < change, "{seen}");
    assert!(
        seen.contains(&format!("\"io.modelcontextprotocol/subscriptionId\":{id}")),
        "{seen}"
    );
    assert!(
        !seen.contains("resourceSubscriptions"),
        "resource subscriptions are not acknowledged: {seen}"
    );

    let (_, stream) = listen(json!({"promptsListChanged": true})).await;
    let seen = read_for(stream, std::time::Duration::from_millis(1500)).await;
    assert!(
        seen.contains("notifications/subscriptions/acknowledged"),
        "{seen}"
    );
    assert!(!seen.contains("notifications/tools/list_changed"), "{seen}");
}

/// A parked call waits `config.limits.pendingClientRequestTimeout` for the client's retry; after it,
/// the `requestState` is unknown.
#[tokio::test(flavor = "multi_thread")]
async fn a_parked_call_expires_with_the_pending_request_timeout() {
    let yaml = config_with_targets(&stdio_target("one", &[]), "")
        + "config:\n  limits:\n    pendingClientRequestTimeout: 300ms\n";
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client26::new(gateway.url("/mcp"), json!({"sampling": {}}));
    let call = json!({"name": "test_sampling", "arguments": {"prompt": "late"}});
    let asked = client.result("tools/call", call.clone()).await;
    assert_eq!(asked["resultType"], "input_required", "{asked}");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let key = asked["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut late = call;
    late["requestState"] = asked["requestState"].clone();
    late["inputResponses"] = json!({key: {"role": "assistant",
        "content": {"type": "text", "text": "too late"}, "model": "m", "stopReason": "endTurn"}});
    let refused = client.request("tools/call", late).await;
    assert_eq!(refused.response["error"]["code"], -32602, "{refused:?}");
}

/// A target of the revision that keeps asking: Portico puts its questions to the client for 10
/// rounds, then fails the call instead of looping.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_keeps_asking_is_given_up_on_after_ten_rounds() {
    let modern = HttpFixture::start(&["--only-2026"]).await;
    let targets = http_target("modern", &modern.url) + &stdio_target("classic", &[]);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let (asked, done) = call_answering(
        &client,
        "modern_ask_forever",
        json!({}),
        json!({"roots": []}),
    )
    .await;
    assert_eq!(asked["method"], "roots/list");
    assert_eq!(done["error"]["code"], -32603, "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asked for input more than 10 times"),
        "{done}"
    );
}
