//! Issue #10: what a platform team needs to run Portico: JSON logs that parsers read whole.

mod common;

use common::*;
use serde_json::{Value, json};

/// With `logging.format: json` every line is one JSON object with each key once; the access log's
/// `target` is the MCP target, and the module that logged is `logger`.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_have_every_key_once() {
    let yaml = format!(
        "config:\n  logging:\n    format: json\n{}",
        config_with_targets(
            &format!("{}{}", stdio_target("one", &[]), stdio_target("two", &[])),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.call("two_echo", json!({"message": "hi"})).await;
    let log = gateway.log_with("\"tools/call\"").await;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let object = parsed.as_object().unwrap();
        // A parser folds a duplicated key into one, so count each key in the raw line.
        for key in object.keys() {
            assert_eq!(
                line.matches(&format!("\"{key}\":")).count(),
                1,
                "`{key}` twice in {line}"
            );
        }
    }
    let access: Value = log
        .lines()
        .filter(|l| l.contains("\"tools/call\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .next()
        .unwrap();
    assert_eq!(access["logger"], "portico::access");
    assert_eq!(access["target"], "two");
    assert_eq!(access["tool"], "echo");
    assert_eq!(access["method"], "tools/call");
    assert_eq!(access["route"], "test");
    assert_eq!(access["error_code"], 0);
    assert!(access["duration_ms"].is_f64(), "{access}");
    assert_eq!(access["level"], "INFO");
    assert!(
        access["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{access}"
    );
}

fn sigterm(gateway: &Gateway) {
    let pid = gateway.child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A connection that was open but had sent nothing yet when the drain began still gets its first
/// request answered (a load balancer that has just connected sends its request a moment later, and
/// cannot retry a POST whose connection was closed under it).
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_opened_before_sigterm_gets_its_request_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let yaml = format!(
        "config:\n  readinessAddr: 127.0.0.1:0\n  drainTimeout: 5s\n{}",
        config_with_targets(&stdio_target("one", &[]), "")
    );
    let gateway = Gateway::start(&yaml).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    sigterm(&gateway);
    gateway.log_with("draining").await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {address}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered and closed within the drain");
    assert!(read.is_ok(), "{read:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// On SIGTERM readiness turns 503, a `tools/call` in flight still gets its answer, an open GET stream
/// ends, and the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight() {
    let yaml = format!(
        "config:\n  readinessAddr: 127.0.0.1:0\n  drainTimeout: 10s\n{}",
        config_with_targets(&stdio_target("one", &[]), "")
    );
    let mut gateway = Gateway::start(&yaml).await;
    let readiness = announced(&gateway, "serving readiness", "readiness").await;
    assert_eq!(reqwest::get(&readiness).await.unwrap().status(), 200);
    let live = readiness.replace("/ready", "/live");
    assert_eq!(reqwest::get(&live).await.unwrap().status(), 200);

    let client = Client::connect(gateway.url("/mcp")).await;
    let stream = client.open_stream().await;
    let call = client.send(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 1500}}}));
    let terminate = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sigterm(&gateway);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        reqwest::get(&readiness).await.unwrap().status()
    };
    let (call, readiness_while_draining) = tokio::join!(call, terminate);
    assert_eq!(readiness_while_draining, 503);
    let reply = read_reply(call).await;
    assert_eq!(
        reply.response["result"]["content"][0]["text"], "slept 1500 ms",
        "{:?}",
        reply.response
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), stream.bytes()).await;
    assert!(ended.is_ok(), "the GET stream ended");
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), gateway.child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    gateway.log_with("draining requests in flight").await;
}

/// The URL a start-up line names after `field=`.
async fn announced(gateway: &Gateway, message: &str, field: &str) -> String {
    let line = gateway.log_with(message).await;
    line.split(&format!("{field}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {field}= in {line}"))
        .to_string()
}

const SESSION_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The admin API: the effective config without secrets, each target's health, the policy table.
#[tokio::test(flavor = "multi_thread")]
async fn admin_api_shows_config_targets_and_policies() {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let remote = format!(
        "{}            policies:\n              backendAuth:\n                key: super-secret-key\n",
        http_target("remote", &fixture.url)
    );
    let broken =
        "          - name: broken\n            stdio:\n              cmd: /nonexistent/server\n";
    let yaml = format!(
        "config:\n  adminAddr: 127.0.0.1:0\n  readinessAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  session:\n    key: {SESSION_KEY}\n{}",
        config_with_targets(
            &format!("{}{remote}{broken}", stdio_target("local", &[])),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    let admin = announced(&gateway, "serving the admin API", "admin").await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.list_all("tools/list", "tools").await;

    let targets: Value = reqwest::get(format!("{admin}/targets"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let route = &targets["routes"][0];
    assert_eq!(route["route"], "test");
    assert_eq!(route["sessions"], 1);
    let target = |name: &str| {
        route["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {targets}"))
    };
    assert_eq!(target("local")["connectedSessions"], 1);
    assert_eq!(target("local")["healthy"], true);
    assert!(target("local")["tools"].as_u64().unwrap() > 10, "{targets}");
    assert!(
        target("remote")["kind"]
            .as_str()
            .unwrap()
            .starts_with("mcp"),
        "{targets}"
    );
    assert_eq!(target("broken")["healthy"], false);
    assert!(
        target("broken")["lastError"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/server"),
        "{targets}"
    );

    let dump = reqwest::get(format!("{admin}/config_dump"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !dump.contains("super-secret-key") && !dump.contains(SESSION_KEY),
        "a secret in the dump: {dump}"
    );
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["settings"]["session"]["portable"], true);
    assert_eq!(dump["settings"]["limits"]["sessionsPerRoute"], 10_000);
    let policies: Value = reqwest::get(format!("{admin}/policies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(policies.to_string().contains("backendAuth"), "{policies}");
    assert!(!policies.to_string().contains("super-secret-key"));
    let missing = reqwest::get(format!("{admin}/nothing")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A changed config file is swapped in for new sessions and live ones; an invalid one
/// is refused with its file:line error and the running config stays; SIGHUP reloads too.
#[tokio::test(flavor = "multi_thread")]
async fn config_changes_reload_without_a_restart() {
    let one = config_with_targets(&stdio_target("one", &[]), "");
    let gateway = Gateway::start(&one).await;
    let mut before = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = before.list_all("tools/list", "tools").await;
    assert!(names(&tools, "name").contains(&"echo".to_string()));

    let two = config_with_targets(
        &format!("{}{}", stdio_target("one", &[]), stdio_target("two", &[])),
        "",
    );
    gateway.rewrite_config(&two);
    gateway.log_with("config reloaded").await;
    let mut after = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = after.list_all("tools/list", "tools").await;
    assert!(
        names(&tools, "name").contains(&"two_echo".to_string()),
        "{tools:?}"
    );
    // The live session moved onto the new config: two targets, so names are prefixed now.
    assert_eq!(
        text(&before.call("one_echo", json!({"message": "still"})).await),
        "still"
    );

    gateway.rewrite_config(&two.replace("stdio:", "stdo:"));
    let log = gateway.log_with("config reload refused").await;
    assert!(
        log.contains("unknown field `stdo`") && log.contains(".yaml:"),
        "{log}"
    );
    let mut third = Client::connect(gateway.url("/mcp")).await;
    let (tools, _) = third.list_all("tools/list", "tools").await;
    assert!(
        names(&tools, "name").contains(&"two_echo".to_string()),
        "the last good config serves"
    );

    gateway.rewrite_config(&two);
    gateway.log_with("config reloaded").await;
    let reloads = gateway.log_count("config reloaded");
    let pid = gateway.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        gateway.log_count_above("config reloaded", reloads).await,
        "SIGHUP reloads"
    );
    assert!(
        gateway.log_text().contains("reason=\"SIGHUP\""),
        "{}",
        gateway.log_text()
    );
}

/// A loopback OTLP/HTTP receiver: every span it is sent.
async fn otlp_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        kept.lock().unwrap().extend(scope.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

type Spans = std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

/// A loopback OTLP/gRPC receiver (tonic, the collector's own `TraceService`): every span it is sent.
async fn otlp_grpc_receiver() -> (String, Spans) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    struct Receiver(Spans);
    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    self.0.lock().unwrap().extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let spans = Spans::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(spans.clone())));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(server.serve_with_incoming(incoming));
    (url, spans)
}

/// With `otlpProtocol: grpc` the same spans reach a gRPC collector.
#[tokio::test(flavor = "multi_thread")]
async fn traces_are_exported_over_otlp_grpc() {
    let (collector, spans) = otlp_grpc_receiver().await;
    let yaml = format!(
        "config:\n  tracing:\n    otlpEndpoint: {collector}\n    otlpProtocol: grpc\n{}",
        config_with_targets(&stdio_target("local", &[]), "")
    );
    let gateway = Gateway::start(&yaml).await;
    gateway
        .log_line_with(&["exporting traces", "protocol=\"grpc\""])
        .await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    client.call("echo", json!({"message": "x"})).await;
    let mut found = Vec::new();
    for _ in 0..100 {
        found = spans.lock().unwrap().clone();
        if found.iter().filter(|s| s.name == "tools/call echo").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let server = found
        .iter()
        .find(|s| s.name == "tools/call echo" && s.kind == 2)
        .unwrap_or_else(|| panic!("no server span: {found:#?}"));
    let upstream = found
        .iter()
        .find(|s| s.kind == 3 && s.parent_span_id == server.span_id)
        .unwrap_or_else(|| panic!("no client span under the server span: {found:#?}"));
    assert_eq!(attribute(upstream, "portico.target"), "local");
    assert_eq!(attribute(upstream, "network.transport"), "pipe");
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Any::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

/// A tools/call through Portico with the client's `traceparent`: the request's span is the client
/// span's child, the call to the target is the request span's child, and the target receives that
/// call's context (header for HTTP targets, `_meta.traceparent` for all).
#[tokio::test(flavor = "multi_thread")]
async fn traces_are_exported_over_otlp_with_the_context_carried() {
    let (collector, spans) = otlp_receiver().await;
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let yaml = format!(
        "config:\n  tracing:\n    otlpEndpoint: {collector}\n{}",
        config_with_targets(
            &format!(
                "{}{}",
                stdio_target("local", &[]),
                http_target("remote", &fixture.url)
            ),
            ""
        )
    );
    let gateway = Gateway::start(&yaml).await;
    gateway.log_with("exporting traces").await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let reply = read_reply(
        client
            .post()
            .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
            .body(
                json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                    "params": {"name": "remote_echo_headers", "arguments": {}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let seen: Value = serde_json::from_str(text(&reply.response["result"])).unwrap();
    let sent = seen["traceparent"]
        .as_str()
        .expect("the target got a traceparent")
        .to_string();
    let mut client = client;
    client.call("local_echo", json!({"message": "x"})).await;

    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut found = Vec::new();
    for _ in 0..100 {
        found = spans.lock().unwrap().clone();
        if found
            .iter()
            .filter(|s| s.name.starts_with("tools/call"))
            .count()
            >= 4
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let server = found
        .iter()
        .find(|s| s.name == "tools/call echo_headers" && s.kind == 2)
        .unwrap_or_else(|| panic!("no server span: {found:#?}"));
    assert_eq!(hex(&server.trace_id), client_trace);
    assert_eq!(hex(&server.parent_span_id), client_span);
    assert_eq!(attribute(server, "mcp.method.name"), "tools/call");
    assert_eq!(attribute(server, "gen_ai.tool.name"), "echo_headers");
    assert_eq!(attribute(server, "portico.target"), "remote");
    let upstream = found
        .iter()
        .find(|s| s.kind == 3 && s.parent_span_id == server.span_id)
        .unwrap_or_else(|| panic!("no client span under the server span: {found:#?}"));
    assert_eq!(upstream.trace_id, server.trace_id);
    assert_eq!(attribute(upstream, "network.transport"), "tcp");
    assert_eq!(
        sent,
        format!("00-{client_trace}-{}-01", hex(&upstream.span_id)),
        "the target received the call span's context"
    );
    let stdio = found
        .iter()
        .find(|s| s.kind == 3 && attribute(s, "portico.target") == "local")
        .unwrap_or_else(|| panic!("no span for the stdio call: {found:#?}"));
    assert_eq!(attribute(stdio, "network.transport"), "pipe");
}

/// The pid of the gateway's stdio fixture child named `name`.
fn fixture_pid(gateway: &Gateway, name: &str) -> Option<u32> {
    gateway.children().into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == name.as_bytes()))
            .unwrap_or(false)
    })
}

/// How long a reload may take to reach a live session's GET stream.
const LIST_CHANGED_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// A live session follows a reload of its route: an added target is connected, a removed one is
/// closed (its process stopped), a kept one keeps its connection, and the client hears that the
/// lists changed; a policy-only change takes effect without reconnecting the target.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_moves_live_sessions_onto_the_new_targets() {
    let targets = |names: &[&str]| {
        names
            .iter()
            .map(|n| stdio_target(n, &[]))
            .collect::<String>()
    };
    let gateway = Gateway::start(&config_with_targets(&targets(&["one", "two"]), "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let mut stream = client.open_stream().await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    assert!(names(&tools, "name").contains(&"two_echo".to_string()));
    let one = fixture_pid(&gateway, "one").expect("one runs");
    let two = fixture_pid(&gateway, "two").expect("two runs");

    // A call in flight at the removed target still gets its answer.
    let in_flight = client.send(json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
        "params": {"name": "two_sleep", "arguments": {"ms": 1500}}}));
    let reload = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        gateway.rewrite_config(&config_with_targets(&targets(&["one", "three"]), ""));
        gateway.log_with("config reloaded").await;
        read_until(
            &mut stream,
            "notifications/tools/list_changed",
            LIST_CHANGED_WITHIN,
        )
        .await;
    };
    let (in_flight, _) = tokio::join!(in_flight, reload);
    let in_flight = read_reply(in_flight).await;
    assert_eq!(
        text(&in_flight.response["result"]),
        "slept 1500 ms",
        "{:?}",
        in_flight.response
    );
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&tools, "name");
    assert!(listed.contains(&"three_echo".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|n| n.starts_with("two_")), "{listed:?}");
    assert_eq!(
        text(&client.call("three_echo", json!({"message": "new"})).await),
        "new"
    );
    let gone = client
        .request(
            "tools/call",
            json!({"name": "two_echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(
        gone.response["error"]["code"], -32602,
        "{:?}",
        gone.response
    );
    assert_eq!(
        fixture_pid(&gateway, "one"),
        Some(one),
        "a kept target keeps its process"
    );
    for _ in 0..100 {
        if !gateway.children().contains(&two) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !gateway.children().contains(&two),
        "the removed target's process is stopped"
    );

    // Only a policy changes: the lists change, the connection stays.
    let deny_echo = stdio_target("one", &[])
        + "            policies:\n              mcpAuthorization:\n                rules:\n                - 'mcp.tool.name != \"echo\"'\n";
    let reloads = gateway.log_count("config reloaded");
    gateway.rewrite_config(&config_with_targets(
        &(deny_echo + &stdio_target("three", &[])),
        "",
    ));
    gateway.log_count_above("config reloaded", reloads).await;
    read_until(
        &mut stream,
        "notifications/tools/list_changed",
        LIST_CHANGED_WITHIN,
    )
    .await;
    let (tools, _) = client.list_all("tools/list", "tools").await;
    let listed = names(&tools, "name");
    assert!(!listed.contains(&"one_echo".to_string()), "{listed:?}");
    assert!(listed.contains(&"three_echo".to_string()), "{listed:?}");
    assert_eq!(
        fixture_pid(&gateway, "one"),
        Some(one),
        "a policy change keeps the process"
    );

    // The session's route is gone (renamed): the session is closed, its processes stopped.
    let reloads = gateway.log_count("config reloaded");
    gateway.rewrite_config(
        &config_with_targets(&targets(&["one", "three"]), "").replace("name: test", "name: other"),
    );
    gateway.log_with("no longer in the config").await;
    assert!(gateway.log_count("config reloaded") > reloads);
    let closed = client
        .send(json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
        .await;
    assert_eq!(closed.status(), 404);
    for _ in 0..100 {
        if gateway.children().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.children(), Vec::<u32>::new());
}
