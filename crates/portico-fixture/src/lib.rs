//! `portico-fixture`: the MCP server that Portico's tests, quickstart and benchmarks talk to.
//!
//! It exposes everything the MCP conformance suite expects of a server (see `docs/testing.md`) plus a
//! few tools that only a gateway's tests need: `echo`, `echo_headers`, `sleep`, `crash`, `whoami`.
//! The `portico` binary embeds it as `portico fixture`.

mod handler;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use handler::{Fixture, FixtureOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Transport {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP on `--listen`, endpoint `/mcp`.
    Http,
}

/// Options of the fixture server.
#[derive(Debug, Args)]
pub struct FixtureArgs {
    /// How clients reach the server.
    #[arg(long, value_enum, default_value = "stdio")]
    pub transport: Transport,
    /// Address to listen on with `--transport http` (port 0 picks a free port; the chosen address is
    /// printed on stdout as `listening on http://ADDR/mcp`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Name reported by the `whoami` tool and in `serverInfo`.
    #[arg(long, default_value = "portico-fixture")]
    pub name: String,
    /// Extra generated tools `tool_0` .. `tool_{N-1}` (for list benchmarks and pagination tests).
    #[arg(long, default_value_t = 0)]
    pub extra_tools: usize,
    /// Items per page of tools/prompts/resources lists (0 = no pagination).
    #[arg(long, default_value_t = 0)]
    pub page_size: usize,
}

/// Serves until stdin closes (stdio) or forever (http).
pub async fn run(cli: FixtureArgs) -> anyhow::Result<()> {
    let options = Arc::new(FixtureOptions {
        name: cli.name,
        tools: handler::tool_list(cli.extra_tools),
        page_size: cli.page_size,
    });
    match cli.transport {
        Transport::Stdio => serve_stdio(options).await,
        Transport::Http => serve_http(options, cli.listen).await,
    }
}

async fn serve_stdio(options: Arc<FixtureOptions>) -> anyhow::Result<()> {
    let service = Fixture::new(options)
        .serve(rmcp::transport::io::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}

async fn serve_http(options: Arc<FixtureOptions>, listen: SocketAddr) -> anyhow::Result<()> {
    // The default allows only loopback Hosts: the MCP DNS-rebinding defence the conformance suite checks.
    let config = StreamableHttpServerConfig::default();
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(options.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        // Without NODELAY, delayed ACKs against small SSE writes cost ~40 ms per request.
        stream.set_nodelay(true)?;
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| tower::ServiceExt::oneshot(app.clone(), req));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
