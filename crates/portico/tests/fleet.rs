//! Scale-out: session ids that seal the session's state, so every replica with the same
//! `config.session.key` serves every session (issue #12).

mod common;

use common::*;
use serde_json::json;

const KEY: &str = "4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a09f8e";
const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Two HTTP fixture targets (`b` pages its lists by 4) and an optional stdio one, on `/mcp`.
fn fleet_config(b: &str, c: &str, stdio: bool, session: &str) -> String {
    let mut targets = http_target("b", b) + &http_target("c", c);
    if stdio {
        targets += &stdio_target("s", &[]);
    }
    format!(
        "config:\n  adminAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  readinessAddr: 127.0.0.1:0\n{session}{}",
        config_with_targets(&targets, "")
    )
}

fn keyed(key: &str) -> String {
    format!("  session:\n    key: \"{key}\"\n")
}

async fn fixtures() -> (HttpFixture, HttpFixture) {
    let b = HttpFixture::start(&["--name", "b", "--page-size", "4"]).await;
    let c = HttpFixture::start(&["--name", "c"]).await;
    (b, c)
}

/// The same session, as a client of another replica.
fn on(gateway: &Gateway, session: &Client) -> Client {
    let mut client = Client::new(gateway.url("/mcp"));
    client.session = session.session.clone();
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_moves_between_replicas_that_share_the_key() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, &keyed(KEY));
    let replicas = [
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
    ];
    assert!(
        replicas[0]
            .log_with("sessions are portable")
            .await
            .contains("config.session.key")
    );
    let first = Client::connect(replicas[0].url("/mcp")).await;
    let mut clients: Vec<Client> = replicas.iter().map(|r| on(r, &first)).collect();

    // Every page of the list from a different replica than the one before.
    let (mut tools, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let reply = clients[pages % 3].request("tools/list", params).await;
        assert_eq!(reply.status, 200, "{:?}", reply.response);
        let result = &reply.response["result"];
        tools.extend(result["tools"].as_array().cloned().unwrap_or_default());
        pages += 1;
        cursor = result["nextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert!(pages > 3, "b pages its tools by 4: {pages} pages");
    let names = names(&tools, "name");
    assert!(names.contains(&"b_echo".to_string()) && names.contains(&"c_echo".to_string()));

    assert_eq!(
        text(
            &clients[1]
                .call("b_echo", json!({"message": "on two"}))
                .await
        ),
        "on two"
    );
    assert_eq!(
        text(
            &clients[2]
                .call("c_echo", json!({"message": "on three"}))
                .await
        ),
        "on three"
    );
    let prompt = clients[1]
        .request(
            "prompts/get",
            json!({"name": "c_test_prompt_with_arguments", "arguments": {"arg1": "x", "arg2": "y"}}),
        )
        .await;
    assert_eq!(
        prompt.response["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='x', arg2='y'"
    );
    let read = clients[2]
        .request("resources/read", json!({"uri": "b+test://static-text"}))
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["text"],
        "This is the content of the static text resource.",
        "{:?}",
        read.response
    );

    // Sampling: the target asks on replica one's stream; the answer is POSTed to replica two.
    let (asked, result) = call_answering_on(
        &clients[0],
        &clients[1],
        "b_test_sampling",
        json!({"prompt": "across"}),
        json!({"role": "assistant", "content": {"type": "text", "text": "answered on two"}, "model": "m"}),
    )
    .await;
    assert_eq!(asked["method"], "sampling/createMessage");
    assert_eq!(
        text(&result["result"]),
        "LLM response: answered on two",
        "{result}"
    );

    // The HTTP targets were not initialized again on the replicas that resumed the session.
    for replica in &replicas[1..] {
        assert!(replica.log_count("session resumed from its id") >= 1);
        assert_eq!(
            replica.log_count("target connected"),
            0,
            "{}",
            replica.log_text()
        );
    }

    // DELETE on replica three ends it there (and at the targets).
    let deleted = clients[2]
        .http
        .delete(clients[2].url.clone())
        .header("mcp-session-id", first.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let after = clients[2].request("ping", json!({})).await;
    assert_eq!(after.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_targets_start_afresh_on_the_replica_that_resumes() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, true, &keyed(KEY));
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let first = Client::connect(one.url("/mcp")).await;
    let mut second = on(&two, &first);
    assert_eq!(
        text(&second.call("s_echo", json!({"message": "fresh"})).await),
        "fresh"
    );
    assert_eq!(two.children().len(), 1, "one stdio process on replica two");
    assert_eq!(
        text(&second.call("b_echo", json!({"message": "kept"})).await),
        "kept"
    );
}

/// A session id is refused (404, as an unknown session) by a replica with another key, when changed
/// by one bit, on another route, and once its lifetime is over; a rotated key still opens it.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_tampered_other_route_and_expired_ids_are_unknown_sessions() {
    let (b, c) = fixtures().await;
    let short = format!("  session:\n    key: \"{KEY}\"\n    lifetime: 3s\n");
    let yaml = fleet_config(&b.url, &c.url, false, &short);
    let maker = Gateway::start(&yaml).await;
    let first = Client::connect(maker.url("/mcp")).await;
    let id = first.session.clone().unwrap();

    let foreign = Gateway::start(&fleet_config(&b.url, &c.url, false, &keyed(OTHER_KEY))).await;
    assert_eq!(
        on(&foreign, &first).request("ping", json!({})).await.status,
        404
    );

    let rotated = format!("  session:\n    key: \"{OTHER_KEY}\"\n    previousKeys: [\"{KEY}\"]\n");
    let rotated = Gateway::start(&fleet_config(&b.url, &c.url, false, &rotated)).await;
    let mut after_rotation = on(&rotated, &first);
    assert_eq!(
        text(
            &after_rotation
                .call("b_echo", json!({"message": "rotated"}))
                .await
        ),
        "rotated"
    );

    let mut tampered = on(&maker, &first);
    let mut bytes = id.clone().into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    tampered.session = Some(String::from_utf8(bytes).unwrap());
    let fresh = Gateway::start(&yaml).await;
    let mut tampered_elsewhere = on(&fresh, &tampered);
    assert_eq!(
        tampered_elsewhere.request("ping", json!({})).await.status,
        404
    );

    let two_routes = yaml.replace(
        "    - name: test\n      matches:\n      - path: {pathPrefix: /mcp}\n",
        "    - name: other\n      matches:\n      - path: {pathPrefix: /mcp}\n",
    );
    assert_ne!(two_routes, yaml);
    let other_route = Gateway::start(&two_routes).await;
    assert_eq!(
        on(&other_route, &first)
            .request("ping", json!({}))
            .await
            .status,
        404
    );

    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let late = Gateway::start(&yaml).await;
    assert_eq!(
        on(&late, &first).request("ping", json!({})).await.status,
        404
    );
    // The replica that holds it keeps serving it (idle expiry is per process).
    assert_eq!(
        on(&maker, &first).request("ping", json!({})).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_sessions_stay_in_their_process_and_the_log_says_so() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, "");
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let line = one.log_with("sessions are not portable").await;
    assert!(line.contains("PORTICO_SESSION_KEY"), "{line}");
    let first = Client::connect(one.url("/mcp")).await;
    assert_eq!(
        on(&two, &first).request("ping", json!({})).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_can_come_from_the_environment() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, "");
    let env = [("PORTICO_SESSION_KEY", KEY)];
    let one = Gateway::start_with_env(&yaml, &env).await;
    let two = Gateway::start_with_env(&yaml, &env).await;
    let first = Client::connect(one.url("/mcp")).await;
    assert_eq!(
        on(&two, &first).request("ping", json!({})).await.status,
        200
    );
}

#[test]
fn a_malformed_key_is_a_config_error() {
    let yaml = fleet_config(
        "http://127.0.0.1:9/mcp",
        "http://127.0.0.1:9/mcp",
        false,
        "  session:\n    key: \"abc\"\n    previousKeys: [\"zz\"]\n",
    );
    let error = validate_failure(&yaml);
    assert!(error.contains("config.session.key"), "{error}");
    assert!(error.contains("64 hex characters"), "{error}");
    assert!(error.contains("config.session.previousKeys[0]"), "{error}");
    assert!(error.contains("openssl rand -hex 32"), "{error}");
}
