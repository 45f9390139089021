//! `openapi` targets: the fixture's REST pet store (`portico fixture --transport rest`) behind
//! Portico, its operations called as tools by an MCP client.

mod common;

use common::*;
use serde_json::{Value, json};

fn openapi_target(name: &str, schema: &str, host: &str) -> String {
    format!(
        "          - name: {name}\n            openapi:\n              schema: {schema}\n              host: {host}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_are_tools_and_calls_are_requests() {
    let rest = HttpFixture::start_rest().await;
    let targets = [
        openapi_target(
            "pets",
            &format!("{{url: \"{}/openapi.json\"}}", rest.url),
            &rest.url,
        ),
        stdio_target("mcp", &[]),
    ]
    .concat();
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let log = gateway.log_with("(5 operations)").await;
    assert!(
        log.contains("upstream=openapi: http://") && log.contains("(5 operations)"),
        "the start-up line says what is served: {log}"
    );
    let mut listed: Vec<String> = names(&tools, "name")
        .into_iter()
        .filter(|n| n.starts_with("pets_"))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "pets_createPet",
            "pets_deletePet",
            "pets_echoRequest",
            "pets_getPet",
            "pets_listPets"
        ]
    );
    let get_pet = tools.iter().find(|t| t["name"] == "pets_getPet").unwrap();
    assert_eq!(get_pet["inputSchema"]["required"], json!(["path"]));
    assert_eq!(
        get_pet["inputSchema"]["properties"]["path"]["required"],
        json!(["petId"])
    );
    let create = tools
        .iter()
        .find(|t| t["name"] == "pets_createPet")
        .unwrap();
    assert_eq!(
        create["inputSchema"]["properties"]["body"]["required"],
        json!(["name"]),
        "the body schema's $ref is inlined"
    );

    let created = client
        .call(
            "pets_createPet",
            json!({"body": {"name": "Rex", "tag": "dog"}}),
        )
        .await;
    assert_ne!(created["isError"], true, "{created}");
    assert_eq!(created["structuredContent"]["name"], "Rex");
    let id = created["structuredContent"]["id"].as_u64().unwrap();
    client
        .call(
            "pets_createPet",
            json!({"body": {"name": "Tom", "tag": "cat"}}),
        )
        .await;

    let fetched = client
        .call("pets_getPet", json!({"path": {"petId": id}}))
        .await;
    let pet: Value = serde_json::from_str(text(&fetched)).unwrap();
    assert_eq!(pet["name"], "Rex");
    let dogs = client
        .call("pets_listPets", json!({"query": {"tag": "dog"}}))
        .await;
    assert_eq!(
        dogs["structuredContent"]["pets"].as_array().unwrap().len(),
        1
    );

    let missing = client
        .call("pets_getPet", json!({"path": {"petId": 99}}))
        .await;
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(
        text(&missing).contains("404") && text(&missing).contains("pet 99 not found"),
        "{missing}"
    );
    let no_body = client.call("pets_createPet", json!({})).await;
    assert_eq!(no_body["isError"], true);
    assert!(
        text(&no_body).contains("missing argument `body`"),
        "{no_body}"
    );

    let deleted = client
        .call("pets_deletePet", json!({"path": {"petId": id}}))
        .await;
    assert_ne!(deleted["isError"], true, "{deleted}");
    let gone = client
        .call("pets_getPet", json!({"path": {"petId": id}}))
        .await;
    assert_eq!(gone["isError"], true);

    assert_eq!(
        text(
            &client
                .call("mcp_echo", json!({"message": "still here"}))
                .await
        ),
        "still here",
        "the MCP target beside it is unaffected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn header_and_query_inputs_and_backend_auth_reach_the_service() {
    let rest = HttpFixture::start_rest().await;
    let document = reqwest::get(format!("{}/openapi.json", rest.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = temp_file("openapi.json", &document);
    let targets = format!(
        "{}            policies:\n              backendAuth:\n                key: rest-api-key\n",
        openapi_target("pets", &format!("{{file: {}}}", file.display()), &rest.url)
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let echoed = client
        .call(
            "echoRequest",
            json!({"query": {"q": "a b&c"}, "header": {"x-request-tag": "blue"}}),
        )
        .await;
    let seen = &echoed["structuredContent"];
    assert_eq!(seen["query"]["q"], "a b&c", "{echoed}");
    assert_eq!(seen["headers"]["x-request-tag"], "blue");
    assert_eq!(seen["headers"]["authorization"], "Bearer rest-api-key");
    assert!(!gateway.log_text().contains("rest-api-key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inline_schema_is_read_from_the_config() {
    let rest = HttpFixture::start_rest().await;
    let inline = "\n                inline:\n                  openapi: 3.1.0\n                  info: {title: Health, version: \"1\"}\n                  paths:\n                    /pets/{petId}:\n                      get:\n                        operationId: fetchPet\n                        parameters:\n                          - {name: petId, in: path, required: true, schema: {type: string}}\n";
    let targets = openapi_target("inline", inline, &rest.url.replace("http://", ""));
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert_eq!(names(&tools, "name"), ["fetchPet"], "one target: no prefix");
    let result = client
        .call("fetchPet", json!({"path": {"petId": "7/../1"}}))
        .await;
    assert_eq!(result["isError"], true);
    assert!(
        text(&result).contains("HTTP 400") && text(&result).contains("`7/../1`"),
        "the id reaches the service as one path segment: {result}"
    );
}

#[test]
fn broken_schemas_are_config_errors() {
    let swagger = temp_file("swagger.json", r#"{"swagger": "2.0", "paths": {}}"#);
    let cases = [
        (
            openapi_target(
                "a",
                "{file: /nonexistent/openapi.json}",
                "http://127.0.0.1:9",
            ),
            "mcp.targets[0].openapi.schema.file: cannot read `/nonexistent/openapi.json`",
        ),
        (
            openapi_target(
                "a",
                &format!("{{file: {}}}", swagger.display()),
                "http://127.0.0.1:9",
            ),
            "Swagger 2.0 document; Portico reads OpenAPI 3.x",
        ),
        (
            openapi_target(
                "a",
                "{url: \"http://127.0.0.1:9/openapi.json\"}",
                "http://127.0.0.1:9",
            ),
            "openapi.schema.url: cannot fetch `http://127.0.0.1:9/openapi.json`",
        ),
        (
            openapi_target("a", "{}", "http://127.0.0.1:9"),
            "set exactly one of `file`, `url`, `inline`",
        ),
    ];
    for (targets, expected) in cases {
        let text = validate_failure(&config_with_targets(&targets, ""));
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
}

/// mcpAuthorization treats an OpenAPI target's operations like any tools: a denied one is neither
/// listed nor callable.
#[tokio::test(flavor = "multi_thread")]
async fn authorization_rules_apply_to_operations() {
    let rest = HttpFixture::start_rest().await;
    let targets = format!(
        "{}            policies:\n              mcpAuthorization:\n                rules:\n                - 'true'\n                - deny: 'mcp.tool.name == \"deletePet\"'\n",
        openapi_target(
            "pets",
            &format!("{{url: \"{}/openapi.json\"}}", rest.url),
            &rest.url
        )
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&tools, "name");
    assert!(listed.contains(&"getPet".to_string()), "{listed:?}");
    assert!(!listed.contains(&"deletePet".to_string()), "{listed:?}");
    let refused = client
        .request(
            "tools/call",
            json!({"name": "deletePet", "arguments": {"path": {"petId": 1}}}),
        )
        .await;
    assert_eq!(
        refused.response["error"]["code"], -32602,
        "{}",
        refused.response
    );
}

/// A target whose document says where the service is: no `host`.
fn openapi_target_without_host(name: &str, schema: &str) -> String {
    format!("          - name: {name}\n            openapi:\n              schema: {schema}\n")
}

/// The Swagger Petstore v3 API as its well-known document describes it (servers `/api/v3`, request
/// bodies shared through `$ref`, path, query, array-query and header parameters), fetched from the
/// service, which implements its pet and store operations: the document's relative server URL is
/// resolved against the document's own URL.
#[tokio::test(flavor = "multi_thread")]
async fn the_petstore_v3_document_through_portico() {
    let rest = HttpFixture::start_rest().await;
    let schema = format!("{{url: \"{}/api/v3/openapi.json\"}}", rest.url);
    let gateway = Gateway::start(&config_with_targets(
        &openapi_target_without_host("petstore", &schema),
        "",
    ))
    .await;
    let started = gateway.log_with("operations)").await;
    assert!(
        started.contains(&format!("openapi: {}/api/v3 (19 operations)", rest.url)),
        "{started}"
    );
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert_eq!(tools.len(), 19, "{:?}", names(&tools, "name"));
    let add = tools.iter().find(|t| t["name"] == "addPet").unwrap();
    let body = &add["inputSchema"]["properties"]["body"];
    assert_eq!(body["required"], json!(["name", "photoUrls"]), "{add}");
    assert_eq!(
        body["properties"]["category"]["properties"]["name"]["type"], "string",
        "$refs into the components are inlined: {add}"
    );

    let pet = json!({"id": 7, "name": "doggie", "photoUrls": [], "status": "available",
        "tags": [{"id": 1, "name": "good"}]});
    let added = client.call("addPet", json!({"body": pet})).await;
    assert_eq!(added["structuredContent"]["name"], "doggie", "{added}");
    let found = client
        .call("getPetById", json!({"path": {"petId": 7}}))
        .await;
    assert_eq!(found["structuredContent"]["status"], "available", "{found}");
    let by_status = client
        .call(
            "findPetsByStatus",
            json!({"query": {"status": "available"}}),
        )
        .await;
    assert!(text(&by_status).contains("doggie"), "{by_status}");
    let by_tags = client
        .call(
            "findPetsByTags",
            json!({"query": {"tags": ["other", "good"]}}),
        )
        .await;
    assert!(text(&by_tags).contains("doggie"), "{by_tags}");
    let sold = client
        .call(
            "updatePetWithForm",
            json!({"path": {"petId": 7}, "query": {"status": "sold"}}),
        )
        .await;
    assert_eq!(sold["structuredContent"]["status"], "sold", "{sold}");
    let inventory = client.call("getInventory", json!({})).await;
    assert_eq!(inventory["structuredContent"], json!({"sold": 1}));
    let order = client
        .call(
            "placeOrder",
            json!({"body": {"id": 3, "petId": 7, "quantity": 1}}),
        )
        .await;
    assert_eq!(order["structuredContent"]["petId"], 7, "{order}");

    let unkeyed = client
        .call("deletePet", json!({"path": {"petId": 7}}))
        .await;
    assert_eq!(unkeyed["isError"], true);
    assert!(
        text(&unkeyed).starts_with("HTTP 400 Bad Request")
            && text(&unkeyed).contains("missing api_key header"),
        "a non-2xx answer is an error result with the status and the body: {unkeyed}"
    );
    let deleted = client
        .call(
            "deletePet",
            json!({"path": {"petId": 7}, "header": {"api_key": "special-key"}}),
        )
        .await;
    assert_ne!(deleted["isError"], true, "{deleted}");
    assert_eq!(deleted["structuredContent"]["message"], "Pet deleted");
    let gone = client
        .call("getPetById", json!({"path": {"petId": 7}}))
        .await;
    assert!(
        text(&gone).starts_with("HTTP 404 Not Found") && text(&gone).contains("Pet not found"),
        "{gone}"
    );
}

/// An OpenAPI 3.1 document whose server URL is built from variables and their defaults, with a
/// 3.1 type list and an operation whose body is a form: no `host`.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_3_1_server_variables_and_form_bodies() {
    let rest = HttpFixture::start_rest().await;
    let port = rest.url.rsplit(':').next().unwrap().to_string();
    let document = json!({
        "openapi": "3.1.0",
        "info": {"title": "Forms", "version": "1"},
        "servers": [{"url": "http://{address}:{port}", "variables": {
            "address": {"default": "127.0.0.1"}, "port": {"default": port, "description": "where it runs"}}}],
        "paths": {"/echo": {"post": {"operationId": "echoForm",
            "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "nickname": {"type": ["string", "null"]}, "age": {"type": "integer"}}}}}},
            "responses": {"200": {"description": "what the service received"}}}}}
    });
    let file = temp_file("forms-3.1.json", &document.to_string());
    let schema = format!("{{file: {}}}", file.display());
    let gateway = Gateway::start(&config_with_targets(
        &openapi_target_without_host("forms", &schema),
        "",
    ))
    .await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["body"]["properties"]["nickname"]["type"],
        json!(["string", "null"])
    );
    let echoed = client
        .call("echoForm", json!({"body": {"name": "Rex & co", "age": 3}}))
        .await;
    let seen = &echoed["structuredContent"];
    assert_eq!(seen["body"], "name=Rex+%26+co&age=3", "{echoed}");
    assert_eq!(
        seen["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    let missing = client.call("echoForm", json!({})).await;
    assert!(
        text(&missing).contains("missing argument `body`"),
        "{missing}"
    );
}

#[test]
fn a_relative_server_needs_a_host_or_a_document_url() {
    let document = r#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "/api"}],
        "paths": {"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok"}}}}}}"#;
    let file = temp_file("relative-server.json", document);
    let targets = openapi_target_without_host("a", &format!("{{file: {}}}", file.display()));
    let text = validate_failure(&config_with_targets(&targets, ""));
    assert!(
        text.contains("mcp.targets[0].openapi.host")
            && text.contains("`/api` is relative")
            && text.contains("set `host`"),
        "{text}"
    );
    let unset = r#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "http://{h}/"}],
        "paths": {"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok"}}}}}}"#;
    let file = temp_file("variable-without-default.json", unset);
    let targets = openapi_target_without_host("a", &format!("{{file: {}}}", file.display()));
    let text = validate_failure(&config_with_targets(&targets, ""));
    assert!(
        text.contains("variable `h`, which has no `default`"),
        "{text}"
    );
}
