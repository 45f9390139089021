//! `portico-bench --hardening`: what hostile traffic costs the gateway. RSS (and its anonymous part)
//! before and after a bad-input corpus, after the corpus twice more, and after 10,000 sessions opened
//! and deleted, and a normal client's latency with 1,000 slow connections open.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Conn, fixture, gateway, http_target, percentile, route, rss_kib, status_kib};

/// How long memory is left to settle before it is read, as an operator would see it: the gateway gives
/// what a burst freed back to the system after a quiet second, and again once the target connections
/// the burst left idle are closed, 9 quiet seconds later (`base/allocator.rs`).
const SETTLE: Duration = Duration::from_secs(10);

/// One raw HTTP/1.1 exchange on a fresh connection; the answer is read to its end and dropped.
async fn exchange(address: &str, request: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(address).await?;
    // A refused oversized body may close the connection before all of it is written.
    let _ = stream.write_all(request).await;
    let mut sink = vec![0u8; 64 * 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

fn post(session: Option<&str>, content_type: &str, body: &[u8]) -> Vec<u8> {
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Type: {content_type}\r\n{session}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn chunked(body_bytes: usize) -> Vec<u8> {
    let mut request = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'['; 64 * 1024];
    for _ in 0..body_bytes / chunk.len() {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// About 300 bad requests: oversized (declared and chunked), too deep, not JSON, wrong headers,
/// batches, and every method Portico reads with `params` of every shape.
fn corpus(session: &str) -> Vec<Vec<u8>> {
    let mut requests = Vec::new();
    for _ in 0..30 {
        requests.push(post(None, "application/json", &vec![b' '; 5 << 20]));
    }
    for _ in 0..20 {
        requests.push(chunked(6 << 20));
    }
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let big_string = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x".repeat(3 << 20)}}})
    .to_string();
    for _ in 0..20 {
        requests.push(post(Some(session), "application/json", deep.as_bytes()));
        requests.push(post(
            Some(session),
            "application/json",
            b"{\"jsonrpc\": \"2.0\", ",
        ));
        requests.push(post(Some(session), "text/plain", b"{}"));
        requests.push(post(Some(session), "application/json", b"[{}, {}]"));
    }
    for _ in 0..10 {
        requests.push(post(
            Some(session),
            "application/json",
            big_string.as_bytes(),
        ));
    }
    let methods = [
        "initialize",
        "ping",
        "tools/list",
        "prompts/list",
        "resources/list",
        "tools/call",
        "prompts/get",
        "resources/read",
        "completion/complete",
        "logging/setLevel",
    ];
    let shapes = [
        Value::Null,
        json!(true),
        json!(7),
        json!("x"),
        json!([1]),
        json!({"name": 7}),
        json!({"ref": "x"}),
        json!({"cursor": 5}),
        json!({"arguments": "x", "name": "echo"}),
        json!({"uri": []}),
        json!({"_meta": 1}),
        json!({"level": {}}),
    ];
    for method in methods {
        for params in &shapes {
            let message =
                json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string();
            requests.push(post(Some(session), "application/json", message.as_bytes()));
        }
    }
    requests
}

/// Ping latency p50 over `window` on one session.
async fn ping_p50(url: &str, window: Duration) -> anyhow::Result<f64> {
    let mut conn = Conn::open(url, None).await?;
    conn.initialize().await?;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < window {
        let sent = Instant::now();
        conn.post(&ping).await?;
        samples.push(sent.elapsed());
    }
    samples.sort();
    Ok(percentile(&samples, 0.5))
}

/// Opens and deletes `count` sessions, `parallel` at a time.
async fn churn_sessions(url: &str, count: usize, parallel: usize) -> anyhow::Result<()> {
    let per_worker = count / parallel;
    let workers = (0..parallel).map(|_| async move {
        for _ in 0..per_worker {
            let mut conn = Conn::open(url, None).await?;
            conn.initialize().await?;
            conn.delete().await?;
        }
        anyhow::Ok(())
    });
    for result in futures::future::join_all(workers).await {
        result?;
    }
    Ok(())
}

/// The gateway's resident memory, and the part of it that is not pages of files (the binary's code).
struct Memory {
    rss: u64,
    anonymous: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        Self {
            rss: rss_kib(pid),
            anonymous: status_kib(pid, "RssAnon:"),
        }
    }

    fn row(&self, state: &str, before: &Memory) {
        println!(
            "| {state} | {} | {:.2}× | {} | {:.2}× |",
            mib(self.rss),
            self.rss as f64 / before.rss as f64,
            mib(self.anonymous),
            self.anonymous as f64 / before.anonymous as f64
        );
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub async fn run(portico: &Path) -> anyhow::Result<()> {
    let portico = portico.to_path_buf();
    let (_fixture, fixture_url) = fixture(&portico, &["--name", "h"]).await?;
    let config = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{}config:\n  logging: {{level: error}}\n",
        route("h", "/mcp", &http_target("h", &fixture_url))
    );
    let (gateway_proc, base) = gateway(&portico, &config).await?;
    let pid = gateway_proc.child.id().unwrap_or(0);
    let url = format!("{base}/mcp");
    let address = base.trim_start_matches("http://").to_string();

    // Warm up: the allocator's arenas, the pools and the session table reach their working size.
    churn_sessions(&url, 200, 4).await?;
    let mut session = Conn::open(&url, None).await?;
    let session_id = session.initialize().await?;
    tokio::time::sleep(SETTLE).await;
    let before = Memory::of(pid);

    let requests = corpus(&session_id);
    let count = requests.len();
    for request in &requests {
        exchange(&address, request).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let after_corpus = Memory::of(pid);
    // Twice more: memory a first pass leaves is the allocator's high-water mark and code paged in,
    // which the next passes reuse; growth that goes on with each pass would be a leak.
    for request in requests.iter().chain(&requests) {
        exchange(&address, request).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let after_three_corpora = Memory::of(pid);
    session
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await?;

    churn_sessions(&url, 10_000, 8).await?;
    tokio::time::sleep(SETTLE).await;
    let after_sessions = Memory::of(pid);

    println!("## hostile input: gateway RSS\n");
    println!(
        "| state | RSS | vs before | of it anonymous (heap, stacks) | vs before |\n|---|---|---|---|---|"
    );
    before.row("after warm-up (200 sessions opened and deleted)", &before);
    after_corpus.row(
        &format!("after the bad-input corpus ({count} requests)"),
        &before,
    );
    after_three_corpora.row("after the corpus twice more", &before);
    after_sessions.row("after 10,000 sessions opened and deleted", &before);

    let window = Duration::from_secs(2);
    let quiet = ping_p50(&url, window).await?;
    let mut slow = Vec::new();
    for i in 0..1000 {
        let mut stream = TcpStream::connect(&address).await?;
        if i % 2 == 0 {
            stream.write_all(b"P").await?;
        }
        slow.push(stream);
    }
    let dribble = async {
        for byte in b"OST /mcp HTTP/1.1\r\n" {
            for stream in slow.iter_mut().step_by(2) {
                let _ = stream.write_all(&[*byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, loaded) = tokio::join!(dribble, ping_p50(&url, window));
    println!("\n## a normal client while 1,000 slow connections are open\n");
    println!("| condition | ping p50 ms |\n|---|---|");
    println!("| no other connections | {quiet:.3} |");
    println!(
        "| 500 silent + 500 byte-at-a-time connections | {:.3} |",
        loaded?
    );
    Ok(())
}
