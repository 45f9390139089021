//! The client-facing Streamable HTTP transport: status codes and JSON-RPC errors of SPEC §4, session
//! lifecycle, limits, HTTPS listeners.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

async fn one_stdio_target(extra: &str) -> Gateway {
    let yaml = format!(
        "{}{extra}",
        config_with_targets(&stdio_target("a", &[]), "")
    );
    Gateway::start(&yaml).await
}

async fn error_of(response: reqwest::Response) -> (u16, i64) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_i64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_the_right_status_and_code() {
    let gateway =
        one_stdio_target("config:\n  limits:\n    requestBody: 2KiB\n    jsonDepth: 8\n").await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let http = reqwest::Client::new();
    let url = gateway.url("/mcp");
    let session = client.session.clone().unwrap();
    let post = |accept: &'static str, content_type: &'static str, body: String| {
        http.post(&url)
            .header("accept", accept)
            .header("content-type", content_type)
            .header("mcp-session-id", &session)
            .body(body)
            .send()
    };
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#.to_string();

    let cases: Vec<(&str, reqwest::Response, (u16, i64))> = vec![
        (
            "Accept without SSE",
            post("application/json", "application/json", ping.clone())
                .await
                .unwrap(),
            (406, -32600),
        ),
        (
            "wrong Content-Type",
            post(ACCEPT_BOTH, "text/plain", ping.clone()).await.unwrap(),
            (415, -32600),
        ),
        (
            "body too large",
            post(
                ACCEPT_BOTH,
                "application/json",
                format!(r#"{{"x":"{}"}}"#, "a".repeat(4096)),
            )
            .await
            .unwrap(),
            (413, -32600),
        ),
        (
            "too deep",
            post(
                ACCEPT_BOTH,
                "application/json",
                format!("{}{}", "[".repeat(20), "]".repeat(20)),
            )
            .await
            .unwrap(),
            (400, -32600),
        ),
        (
            "not JSON",
            post(ACCEPT_BOTH, "application/json", "{nope".into())
                .await
                .unwrap(),
            (400, -32700),
        ),
        (
            "not JSON-RPC",
            post(
                ACCEPT_BOTH,
                "application/json",
                r#"{"id":1,"method":"ping"}"#.into(),
            )
            .await
            .unwrap(),
            (400, -32600),
        ),
        (
            "batch",
            post(ACCEPT_BOTH, "application/json", format!("[{ping}]"))
                .await
                .unwrap(),
            (400, -32600),
        ),
    ];
    for (case, response, expected) in cases {
        assert_eq!(error_of(response).await, expected, "{case}");
    }
    // The session survived every bad request.
    let ok = post(ACCEPT_BOTH, "application/json", ping).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_required_known_and_route_bound() {
    let gateway = one_stdio_target("").await;
    let url = gateway.url("/mcp");
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});

    let mut anonymous = Client::new(url.clone());
    assert_eq!(
        error_of(anonymous.send(ping.clone()).await).await,
        (400, -32600),
        "no session id"
    );
    anonymous.session = Some("made-up-session-id".into());
    assert_eq!(
        error_of(anonymous.send(ping.clone()).await).await,
        (404, -32600),
        "unknown session id"
    );

    let get = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400, "GET without a session");
    let put = reqwest::Client::new().put(&url).send().await.unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, POST, DELETE");
    let elsewhere = reqwest::Client::new()
        .post(gateway.url("/other"))
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404, "no route matches");

    let client = Client::connect(url.clone()).await;
    let again = client.send(serde_json::from_str(INIT).unwrap()).await;
    assert_eq!(
        error_of(again).await,
        (200, -32600),
        "initialize inside a session"
    );
    let unsupported = client
        .post()
        .header("mcp-protocol-version", "1999-01-01")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), 400);
    let refusal: Value = unsupported.json().await.unwrap();
    // The 2026-07-28 form: clients that negotiate read the versions both sides speak from it.
    assert_eq!(refusal["error"]["code"], -32022, "{refusal}");
    assert_eq!(refusal["error"]["data"]["requested"], "1999-01-01");
    assert_eq!(
        refusal["error"]["data"]["supported"],
        json!([
            "2024-11-05",
            "2025-03-26",
            "2025-06-18",
            "2025-11-25",
            "2026-07-28"
        ])
    );
    let supported = client
        .post()
        .header("mcp-protocol-version", "2025-06-18")
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(supported.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_origins_are_refused_unless_local() {
    let gateway = one_stdio_target("").await;
    let http = reqwest::Client::new();
    let init = |origin: &'static str| {
        http.post(gateway.url("/mcp"))
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .header("origin", origin)
            .body(INIT)
            .send()
    };
    assert_eq!(
        error_of(init("https://evil.example").await.unwrap()).await,
        (403, -32600)
    );
    assert_eq!(init("http://localhost:5173").await.unwrap().status(), 200);
    assert_eq!(init("http://127.0.0.1:8080").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_rebinding_protection_checks_the_host() {
    let yaml = config_with_targets(
        &stdio_target("a", &[]),
        "          dnsRebindingProtection: true\n",
    );
    let gateway = Gateway::start(&yaml).await;
    let http = reqwest::Client::new();
    let send = |host: &'static str| {
        http.post(gateway.url("/mcp"))
            .header("host", host)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json")
            .body(INIT)
            .send()
    };
    assert_eq!(send("evil.example:80").await.unwrap().status(), 403);
    assert_eq!(send("localhost:3000").await.unwrap().status(), 200);
}

async fn wait_for_no_children(gateway: &Gateway) -> Vec<u32> {
    for _ in 0..50 {
        if gateway.children().is_empty() {
            return vec![];
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.children()
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_ends_the_session_and_its_processes() {
    let targets = format!("{}{}", stdio_target("a", &[]), stdio_target("b", &[]));
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let first = Client::connect(gateway.url("/mcp")).await;
    let second = Client::connect(gateway.url("/mcp")).await;
    assert_ne!(first.session, second.session);
    assert_eq!(
        gateway.children().len(),
        4,
        "one process per target per session"
    );

    let delete = |client: &Client| {
        client
            .http
            .delete(&client.url)
            .header("mcp-session-id", client.session.clone().unwrap())
            .send()
    };
    assert_eq!(delete(&first).await.unwrap().status(), 200);
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    assert_eq!(
        first.send(ping.clone()).await.status(),
        404,
        "a deleted session is gone"
    );
    assert_eq!(
        second.send(ping).await.status(),
        200,
        "other sessions are unaffected"
    );
    assert_eq!(delete(&first).await.unwrap().status(), 404);
    for _ in 0..50 {
        if gateway.children().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gateway.children().len(),
        2,
        "the deleted session's processes are gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire() {
    let gateway = one_stdio_target("config:\n  mcp:\n    sessionTtl: 300ms\n").await;
    let client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(gateway.children().len(), 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    assert_eq!(client.send(ping).await.status(), 404);
    assert_eq!(wait_for_no_children(&gateway).await, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_target_process() {
    let targets = format!("{}{}", stdio_target("a", &[]), stdio_target("b", &[]));
    let mut gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let _client = Client::connect(gateway.url("/mcp")).await;
    let children = gateway.children();
    assert_eq!(children.len(), 2);
    let pid = gateway.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let Ok(status) = tokio::time::timeout(Duration::from_secs(10), gateway.child.wait()).await
    else {
        panic!(
            "the gateway did not exit within 10 s of SIGTERM; its log:\n{}",
            gateway.log_text()
        );
    };
    let status = status.unwrap();
    assert!(status.success(), "{status}");
    for child in children {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty(),
            "child {child} outlived the gateway: {stat}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_serves_mcp() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = temp_file("cert.pem", &cert.cert.pem());
    let key_path = temp_file("key.pem", &cert.signing_key.serialize_pem());
    let yaml = config_with_targets(&stdio_target("a", &[]), "").replace(
        "  listeners:\n  - routes:",
        &format!(
            "  listeners:\n  - protocol: HTTPS\n    tls:\n      cert: {}\n      key: {}\n    routes:",
            cert_path.display(),
            key_path.display()
        ),
    );
    let gateway = Gateway::start(&yaml).await;
    assert!(gateway.base.starts_with("https://"), "{}", gateway.base);
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let url = gateway.url("/mcp").replace("127.0.0.1", "localhost");
    let mut client = Client::new(url);
    client.http = http;
    let reply = client.send(serde_json::from_str(INIT).unwrap()).await;
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "portico");

    // A connection that never finishes its TLS handshake is closed after 10 s, not kept.
    let address = gateway.base.trim_start_matches("https://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01])
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut byte),
    )
    .await
    .expect("the stalled handshake is closed within 15 s");
    assert!(read.map_or(true, |n| n == 0), "closed, not answered");
}

/// Reads SSE events from `response` until `count` have arrived: `(event, data)` pairs.
async fn sse_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, String)> {
    let field = |block: &str, name: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    let seen = std::cell::Cell::new(0);
    let blocks = sse_blocks(response, |block| {
        if field(block, "event").is_some() && field(block, "data").is_some() {
            seen.set(seen.get() + 1);
        }
        seen.get() >= count
    })
    .await;
    blocks
        .iter()
        .filter_map(|b| Some((field(b, "event")?, field(b, "data")?)))
        .collect()
}

/// The legacy HTTP+SSE transport: the endpoint event, 202 for POSTs, replies on the stream, errors
/// for unknown ids, and the session (and its stdio processes) ended when the stream closes.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_sse_clients_get_the_endpoint_and_their_replies_on_the_stream() {
    let gateway = Gateway::start(&config_with_targets(&stdio_target("a", &[]), "")).await;
    let http = reqwest::Client::new();
    let mut stream = http
        .get(gateway.url("/mcp/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (event, endpoint) = sse_events(&mut stream, 1).await.remove(0);
    assert_eq!(event, "endpoint");
    assert!(
        endpoint.starts_with("/mcp/message?sessionId="),
        "{endpoint}"
    );

    let post = |message: serde_json::Value| {
        http.post(gateway.url(&endpoint))
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
    };
    let early = post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await
        .unwrap();
    assert_eq!(early.status(), 400, "initialize comes first");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "legacy", "version": "1"}}});
    assert_eq!(post(init).await.unwrap().status(), 202);
    let (_, initialized) = sse_events(&mut stream, 1).await.remove(0);
    let initialized: serde_json::Value = serde_json::from_str(&initialized).unwrap();
    assert_eq!(initialized["result"]["protocolVersion"], "2024-11-05");
    let notified = post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    assert_eq!(notified.status(), 202);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "legacy"}}});
    assert_eq!(post(call).await.unwrap().status(), 202);
    let (event, reply) = sse_events(&mut stream, 1).await.remove(0);
    assert_eq!(event, "message");
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["result"]["content"][0]["text"], "legacy");

    let unknown = http
        .post(gateway.url("/mcp/message?sessionId=not-a-session"))
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    assert!(!gateway.children().is_empty(), "the stdio target runs");
    drop(stream);
    for _ in 0..100 {
        if gateway.children().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gateway.children().is_empty(),
        "closing the stream ends the session and stops its processes"
    );
    let gone = post(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// A target that forgets the session (restarted, or expired it) answers 404: the gateway initializes
/// a new upstream session with the client's `initialize` and sends the request again, so the client
/// never notices.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_upstream_session_is_initialized_again() {
    let first = HttpFixture::start(&["--name", "a"]).await;
    let address = first.address();
    let yaml = config_with_targets(&http_target("a", &first.url), "");
    let gateway = Gateway::start(&yaml).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let result = client.call("echo", json!({"message": "before"})).await;
    assert_eq!(text(&result), "before");

    drop(first);
    // The same address, a fresh process: it knows no session.
    let mut restarted = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::timeout(
            Duration::from_secs(5),
            HttpFixture::try_start(&["--name", "a", "--listen", &address]),
        )
        .await;
        if let Ok(Some(fixture)) = started {
            restarted = Some(fixture);
            break;
        }
    }
    let _restarted = restarted.expect("the fixture restarts on its address");

    let result = client.call("echo", json!({"message": "after"})).await;
    assert_eq!(text(&result), "after");
    gateway
        .log_with("upstream session expired; initializing again")
        .await;
}

/// HTTP/2 with prior knowledge (h2c) is served on a plain listener, beside HTTP/1.1: the gateway tells
/// them apart by the client's first bytes.
#[tokio::test(flavor = "multi_thread")]
async fn http2_with_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Full};
    let gateway = one_stdio_target("").await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    let request = http::Request::post(format!("{}/mcp", gateway.base))
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(INIT.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(response.headers().contains_key("mcp-session-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["result"]["serverInfo"]["name"], "portico", "{reply}");

    // HTTP/1.1 on the same listener still works.
    let client = Client::connect(gateway.url("/mcp")).await;
    assert!(client.session.is_some());
}

/// Reads one HTTP/1.1 response with a `content-length` body: its status line and headers, and body.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Some((head.to_string(), body[..length].to_string()));
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap_or(0);
        if read == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..read]);
    }
}

/// A request refused before its body was read (unknown route, unsupported protocol version, wrong
/// content type) keeps its connection usable when the body arrives after the headers: hyper would
/// close it, and a client that reused it (the Python SDK does, after its `server/discover` probe is
/// refused) saw "server disconnected" on its next request.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_keeps_its_connection_when_the_body_comes_late() {
    use tokio::io::AsyncWriteExt;
    let gateway = one_stdio_target("").await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let refusals = [
        ("/nowhere", "application/json", "2025-06-18", "404"),
        ("/mcp", "application/json", "1999-01-01", "400"),
        ("/mcp", "text/plain", "2025-06-18", "415"),
    ];
    for (path, content_type, version, status) in refusals {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: {content_type}\r\nmcp-protocol-version: {version}\r\ncontent-length: {}\r\n\r\n",
            INIT.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(INIT.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut stream).await.unwrap_or_else(|| {
            panic!("connection closed instead of answering {path} {content_type} {version}")
        });
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
    }
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {address}\r\naccept: {ACCEPT_BOTH}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{INIT}",
        INIT.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut stream)
        .await
        .expect("the connection still serves after the refusals");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"serverInfo\""), "{body}");
}

/// The GET stream's events carry ids; a client that reconnects with `Last-Event-ID` gets the events
/// after it, those it missed while it had no stream included.
#[tokio::test(flavor = "multi_thread")]
async fn a_get_stream_resumes_after_its_last_event_id() {
    let yaml = |rule: &str| {
        config_with_targets(
            &(stdio_target("one", &[])
                + &format!(
                    "            policies:\n              mcpAuthorization:\n                rules: ['{rule}']\n"
                )),
            "",
        )
    };
    let gateway = Gateway::start(&yaml("true")).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let mut stream = client.open_stream().await;
    // A reload that changes a policy tells the client that its three lists changed.
    let reloads = gateway.log_count("config reloaded");
    gateway.rewrite_config(&yaml("mcp.tool.name != \"echo\""));
    gateway.log_count_above("config reloaded", reloads).await;
    let seen = read_until(
        &mut stream,
        "notifications/resources/list_changed",
        Duration::from_secs(10),
    )
    .await;
    for id in 1..=3 {
        assert!(seen.contains(&format!("id: {id}\n")), "{seen}");
    }
    drop(stream);

    // Missed while no stream was open: three more.
    let reloads = gateway.log_count("config reloaded");
    gateway.rewrite_config(&yaml("true"));
    gateway.log_count_above("config reloaded", reloads).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("last-event-id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let replayed = read_until(&mut resumed, "id: 6\n", Duration::from_secs(10)).await;
    let ids: Vec<&str> = replayed
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["3", "4", "5", "6"], "{replayed}");
}

/// A TCP relay to `upstream` that behaves as a server with a keep-alive of `idle`: a request sent on a
/// connection idle for longer is dropped with the connection, unanswered, as when a server closes
/// the connection just as the request arrives. Returns the relay's address.
async fn closing_idle_connections(upstream: String, idle: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let last = std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now()));
                let seen = last.clone();
                let back = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        *seen.lock().unwrap() = std::time::Instant::now();
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if last.lock().unwrap().elapsed() > idle {
                        break;
                    }
                    *last.lock().unwrap() = std::time::Instant::now();
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    address.to_string()
}

/// An HTTP target whose server closes connections idle for 5 s (Node.js's and uvicorn's default):
/// a call after a pause longer than that is not sent into the connection the server is closing
/// (it failed with "error sending request" when idle connections were kept for 90 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_pause_longer_than_the_targets_keep_alive_costs_no_call() {
    let fixture = HttpFixture::start(&[]).await;
    let relay = closing_idle_connections(fixture.address(), Duration::from_secs(5)).await;
    let (_gateway, mut client) = session_through(&relay).await;
    assert_eq!(
        text(&client.call("echo", json!({"message": "before"})).await),
        "before"
    );
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let after = client
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "after"}}),
        )
        .await;
    assert_eq!(text(&after.response["result"]), "after", "{after:?}");
}

/// A gateway whose one HTTP target is reached at `relay`, and a client's session on it.
async fn session_through(relay: &str) -> (Gateway, Client) {
    let yaml = config_with_targets(&http_target("remote", &format!("http://{relay}/mcp")), "");
    let gateway = Gateway::start(&yaml).await;
    let client = Client::connect(gateway.url("/mcp")).await;
    (gateway, client)
}

/// A TCP relay to `upstream` that counts the connections it was given, and those still open.
async fn counting_relay(
    upstream: String,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counted, still_open) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counted.fetch_add(1, SeqCst);
            still_open.fetch_add(1, SeqCst);
            let (upstream, still_open) = (upstream.clone(), still_open.clone());
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                still_open.fetch_sub(1, SeqCst);
            });
        }
    });
    (address, accepted, open)
}

/// Requests to an HTTP target, one at a time, go on one kept-open connection (not one each), and
/// connections left idle are closed once idle longer than the pool keeps them (4 s), not kept open
/// for as long as the gateway runs.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_targets_connections_are_reused_and_closed_when_idle() {
    use std::sync::atomic::Ordering::SeqCst;
    let fixture = HttpFixture::start(&[]).await;
    let (relay, accepted, open) = counting_relay(fixture.address()).await;
    let (_gateway, mut client) = session_through(&relay).await;
    for i in 0..20 {
        let message = format!("call {i}");
        let result = client.call("echo", json!({"message": message})).await;
        assert_eq!(text(&result), message);
    }
    let used = accepted.load(SeqCst);
    assert!(
        used <= 2,
        "{used} target connections for initialize, its notification and 20 calls, one at a time"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while open.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(open.load(SeqCst), 0, "idle target connections still open");
    assert_eq!(
        text(&client.call("echo", json!({"message": "again"})).await),
        "again"
    );
}

/// SSE blocks of `response` (`id`, `retry`, `data` fields), until `until` holds for one of them.
async fn sse_blocks(response: &mut reqwest::Response, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut buffer = String::new();
    let mut blocks = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.starts_with(':') {
                continue;
            }
            let done = until(&block);
            blocks.push(block);
            if done {
                return blocks;
            }
        }
    }
}

/// A POST's reply stream starts with a priming event (an id and `retry:`, no data; the session speaks
/// 2025-11-25), its events have ids, and a client whose connection broke resumes it with a GET naming
/// the last event it got: the events after it, then the response; the request was not cancelled
/// meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reply_stream_is_resumed_from_its_last_event() {
    let gateway = one_stdio_target("").await;
    let mut client = Client::new(gateway.url("/mcp"));
    let initialized = client
        .send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "resuming", "version": "1"}}}),
        )
        .await;
    client.session = Some(
        initialized.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string(),
    );
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "t"}}});
    let mut reply = client.send(call).await;
    assert_eq!(
        reply.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let seen = sse_blocks(&mut reply, |b| b.contains("notifications/progress")).await;
    assert!(
        seen[0].starts_with("id: p1-0\nretry: 1000\ndata: "),
        "priming event first: {seen:?}"
    );
    let last = seen
        .last()
        .and_then(|b| b.lines().find_map(|l| l.strip_prefix("id: ")))
        .unwrap()
        .to_string();
    assert_eq!(last, "p1-1");
    drop(reply);

    let mut resumed = client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.session.clone().unwrap())
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = sse_blocks(&mut resumed, |b| b.contains("\"id\":9")).await;
    let progress = rest
        .iter()
        .filter(|b| b.contains("notifications/progress"))
        .count();
    assert_eq!(progress, 2, "the two progress events after p1-1: {rest:?}");
    assert!(rest[0].starts_with("id: p1-2\n"), "{rest:?}");
    assert!(
        rest.last().unwrap().contains("\"result\""),
        "the response, not a cancellation: {rest:?}"
    );
    assert!(!gateway.log_text().contains("request cancelled"));
}

/// A reply stream nobody resumes: the call goes on for `config.limits.streamResumeGrace`, then is
/// cancelled at the target.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_stream_nobody_resumes_is_cancelled_after_the_grace() {
    let gateway = one_stdio_target("config:\n  limits:\n    streamResumeGrace: 700ms\n").await;
    let client = Client::connect(gateway.url("/mcp")).await;
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "sleep", "arguments": {"ms": 30_000}}});
    let mut reply = client.send(call).await;
    assert_eq!(
        reply.headers()["content-type"].to_str().unwrap(),
        "text/event-stream",
        "a call slower than 200 ms streams"
    );
    let _ = tokio::time::timeout(Duration::from_millis(100), reply.chunk()).await;
    drop(reply);
    let dropped = std::time::Instant::now();
    gateway.log_with("fixture a: sleep cancelled").await;
    let waited = dropped.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "the call went on during the grace: cancelled after {waited:?}"
    );
    assert!(
        gateway
            .log_text()
            .contains("did not resume its reply stream in time")
    );
}

/// A reply large enough to be sent in parts (the envelope's head, the target's payload as it came,
/// the closing brace) arrives whole, as one JSON body with its `Content-Length`.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_reply_arrives_whole_with_its_length() {
    let fixture = HttpFixture::start(&["--name", "remote"]).await;
    let targets = format!(
        "{}{}",
        stdio_target("local", &[]),
        http_target("remote", &fixture.url)
    );
    let gateway = Gateway::start(&config_with_targets(&targets, "")).await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    let message: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for target in ["local", "remote"] {
        let id = client.next_id();
        let reply = client
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": format!("{target}_echo"), "arguments": {"message": message}}}))
            .await;
        assert_eq!(reply.status(), 200);
        assert_eq!(
            reply.headers()["content-type"],
            "application/json",
            "{target}"
        );
        let length: usize = reply.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = reply.bytes().await.unwrap();
        assert_eq!(body.len(), length, "{target}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], id, "{target}");
        assert_eq!(text(&body["result"]), message, "{target}");
    }
}
