//! `portico-bench --goals`: the figures of the performance issue (#11), each as a ratio to a direct
//! connection measured in the same run, so they hold on any machine:
//! - gateway CPU per proxied `tools/call` at 32 connections (from `/proc/<pid>/stat`);
//! - added latency at 1 connection, p50 and p99;
//! - `tools/list` of 10 targets × 50 tools at 1 connection, against the client asking the ten itself,
//!   and gateway CPU per merged tool;
//! - 200 × (`initialize` + `DELETE`) through one HTTP target and one stdio target, vs direct, and
//!   the gateway's CPU per HTTP session;
//! - RSS idle and per idle session with one HTTP target;
//! - the size of the `portico` binary as built.
//!
//! Where nginx is installed, the two call figures also show it as a reference proxy in the same run
//! (`nginx.rs`): the CPU and latency goals are absolute, and nginx's figures tell what this machine
//! lets any proxy reach.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::nginx::Nginx;
use crate::{
    Cli, Conn, Side, Stats, echo_call, fan_out, fixture, gateway, http_target, list_tools, load,
    median, route, rss_kib, status_kib,
};

/// How long memory is left to settle before a session reading: the gateway gives what a burst freed
/// back to the system in the first quiet second after it (`base/allocator.rs`); a reading taken
/// sooner depends on whether that has happened yet.
const QUIET: Duration = Duration::from_millis(2500);

/// CPU seconds (user, system) the processes `pids` have used so far, added up.
fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
    pids.iter().fold((0.0, 0.0), |(user, system), pid| {
        let (u, s) = portico::base::process::cpu_split(&pid.to_string());
        (user + u, system + s)
    })
}

/// A load run and the CPU the processes `pids` spent on it, per request (µs): user + system, and
/// system alone.
async fn with_cpu(
    pids: &[u32],
    side: Side<'_>,
    connections: usize,
    seconds: f64,
    make: fn(u64) -> serde_json::Value,
) -> anyhow::Result<(Stats, (f64, f64))> {
    let (user, system) = cpu_seconds(pids);
    let stats = load(side, connections, seconds, make).await?;
    let (user_after, system_after) = cpu_seconds(pids);
    let per_call = |seconds: f64| seconds / stats.calls.max(1) as f64 * 1e6;
    let system = per_call(system_after - system);
    Ok((stats, (per_call(user_after - user) + system, system)))
}

/// One side of a `versus` comparison: an MCP endpoint and the processes of its proxy (none for the
/// direct side).
struct Contender<'a> {
    url: &'a str,
    pids: Vec<u32>,
}

/// What `versus` measured of one contender: the median load figures and CPU per call (µs, user +
/// system and system alone; zero without a proxy).
struct Measured {
    stats: Stats,
    cpu: (f64, f64),
}

/// `rounds` runs of every contender in turn; medians of each.
async fn versus(
    cli: &Cli,
    contenders: &[Contender<'_>],
    connections: usize,
) -> anyhow::Result<Vec<Measured>> {
    let n = contenders.len();
    let mut runs: Vec<(Vec<Stats>, Vec<f64>, Vec<f64>)> =
        (0..n).map(|_| Default::default()).collect();
    for round in 0..cli.rounds {
        // Each round starts with another side, so that none always runs first.
        for k in 0..n {
            let i = (round + k) % n;
            let side = Side::plain(contenders[i].url);
            let (stats, (used, kernel)) = with_cpu(
                &contenders[i].pids,
                side,
                connections,
                cli.seconds,
                echo_call,
            )
            .await?;
            runs[i].0.push(stats);
            runs[i].1.push(used);
            runs[i].2.push(kernel);
        }
    }
    Ok(runs
        .into_iter()
        .map(|(stats, mut used, mut kernel)| Measured {
            stats: Stats::median_of(&stats),
            cpu: (median(&mut used), median(&mut kernel)),
        })
        .collect())
}

/// `count` × (`initialize`, `DELETE`) on one keep-alive connection; seconds taken.
async fn sessions_over_http(url: &str, count: usize) -> anyhow::Result<f64> {
    let mut conn = Conn::open(url, None).await?;
    let started = Instant::now();
    for _ in 0..count {
        conn.session = None;
        conn.initialize().await?;
        conn.delete().await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// `count` × (start the stdio fixture, `initialize`, close its stdin and wait for it): what a client
/// that runs the server itself pays.
async fn sessions_over_stdio(portico: &Path, count: usize) -> anyhow::Result<f64> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let started = Instant::now();
    for _ in 0..count {
        let mut child = Command::new(portico)
            .args(["fixture", "--name", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        stdin.write_all(format!("{init}\n").as_bytes()).await?;
        let mut lines = BufReader::new(stdout).lines();
        let answer = lines.next_line().await?.unwrap_or_default();
        anyhow::ensure!(answer.contains("\"result\""), "stdio fixture: {answer}");
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await?;
        drop(stdin);
        child.wait().await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Median seconds of `rounds` runs of `run`.
async fn median_seconds<F, Fut>(rounds: usize, mut run: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut all = Vec::new();
    for _ in 0..rounds {
        all.push(run().await?);
    }
    Ok(median(&mut all))
}

fn stdio_target(portico: &Path) -> String {
    format!(
        "          - name: local\n            stdio:\n              cmd: \"{}\"\n              args: [\"fixture\", \"--name\", \"local\"]\n",
        portico.display()
    )
}

pub async fn run(cli: &Cli, portico: &PathBuf) -> anyhow::Result<()> {
    let fixtures = cli.fixtures.as_ref().unwrap_or(portico);
    let (_call_fixture, call_url) = fixture(fixtures, &["--name", "call"]).await?;
    let mut list_fixtures = Vec::new();
    let mut list_targets = Vec::new();
    let mut list_urls = Vec::new();
    for i in 0..10 {
        // 20 built-in tools + 30 generated = 50 tools per target.
        let (proc, url) = fixture(
            fixtures,
            &["--name", &format!("list{i}"), "--extra-tools", "30"],
        )
        .await?;
        list_fixtures.push(proc);
        list_targets.push(http_target(&format!("t{i}"), &url));
        list_urls.push(url);
    }
    let config = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{}{}{}{}config:\n  logging: {{level: warn}}\n  readinessAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  adminAddr: 127.0.0.1:0\n",
        route("call", "/call", &http_target("call", &call_url)),
        route("ten", "/ten", &list_targets.concat()),
        route("one", "/one", &list_targets[0]),
        route("stdio", "/stdio", &stdio_target(fixtures)),
    );
    let (gateway_proc, base) = gateway(portico, &config).await?;
    let pid = gateway_proc.child.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid);
    let idle_anon = status_kib(pid, "RssAnon:");
    let through = format!("{base}/call");

    println!(
        "## Performance goals (issue #11), {} s × {} rounds, medians\n",
        cli.seconds, cli.rounds
    );
    println!("| figure | direct | through portico | result |\n|---|---|---|---|");

    let nginx = Nginx::start(&call_url).await.unwrap_or_else(|failed| {
        eprintln!("nginx did not start: {failed:#}");
        None
    });
    let mut contenders = vec![
        Contender {
            url: &call_url,
            pids: Vec::new(),
        },
        Contender {
            url: &through,
            pids: vec![pid],
        },
    ];
    if let Some(nginx) = &nginx {
        contenders.push(Contender {
            url: &nginx.url,
            pids: nginx.workers.clone(),
        });
    }
    let measured = versus(cli, &contenders, cli.connections).await?;
    let (direct, proxied) = (&measured[0].stats, &measured[1].stats);
    let (cpu, system) = measured[1].cpu;
    let reference = measured.get(2).map_or(String::new(), |nginx| {
        format!(
            "; nginx, same run: {:.2}× direct, {:.1} µs per call ({:.1} in the kernel)",
            nginx.stats.per_second / direct.per_second,
            nginx.cpu.0,
            nginx.cpu.1
        )
    });
    println!(
        "| tools/call, {} connections: calls/s | {:.0} | {:.0} | {:.2}× direct; gateway CPU {cpu:.1} µs per call ({system:.1} µs of it in the kernel){reference} |",
        cli.connections,
        direct.per_second,
        proxied.per_second,
        proxied.per_second / direct.per_second
    );
    let measured = versus(cli, &contenders, 1).await?;
    let (direct, proxied) = (&measured[0].stats, &measured[1].stats);
    let reference = measured.get(2).map_or(String::new(), |nginx| {
        format!(
            "; nginx, same run: {:+.3} / {:+.3} ms",
            nginx.stats.p50_ms - direct.p50_ms,
            nginx.stats.p99_ms - direct.p99_ms
        )
    });
    println!(
        "| tools/call, 1 connection: p50 / p99 ms | {:.3} / {:.3} | {:.3} / {:.3} | added {:+.3} / {:+.3} ms{reference} |",
        direct.p50_ms,
        direct.p99_ms,
        proxied.p50_ms,
        proxied.p99_ms,
        proxied.p50_ms - direct.p50_ms,
        proxied.p99_ms - direct.p99_ms
    );
    let reference_missing = nginx.is_none();
    drop(contenders);
    drop(nginx);

    let (one_url, ten_url) = (format!("{base}/one"), format!("{base}/ten"));
    let (mut one, mut ten, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    let (mut per_tool, mut kernel_per_tool) = (Vec::new(), Vec::new());
    for _ in 0..cli.rounds {
        one.push(load(Side::plain(&one_url), 1, cli.seconds, list_tools).await?);
        floor.push(fan_out(&list_urls, cli.seconds).await?);
        let (stats, (cpu, kernel)) =
            with_cpu(&[pid], Side::plain(&ten_url), 1, cli.seconds, list_tools).await?;
        ten.push(stats);
        per_tool.push(cpu / 500.0);
        kernel_per_tool.push(kernel / 500.0);
    }
    let (one, ten, floor) = (
        Stats::median_of(&one),
        Stats::median_of(&ten),
        Stats::median_of(&floor),
    );
    // The direct side is the floor of a fan-out: the client itself asks the ten targets at once.
    println!(
        "| tools/list, 10 targets × 50 tools, 1 connection: p50 ms | all ten asked at once: {:.3} | {:.3} | {:+.3} ms over the floor, {:.1}× one target through portico ({:.3}); gateway CPU {:.2} µs per merged tool ({:.2} µs of it in the kernel) |",
        floor.p50_ms,
        ten.p50_ms,
        ten.p50_ms - floor.p50_ms,
        ten.p50_ms / one.p50_ms,
        one.p50_ms,
        median(&mut per_tool),
        median(&mut kernel_per_tool)
    );

    let count = 200;
    let direct = median_seconds(cli.rounds, || sessions_over_http(&call_url, count)).await?;
    let (user, system) = cpu_seconds(&[pid]);
    let proxied = median_seconds(cli.rounds, || sessions_over_http(&through, count)).await?;
    let (user_after, system_after) = cpu_seconds(&[pid]);
    let per_session = |seconds: f64| seconds / (cli.rounds * count) as f64 * 1e6;
    let kernel = per_session(system_after - system);
    println!(
        "| {count} × (initialize + DELETE), one HTTP target: s | {direct:.3} | {proxied:.3} | {:.2}× direct; gateway CPU {:.0} µs per session ({kernel:.0} µs of it in the kernel) |",
        proxied / direct,
        per_session(user_after - user) + kernel
    );
    let stdio_url = format!("{base}/stdio");
    let direct = median_seconds(cli.rounds, || sessions_over_stdio(fixtures, count)).await?;
    let proxied = median_seconds(cli.rounds, || sessions_over_http(&stdio_url, count)).await?;
    println!(
        "| {count} × (initialize + DELETE), one stdio target: s | {direct:.3} | {proxied:.3} | {:.2}× direct |",
        proxied / direct
    );

    // A session's own cost: sessions opened one after another on one client connection.
    tokio::time::sleep(QUIET).await;
    let before = status_kib(pid, "RssAnon:");
    let mut conn = Conn::open(&through, None).await?;
    for _ in 0..cli.sessions {
        conn.session = None;
        conn.initialize().await?;
    }
    tokio::time::sleep(QUIET).await;
    let per_session =
        status_kib(pid, "RssAnon:").saturating_sub(before) as f64 / cli.sessions as f64;
    println!(
        "| RSS idle / per idle session (one HTTP target, {} sessions on one client connection) | | {:.1} MiB / {:.1} KiB | |",
        cli.sessions,
        idle_rss as f64 / 1024.0,
        per_session
    );
    // As many clients would: each session on its own kept-alive connection, which carries hyper's
    // read and write buffers (8 KiB each) until it closes (after 60 s idle).
    let before = status_kib(pid, "RssAnon:");
    let mut conns = Vec::new();
    for _ in 0..cli.sessions {
        let mut conn = Conn::open(&through, None).await?;
        conn.initialize().await?;
        conns.push(conn);
    }
    tokio::time::sleep(QUIET).await;
    let per_connection =
        status_kib(pid, "RssAnon:").saturating_sub(before) as f64 / cli.sessions as f64;
    println!(
        "| per idle session on its own open client connection | | {per_connection:.1} KiB | |"
    );
    println!(
        "| of which anonymous memory when idle (RSS less the binary's and libraries' file pages) | | {:.1} MiB | |",
        idle_anon as f64 / 1024.0,
    );
    drop(conns);
    let size = std::fs::metadata(portico)?.len();
    println!(
        "| release binary `{}` | | {:.1} MB | |",
        portico.display(),
        size as f64 / 1e6
    );
    if reference_missing {
        println!(
            "\nno reference proxy in the call figures: nginx is not installed (apt-get install nginx-light) or did not start"
        );
    }
    Ok(())
}
