//! The `ai` and `a2a` policies on MCP traffic, with the fixture as targets: prompt guards on requests
//! and responses (deny and mask, builtins, evasion attempts), sampling defaults/overrides/aliases, and
//! the `a2a` label in the access log.

mod common;

use common::*;
use serde_json::{Value, json};

fn with_policy(target: String, policy: &str) -> String {
    format!("{target}            policies:\n{policy}")
}

/// The seed's guard: deny `.*password.*` and `.*secret.*` on requests.
const SEED_GUARD: &str = "              ai:\n                promptGuard:\n                  - regex:\n                      deny:\n                        - pattern: \".*password.*\"\n                        - pattern: \".*secret.*\"\n";

async fn error_of(client: &mut Client, method: &str, params: Value) -> Value {
    let reply = client.request(method, params).await;
    reply.response["error"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_guard_stops_text_for_one_target_only() {
    let targets = [
        with_policy(stdio_target("production-llm", &[]), SEED_GUARD),
        stdio_target("sandbox-llm", &[]),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let refused = error_of(
        &mut client,
        "tools/call",
        json!({"name": "production-llm_echo", "arguments": {"message": "my password is hunter2"}}),
    )
    .await;
    assert_eq!(refused["code"], -32001, "{refused}");
    assert_eq!(refused["message"], "Request blocked by prompt guard");
    let echoed = client
        .call(
            "sandbox-llm_echo",
            json!({"message": "my password is hunter2"}),
        )
        .await;
    assert_eq!(text(&echoed), "my password is hunter2");

    // Evasions: a JSON escape (`\u0077` is `w`), a nested argument, an array element.
    let escaped = r#"{"jsonrpc":"2.0","id":901,"method":"tools/call","params":{"name":"production-llm_echo","arguments":{"message":"pass\u0077ord"}}}"#;
    let reply = read_reply(client.post().body(escaped).send().await.unwrap()).await;
    assert_eq!(
        reply.response["error"]["code"], -32001,
        "{}",
        reply.response
    );
    for arguments in [
        json!({"message": "fine", "options": {"deep": {"deeper": "top secret"}}}),
        json!({"message": "fine", "tags": ["a", ["b", "SECRET", "my secret"]]}),
    ] {
        let refused = error_of(
            &mut client,
            "tools/call",
            json!({"name": "production-llm_echo", "arguments": arguments}),
        )
        .await;
        assert_eq!(refused["code"], -32001, "{arguments}: {refused}");
    }
    // Prompt and completion arguments are guarded too.
    let prompt = error_of(
        &mut client,
        "prompts/get",
        json!({"name": "production-llm_test_prompt_with_arguments", "arguments": {"arg1": "a secret", "arg2": "b"}}),
    )
    .await;
    assert_eq!(prompt["code"], -32001);
    let completion = error_of(
        &mut client,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "production-llm_test_prompt_with_arguments"},
               "argument": {"name": "arg1", "value": "password"}}),
    )
    .await;
    assert_eq!(completion["code"], -32001);
    assert_eq!(
        text(
            &client
                .call("production-llm_echo", json!({"message": "all good"}))
                .await
        ),
        "all good",
        "the session goes on"
    );

    gateway.log_with("guard=\"request[0].deny[0]\"").await;
    let log = gateway.log_with("guard=\"request[0].deny[1]\"").await;
    assert!(
        !log.contains("hunter2") && !log.contains("top secret"),
        "never the matched text"
    );
}

const MASK_BUILTINS: &str = "              ai:\n                promptGuard:\n                  response:\n                    - regex:\n                        mask:\n                          - builtin: email\n                          - builtin: phoneNumber\n                          - builtin: ssn\n                          - builtin: creditCard\n                          - pattern: \"content of\"\n                    - regex:\n                        deny:\n                          - pattern: \"forbidden-word\"\n                      rejection:\n                        message: \"This answer was withheld\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn response_guards_mask_and_deny_results_prompts_and_resources() {
    let targets = [
        with_policy(stdio_target("guarded", &[]), MASK_BUILTINS),
        stdio_target("open", &[]),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let pii =
        "mail ada@example.com, call (415) 555-0134, ssn 123-45-6789, card 4111-1111-1111-1111";

    let masked = client.call("guarded_echo", json!({"message": pii})).await;
    assert_eq!(
        text(&masked),
        "mail <masked>, call <masked>, ssn <masked>, card <masked>"
    );
    assert_eq!(
        text(&client.call("open_echo", json!({"message": pii})).await),
        pii
    );

    let prompt = client
        .request(
            "prompts/get",
            json!({"name": "guarded_test_prompt_with_arguments", "arguments": {"arg1": "ada@example.com", "arg2": "123-45-6789"}}),
        )
        .await;
    assert_eq!(
        prompt.response["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='<masked>', arg2='<masked>'"
    );
    let resource = client
        .request(
            "resources/read",
            json!({"uri": "guarded+test://static-text"}),
        )
        .await;
    let contents = &resource.response["result"]["contents"][0];
    assert_eq!(
        contents["text"],
        "This is the <masked> the static text resource."
    );
    assert_eq!(
        contents["uri"], "guarded+test://static-text",
        "only text is guarded, not the protocol's fields"
    );

    let templated = client
        .request(
            "resources/read",
            json!({"uri": "guarded+test://template/4111111111111111,+14155550134/data"}),
        )
        .await;
    let contents = &templated.response["result"]["contents"][0];
    let data = contents["text"].as_str().unwrap();
    assert!(
        !data.contains("4111111111111111") && !data.contains("+14155550134"),
        "{data}"
    );
    assert!(data.contains("Data for ID: <masked>,<masked>"), "{data}");
    assert_eq!(
        contents["uri"], "guarded+test://template/4111111111111111,+14155550134/data",
        "the URI is the protocol's, not text"
    );

    let withheld = error_of(
        &mut client,
        "tools/call",
        json!({"name": "guarded_echo", "arguments": {"message": "the forbidden-word"}}),
    )
    .await;
    assert_eq!(withheld["code"], -32001);
    assert_eq!(withheld["message"], "This answer was withheld");
    gateway.log_with("guard=\"response[1].deny[0]\"").await;

    // A result too deep to read cannot slip past the guard unread.
    let deep = error_of(
        &mut client,
        "tools/call",
        json!({"name": "guarded_nested", "arguments": {"depth": 200}}),
    )
    .await;
    assert_eq!(deep["code"], -32603, "{deep}");
    assert!(
        deep["message"]
            .as_str()
            .unwrap()
            .contains("could not be checked by the prompt guard"),
        "{deep}"
    );
    let shallow = client.call("guarded_nested", json!({"depth": 20})).await;
    assert_eq!(text(&shallow), "nested 20");
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_requests_get_their_targets_defaults_overrides_aliases_and_guards() {
    let shaped = "              ai:\n                promptGuard:\n                  - regex:\n                      deny: [{pattern: \"(?i)internal only\"}]\n                defaults: {temperature: 0.3, maxTokens: 10}\n                overrides: {maxTokens: 50}\n                modelAliases: {fast: claude-haiku-4-5}\n";
    let targets = [
        with_policy(stdio_target("shaped", &[]), shaped),
        stdio_target("plain", &[]),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let sampled = json!({"role": "assistant", "content": {"type": "text", "text": "ok"},
        "model": "claude-haiku-4-5", "stopReason": "endTurn"});

    let (asked, result) = call_answering(
        &client,
        "shaped_test_sampling",
        json!({"prompt": "hello", "modelHint": "fast"}),
        sampled.clone(),
    )
    .await;
    assert_eq!(asked["params"]["maxTokens"], 50, "override");
    assert_eq!(asked["params"]["temperature"], 0.3, "default");
    assert_eq!(
        asked["params"]["modelPreferences"]["hints"],
        json!([{"name": "claude-haiku-4-5"}])
    );
    assert_eq!(result["result"]["content"][0]["text"], "LLM response: ok");

    let (asked, _) = call_answering(
        &client,
        "plain_test_sampling",
        json!({"prompt": "hello", "modelHint": "fast"}),
        sampled,
    )
    .await;
    assert_eq!(asked["params"]["maxTokens"], 100, "a sibling is untouched");
    assert!(asked["params"].get("temperature").is_none());
    assert_eq!(
        asked["params"]["modelPreferences"]["hints"],
        json!([{"name": "fast"}])
    );

    // A refused sampling request never reaches the client; the target gets -32001 and says so.
    let reply = read_reply(
        client
            .send(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "shaped_test_sampling", "arguments": {"prompt": "This is INTERNAL ONLY"}}}))
            .await,
    )
    .await;
    assert!(
        reply
            .before
            .iter()
            .all(|m| m["method"] != "sampling/createMessage"),
        "{:?}",
        reply.before
    );
    let failed = reply.response.to_string();
    assert!(
        failed.contains("Request blocked by prompt guard"),
        "the tool reports the refusal: {failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a2a_traffic_is_labelled_in_the_access_log() {
    let targets = [
        with_policy(stdio_target("agent", &[]), "              a2a: {}\n"),
        stdio_target("tools", &[]),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.call("agent_echo", json!({"message": "a"})).await;
    client.call("tools_echo", json!({"message": "b"})).await;
    let log = gateway.log_with("target=\"tools\"").await;
    let line = |target: &str| {
        log.lines()
            .find(|l| l.contains("mcp request") && l.contains(&format!("target=\"{target}\"")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("agent").contains("protocol=\"a2a\""), "{log}");
    assert!(line("tools").contains("protocol=\"mcp\""), "{log}");
}

#[test]
fn ai_fields_that_do_not_apply_to_mcp_are_refused() {
    let cases = [
        (
            "              ai:\n                promptCaching: {cacheSystem: true}\n",
            "`ai.promptCaching` is not applicable to MCP targets",
        ),
        (
            "              ai:\n                prompts: {prepend: [{role: system, content: hi}]}\n",
            "`ai.prompts` is not applicable to MCP targets",
        ),
        (
            "              ai:\n                promptGuard:\n                  - regex: {deny: [{pattern: \"(\"}]}\n",
            "ai.promptGuard[0].regex.deny[0].pattern: not a valid regex",
        ),
        (
            "              ai:\n                defaults: {max_tokens: 5}\n",
            "`max_tokens` is not a sampling/createMessage parameter",
        ),
        (
            "              ai:\n                promptGuard:\n                  - regex: {deny: [{builtin: passport}]}\n",
            "unknown variant `passport`",
        ),
    ];
    for (policy, expected) in cases {
        let targets = with_policy(stdio_target("a", &[]), policy);
        let text = validate_failure(&config_with_targets(&targets, ""));
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
}
