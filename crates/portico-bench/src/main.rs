//! `portico-bench`: measures Portico against the fixture server directly, on the same machine, in one
//! run, alternating the two sides round by round so that machine noise hits both alike.
//!
//! It starts the fixture servers and the gateway itself (the release `portico` binary), then reports:
//! - `tools/call` throughput and latency at 32 connections on one session, direct vs through Portico;
//! - `tools/call` latency at 1 connection (the added p50);
//! - `tools/list` latency at 1 connection over 10 targets of 50 tools vs 1 target;
//! - the gateway's resident memory idle and after 1000 idle sessions.

mod goals;
mod hardening;
mod instructions;
mod nginx;
mod tracing_cost;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks Portico against the fixture server directly")]
struct Cli {
    /// The portico binary (default: `portico` next to this binary).
    #[arg(long)]
    portico: Option<PathBuf>,
    /// With `--goals`: the portico binary that serves the fixtures (default: `--portico`), so that
    /// a build instrumented for profile-guided optimization profiles the gateway alone.
    #[arg(long, requires = "goals")]
    fixtures: Option<PathBuf>,
    /// Seconds per measurement window.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds per comparison; each round measures both sides.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent connections for the throughput test.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Idle sessions opened for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Only the in-process costs (policies measured without the network): seconds, not minutes.
    #[arg(long)]
    micro: bool,
    /// Only the cost of hostile traffic: RSS after a bad-input corpus and 10,000 sessions, latency
    /// beside 1,000 slow connections.
    #[arg(long)]
    hardening: bool,
    /// Only the cost of tracing: off, 1 % sampled, every request.
    #[arg(long)]
    tracing: bool,
    /// Only the figures of the performance goals (gateway CPU per call, added latency, list merging,
    /// session start-up, memory per session, binary size), each against direct in the same run.
    #[arg(long)]
    goals: bool,
    /// The performance gate: instructions per proxied call and per merged tool, counted under
    /// `valgrind --tool=callgrind`; fails when one is > 10 % worse than the committed baseline.
    #[arg(long)]
    instructions: bool,
    /// With `--instructions`: write the figures as the new baseline.
    #[arg(long, requires = "instructions")]
    update_baseline: bool,
}

/// A process the benchmark started, stopped with `SIGTERM` when dropped: the gateway drains and
/// exits as it would for an operator, so that a build instrumented for profile-guided optimization
/// writes its profile (`scripts/release.sh`); the fixture has no handler and dies at once.
struct Proc {
    child: Child,
    /// A file written for the process (the gateway's config), removed with it.
    file: Option<PathBuf>,
}

/// Sends `SIGTERM` to a child of ours that has not been reaped.
fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        // SAFETY: `kill` only sends a signal; the pid is our own child's, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate(&self.child);
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Starts `portico fixture --transport http` and returns its `/mcp` URL.
async fn fixture(portico: &PathBuf, args: &[&str]) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(portico)
        .args(["fixture", "--transport", "http"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default();
    let url = line
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("fixture: {line}"))?;
    Ok((Proc { child, file: None }, url.to_string()))
}

/// Starts the gateway on `config` and returns its base URL.
async fn gateway(portico: &PathBuf, config: &str) -> anyhow::Result<(Proc, String)> {
    // One file per gateway: each watches its file and would reload another's config written there.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("portico-bench-{}-{n}.yaml", std::process::id()));
    std::fs::write(&path, config)?;
    let spawned = Command::new(portico)
        .arg("-f")
        .arg(&path)
        .env("RUST_LOG", "warn,portico::server=info")
        .stderr(Stdio::piped())
        .spawn();
    let mut proc = match spawned {
        Ok(child) => Proc {
            child,
            file: Some(path),
        },
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    let stderr = proc
        .child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.split("address=").nth(1) {
            let address = address
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .replace("0.0.0.0", "127.0.0.1");
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((proc, address));
        }
    }
    anyhow::bail!("the gateway did not start")
}

/// One HTTP/1.1 connection speaking MCP on one session.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    url: hyper::Uri,
    session: Option<String>,
    /// An `Authorization` header value sent with every request.
    auth: Option<String>,
}

/// One side of a comparison: an MCP endpoint, and the bearer token to present, if any.
#[derive(Clone, Copy)]
struct Side<'a> {
    url: &'a str,
    token: Option<&'a str>,
}

impl<'a> Side<'a> {
    fn plain(url: &'a str) -> Self {
        Self { url, token: None }
    }
}

impl Conn {
    async fn open(url: &str, session: Option<String>) -> anyhow::Result<Self> {
        let url: hyper::Uri = url.parse()?;
        let address = format!(
            "{}:{}",
            url.host().unwrap_or("127.0.0.1"),
            url.port_u16().unwrap_or(80)
        );
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            url,
            session,
            auth: None,
        })
    }

    /// POSTs `message`; returns the session id header (if any) and the body.
    async fn post(&mut self, message: &Value) -> anyhow::Result<(Option<String>, Bytes)> {
        let mut request = Request::post(self.url.clone())
            .header(
                "host",
                self.url
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or("127.0.0.1"),
            )
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(Bytes::from(message.to_string())))?)
            .await?;
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.into_body().collect().await?.to_bytes();
        Ok((session, body))
    }

    /// Ends the session (`DELETE`).
    async fn delete(&mut self) -> anyhow::Result<()> {
        let mut request = Request::delete(self.url.clone()).header(
            "host",
            self.url
                .authority()
                .map(|a| a.as_str())
                .unwrap_or("127.0.0.1"),
        );
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(Bytes::new()))?)
            .await?;
        response.into_body().collect().await?;
        Ok(())
    }

    /// `initialize` + `notifications/initialized`; the connection then belongs to that session.
    async fn initialize(&mut self) -> anyhow::Result<String> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
        let (session, _) = self.post(&init).await?;
        let session = session.ok_or_else(|| anyhow::anyhow!("no session id from {}", self.url))?;
        self.session = Some(session.clone());
        self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(session)
    }
}

#[derive(Clone, Copy, Default)]
struct Stats {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests answered in the window.
    calls: usize,
}

impl Stats {
    /// Each figure's median over `rounds`.
    fn median_of(rounds: &[Stats]) -> Stats {
        Stats {
            per_second: median(&mut rounds.iter().map(|s| s.per_second).collect::<Vec<_>>()),
            p50_ms: median(&mut rounds.iter().map(|s| s.p50_ms).collect::<Vec<_>>()),
            p99_ms: median(&mut rounds.iter().map(|s| s.p99_ms).collect::<Vec<_>>()),
            calls: rounds.iter().map(|s| s.calls).sum::<usize>() / rounds.len().max(1),
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Sends `make(id)` on `connections` connections of one session for `seconds`.
async fn load(
    side: Side<'_>,
    connections: usize,
    seconds: f64,
    make: fn(u64) -> Value,
) -> anyhow::Result<Stats> {
    let auth = side.token.map(|t| format!("Bearer {t}"));
    let mut first = Conn::open(side.url, None).await?;
    first.auth = auth.clone();
    let session = first.initialize().await?;
    let mut conns = vec![first];
    for _ in 1..connections {
        let mut conn = Conn::open(side.url, Some(session.clone())).await?;
        conn.auth = auth.clone();
        conns.push(conn);
    }
    // Warm-up: one request per connection.
    for conn in &mut conns {
        conn.post(&make(1)).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut id = (c as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let sent = Instant::now();
                    let (_, body) = conn.post(&make(id)).await?;
                    if !body.windows(9).any(|w| w == b"\"result\":") {
                        anyhow::bail!("request failed: {}", String::from_utf8_lossy(&body));
                    }
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Ok(Stats {
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        calls: all.len(),
    })
}

/// The floor for a fan-out: the client itself asks every target at once and waits for all replies,
/// as a gateway that costs nothing would.
async fn fan_out(urls: &[String], seconds: f64) -> anyhow::Result<Stats> {
    let mut conns = Vec::new();
    for url in urls {
        let mut conn = Conn::open(url, None).await?;
        conn.initialize().await?;
        conns.push(conn);
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut id = 0;
    while started.elapsed().as_secs_f64() < seconds {
        id += 1;
        let sent = Instant::now();
        let message = list_tools(id);
        let replies = futures::future::join_all(conns.iter_mut().map(|c| c.post(&message))).await;
        for reply in replies {
            reply?;
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    Ok(Stats {
        per_second: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        calls: latencies.len(),
    })
}

fn echo_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hello"}}})
}

fn list_tools(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}})
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `rounds` × (a, b) alternately; returns the median of each side's rounds.
async fn compare(
    cli: &Cli,
    a: Side<'_>,
    b: Side<'_>,
    connections: usize,
    make: fn(u64) -> Value,
) -> anyhow::Result<(Stats, Stats)> {
    let stats = compare_all(cli, &[a, b], connections, make).await?;
    Ok((stats[0], stats[1]))
}

/// Runs `rounds` × every side in turn; returns the median of each side's rounds.
async fn compare_all(
    cli: &Cli,
    sides: &[Side<'_>],
    connections: usize,
    make: fn(u64) -> Value,
) -> anyhow::Result<Vec<Stats>> {
    let mut rounds: Vec<Vec<Stats>> = vec![Vec::new(); sides.len()];
    // Each round starts with the next side, so no side always runs first.
    for round in 0..cli.rounds {
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            rounds[i].push(load(sides[i], connections, cli.seconds, make).await?);
        }
    }
    Ok(rounds.iter().map(|r| Stats::median_of(r)).collect())
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in KiB, e.g. `VmRSS:` or `RssAnon:`.
fn status_kib(pid: u32, field: &str) -> u64 {
    portico::base::process::status_kib(&pid.to_string(), field)
}

fn row(name: &str, s: Stats) {
    println!(
        "| {name} | {:.0} | {:.3} | {:.3} |",
        s.per_second, s.p50_ms, s.p99_ms
    );
}

/// In-process costs, measured without the network: token validation and rule evaluation.
async fn micro(signer: &jwt::Signer) -> anyhow::Result<()> {
    use portico::policy::{authz, jwt as portico_jwt};
    println!("## in-process costs (no network)\n");
    let policy: serde_json::Value = {
        let yaml = signer.policy();
        let jwks = yaml
            .split("inline: '")
            .nth(1)
            .and_then(|r| r.strip_suffix('\''))
            .unwrap_or_default();
        json!({"mode": "strict", "issuer": "https://bench.test", "audiences": ["bench"], "jwks": {"inline": jwks}})
    };
    let config: portico_jwt::Config = serde_json::from_value(policy)?;
    let auth = portico_jwt::JwtAuth::compile(&config)?;
    let headers = |token: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header"),
        );
        headers
    };
    let fresh: Vec<_> = (0..2000)
        .map(|i| headers(&signer.token_for(&format!("user-{i}"))))
        .collect();
    let started = Instant::now();
    for h in &fresh {
        auth.authenticate(h)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let first = started.elapsed().as_secs_f64() * 1e6 / fresh.len() as f64;
    let started = Instant::now();
    for _ in 0..10 {
        for h in &fresh {
            auth.authenticate(h)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let again = started.elapsed().as_secs_f64() * 1e6 / (fresh.len() * 10) as f64;

    let rules = serde_json::json!({"rules": (0..9).map(|i| json!({"deny": format!("mcp.tool.name == \"forbidden_{i}\"")}))
        .chain(std::iter::once(json!("mcp.tool.name != \"\""))).collect::<Vec<_>>()});
    let authorization = authz::Authorization::compile(&serde_json::from_value(rules)?)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let caller = authz::Caller {
        jwt: json!({"sub": "bench", "roles": ["dev"]}),
        ..Default::default()
    };
    let started = Instant::now();
    let lists = 20;
    for _ in 0..lists {
        let base = caller.context();
        for i in 0..500 {
            let mut context = base.new_inner_scope();
            context.add_variable_from_value(
                "mcp",
                authz::mcp_variable("tools/list", "a", "tool", &format!("tool_{i}"), None),
            );
            std::hint::black_box(authorization.decide(&context));
        }
    }
    let per_list = started.elapsed().as_secs_f64() * 1e3 / lists as f64;
    let (sigv4, bearer) = backend_auth_costs().await?;
    let (guard_request, guard_response) = prompt_guard_costs()?;
    let recording = metrics_cost();
    println!("| operation | cost |\n|---|---|");
    println!(
        "| metrics: record one tools/call (server and client operation histograms) | {recording:.2} µs |"
    );
    println!("| backendAuth aws: SigV4-sign a 200-byte tools/call POST | {sigv4:.2} µs |");
    println!("| backendAuth gcp: add a cached token to a request | {bearer:.2} µs |");
    println!(
        "| ai promptGuard: 10 deny patterns + 4 builtin masks over 4 KiB of tool arguments | {guard_request:.1} µs |"
    );
    println!(
        "| ai promptGuard: the same over a 4 KiB tool result (parse, guard, re-serialize) | {guard_response:.1} µs |"
    );
    println!("| ES256 token, first use (signature verified) | {first:.1} µs |");
    println!("| ES256 token, seen before (remembered until it expires) | {again:.2} µs |");
    println!(
        "| 10 per-tool rules over a 500-tool list, first time for a caller | {per_list:.2} ms |\n"
    );
    Ok(())
}

/// Per-request cost of the metrics a tools/call records: the server operation and the client operation
/// histograms, labels built as the gateway builds them, in µs.
fn metrics_cost() -> f64 {
    use portico::telemetry::metrics::{Operation, metrics};
    let registry = metrics();
    let operation = Operation {
        route: "bench",
        method: "tools/call",
        target: "search",
        item: "echo",
        error: None,
        version: "2025-06-18",
    };
    let rounds = 200_000;
    let started = Instant::now();
    for i in 0..rounds {
        let elapsed = Duration::from_micros(100 + (i % 1000) as u64);
        registry.record_server_operation(std::hint::black_box(&operation), elapsed);
        registry.record_client_operation(&operation, "tcp", elapsed);
    }
    started.elapsed().as_secs_f64() * 1e6 / rounds as f64
}

/// Per-call cost of a prompt guard with 10 deny patterns and the 4 builtins as masks, over 4 KiB of
/// arguments in nested objects and arrays (nothing matches the deny patterns, so every rule runs on
/// every string), and over a 4 KiB tool result as the gateway sees it (raw JSON in, raw JSON out).
fn prompt_guard_costs() -> anyhow::Result<(f64, f64)> {
    use portico::policy::ai::{Guards, Scope, guard::GuardConfig};
    let deny: Vec<Value> = [
        "(?i)password",
        "(?i)secret",
        "(?i)api[_-]?key",
        "BEGIN [A-Z ]*PRIVATE KEY",
        "AKIA[0-9A-Z]{16}",
        "(?i)ssh-rsa ",
        "xox[bp]-[0-9a-z-]+",
        "(?i)bearer [a-z0-9._-]{20,}",
        "ghp_[A-Za-z0-9]{36}",
        "(?i)confidential",
    ]
    .iter()
    .map(|p| json!({"pattern": p}))
    .collect();
    let mask: Vec<Value> = ["email", "phoneNumber", "ssn", "creditCard"]
        .iter()
        .map(|b| json!({"builtin": b}))
        .collect();
    let configs: Vec<GuardConfig> =
        serde_json::from_value(json!([{"regex": {"deny": deny, "mask": mask}}]))?;
    let guards = Guards::compile("request", "promptGuard", &configs)?;
    let sentence =
        "The quarterly report covers revenue, churn and the roadmap for the next release. ";
    let mut arguments = json!({"query": sentence.repeat(10), "options": {"notes": [sentence.repeat(8), sentence.repeat(8)], "limit": 20},
        "history": (0..12).map(|i| json!({"turn": i, "text": sentence.repeat(2)})).collect::<Vec<_>>()});
    let size = arguments.to_string().len();
    anyhow::ensure!((4000..4600).contains(&size), "arguments are {size} bytes");
    let n = 5_000;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(guards.apply(&mut arguments, Scope::All).ok());
    }
    let request = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let result = json!({"content": [{"type": "text", "text": sentence.repeat(50)}]}).to_string();
    let started = Instant::now();
    for _ in 0..n {
        let mut parsed: Value = serde_json::from_str(&result)?;
        if guards.apply(&mut parsed, Scope::Text) == Ok(true) {
            std::hint::black_box(serde_json::to_string(&parsed)?);
        }
    }
    let response = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ok((request, response))
}

/// Per-request costs of `backendAuth`: SigV4 signing, and reading a cached cloud token (fetched once
/// from a loopback metadata server that counts its hits, to show no request fetches).
async fn backend_auth_costs() -> anyhow::Result<(f64, f64)> {
    use portico::policy::backend_auth::{BackendAuth, Config};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metadata = listener.local_addr()?;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await;
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = r#"{"access_token":"ya29.bench","expires_in":3600,"token_type":"Bearer"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    // Set before any thread reads the environment: the bench is single-threaded here.
    unsafe {
        std::env::set_var("GCE_METADATA_HOST", metadata.to_string());
        std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", "");
        std::env::set_var("HOME", "/nonexistent");
    }
    let compile = |policy: Value| -> anyhow::Result<_> {
        let config: Config = serde_json::from_value(policy)?;
        let auth = BackendAuth::compile(&config)?;
        Ok(std::sync::Arc::new(auth))
    };
    let url: reqwest::Url =
        "https://agent.bedrock-agentcore.us-east-1.amazonaws.com/mcp".parse()?;
    let body = serde_json::to_vec(&echo_call(7))?;
    let request = || {
        let mut request = reqwest::Request::new(http::Method::POST, url.clone());
        request
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        request.headers_mut().insert(
            "mcp-session-id",
            "0123456789abcdef0123456789abcdef".parse().expect("header"),
        );
        *request.body_mut() = Some(body.clone().into());
        request
    };
    let per_request = |started: Instant, n: usize| started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let n = 20_000;
    // Building the request is not part of the cost: measured alone and taken off.
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(request());
    }
    let building = per_request(started, n);

    let aws = compile(json!({"aws": {"accessKeyId": "AKIDBENCH", "secretAccessKey": "bench-secret", "region": "us-east-1"}}))?
        .for_target(&url);
    let started = Instant::now();
    for _ in 0..n {
        let mut r = request();
        aws.apply(&mut r, None).await.map_err(anyhow::Error::msg)?;
        std::hint::black_box(r);
    }
    let sigv4 = per_request(started, n) - building;

    let gcp = compile(json!({"gcp": {"type": "accessToken"}}))?.for_target(&url);
    let mut first = request();
    gcp.apply(&mut first, None)
        .await
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    for _ in 0..n {
        let mut r = request();
        gcp.apply(&mut r, None).await.map_err(anyhow::Error::msg)?;
        std::hint::black_box(r);
    }
    let bearer = per_request(started, n) - building;
    let fetched = hits.load(std::sync::atomic::Ordering::SeqCst);
    anyhow::ensure!(
        fetched == 1,
        "the token was fetched {fetched} times for {} requests",
        n + 1
    );
    Ok((sigv4, bearer))
}

/// 9 deny rules that never hold and 1 allow rule, all reading the tool's name: 10 evaluations per tool.
fn per_item_rules() -> String {
    let mut rules: Vec<String> = (0..9)
        .map(|i| format!("- deny: 'mcp.tool.name == \"forbidden_{i}\"'"))
        .collect();
    rules.push("- 'mcp.tool.name != \"\"'".into());
    rules.join("\n")
}

/// The same shape reading only claims, so one decision covers a target's whole list.
fn claim_rules() -> String {
    let mut rules: Vec<String> = (0..9)
        .map(|i| format!("- deny: 'has(jwt.banned_{i})'"))
        .collect();
    rules.push("- 'true'".into());
    rules.join("\n")
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

fn with_backend_policy(route: String, rules: &str) -> String {
    let policy = format!(
        "          policies:\n            mcpAuthorization:\n              rules:\n{}",
        indent(rules, 14)
    );
    route.replace("      - mcp:\n", &format!("      - mcp:\n{policy}"))
}

fn with_route_policy(route: String, policy: &str) -> String {
    let (head, rest) = route.split_once('\n').unwrap_or((&route, ""));
    format!("{head}\n      policies:\n{}{rest}", indent(policy, 8))
}

/// A CA and a server certificate for `bench.example.com`, made for the run.
mod tls {
    pub struct Pki {
        pub ca: String,
        pub cert: String,
        pub key: String,
    }

    impl Pki {
        pub fn new() -> anyhow::Result<Self> {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
            let ca_key = KeyPair::generate()?;
            let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key)?;
            let issuer = Issuer::new(ca_params, ca_key);
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(vec!["bench.example.com".to_string()])?
                .signed_by(&key, &issuer)?;
            let dir =
                std::env::temp_dir().join(format!("portico-bench-pki-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let write = |name: &str, pem: String| -> anyhow::Result<String> {
                let path = dir.join(name);
                std::fs::write(&path, pem)?;
                Ok(path.display().to_string())
            };
            Ok(Self {
                ca: write("ca.pem", ca.pem())?,
                cert: write("cert.pem", cert.pem())?,
                key: write("key.pem", key.serialize_pem())?,
            })
        }
    }
}

/// An ES256 key made for the run, its JWKS in the route's policy, and tokens signed with it.
mod jwt {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub struct Signer(EncodingKey);

    impl Signer {
        pub fn new() -> Self {
            let pair = rcgen::KeyPair::generate().expect("an EC key");
            Self(EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("a PEM key"))
        }

        pub fn policy(&self) -> String {
            let mut jwk = Jwk::from_encoding_key(&self.0, Algorithm::ES256).expect("a JWK");
            jwk.common.key_id = Some("bench".into());
            let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap_or_default();
            format!(
                "jwtAuth:\n  mode: strict\n  issuer: https://bench.test\n  audiences: [bench]\n  jwks:\n    inline: '{jwks}'"
            )
        }

        pub fn token(&self) -> String {
            self.token_for("bench")
        }

        pub fn token_for(&self, sub: &str) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("bench".into());
            let now = jsonwebtoken::get_current_timestamp();
            let claims = serde_json::json!({"iss": "https://bench.test", "aud": "bench", "sub": sub, "exp": now + 3600, "iat": now});
            jsonwebtoken::encode(&header, &claims, &self.0).unwrap_or_default()
        }
    }
}

fn http_target(name: &str, url: &str) -> String {
    format!("          - name: {name}\n            mcp: {{host: \"{url}\"}}\n")
}

fn route(name: &str, path: &str, targets: &str) -> String {
    format!(
        "    - name: {name}\n      matches: [{{path: {{exact: {path}}}}}]\n      backends:\n      - mcp:\n          targets:\n{targets}"
    )
}

// One thread for the load generator, so both sides are driven alike and placement noise stays low.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.micro {
        return micro(&jwt::Signer::new()).await;
    }
    let portico = match &cli.portico {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("portico"),
    };
    anyhow::ensure!(
        portico.exists(),
        "{} not found: run `cargo build --release` first",
        portico.display()
    );
    if cli.hardening {
        return hardening::run(&portico).await;
    }
    if cli.tracing {
        return tracing_cost::run(&cli, &portico).await;
    }
    if cli.goals {
        return goals::run(&cli, &portico).await;
    }
    if cli.instructions {
        return instructions::run(&portico, cli.update_baseline).await;
    }

    let (_call_fixture, call_url) = fixture(&portico, &["--name", "call"]).await?;
    // The same server over HTTPS, for the backendTLS comparison.
    let pki = tls::Pki::new()?;
    let (_tls_fixture, tls_url) = fixture(
        &portico,
        &[
            "--name",
            "call",
            "--tls-cert",
            &pki.cert,
            "--tls-key",
            &pki.key,
        ],
    )
    .await?;
    let tls_target = format!(
        "{}            policies:\n              backendTLS:\n                sni: bench.example.com\n                root: {}\n",
        http_target("call", &tls_url),
        pki.ca
    );
    let mut list_fixtures = Vec::new();
    let mut list_urls = Vec::new();
    let mut list_targets = Vec::new();
    for i in 0..10 {
        // 20 built-in tools + 30 generated = 50 tools per target.
        let (proc, url) = fixture(
            &portico,
            &["--name", &format!("list{i}"), "--extra-tools", "30"],
        )
        .await?;
        list_fixtures.push(proc);
        list_targets.push(http_target(&format!("t{i}"), &url));
        list_urls.push(url);
    }
    // Two targets of 250 tools (20 built-in + 230 generated) for the authorization comparison.
    let (_half_a, half_a) =
        fixture(&portico, &["--name", "half-a", "--extra-tools", "230"]).await?;
    let (_half_b, half_b) =
        fixture(&portico, &["--name", "half-b", "--extra-tools", "230"]).await?;
    let halves = format!("{}{}", http_target("a", &half_a), http_target("b", &half_b));
    let signer = jwt::Signer::new();
    let config = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{}{}{}{}{}{}{}{}config:\n  logging: {{level: warn}}\n",
        route("call", "/call", &http_target("call", &call_url)),
        route("ten", "/ten", &list_targets.concat()),
        route("one", "/one", &list_targets[0]),
        route("norules", "/norules", &halves),
        with_backend_policy(route("rules", "/rules", &halves), &per_item_rules()),
        with_backend_policy(route("claimrules", "/claimrules", &halves), &claim_rules()),
        with_route_policy(
            route("jwt", "/jwt", &http_target("call", &call_url)),
            &signer.policy()
        ),
        route("tls", "/tls", &tls_target),
    );
    let (gateway_proc, base) = gateway(&portico, &config).await?;
    let gateway_pid = gateway_proc.child.id().unwrap_or(0);
    let through = format!("{base}/call");
    let start_rss = rss_kib(gateway_pid);

    println!(
        "## tools/call `echo`, {} connections, one session ({} s × {} rounds, median)\n",
        cli.connections, cli.seconds, cli.rounds
    );
    println!("| side | calls/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let (direct, proxied) = compare(
        &cli,
        Side::plain(&call_url),
        Side::plain(&through),
        cli.connections,
        echo_call,
    )
    .await?;
    row("direct to fixture", direct);
    row("through portico", proxied);
    println!(
        "\nthroughput ratio: {:.2}×\n",
        proxied.per_second / direct.per_second
    );

    println!("## tools/call `echo`, 1 connection\n");
    println!("| side | calls/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let (direct, proxied) = compare(
        &cli,
        Side::plain(&call_url),
        Side::plain(&through),
        1,
        echo_call,
    )
    .await?;
    row("direct to fixture", direct);
    row("through portico", proxied);
    println!("\nadded p50: {:.3} ms\n", proxied.p50_ms - direct.p50_ms);

    println!(
        "## tools/list through portico, 1 connection: 10 targets × 50 tools vs 1 target × 50 tools\n"
    );
    println!("| route | lists/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let (one_url, ten_url) = (format!("{base}/one"), format!("{base}/ten"));
    let (one, ten) = compare(
        &cli,
        Side::plain(&one_url),
        Side::plain(&ten_url),
        1,
        list_tools,
    )
    .await?;
    row("1 target", one);
    row("10 targets", ten);
    println!(
        "\n10-target / 1-target p50: {:.2}×\n",
        ten.p50_ms / one.p50_ms
    );
    println!(
        "Reference, no gateway: the client lists the same targets directly, one, then all ten at once.\n"
    );
    println!("| direct | lists/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let one_direct = load(Side::plain(&list_urls[0]), 1, cli.seconds, list_tools).await?;
    let ten_direct = fan_out(&list_urls, cli.seconds).await?;
    row("1 target", one_direct);
    row("10 targets at once", ten_direct);
    println!(
        "\ndirect 10-target / 1-target p50: {:.2}×\n",
        ten_direct.p50_ms / one_direct.p50_ms
    );

    println!("## mcpAuthorization: tools/list of 500 tools over 2 targets, 1 connection\n");
    println!("| route | lists/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let (no_rules, rules, claim_rules_url) = (
        format!("{base}/norules"),
        format!("{base}/rules"),
        format!("{base}/claimrules"),
    );
    let sides = [
        Side::plain(&no_rules),
        Side::plain(&rules),
        Side::plain(&claim_rules_url),
    ];
    let stats = compare_all(&cli, &sides, 1, list_tools).await?;
    let (none, per_item, claims_only) = (stats[0], stats[1], stats[2]);
    row("no rules", none);
    row(
        "10 rules reading `mcp.tool.name` (evaluated per tool)",
        per_item,
    );
    row(
        "10 rules reading only `jwt` (evaluated once per target)",
        claims_only,
    );
    println!(
        "\nadded p50: per-tool rules {:+.0} %, claim rules {:+.0} %\n",
        (per_item.p50_ms / none.p50_ms - 1.0) * 100.0,
        (claims_only.p50_ms / none.p50_ms - 1.0) * 100.0
    );

    println!("## jwtAuth: tools/call `echo` with an ES256 token vs without, 1 connection\n");
    println!("| route | calls/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let token = signer.token();
    let jwt_url = format!("{base}/jwt");
    let (plain, with_jwt) = compare(
        &cli,
        Side::plain(&through),
        Side {
            url: &jwt_url,
            token: Some(&token),
        },
        1,
        echo_call,
    )
    .await?;
    row("no jwtAuth", plain);
    row("jwtAuth, token validated on every request", with_jwt);
    println!(
        "\nadded p50: {:.1} µs\n",
        (with_jwt.p50_ms - plain.p50_ms) * 1000.0
    );

    println!(
        "## backendTLS: tools/call `echo` through an HTTPS target vs a plain HTTP one, 1 connection\n"
    );
    println!("| target | calls/s | p50 ms | p99 ms |\n|---|---|---|---|");
    let tls_route = format!("{base}/tls");
    let (plain_http, over_tls) = compare(
        &cli,
        Side::plain(&through),
        Side::plain(&tls_route),
        1,
        echo_call,
    )
    .await?;
    row("http://", plain_http);
    row("https:// (backendTLS, pooled connection)", over_tls);
    println!(
        "\nHTTPS / HTTP p50: {:.2}×\n",
        over_tls.p50_ms / plain_http.p50_ms
    );

    micro(&signer).await?;

    println!("## memory (gateway RSS)\n");
    let idle_rss = rss_kib(gateway_pid);
    let mut conns = Vec::new();
    for _ in 0..cli.sessions {
        let mut conn = Conn::open(&format!("{base}/call"), None).await?;
        conn.initialize().await?;
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded_rss = rss_kib(gateway_pid);
    println!("| state | RSS |\n|---|---|");
    println!(
        "| idle, just started | {:.1} MiB |",
        start_rss as f64 / 1024.0
    );
    println!(
        "| idle, after the runs above | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| with {} more idle sessions (one HTTP target each) | {:.1} MiB ({:.1} KiB per session) |",
        cli.sessions,
        loaded_rss as f64 / 1024.0,
        loaded_rss.saturating_sub(idle_rss) as f64 / cli.sessions as f64
    );
    Ok(())
}
