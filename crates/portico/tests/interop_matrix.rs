//! The interop matrix: real MCP clients × real MCP servers, through one Portico route.
//!
//! Targets: server-everything (TypeScript SDK) over stdio, Streamable HTTP and SSE; a server built on
//! the Python SDK (`tests/interop/py_server.py`) over the same three; Portico's fixture (rmcp) over
//! stdio and Streamable HTTP; and an OpenAPI service (the fixture's pet store). Clients: the Python SDK
//! (2026-07-28 via `auto`, 2025-11-25, and HTTP+SSE), the TypeScript SDK, rmcp, and the MCP Inspector
//! CLI. Each client runs the same scenario against each target; the test writes the table to
//! `docs/interop.md` and fails on any cell that should pass and does not.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The scenario's steps, in the order they run and appear.
const STEPS: [(&str, &str); 8] = [
    (
        "list",
        "list tools (and prompts and resources, where the target has them)",
    ),
    ("call_args", "call a tool with arguments"),
    ("call_noargs", "call a tool without arguments"),
    ("prompt", "get a prompt"),
    ("resource", "read a resource"),
    ("progress", "progress notifications during a call"),
    ("cancel", "cancel a call, then call again"),
    (
        "sampling",
        "a sampling request from the target, answered by the client",
    ),
];

/// (key, column heading).
const CLIENTS: [(&str, &str); 6] = [
    ("python-auto", "Python SDK, 2026-07-28"),
    ("python-legacy", "Python SDK, 2025-11-25"),
    ("python-sse", "Python SDK, HTTP+SSE"),
    ("typescript", "TypeScript SDK"),
    ("rmcp", "rmcp (Rust)"),
    ("inspector", "Inspector CLI"),
];

/// Why the Inspector CLI has no cell for some steps.
const INSPECTOR_CANNOT: &str = "the Inspector CLI sends one request per run and prints its result: it shows no notifications, cannot cancel, and declares no sampling";

/// One step's outcome for one target.
#[derive(Debug, Clone)]
struct Outcome {
    target: String,
    step: String,
    ok: bool,
    detail: String,
}

fn outcomes_from_lines(text: &str) -> Vec<Outcome> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| Outcome {
            target: v["target"].as_str().unwrap_or_default().to_string(),
            step: v["step"].as_str().unwrap_or_default().to_string(),
            ok: v["ok"].as_bool().unwrap_or(false),
            detail: v["detail"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

const PY_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/py_server.py");

/// A target of the matrix: its config entry, what it serves, and the scenario's parameters.
struct Target {
    name: &'static str,
    description: &'static str,
    config: String,
    plan: Value,
}

/// The scenario for a target named `p`; `None` steps are not applicable, with the reason.
fn everything_plan(p: &str) -> Value {
    json!({"prompts": true, "resources": true, "steps": {
        "call_args": {"tool": format!("{p}_echo"), "args": {"message": "interop"}, "expect": "interop"},
        "call_noargs": {"tool": format!("{p}_get-env"), "expect": "PATH"},
        "prompt": {"name": format!("{p}_simple-prompt"), "args": {}, "expect": "simple prompt"},
        "resource": {"uri": format!("{p}+demo://resource/static/document/architecture.md"), "expect": "Architecture"},
        "progress": {"tool": format!("{p}_trigger-long-running-operation"), "args": {"duration": 1, "steps": 3}, "expect": ""},
        "cancel": {"tool": format!("{p}_trigger-long-running-operation"), "args": {"duration": 30, "steps": 3}},
        "sampling": {"tool": format!("{p}_trigger-sampling-request"), "args": {"prompt": "hi", "maxTokens": 20}, "expect": "interop-model-answer"},
    }})
}

fn python_plan(p: &str) -> Value {
    json!({"prompts": true, "resources": true, "steps": {
        "call_args": {"tool": format!("{p}_echo"), "args": {"message": "interop"}, "expect": "interop"},
        "call_noargs": {"tool": format!("{p}_now"), "expect": "python says hello"},
        "prompt": {"name": format!("{p}_greeting"), "args": {"name": "interop"}, "expect": "Hello, interop!"},
        "resource": {"uri": format!("{p}+py://static/hello"), "expect": "hello from python"},
        "progress": {"tool": format!("{p}_count"), "args": {"steps": 3}, "expect": "counted 3"},
        "cancel": {"tool": format!("{p}_sleep"), "args": {"seconds": 30}},
        "sampling": {"tool": format!("{p}_sample"), "args": {"prompt": "hi"}, "expect": "model said: interop-model-answer"},
    }})
}

fn fixture_plan(p: &str) -> Value {
    json!({"prompts": true, "resources": true, "steps": {
        "call_args": {"tool": format!("{p}_echo"), "args": {"message": "interop"}, "expect": "interop"},
        "call_noargs": {"tool": format!("{p}_test_simple_text"), "expect": "simple text response"},
        "prompt": {"name": format!("{p}_test_simple_prompt"), "args": {}, "expect": "This is a simple prompt for testing."},
        "resource": {"uri": format!("{p}+test://static-text"), "expect": "static text resource"},
        "progress": {"tool": format!("{p}_test_tool_with_progress"), "args": {}, "expect": ""},
        "cancel": {"tool": format!("{p}_sleep"), "args": {"ms": 30000}},
        "sampling": {"tool": format!("{p}_test_sampling"), "args": {"prompt": "hi"}, "expect": "LLM response: interop-model-answer"},
    }})
}

fn openapi_plan(p: &str) -> Value {
    json!({"prompts": false, "resources": false, "steps": {
        "call_args": {"tool": format!("{p}_echoRequest"), "args": {"query": {"q": "interop"}}, "expect": "interop"},
        "call_noargs": {"tool": format!("{p}_listPets"), "expect": "pets"},
        "prompt": null, "resource": null, "progress": null, "cancel": null, "sampling": null,
    }, "na": "an OpenAPI service has operations only: no prompts, resources, progress, cancellation or sampling"})
}

/// The services behind the targets, running until dropped.
struct Services {
    _children: Vec<tokio::process::Child>,
    _fixture: HttpFixture,
    _rest: HttpFixture,
}

async fn targets(tools: &Path) -> (Vec<Target>, Services) {
    let python = tools.join("venv/bin/python");
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for mode in ["streamableHttp", "sse"] {
        let (child, port) = start_everything(tools, mode).await;
        children.push(child);
        ports.push(port);
    }
    for mode in ["streamable-http", "sse"] {
        let (child, port) = start_service(|port| {
            let mut command = tokio::process::Command::new(&python);
            command.args([PY_SERVER, mode, &port.to_string()]);
            command
        })
        .await;
        children.push(child);
        ports.push(port);
    }
    let [ts_http, ts_sse, py_http, py_sse] = ports[..] else {
        unreachable!("four services started")
    };
    let fixture = HttpFixture::start(&[]).await;
    let rest = HttpFixture::start_rest().await;
    let stdio = |name: &str, cmd: &Path, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "          - name: {name}\n            stdio:\n              cmd: \"{}\"\n              args: [{}]\n",
            cmd.display(),
            args.join(", ")
        )
    };
    let remote = |name: &str, kind: &str, url: String| {
        format!("          - name: {name}\n            {kind}:\n              host: \"{url}\"\n")
    };
    let everything = everything(tools);
    let targets = vec![
        Target {
            name: "ts-stdio",
            description: "server-everything (TypeScript SDK), stdio",
            config: stdio("ts-stdio", &node(tools), &[&everything, "stdio"]),
            plan: everything_plan("ts-stdio"),
        },
        Target {
            name: "ts-http",
            description: "server-everything (TypeScript SDK), Streamable HTTP",
            config: remote("ts-http", "mcp", format!("http://127.0.0.1:{ts_http}/mcp")),
            plan: everything_plan("ts-http"),
        },
        Target {
            name: "ts-sse",
            description: "server-everything (TypeScript SDK), HTTP+SSE",
            config: remote("ts-sse", "sse", format!("http://127.0.0.1:{ts_sse}/sse")),
            plan: everything_plan("ts-sse"),
        },
        Target {
            name: "py-stdio",
            description: "Python SDK `MCPServer`, stdio",
            config: stdio("py-stdio", &python, &[PY_SERVER, "stdio"]),
            plan: python_plan("py-stdio"),
        },
        Target {
            name: "py-http",
            description: "Python SDK `MCPServer`, Streamable HTTP",
            config: remote("py-http", "mcp", format!("http://127.0.0.1:{py_http}/mcp")),
            plan: python_plan("py-http"),
        },
        Target {
            name: "py-sse",
            description: "Python SDK `MCPServer`, HTTP+SSE",
            config: remote("py-sse", "sse", format!("http://127.0.0.1:{py_sse}/sse")),
            plan: python_plan("py-sse"),
        },
        Target {
            name: "rs-stdio",
            description: "Portico's fixture (rmcp), stdio",
            config: stdio(
                "rs-stdio",
                Path::new(EXE),
                &["fixture", "--name", "rs-stdio"],
            ),
            plan: fixture_plan("rs-stdio"),
        },
        Target {
            name: "rs-http",
            description: "Portico's fixture (rmcp), Streamable HTTP",
            config: remote("rs-http", "mcp", fixture.url.clone()),
            plan: fixture_plan("rs-http"),
        },
        Target {
            name: "openapi",
            description: "OpenAPI 3.0 service (the fixture's pet store)",
            config: format!(
                "          - name: openapi\n            openapi:\n              schema: {{url: \"{0}/openapi.json\"}}\n              host: \"{0}\"\n",
                rest.url
            ),
            plan: openapi_plan("openapi"),
        },
    ];
    let services = Services {
        _children: children,
        _fixture: fixture,
        _rest: rest,
    };
    (targets, services)
}

fn plan_file(targets: &[Target]) -> PathBuf {
    let plan: Vec<Value> = targets
        .iter()
        .map(|t| {
            let mut plan = t.plan.clone();
            plan["name"] = json!(t.name);
            plan["prefix"] = json!(t.name);
            plan
        })
        .collect();
    temp_file("interop-plan.json", &json!({ "targets": plan }).to_string())
}

async fn run_process(mut command: tokio::process::Command, what: &str) -> Vec<Outcome> {
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        command.kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} took over 10 minutes"))
    .unwrap_or_else(|e| panic!("{what} could not run: {e}"));
    let outcomes = outcomes_from_lines(&String::from_utf8_lossy(&output.stdout));
    assert!(
        !outcomes.is_empty(),
        "{what} reported nothing:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    outcomes
}

async fn python(tools: &Path, mode: &str, url: String, plan: &Path) -> Vec<Outcome> {
    let mut command = tokio::process::Command::new(tools.join("venv/bin/python"));
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/matrix_client.py"
        ))
        .args([mode, &url])
        .arg(plan);
    run_process(command, &format!("the Python client ({mode})")).await
}

async fn typescript(tools: &Path, url: String, plan: &Path) -> Vec<Outcome> {
    let mut command = tokio::process::Command::new(node(tools));
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/matrix_client.cjs"
        ))
        .arg(url)
        .arg(plan)
        .env("NODE_PATH", tools.join("interop-npm/node_modules"));
    run_process(command, "the TypeScript client").await
}

/// The Inspector CLI, once per request: `list`, the calls, the prompt and the resource.
async fn inspector(tools: &Path, url: String, targets: &[Target]) -> Vec<Outcome> {
    let cli = tools.join("interop-npm/node_modules/.bin/inspector");
    let path = format!(
        "{}:{}",
        node(tools).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(&cli);
        command
            .args(["--cli", &url, "--transport", "http"])
            // Each session spawns every stdio target (node, Python, the fixture) while five other
            // clients do the same: on a busy 2-core runner the first sessions' `initialize` has taken
            // more than the CLI's default 15 s. The matrix checks interop, not start-up time.
            .args(["--connect-timeout", "60000"])
            .args(args)
            .env("PATH", &path)
            .kill_on_drop(true);
        async move {
            let output = tokio::time::timeout(Duration::from_secs(90), command.output()).await;
            match output {
                Ok(Ok(output)) if output.status.success() => {
                    Ok(String::from_utf8_lossy(&output.stdout).to_string())
                }
                Ok(Ok(output)) => Err(format!(
                    "exit {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                        .chars()
                        .take(300)
                        .collect::<String>()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out after 90 s".into()),
            }
        }
    };
    let mut outcomes = Vec::new();
    for target in targets {
        let steps = &target.plan["steps"];
        let prefix = target.name;
        let mut checks: Vec<(&str, Vec<String>, String)> = vec![(
            "list",
            vec!["--method".into(), "tools/list".into()],
            format!("\"{prefix}_"),
        )];
        for step in ["call_args", "call_noargs"] {
            let spec = &steps[step];
            let mut args = vec![
                "--method".into(),
                "tools/call".into(),
                "--tool-name".into(),
                spec["tool"].as_str().unwrap_or_default().into(),
            ];
            if let Some(arguments) = spec["args"].as_object().filter(|a| !a.is_empty()) {
                args.push("--tool-arg".into());
                for (key, value) in arguments {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string);
                    args.push(format!("{key}={value}"));
                }
            }
            checks.push((
                step,
                args,
                spec["expect"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if !steps["prompt"].is_null() {
            let spec = &steps["prompt"];
            let mut args = vec![
                "--method".into(),
                "prompts/get".into(),
                "--prompt-name".into(),
                spec["name"].as_str().unwrap_or_default().into(),
            ];
            if let Some(arguments) = spec["args"].as_object().filter(|a| !a.is_empty()) {
                args.push("--prompt-args".into());
                for (key, value) in arguments {
                    args.push(format!("{key}={}", value.as_str().unwrap_or_default()));
                }
            }
            checks.push((
                "prompt",
                args,
                spec["expect"].as_str().unwrap_or_default().to_string(),
            ));
        }
        if !steps["resource"].is_null() {
            let spec = &steps["resource"];
            let args = vec![
                "--method".into(),
                "resources/read".into(),
                "--uri".into(),
                spec["uri"].as_str().unwrap_or_default().into(),
            ];
            checks.push((
                "resource",
                args,
                spec["expect"].as_str().unwrap_or_default().to_string(),
            ));
        }
        let runs = futures::future::join_all(checks.into_iter().map(|(step, args, expect)| {
            let run = run(args);
            async move { (step, run.await, expect) }
        }))
        .await;
        for (step, result, expect) in runs {
            let (ok, detail) = match result {
                Ok(out) if out.contains(&expect) => (true, out.chars().take(60).collect()),
                Ok(out) => (
                    false,
                    format!(
                        "{expect:?} not in {}",
                        out.chars().take(200).collect::<String>()
                    ),
                ),
                Err(e) => (false, e),
            };
            outcomes.push(Outcome {
                target: target.name.into(),
                step: step.into(),
                ok,
                detail,
            });
        }
    }
    outcomes
}

/// The rmcp client: answers sampling, counts progress notifications.
#[derive(Clone, Default)]
// Sampling is what the matrix tests; rmcp marks it deprecated for the 2026-07-28 revision.
#[allow(deprecated)]
struct RmcpClient {
    progress: Arc<AtomicUsize>,
}

#[allow(deprecated)]
impl rmcp::ClientHandler for RmcpClient {
    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let result = json!({"role": "assistant", "content": {"type": "text", "text": "interop-model-answer"},
            "model": "interop-model", "stopReason": "endTurn"});
        serde_json::from_value(result)
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }

    async fn on_progress(
        &self,
        _params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        serde_json::from_value(json!({"protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "interop-rmcp", "version": "1.0.0"}}))
        .expect("client info")
    }
}

async fn rmcp_client(url: String, targets: &[Target]) -> Vec<Outcome> {
    use rmcp::ServiceExt;
    let handler = RmcpClient::default();
    let progress = handler.progress.clone();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    let client = handler
        .serve(transport)
        .await
        .expect("the rmcp client connects");
    let mut outcomes = Vec::new();
    for target in targets {
        for (step, _) in STEPS {
            let spec = &target.plan["steps"][step];
            if step != "list" && spec.is_null() {
                continue;
            }
            let run = rmcp_step(&client, target, step, spec, &progress);
            let (ok, detail) = match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(Ok(detail)) => (true, detail),
                Ok(Err(e)) => (false, e),
                Err(_) => (false, "timed out after 30 s".into()),
            };
            outcomes.push(Outcome {
                target: target.name.into(),
                step: step.into(),
                ok,
                detail,
            });
        }
    }
    let _ = client.cancel().await;
    outcomes
}

fn call_params(spec: &Value, meta: Option<Value>) -> rmcp::model::CallToolRequestParams {
    let mut params = json!({"name": spec["tool"], "arguments": spec["args"]});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    serde_json::from_value(params).expect("call params")
}

fn texts(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn rmcp_call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, RmcpClient>,
    spec: &Value,
    meta: Option<Value>,
) -> Result<String, String> {
    let result = client
        .call_tool(call_params(spec, meta))
        .await
        .map_err(|e| e.to_string())?;
    let result = serde_json::to_value(result).map_err(|e| e.to_string())?;
    let text = texts(&result);
    if result["isError"] == true {
        return Err(format!("isError: {text}"));
    }
    let expect = spec["expect"].as_str().unwrap_or_default();
    if !text.contains(expect) {
        return Err(format!("{expect:?} not in {text:?}"));
    }
    Ok(text.chars().take(60).collect())
}

async fn rmcp_step(
    client: &rmcp::service::RunningService<rmcp::RoleClient, RmcpClient>,
    target: &Target,
    step: &str,
    spec: &Value,
    progress: &AtomicUsize,
) -> Result<String, String> {
    let prefix = target.name;
    match step {
        "list" => {
            let tools = client.list_all_tools().await.map_err(|e| e.to_string())?;
            let ours = tools
                .iter()
                .filter(|t| t.name.starts_with(&format!("{prefix}_")))
                .count();
            if ours == 0 {
                return Err("no tools listed".into());
            }
            if target.plan["prompts"] == true {
                let prompts = client.list_all_prompts().await.map_err(|e| e.to_string())?;
                if !prompts
                    .iter()
                    .any(|p| p.name.starts_with(&format!("{prefix}_")))
                {
                    return Err("no prompts listed".into());
                }
            }
            if target.plan["resources"] == true {
                let resources = client
                    .list_all_resources()
                    .await
                    .map_err(|e| e.to_string())?;
                if !resources
                    .iter()
                    .any(|r| r.uri.starts_with(&format!("{prefix}+")))
                {
                    return Err("no resources listed".into());
                }
            }
            Ok(format!("{ours} tools"))
        }
        "call_args" | "call_noargs" | "sampling" => rmcp_call(client, spec, None).await,
        "prompt" => {
            let params =
                serde_json::from_value(json!({"name": spec["name"], "arguments": spec["args"]}))
                    .map_err(|e| e.to_string())?;
            let prompt = client.get_prompt(params).await.map_err(|e| e.to_string())?;
            let prompt = serde_json::to_value(prompt).map_err(|e| e.to_string())?;
            let text: String = prompt["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["content"]["text"].as_str())
                .collect();
            let expect = spec["expect"].as_str().unwrap_or_default();
            text.contains(expect)
                .then(|| text.chars().take(60).collect())
                .ok_or(format!("{expect:?} not in {text:?}"))
        }
        "resource" => {
            let params =
                serde_json::from_value(json!({"uri": spec["uri"]})).map_err(|e| e.to_string())?;
            let read = client
                .read_resource(params)
                .await
                .map_err(|e| e.to_string())?;
            let read = serde_json::to_value(read).map_err(|e| e.to_string())?;
            let text: String = read["contents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["text"].as_str())
                .collect();
            let expect = spec["expect"].as_str().unwrap_or_default();
            text.contains(expect)
                .then(|| format!("{} characters", text.len()))
                .ok_or(format!("{expect:?} not in {text:?}"))
        }
        "progress" => {
            let before = progress.load(Ordering::SeqCst);
            rmcp_call(
                client,
                spec,
                Some(json!({"progressToken": "interop-progress"})),
            )
            .await?;
            let seen = progress.load(Ordering::SeqCst) - before;
            (seen > 0)
                .then(|| format!("{seen} progress notifications"))
                .ok_or_else(|| "no progress notification".to_string())
        }
        "cancel" => {
            // rmcp cancels a request that times out (notifications/cancelled to the server).
            let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(
                call_params(spec, None),
            ));
            let mut options = rmcp::service::PeerRequestOptions::no_options();
            options.timeout = Some(Duration::from_millis(500));
            let handle = client
                .send_request_with_option(request, options)
                .await
                .map_err(|e| e.to_string())?;
            match handle.await_response().await {
                Err(rmcp::ServiceError::Timeout { .. }) => {}
                other => return Err(format!("not cancelled: {other:?}")),
            }
            rmcp_call(client, &target.plan["steps"]["call_args"], None).await?;
            Ok("cancelled; next call served".into())
        }
        other => Err(format!("unknown step {other}")),
    }
}

/// Writes `docs/interop.md` from the results: one row per target, one column per client.
fn write_table(targets: &[Target], results: &BTreeMap<&str, Vec<Outcome>>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut doc = String::from(
        "# Interop matrix\n\n\
         Generated by `cargo test -p portico --test interop_matrix` (do not edit): every client below talks to\n\
         every target below through one Portico route, and runs the same scenario against each.\n\n",
    );
    doc.push_str("Steps: ");
    let legend: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, (_, what))| format!("{} {what}", i + 1))
        .collect();
    doc.push_str(&legend.join("; "));
    doc.push_str(".\n\n✅ every applicable step passed (their numbers after it); ❌ the steps that failed; – not applicable (see below).\n\n");
    doc.push_str("| target |");
    for (_, heading) in CLIENTS {
        doc.push_str(&format!(" {heading} |"));
    }
    doc.push_str("\n|---|");
    doc.push_str(&"---|".repeat(CLIENTS.len()));
    doc.push('\n');
    for target in targets {
        doc.push_str(&format!("| {} |", target.description));
        for (client, _) in CLIENTS {
            let mine: Vec<&Outcome> = results[client]
                .iter()
                .filter(|o| o.target == target.name)
                .collect();
            let number = |step: &str| {
                STEPS
                    .iter()
                    .position(|(s, _)| *s == step)
                    .map_or(0, |i| i + 1)
            };
            let passed: Vec<String> = mine
                .iter()
                .filter(|o| o.ok)
                .map(|o| number(&o.step).to_string())
                .collect();
            let failed: Vec<&&Outcome> = mine.iter().filter(|o| !o.ok).collect();
            for outcome in &failed {
                failures.push(format!(
                    "{client} × {}: {}: {}",
                    target.name, outcome.step, outcome.detail
                ));
            }
            let cell = if mine.is_empty() {
                "–".to_string()
            } else if failed.is_empty() {
                format!("✅ {}", passed.join(" "))
            } else {
                let names: Vec<String> =
                    failed.iter().map(|o| number(&o.step).to_string()).collect();
                format!("❌ {} (✅ {})", names.join(" "), passed.join(" "))
            };
            doc.push_str(&format!(" {cell} |"));
        }
        doc.push('\n');
    }
    doc.push_str("\n## Steps that do not apply\n\n");
    for target in targets {
        if let Some(reason) = target.plan["na"].as_str() {
            doc.push_str(&format!("- {}: {reason}.\n", target.description));
        }
    }
    doc.push_str(&format!(
        "- Inspector CLI, steps 6–8: {INSPECTOR_CANNOT}.\n"
    ));
    doc.push_str(
        "\nThe Python SDK server is `MCPServer` (FastMCP, as mcp 2.x names it), `tests/interop/py_server.py`.\n\
         Versions: Python SDK `mcp` 2.3.0, TypeScript SDK `@modelcontextprotocol/sdk` 1.32.2, rmcp 3.11,\n\
         MCP Inspector 2.12.0, server-everything 2026.8.31. With the Python SDK in `auto` mode Portico serves\n\
         the 2026-07-28 revision and bridges it to the targets (sampling as `input_required`, see\n\
         [mcp](mcp.md#protocol-revision-2026-07-28)).\n",
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/interop.md");
    std::fs::write(path, doc).expect("write docs/interop.md");
    failures
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_with_every_target() {
    let Some(tools) = interop_tools() else { return };
    let (targets, _services) = targets(&tools).await;
    let config: String = targets.iter().map(|t| t.config.as_str()).collect();
    let gateway = Gateway::start(&config_with_targets(&config, "")).await;
    let plan = plan_file(&targets);
    let url = gateway.url("/mcp");
    let (auto, legacy, sse, ts, rmcp, inspected) = tokio::join!(
        python(&tools, "auto", url.clone(), &plan),
        python(&tools, "legacy", url.clone(), &plan),
        python(&tools, "sse", gateway.url("/mcp/sse"), &plan),
        typescript(&tools, url.clone(), &plan),
        rmcp_client(url.clone(), &targets),
        inspector(&tools, url.clone(), &targets),
    );
    let results: BTreeMap<&str, Vec<Outcome>> = [
        ("python-auto", auto),
        ("python-legacy", legacy),
        ("python-sse", sse),
        ("typescript", ts),
        ("rmcp", rmcp),
        ("inspector", inspected),
    ]
    .into_iter()
    .collect();
    let failures = write_table(&targets, &results);
    assert!(
        failures.is_empty(),
        "cells that failed (docs/interop.md has the table):\n{}\n--- gateway log (tail) ---\n{}",
        failures.join("\n"),
        gateway
            .log_text()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
