//! The fixture's tools, prompts and resources.
//!
//! Results are written as MCP JSON and converted into `rmcp`'s types, so that this file reads like the
//! protocol it serves.
#![allow(deprecated)] // sampling, elicitation and logging are deprecated in 2026-07-28 but still served.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Command-line options that shape what the fixture serves.
#[derive(Debug)]
pub struct FixtureOptions {
    pub name: String,
    pub page_size: usize,
    /// Every tool, built once: listing is the benchmarks' hot path.
    pub tools: ListToolsResult,
    /// Send `notifications/tools/list_changed` this long after each session is initialized, outside
    /// any request (so it travels on the session's GET stream).
    pub list_changed_after: Option<std::time::Duration>,
    /// Speak only the 2026-07-28 revision.
    pub only_2026: bool,
    /// Make every `tools/list` answer differ from the one before, and from other fixtures': the first
    /// tool's description names the fixture and counts the lists served.
    pub changing_tools: bool,
    /// `tools/list` answers served so far (for `changing_tools`).
    pub lists_served: std::sync::atomic::AtomicU64,
}

/// The full tool list: the built-in tools plus `extra` generated ones.
pub fn tool_list(extra: usize) -> ListToolsResult {
    serde_json::from_value(json!({"tools": tool_definitions(extra)}))
        .expect("static tool definitions are valid")
}

/// One MCP session's handler.
#[derive(Clone)]
pub struct Fixture {
    options: Arc<FixtureOptions>,
    /// The session's `logging/setLevel`, as an index into [`LOG_LEVELS`]: log messages below it are not sent.
    log_level: Arc<std::sync::atomic::AtomicUsize>,
}

/// MCP's log levels, least severe first.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// A 1×1 transparent PNG.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn wav_base64() -> String {
    // 44-byte RIFF header of an empty 8 kHz mono 8-bit PCM file.
    let mut wav = Vec::with_capacity(44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&36u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&0u32.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(wav)
}

fn convert<T: DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| McpError::internal_error(e.to_string(), None))
}

fn text_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text.into())])
}

fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

fn string_arg_schema(arg: &str) -> Value {
    json!({"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]})
}

fn tool(name: &str, description: &str, input_schema: Value) -> Value {
    json!({"name": name, "description": description, "inputSchema": input_schema})
}

fn tool_definitions(extra: usize) -> Vec<Value> {
    let mut tools = vec![
        tool(
            "test_simple_text",
            "Returns a simple text response",
            empty_schema(),
        ),
        tool("test_image_content", "Returns an image", empty_schema()),
        tool("test_audio_content", "Returns audio", empty_schema()),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource",
            empty_schema(),
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource",
            empty_schema(),
        ),
        tool(
            "test_tool_with_logging",
            "Logs three messages while it runs",
            empty_schema(),
        ),
        tool(
            "test_error_handling",
            "Always fails with isError",
            empty_schema(),
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress 0, 50, 100",
            empty_schema(),
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM (`modelHint`: a model name hint to send along)",
            json!({"type": "object", "properties": {"prompt": {"type": "string"}, "modelHint": {"type": "string"}},
                   "required": ["prompt"]}),
        ),
        tool(
            "test_elicitation",
            "Asks the user for a username and email",
            string_arg_schema("message"),
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation with default values",
            empty_schema(),
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with every enum form",
            empty_schema(),
        ),
        tool(
            "json_schema_2020_12_tool",
            "A tool whose schema uses JSON Schema 2020-12",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"type": "object", "properties": {
                    "street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false
            }),
        ),
        tool("echo", "Returns its message", string_arg_schema("message")),
        tool(
            "echo_headers",
            "Returns the HTTP request headers this server received",
            empty_schema(),
        ),
        tool(
            "sleep",
            "Sleeps for `ms` milliseconds, then answers; reports cancellation",
            json!({"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]}),
        ),
        tool("crash", "Exits the server process at once", empty_schema()),
        tool("whoami", "Returns the server's --name", empty_schema()),
        tool(
            "nested",
            "Returns structuredContent nested `depth` objects deep (for depth limits)",
            json!({"type": "object", "properties": {"depth": {"type": "integer"}}, "required": ["depth"]}),
        ),
        tool(
            "get_env",
            "Returns an environment variable",
            string_arg_schema("name"),
        ),
    ];
    tools.extend((0..extra).map(|i| {
        tool(
            &format!("tool_{i}"),
            &format!("Generated tool number {i}"),
            string_arg_schema("message"),
        )
    }));
    tools
}

fn prompt_definitions() -> Vec<Value> {
    vec![
        json!({"name": "test_simple_prompt", "description": "A simple prompt"}),
        json!({"name": "test_prompt_with_arguments", "description": "A prompt with arguments",
               "arguments": [{"name": "arg1", "description": "First", "required": true},
                             {"name": "arg2", "description": "Second", "required": true}]}),
        json!({"name": "test_prompt_with_embedded_resource", "description": "A prompt with a resource",
               "arguments": [{"name": "resourceUri", "description": "URI", "required": true}]}),
        json!({"name": "test_prompt_with_image", "description": "A prompt with an image"}),
    ]
}

fn resource_definitions() -> Vec<Value> {
    vec![
        json!({"uri": "test://static-text", "name": "static-text", "description": "Static text", "mimeType": "text/plain"}),
        json!({"uri": "test://static-binary", "name": "static-binary", "description": "A PNG", "mimeType": "image/png"}),
        json!({"uri": "test://watched-resource", "name": "watched-resource", "description": "Subscribable", "mimeType": "text/plain"}),
    ]
}

/// The range of one page of `len` items and the cursor of the next; a cursor is the index of the first
/// item of its page.
fn page_range(
    len: usize,
    cursor: Option<&str>,
    page_size: usize,
) -> Result<(Range<usize>, Option<String>), McpError> {
    if page_size == 0 {
        return Ok((0..len, None));
    }
    let start = match cursor {
        None => 0,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= len)
            .ok_or_else(|| McpError::invalid_params(format!("invalid cursor {c:?}"), None))?,
    };
    let end = (start + page_size).min(len);
    Ok((start..end, (end < len).then(|| end.to_string())))
}

fn page(
    items: Vec<Value>,
    cursor: Option<&str>,
    page_size: usize,
) -> Result<(Vec<Value>, Option<String>), McpError> {
    let (range, next) = page_range(items.len(), cursor, page_size)?;
    Ok((items[range].to_vec(), next))
}

fn paged_result<T: DeserializeOwned>(
    key: &str,
    items: Vec<Value>,
    request: Option<PaginatedRequestParams>,
    page_size: usize,
) -> Result<T, McpError> {
    let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
    let (items, next) = page(items, cursor, page_size)?;
    let mut result = json!({ key: items });
    if let Some(next) = next {
        result["nextCursor"] = json!(next);
    }
    convert(result)
}

impl Fixture {
    pub fn new(options: Arc<FixtureOptions>) -> Self {
        Self {
            options,
            log_level: Arc::default(),
        }
    }

    fn logs(&self, level: &str) -> bool {
        let severity = LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(0);
        severity >= self.log_level.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn call(
        &self,
        name: &str,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let arg = |key: &str| {
            args.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match name {
            "test_simple_text" => Ok(text_result("This is a simple text response for testing.")),
            "test_image_content" => convert(json!({"content": [{"type": "image", "data": PNG_BASE64, "mimeType": "image/png"}]})),
            "test_audio_content" => convert(json!({"content": [{"type": "audio", "data": wav_base64(), "mimeType": "audio/wav"}]})),
            "test_embedded_resource" => convert(json!({"content": [{"type": "resource", "resource": {
                "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content."}}]})),
            "test_multiple_content_types" => convert(json!({"content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": PNG_BASE64, "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "test://mixed-content-resource", "mimeType": "application/json",
                    "text": "{\"test\":\"data\",\"value\":123}"}}]})),
            "test_tool_with_logging" => {
                for (i, message) in ["Tool execution started", "Tool processing data", "Tool execution completed"].iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if self.logs("info") {
                        let _ = ctx.peer.notify_logging_message(convert(json!({"level": "info", "data": message}))?).await;
                    }
                }
                Ok(text_result("Logging completed"))
            }
            "test_error_handling" => Ok(CallToolResult::error(vec![ContentBlock::text(
                "This tool intentionally returns an error for testing",
            )])),
            "test_tool_with_progress" => {
                let token = ctx.meta.get_progress_token();
                for (i, progress) in [0, 50, 100].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Some(token) = &token {
                        let _ = ctx.peer.notify_progress(convert(json!({
                            "progressToken": token, "progress": progress, "total": 100}))?).await;
                    }
                }
                Ok(text_result("Progress completed"))
            }
            "test_sampling" => {
                let mut params = json!({"messages": [{"role": "user", "content": {"type": "text", "text": arg("prompt")}}],
                    "maxTokens": 100});
                let hint = arg("modelHint");
                if !hint.is_empty() {
                    params["modelPreferences"] = json!({"hints": [{"name": hint}]});
                }
                let params = convert(params)?;
                let reply = ctx.peer.create_message(params).await.map_err(|e| McpError::internal_error(e.to_string(), None))?;
                let reply = serde_json::to_value(reply).unwrap_or_default();
                let text = reply["content"]["text"].as_str().unwrap_or_default().to_string();
                Ok(text_result(format!("LLM response: {text}")))
            }
            "test_elicitation" => self.elicit(&ctx, json!({"message": arg("message"), "requestedSchema": {"type": "object",
                "properties": {"username": {"type": "string"}, "email": {"type": "string"}},
                "required": ["username", "email"]}})).await,
            "test_elicitation_sep1034_defaults" => self.elicit(&ctx, json!({"message": "Please review your details",
                "requestedSchema": {"type": "object", "properties": {
                    "name": {"type": "string", "default": "John Doe"},
                    "age": {"type": "integer", "default": 30},
                    "score": {"type": "number", "default": 95.5},
                    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "default": true}}}})).await,
            "test_elicitation_sep1330_enums" => self.elicit(&ctx, json!({"message": "Pick options",
                "requestedSchema": {"type": "object", "properties": {
                    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {"type": "string", "oneOf": [
                        {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"}]},
                    "legacyEnum": {"type": "string", "enum": ["opt1", "opt2"], "enumNames": ["Option One", "Option Two"]},
                    "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2"]}},
                    "titledMulti": {"type": "array", "items": {"anyOf": [
                        {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"}]}}}}})).await,
            "json_schema_2020_12_tool" => Ok(text_result(format!("received {}", Value::Object(args)))),
            "echo" => Ok(text_result(arg("message"))),
            "echo_headers" => Ok(text_result(self.headers_json(&ctx))),
            "sleep" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(text_result(format!("slept {ms} ms"))),
                    _ = ctx.ct.cancelled() => {
                        // On stderr, which a gateway logs for its stdio targets: tests read it there.
                        eprintln!("fixture {}: sleep cancelled", self.options.name);
                        Err(McpError::internal_error("cancelled", None))
                    }
                }
            }
            "crash" => std::process::exit(3),
            "whoami" => Ok(text_result(self.options.name.clone())),
            "nested" => {
                let depth = args.get("depth").and_then(Value::as_u64).unwrap_or(1);
                let mut value = json!("bottom");
                for _ in 0..depth {
                    value = json!({"a": value});
                }
                let mut result = text_result(format!("nested {depth}"));
                result.structured_content = Some(value);
                Ok(result)
            }
            "get_env" => Ok(text_result(std::env::var(arg("name")).unwrap_or_default())),
            generated if generated.starts_with("tool_") => Ok(text_result(format!("{generated}: {}", arg("message")))),
            unknown => Err(McpError::invalid_params(format!("Unknown tool: {unknown}"), None)),
        }
    }

    async fn elicit(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: Value,
    ) -> Result<CallToolResult, McpError> {
        let reply = ctx
            .peer
            .create_elicitation(convert(params)?)
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let reply = serde_json::to_value(reply).unwrap_or_default();
        Ok(text_result(format!("Elicitation result: {reply}")))
    }

    fn headers_json(&self, ctx: &RequestContext<RoleServer>) -> String {
        let Some(parts) = ctx.extensions.get::<axum::http::request::Parts>() else {
            return "{}".into();
        };
        let mut headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
            .collect();
        // The request target too, so query parameters can be checked.
        headers.insert(":uri".into(), json!(parts.uri.to_string()));
        Value::Object(headers).to_string()
    }
}

/// `test_sampling` in the 2026-07-28 revision: the first call asks for a sampling by
/// `input_required`; the retry carrying the answer gets `LLM response: <the answer's text>`.
fn sample_by_input_required(request: CallToolRequestParams) -> Result<CallToolResponse, McpError> {
    let request = serde_json::to_value(&request).unwrap_or_default();
    if let Some(answer) = request["inputResponses"].get("sample") {
        let text = answer["content"]["text"].as_str().unwrap_or_default();
        return Ok(CallToolResponse::Complete(text_result(format!(
            "LLM response: {text}"
        ))));
    }
    let prompt = request["arguments"]["prompt"].as_str().unwrap_or_default();
    let asked = json!({
        "resultType": "input_required",
        "inputRequests": {"sample": {"method": "sampling/createMessage", "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
            "maxTokens": 100}}},
        "requestState": "asked-once"
    });
    convert(asked).map(CallToolResponse::InputRequired)
}

impl ServerHandler for Fixture {
    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        let Some(after) = self.options.list_changed_after else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = context.peer.notify_tool_list_changed().await;
        });
    }

    fn get_info(&self) -> ServerConfig {
        let info = json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"subscribe": true, "listChanged": true},
                "logging": {},
                "completions": {}
            },
            "serverInfo": {"name": self.options.name, "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!("Fixture server {}.", self.options.name)
        });
        serde_json::from_value(info).expect("static server info is valid")
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut result = self.options.tools.clone();
        if self.options.changing_tools
            && let Some(first) = result.tools.first_mut()
        {
            let served = self
                .options
                .lists_served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = &self.options.name;
            first.description = Some(format!("{name} listed {served} times before").into());
        }
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        let (range, next) = page_range(result.tools.len(), cursor, self.options.page_size)?;
        result.tools = result.tools.drain(range).collect();
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if self.options.only_2026 && request.name == "test_sampling" {
            return sample_by_input_required(request);
        }
        if self.options.only_2026 && request.name == "ask_forever" {
            let asked = json!({"resultType": "input_required", "inputRequests": {"again": {
                "method": "roots/list", "params": {}}}});
            return convert(asked).map(CallToolResponse::InputRequired);
        }
        let args = request.arguments.unwrap_or_default();
        self.call(&request.name, args, ctx).await.map(Into::into)
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        if self.options.only_2026 {
            const ONLY: [ProtocolVersion; 1] = [ProtocolVersion::V_2026_07_28];
            return std::borrow::Cow::Borrowed(&ONLY);
        }
        std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        paged_result(
            "prompts",
            prompt_definitions(),
            request,
            self.options.page_size,
        )
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        let arg = |key: &str| {
            args.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let messages = match request.name.as_str() {
            "test_simple_prompt" => {
                json!([{"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}])
            }
            "test_prompt_with_arguments" => json!([{"role": "user", "content": {"type": "text",
                "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))}}]),
            "test_prompt_with_embedded_resource" => json!([
                {"role": "user", "content": {"type": "resource", "resource": {"uri": arg("resourceUri"),
                    "mimeType": "text/plain", "text": "Embedded resource content for testing."}}},
                {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}}]),
            "test_prompt_with_image" => json!([
                {"role": "user", "content": {"type": "image", "data": PNG_BASE64, "mimeType": "image/png"}},
                {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}}]),
            unknown => {
                return Err(McpError::invalid_params(
                    format!("Unknown prompt: {unknown}"),
                    None,
                ));
            }
        };
        convert::<GetPromptResult>(json!({"messages": messages})).map(Into::into)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        paged_result(
            "resources",
            resource_definitions(),
            request,
            self.options.page_size,
        )
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        convert(
            json!({"resourceTemplates": [{"uriTemplate": "test://template/{id}/data", "name": "template",
            "description": "A templated resource", "mimeType": "application/json"}]}),
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.as_str();
        let contents = match uri {
            "test://static-text" => {
                json!({"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."})
            }
            "test://static-binary" => {
                json!({"uri": uri, "mimeType": "image/png", "blob": PNG_BASE64})
            }
            "test://watched-resource" => {
                json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."})
            }
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
            {
                Some(id) => json!({"uri": uri, "mimeType": "application/json",
                    "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string()}),
                None => {
                    return Err(McpError::resource_not_found(
                        format!("Unknown resource: {uri}"),
                        None,
                    ));
                }
            },
        };
        convert::<ReadResourceResult>(json!({"contents": [contents]})).map(Into::into)
    }

    /// The subscribed resource "changes" 50 ms later: `notifications/resources/updated`, outside any
    /// request.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let updated = convert::<ResourceUpdatedNotificationParam>(json!({"uri": request.uri}))?;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = context.peer.notify_resource_updated(updated).await;
        });
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let level = serde_json::to_value(request.level).unwrap_or_default();
        let severity = LOG_LEVELS
            .iter()
            .position(|l| Some(*l) == level.as_str())
            .unwrap_or(0);
        self.log_level
            .store(severity, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let typed = request.argument.value.as_str();
        let values: Vec<&str> = ["paris", "park", "party"]
            .into_iter()
            .filter(|v| v.starts_with(typed))
            .collect();
        convert(json!({"completion": {"values": values, "total": values.len(), "hasMore": false}}))
    }
}
