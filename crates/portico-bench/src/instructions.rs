//! `portico-bench --instructions`: a performance gate that does not move with the machine. The
//! gateway runs under `valgrind --tool=callgrind`, which counts the instructions it executes; each
//! figure is the difference between two runs that differ only in the number of requests, so start-up
//! and session set-up cancel out:
//! - instructions per proxied `tools/call` (one HTTP target);
//! - instructions per merged tool of a `tools/list` over 10 targets × 50 tools: targets that answer
//!   alike every time (the gateway passes over a list it has read before), and targets whose every
//!   answer is new (each is read whole);
//! - instructions per session started and ended (`initialize`, `notifications/initialized`,
//!   `DELETE`) with one HTTP target;
//!
//! and, run normally, the gateway's resident memory when idle after start (it moves by a few
//! percent between runs; it grows when the functions that run at start are no longer laid out
//! together, see `scripts/link-order.sh`).
//!
//! The figures are compared with the committed baseline (`crates/portico-bench/instructions.json`);
//! the run fails when one is more than 10 % worse. `--update-baseline` writes the new figures.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::{Conn, echo_call, fixture, gateway, http_target, list_tools, route, rss_kib};

/// How much worse than the baseline a figure may get before the gate fails.
const TOLERANCE: f64 = 0.10;
/// Tools each list target serves (20 built-in + 30 generated).
const TOOLS_PER_TARGET: usize = 50;
const LIST_TARGETS: usize = 10;

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("instructions.json")
}

/// What the gateway serves while it is counted.
#[derive(Clone, Copy)]
enum Work {
    /// `make(id)` on one session.
    Requests(fn(u64) -> Value),
    /// Sessions started (`initialize`, `notifications/initialized`) and ended (`DELETE`).
    Sessions,
}

/// Serves `count` × `work` at `url` on one client connection.
async fn serve(url: &str, work: Work, count: u64) -> anyhow::Result<()> {
    let mut conn = Conn::open(url, None).await?;
    let Work::Requests(make) = work else {
        for _ in 0..count {
            conn.session = None;
            conn.initialize().await?;
            conn.delete().await?;
        }
        return Ok(());
    };
    conn.initialize().await?;
    for id in 0..count {
        let (_, body) = conn.post(&make(id)).await?;
        anyhow::ensure!(
            body.windows(9).any(|w| w == b"\"result\":"),
            "request failed: {}",
            String::from_utf8_lossy(&body)
        );
    }
    conn.delete().await
}

/// The instructions the gateway executed from start to exit while serving `count` × `work` at
/// `path`.
async fn count_instructions(
    portico: &Path,
    config: &str,
    path: &str,
    work: Work,
    count: u64,
) -> anyhow::Result<u64> {
    let dir = std::env::temp_dir().join(format!("portico-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, config)?;
    let kind = if matches!(work, Work::Sessions) {
        "-sessions"
    } else {
        ""
    };
    let out = dir.join(format!(
        "callgrind{}{kind}.{count}.out",
        path.replace('/', "-")
    ));
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(portico)
        .arg("-f")
        .arg(&config_path)
        .env("RUST_LOG", "warn,portico::server=info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("valgrind: {e} (apt-get install -y valgrind)"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    let mut base = None;
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.split("address=").nth(1) {
            base = address.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = base.ok_or_else(|| anyhow::anyhow!("the gateway did not start under valgrind"))?;
    serve(&format!("{base}{path}"), work, count).await?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the gateway exited early"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    tokio::time::timeout(Duration::from_secs(120), child.wait()).await??;
    // Kept for `callgrind_annotate`: where the instructions went.
    let text = std::fs::read_to_string(&out)?;
    eprintln!("{path} × {count}: {}", out.display());
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no instruction total in {}", out.display()))
}

/// Instructions per unit of `work`: the difference between `few` and `many` of it.
async fn per_unit(
    portico: &Path,
    config: &str,
    path: &str,
    work: Work,
    (few, many): (u64, u64),
) -> anyhow::Result<f64> {
    let small = count_instructions(portico, config, path, work, few).await?;
    let large = count_instructions(portico, config, path, work, many).await?;
    Ok(large.saturating_sub(small) as f64 / (many - few) as f64)
}

pub async fn run(portico: &Path, update: bool) -> anyhow::Result<()> {
    let portico = portico.to_path_buf();
    let (_call, call_url) = fixture(&portico, &["--name", "call"]).await?;
    let mut fixtures = Vec::new();
    let (mut targets, mut changing_targets) = (String::new(), String::new());
    for i in 0..LIST_TARGETS {
        for (changing, targets) in [(false, &mut targets), (true, &mut changing_targets)] {
            let name = format!("list{i}");
            let mut args = vec!["--name", &name, "--extra-tools", "30"];
            if changing {
                args.push("--changing-tools");
            }
            let (proc, url) = fixture(&portico, &args).await?;
            fixtures.push(proc);
            targets.push_str(&http_target(&format!("t{i}"), &url));
        }
    }
    let config = format!(
        "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{}{}{}config:\n  logging: {{level: warn}}\n  drainTimeout: 1s\n  readinessAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  adminAddr: 127.0.0.1:0\n",
        route("call", "/call", &http_target("call", &call_url)),
        route("ten", "/ten", &targets),
        route("changing", "/changing", &changing_targets),
    );
    let tools = (LIST_TARGETS * TOOLS_PER_TARGET) as f64;
    let (calls, lists) = (Work::Requests(echo_call), Work::Requests(list_tools));
    let per_call = per_unit(&portico, &config, "/call", calls, (200, 1200)).await?;
    let per_tool = per_unit(&portico, &config, "/ten", lists, (20, 120)).await? / tools;
    let per_new_tool = per_unit(&portico, &config, "/changing", lists, (20, 120)).await? / tools;
    let per_session = per_unit(&portico, &config, "/call", Work::Sessions, (50, 250)).await?;
    let idle_rss = {
        let (gateway, _) = gateway(&portico, &config).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_kib(gateway.child.id().unwrap_or(0))
    };
    let figures = json!({
        "instructions per proxied tools/call": per_call.round(),
        "instructions per merged tool (tools/list, 10 targets x 50 tools)": per_tool.round(),
        "instructions per merged tool, every answer new": per_new_tool.round(),
        "instructions per session (initialize + DELETE, one HTTP target)": per_session.round(),
        "RSS idle after start, KiB": idle_rss,
    });
    println!("## Instructions (callgrind) and idle memory, release binary\n");
    println!("| figure | baseline | now | change |\n|---|---|---|---|");
    let baseline: Value = std::fs::read_to_string(baseline_path())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut worse = Vec::new();
    for (name, now) in figures.as_object().into_iter().flatten() {
        let now = now.as_f64().unwrap_or_default();
        match baseline[name].as_f64() {
            Some(before) => {
                let change = now / before - 1.0;
                println!(
                    "| {name} | {before:.0} | {now:.0} | {:+.1} % |",
                    change * 100.0
                );
                if change > TOLERANCE {
                    worse.push(name.clone());
                }
            }
            None => println!("| {name} | - | {now:.0} | |"),
        }
    }
    if update {
        std::fs::write(
            baseline_path(),
            serde_json::to_string_pretty(&figures)? + "\n",
        )?;
        println!("\nbaseline written to {}", baseline_path().display());
        return Ok(());
    }
    anyhow::ensure!(
        worse.is_empty(),
        "more than {:.0} % worse than the baseline: {}",
        TOLERANCE * 100.0,
        worse.join(", ")
    );
    Ok(())
}
