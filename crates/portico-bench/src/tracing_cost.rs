//! `portico-bench --tracing`: what tracing costs a request. Three gateways in front of one fixture:
//! tracing off, on at 1 % sampling, on for every request; each exports to a loopback OTLP sink that
//! accepts and drops what it is sent.

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::{Cli, Side, compare_all, echo_call, fixture, gateway, http_target, route, row};

/// A loopback OTLP/HTTP endpoint that answers 200 to everything; its URL.
async fn otlp_sink() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(url)
}

pub async fn run(cli: &Cli, portico: &Path) -> anyhow::Result<()> {
    let portico = portico.to_path_buf();
    let (_fixture, fixture_url) = fixture(&portico, &["--name", "call"]).await?;
    let sink = otlp_sink().await?;
    let config = |tracing: &str| {
        format!(
            "binds:\n- port: 0\n  address: 127.0.0.1\n  listeners:\n  - routes:\n{}config:\n  logging: {{level: warn}}\n  readinessAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  adminAddr: 127.0.0.1:0\n{tracing}",
            route("call", "/call", &http_target("call", &fixture_url))
        )
    };
    let (_off, off) = gateway(&portico, &config("")).await?;
    let sampled = format!("  tracing: {{otlpEndpoint: {sink}, samplingRate: 0.01}}\n");
    let (_one_percent, one_percent) = gateway(&portico, &config(&sampled)).await?;
    let every = format!("  tracing: {{otlpEndpoint: {sink}}}\n");
    let (_all, all) = gateway(&portico, &config(&every)).await?;
    let urls = [
        format!("{off}/call"),
        format!("{one_percent}/call"),
        format!("{all}/call"),
    ];
    let sides: Vec<Side> = urls.iter().map(|u| Side::plain(u)).collect();
    for connections in [1, cli.connections] {
        println!(
            "## tracing: tools/call `echo`, {connections} connection(s) ({} s × {} rounds, median)\n",
            cli.seconds, cli.rounds
        );
        println!("| tracing | calls/s | p50 ms | p99 ms |\n|---|---|---|---|");
        let stats = compare_all(cli, &sides, connections, echo_call).await?;
        row("off", stats[0]);
        row("on, 1 % sampled", stats[1]);
        row("on, every request", stats[2]);
        println!(
            "\nadded p50: 1 % {:+.1} µs, every request {:+.1} µs\n",
            (stats[1].p50_ms - stats[0].p50_ms) * 1000.0,
            (stats[2].p50_ms - stats[0].p50_ms) * 1000.0
        );
    }
    Ok(())
}
