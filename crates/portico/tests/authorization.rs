//! `mcpAuthorization` per target, with inheritance from the backend, seen by a real client.

mod common;

use common::*;
use serde_json::json;

fn with_policy(target: &str, policy: &str) -> String {
    format!(
        "{target}            policies:\n              mcpAuthorization:\n                rules:\n{policy}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_target_sees_its_own_rules_and_inherits_the_backends() {
    // Backend default: authenticated callers only; `public` overrides it, `restricted` inherits it,
    // `partial` allows two tools to anyone.
    let targets = format!(
        "{}{}{}",
        with_policy(&stdio_target("public", &[]), "                - 'true'\n"),
        stdio_target("restricted", &[]),
        with_policy(
            &stdio_target("partial", &[]),
            "                - 'mcp.tool.name in [\"echo\", \"whoami\"]'\n                - deny: 'mcp.tool.name == \"whoami\" && !has(jwt.sub)'\n"
        ),
    );
    let backend = "          policies:\n            mcpAuthorization:\n              rules:\n              - 'has(jwt.sub)'\n";
    let gateway = Gateway::start(&config_with_targets(&targets, backend)).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;

    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(tools.contains(&"public_echo".to_string()), "{tools:?}");
    assert!(
        !tools.iter().any(|t| t.starts_with("restricted_")),
        "{tools:?}"
    );
    let partial: Vec<_> = tools.iter().filter(|t| t.starts_with("partial_")).collect();
    assert_eq!(
        partial,
        ["partial_echo"],
        "only echo: whoami is denied to anonymous callers"
    );

    assert_eq!(
        text(&client.call("public_echo", json!({"message": "hi"})).await),
        "hi"
    );
    assert_eq!(
        text(&client.call("partial_echo", json!({"message": "hi"})).await),
        "hi"
    );
    for denied in ["restricted_echo", "partial_whoami", "partial_crash"] {
        let reply = client
            .request("tools/call", json!({"name": denied, "arguments": {}}))
            .await;
        assert_eq!(reply.response["error"]["code"], -32602, "{denied}");
        assert_eq!(
            reply.response["error"]["message"],
            format!("Unknown tool: {denied}"),
            "same answer as a missing tool"
        );
    }
    // The targets' prompts and resources are filtered by the same rules.
    let (prompts, _) = client.list_all("prompts/list", "prompts").await;
    assert!(
        names(&prompts, "name")
            .iter()
            .all(|p| p.starts_with("public_")),
        "{prompts:?}"
    );
    let read = client
        .request(
            "resources/read",
            json!({"uri": "restricted+test://static-text"}),
        )
        .await;
    assert_eq!(read.response["error"]["code"], -32602);

    // The access log says which rule and level decided; the client learned nothing.
    gateway
        .log_line_with(&["tool=\"whoami\"", "deny (target rule"])
        .await;
    let log = gateway.log_text();
    assert!(
        log.lines().any(|l| l.contains("tool=\"echo\"")
            && l.contains("target=\"restricted\"")
            && l.contains("deny (backend policy, no rule matched)")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("tool=\"whoami\"") && l.contains("deny (target rule")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_cel_is_a_config_error() {
    let targets = with_policy(
        &stdio_target("a", &[]),
        "                - 'has(jwt.sub) &&'\n",
    );
    let text = validate_failure(&config_with_targets(&targets, ""));
    assert!(
        text.contains("policies.mcpAuthorization.rules[0]") && text.contains("invalid CEL"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_backend_spellings_work_and_cannot_both_set_a_type() {
    // `backends[].policies` (the seed's first spelling) is the backend level too.
    let targets = format!(
        "{}{}",
        stdio_target("open", &[]),
        with_policy(&stdio_target("own", &[]), "                - 'true'\n")
    );
    let yaml = config_with_targets(&targets, "").replace(
        "      backends:\n      - mcp:\n",
        "      backends:\n      - policies:\n          mcpAuthorization:\n            rules: ['has(jwt.sub)']\n        mcp:\n",
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let tools = names(&tools, "name");
    assert!(
        tools.iter().all(|t| t.starts_with("own_")) && !tools.is_empty(),
        "{tools:?}"
    );

    let both = yaml.replace(
        "        mcp:\n",
        "        mcp:\n          policies:\n            mcpAuthorization:\n              rules: ['true']\n",
    );
    let text = validate_failure(&both);
    assert!(
        text.contains("set both in `backends[].policies` and `backends[].mcp.policies`"),
        "{text}"
    );
}
