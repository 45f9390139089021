//! A client → Portico → fixture targets over stdio and Streamable HTTP: naming, routing, pagination,
//! server-to-client requests, progress, cancellation, failures.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

async fn stdio_and_http() -> (Gateway, HttpFixture) {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let targets = format!(
        "{}{}",
        stdio_target("local", &[]),
        http_target("remote", &fixture.url)
    );
    (
        Gateway::start(&config_with_targets(&targets, "")).await,
        fixture,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_both_targets_prefixed_and_routes_calls() {
    let (gateway, _fixture) = stdio_and_http().await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(tools.contains(&"local_echo".to_string()), "{tools:?}");
    assert!(tools.contains(&"remote_echo".to_string()), "{tools:?}");
    // Config order: every local tool comes before every remote one.
    let first_remote = tools.iter().position(|t| t.starts_with("remote_")).unwrap();
    assert!(
        tools[..first_remote]
            .iter()
            .all(|t| t.starts_with("local_"))
    );
    assert!(
        tools[first_remote..]
            .iter()
            .all(|t| t.starts_with("remote_"))
    );

    assert_eq!(text(&client.call("local_whoami", json!({})).await), "local");
    assert_eq!(
        text(&client.call("remote_whoami", json!({})).await),
        "remote"
    );
    assert_eq!(
        text(&client.call("remote_echo", json!({"message": "hi"})).await),
        "hi"
    );

    let (resources, _) = client.list_all("resources/list", "resources").await;
    assert!(names(&resources, "uri").contains(&"remote+test://static-text".to_string()));
    let read = client
        .request(
            "resources/read",
            json!({"uri": "remote+test://static-text"}),
        )
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["uri"],
        "remote+test://static-text"
    );
    assert_eq!(
        read.response["result"]["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    let (templates, _) = client
        .list_all("resources/templates/list", "resourceTemplates")
        .await;
    assert!(
        names(&templates, "uriTemplate").contains(&"local+test://template/{id}/data".to_string())
    );

    let prompt = client
        .request("prompts/get", json!({"name": "local_test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}))
        .await;
    assert_eq!(
        prompt.response["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='a', arg2='b'"
    );
    let completion = client
        .request(
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "remote_test_prompt_with_arguments"},
            "argument": {"name": "arg1", "value": "par"}}),
        )
        .await;
    assert_eq!(
        completion.response["result"]["completion"]["values"],
        json!(["paris", "park", "party"])
    );
    for method in ["ping", "logging/setLevel"] {
        let params = if method == "ping" {
            json!({})
        } else {
            json!({"level": "info"})
        };
        assert_eq!(
            client.request(method, params).await.response["result"],
            json!({}),
            "{method}"
        );
    }
    let subscribe = client
        .request(
            "resources/subscribe",
            json!({"uri": "local+test://watched-resource"}),
        )
        .await;
    assert_eq!(subscribe.response["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_names_and_methods() {
    let (gateway, _fixture) = stdio_and_http().await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    for name in ["nosuch_echo", "local_nosuch", "echo"] {
        let reply = client
            .request("tools/call", json!({"name": name, "arguments": {}}))
            .await;
        assert_eq!(
            reply.response["error"]["code"], -32602,
            "{name}: {}",
            reply.response
        );
    }
    let reply = client
        .request(
            "tools/call",
            json!({"name": "nosuch_echo", "arguments": {}}),
        )
        .await;
    assert_eq!(
        reply.response["error"]["message"],
        "Unknown tool: nosuch_echo"
    );
    let reply = client.request("vendor/custom", json!({})).await;
    assert_eq!(reply.response["error"]["code"], -32601);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_of_every_target_is_reachable() {
    let fixture =
        HttpFixture::start(&["--name", "b", "--page-size", "4", "--extra-tools", "9"]).await;
    let targets = format!(
        "{}{}",
        stdio_target("a", &["--page-size", "3", "--extra-tools", "5"]),
        http_target("b", &fixture.url)
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, pages) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    // The fixture has 20 built-in tools: a has 20 + 5 in pages of 3, b has 20 + 9 in pages of 4.
    assert_eq!(tools.iter().filter(|t| t.starts_with("a_")).count(), 25);
    assert_eq!(tools.iter().filter(|t| t.starts_with("b_")).count(), 29);
    assert_eq!(
        pages, 9,
        "a needs 9 pages, b 8; they are fetched side by side"
    );
    let unique: std::collections::HashSet<_> = tools.iter().collect();
    assert_eq!(unique.len(), tools.len(), "no tool is listed twice");
    assert!(tools.contains(&"a_tool_4".to_string()) && tools.contains(&"b_tool_8".to_string()));
    let bad = client
        .request("tools/list", json!({"cursor": "garbage"}))
        .await;
    assert_eq!(bad.response["error"]["code"], -32602);
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_reaches_the_callers_stream() {
    let (gateway, _fixture) = stdio_and_http().await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    for target in ["local", "remote"] {
        let reply = client
            .request(
                "tools/call",
                json!({"name": format!("{target}_test_tool_with_progress"), "arguments": {},
                "_meta": {"progressToken": format!("tok-{target}")}}),
            )
            .await;
        let progress: Vec<_> = reply
            .before
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .map(|m| {
                (
                    m["params"]["progressToken"].clone(),
                    m["params"]["progress"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(progress.len(), 3, "{target}: {:?}", reply.before);
        assert!(
            progress
                .iter()
                .all(|(token, _)| *token == json!(format!("tok-{target}")))
        );
        assert_eq!(
            progress.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            [0.0, 50.0, 100.0]
        );
        assert_eq!(text(&reply.response["result"]), "Progress completed");
    }
    let logged = client
        .request(
            "tools/call",
            json!({"name": "local_test_tool_with_logging", "arguments": {}}),
        )
        .await;
    let messages: Vec<_> = logged
        .before
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .collect();
    assert_eq!(messages.len(), 3, "{:?}", logged.before);
    assert_eq!(messages[0]["params"]["data"], "Tool execution started");
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_and_elicitation_round_trip_through_two_targets() {
    let (gateway, _fixture) = stdio_and_http().await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let mut seen_ids = Vec::new();
    for target in ["local", "remote"] {
        let sampled = json!({"role": "assistant", "content": {"type": "text", "text": format!("from {target}")},
            "model": "test-model", "stopReason": "endTurn"});
        let (asked, result) = call_answering(
            &client,
            &format!("{target}_test_sampling"),
            json!({"prompt": "hello"}),
            sampled,
        )
        .await;
        assert_eq!(asked["method"], "sampling/createMessage");
        assert_eq!(asked["params"]["maxTokens"], 100);
        assert_eq!(
            result["result"]["content"][0]["text"],
            format!("LLM response: from {target}")
        );
        seen_ids.push(asked["id"].clone());

        let accepted =
            json!({"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}});
        let (asked, result) = call_answering(
            &client,
            &format!("{target}_test_elicitation"),
            json!({"message": "who?"}),
            accepted,
        )
        .await;
        assert_eq!(asked["method"], "elicitation/create");
        let text = result["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("ada@example.com"), "{text}");
        seen_ids.push(asked["id"].clone());
    }
    let unique: std::collections::HashSet<String> =
        seen_ids.iter().map(|id| id.to_string()).collect();
    assert_eq!(
        unique.len(),
        4,
        "server-to-client request ids are unique in the session: {seen_ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancellation_reaches_only_the_owner() {
    let (gateway, _fixture) = stdio_and_http().await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let started = Instant::now();
    let call = |id: i64, tool: &str, ms: u64| {
        client.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"ms": ms}}}))
    };
    // Both targets number their requests alike; only the owner may see the cancellation.
    let owner = call(10, "local_sleep", 10_000);
    let sibling = call(11, "remote_sleep", 1_500);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = client
            .send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 10}}))
            .await;
        assert_eq!(reply.status(), 202);
    };
    let (owner, sibling, ()) = tokio::join!(owner, sibling, cancel);
    let owner = read_reply(owner).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cancelled call ended early"
    );
    assert!(
        owner.response.get("error").is_some(),
        "{:?}",
        owner.response
    );
    let sibling = read_reply(sibling).await;
    assert_eq!(
        text(&sibling.response["result"]),
        "slept 1500 ms",
        "{:?}",
        sibling.response
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_target_leaves_the_other_serving_and_comes_back() {
    let (gateway, _fixture) = stdio_and_http().await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let mut get = client.open_stream().await;

    let crashed = client
        .request(
            "tools/call",
            json!({"name": "local_crash", "arguments": {}}),
        )
        .await;
    assert_eq!(
        crashed.response["error"]["code"], -32603,
        "{}",
        crashed.response
    );
    assert!(
        crashed.response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local")
    );
    assert_eq!(
        text(
            &client
                .call("remote_echo", json!({"message": "still here"}))
                .await
        ),
        "still here"
    );

    // The dead process is restarted for the session; the GET stream hears that the lists changed.
    read_until(
        &mut get,
        "notifications/tools/list_changed",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        text(&client.call("local_echo", json!({"message": "back"})).await),
        "back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_leaves_out_a_broken_target() {
    let targets = format!(
        "{}          - name: broken\n            stdio:\n              cmd: /nonexistent/mcp-server\n",
        stdio_target("good", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(
        tools.iter().all(|t| t.starts_with("good_")) && !tools.is_empty(),
        "{tools:?}"
    );
    let reply = client
        .request(
            "tools/call",
            json!({"name": "broken_echo", "arguments": {}}),
        )
        .await;
    assert_eq!(reply.response["error"]["code"], -32603);
    assert_eq!(
        reply.response["error"]["message"],
        "target broken unavailable"
    );
    gateway.log_with("target unavailable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_refuses_the_session() {
    let targets = format!(
        "{}          - name: broken\n            stdio:\n              cmd: /nonexistent/mcp-server\n",
        stdio_target("good", &[])
    );
    let gateway = Gateway::start(&config_with_targets(
        &targets,
        "          failureMode: failClosed\n",
    ))
    .await;
    let client = Client::new(gateway.url("/mcp"));
    let reply = client
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .await;
    assert!(reply.headers().get("mcp-session-id").is_none());
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32603);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("target broken unavailable"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_modes() {
    // never: bare names; a name two targets serve is hidden, unique ones route to their owner.
    let targets = format!(
        "{}{}",
        stdio_target("a", &["--extra-tools", "2"]),
        stdio_target("b", &[])
    );
    let gateway = Gateway::start(&config_with_targets(
        &targets,
        "          prefixMode: never\n",
    ))
    .await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert_eq!(names(&tools, "name"), ["tool_0", "tool_1"]);
    assert_eq!(
        text(&client.call("tool_1", json!({"message": "x"})).await),
        "tool_1: x"
    );
    let ambiguous = client
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(ambiguous.response["error"]["code"], -32602);

    // always: even one target is prefixed; conditional (default) with one target is not.
    let one = stdio_target("solo", &[]);
    let always = Gateway::start(&config_with_targets(&one, "          prefixMode: always\n")).await;
    let mut client = Client::connect(always.url("/mcp")).await;
    assert_eq!(text(&client.call("solo_whoami", json!({})).await), "solo");
    let conditional = Gateway::start(&config_with_targets(&one, "")).await;
    let mut client = Client::connect(conditional.url("/mcp")).await;
    assert_eq!(text(&client.call("whoami", json!({})).await), "solo");
    // With one target, methods Portico does not know are forwarded to it.
    let reply = client.request("vendor/custom", json!({})).await;
    assert_eq!(
        reply.response["error"]["code"], -32601,
        "the fixture itself does not know it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_pass_through_unchanged() {
    let (gateway, _fixture) = stdio_and_http().await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tool = tools
        .iter()
        .find(|t| t["name"] == "remote_json_schema_2020_12_tool")
        .unwrap();
    let schema = &tool["inputSchema"];
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["properties"]["address"]["$ref"], "#/$defs/address");
    assert_eq!(schema["additionalProperties"], false);
    let keys: Vec<_> = schema.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "$schema",
            "type",
            "$defs",
            "properties",
            "additionalProperties"
        ],
        "key order is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_environment_and_stderr() {
    let targets = format!(
        "          - name: env\n            stdio:\n              cmd: sh\n              args: [\"-c\", \"echo starting up >&2; exec '{EXE}' fixture\"]\n              env: {{GREETING: hello, PATH: /usr/bin:/bin}}\n              clearEnv: true\n"
    );
    let gateway = Gateway::start_with_env(
        &config_with_targets(&targets, ""),
        &[("SECRET_OF_GATEWAY", "s3cret")],
    )
    .await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(
        text(&client.call("get_env", json!({"name": "GREETING"})).await),
        "hello"
    );
    assert_eq!(
        text(
            &client
                .call("get_env", json!({"name": "SECRET_OF_GATEWAY"}))
                .await
        ),
        "",
        "clearEnv drops the rest"
    );
    let log = gateway.log_with("portico::stderr").await;
    let stderr_line = log
        .lines()
        .find(|l| l.contains("portico::stderr"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        stderr_line.contains("starting up") && stderr_line.contains("target=env"),
        "{stderr_line}"
    );
}

/// A message an HTTP target sends outside any request (on its own GET stream) reaches the client's GET
/// stream: Portico opens the target's stream when the client opens its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_targets_unprompted_message_reaches_the_clients_get_stream() {
    let fixture = HttpFixture::start(&["--name", "remote", "--list-changed-after", "700"]).await;
    let gateway = Gateway::start(&config_with_targets(
        &http_target("remote", &fixture.url),
        "",
    ))
    .await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let mut get = client.open_stream().await;
    read_until(
        &mut get,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await;
}

/// Several targets behind one session: `resources/subscribe` reaches the target the URI names and each
/// target's `notifications/resources/updated` reaches the client's GET stream with the URI as the
/// client knows it; `logging/setLevel` reaches every target; a list change of any target reaches the
/// client.
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_log_levels_and_list_changes_across_targets() {
    let targets = stdio_target("a", &[]) + &stdio_target("b", &["--list-changed-after", "500"]);
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let mut get = client.open_stream().await;
    for target in ["b", "a"] {
        let uri = format!("{target}+test://watched-resource");
        let subscribed = client
            .request("resources/subscribe", json!({"uri": uri}))
            .await;
        assert_eq!(subscribed.response["result"], json!({}), "{subscribed:?}");
        let seen = read_until(&mut get, &uri, Duration::from_secs(10)).await;
        assert!(seen.contains("notifications/resources/updated"), "{seen}");
    }
    let seen = read_until(
        &mut get,
        "notifications/tools/list_changed",
        Duration::from_secs(10),
    )
    .await;
    assert!(!seen.is_empty());

    let logged = |reply: &Reply| {
        reply
            .before
            .iter()
            .filter(|m| m["method"] == "notifications/message")
            .count()
    };
    for (level, expected) in [("warning", 0), ("info", 3)] {
        let set = client
            .request("logging/setLevel", json!({"level": level}))
            .await;
        assert_eq!(set.response["result"], json!({}));
        for target in ["a", "b"] {
            let reply = client
                .request(
                    "tools/call",
                    json!({"name": format!("{target}_test_tool_with_logging"), "arguments": {}}),
                )
                .await;
            assert_eq!(logged(&reply), expected, "{target} at {level}: {reply:?}");
        }
    }
}

/// A call reaches the target as the client wrote it: the gateway replaces the id and the tool's name
/// and nothing else (field order, fields it does not know, number formats, escapes are kept).
#[tokio::test(flavor = "multi_thread")]
async fn a_call_reaches_the_target_as_the_client_wrote_it() {
    let received = temp_file("received.jsonl", "");
    let recorder = format!(
        "tee '{}' | '{EXE}' fixture --name local",
        received.display()
    );
    let target = format!(
        "          - name: local\n            stdio:\n              cmd: sh\n              args: [\"-c\", \"{recorder}\"]\n{}",
        stdio_target("other", &[])
    );
    let gateway = Gateway::start(&config_with_targets(&target, "")).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let sent = r#"{"params":{"arguments":{"message":"h\u00e9llo \"you\"","n":1.50,"big":1E3},"name":"local_echo","x-extension":{"kept":[true,null]}},"method":"tools/call","jsonrpc":"2.0","id":"call-1"}"#;

    let reply = read_reply(client.post().body(sent).send().await.expect("POST")).await;
    assert_eq!(reply.response["id"], "call-1", "{:?}", reply.response);
    assert_eq!(
        reply.response["result"]["content"][0]["text"], "héllo \"you\"",
        "{:?}",
        reply.response
    );

    let lines = std::fs::read_to_string(&received).expect("the target's input");
    let line = lines
        .lines()
        .find(|line| line.contains("x-extension"))
        .unwrap_or_else(|| panic!("the call is not in what the target read: {lines}"));
    let id = serde_json::from_str::<serde_json::Value>(line).expect("JSON")["id"].clone();
    assert!(id.is_u64(), "the gateway's own id: {line}");
    let expected = sent
        .replace(r#""local_echo""#, r#""echo""#)
        .replace(r#""id":"call-1""#, &format!(r#""id":{id}"#));
    assert_eq!(line, expected);
}

/// The gateway's minor page faults so far (`/proc/<pid>/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let after_name = stat.rsplit_once(')').expect("a stat line").1;
    after_name
        .split_whitespace()
        .nth(7)
        .expect("minflt")
        .parse()
        .expect("a number")
}

/// A merged list takes a few hundred KiB for a moment. The heap keeps that much free memory for the
/// next list instead of giving it back and faulting it in again (2 `brk` calls and 8–9 page faults
/// per list when glibc trimmed at 128 KiB).
#[tokio::test(flavor = "multi_thread")]
async fn lists_reuse_the_memory_the_last_one_freed() {
    let mut fixtures = Vec::new();
    let mut targets = String::new();
    for i in 0..10 {
        let name = format!("t{i}");
        let fixture = HttpFixture::start(&["--name", &name, "--extra-tools", "30"]).await;
        targets.push_str(&http_target(&name, &fixture.url));
        fixtures.push(fixture);
    }
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let pid = gateway.child.id().expect("the gateway runs");
    let mut client = Client::connect(gateway.url("/mcp")).await;
    for _ in 0..10 {
        let (tools, _) = client.list_all("tools/list", "tools").await;
        assert_eq!(tools.len(), 500);
    }

    let before = minor_faults(pid);
    let lists = 40;
    for _ in 0..lists {
        client.list_all("tools/list", "tools").await;
    }
    let per_list = (minor_faults(pid) - before) as f64 / lists as f64;
    assert!(per_list < 2.0, "{per_list:.1} page faults per list");
}
