//! `portico-fixture`: the MCP server of Portico's tests, as a standalone binary.

use clap::Parser;

/// An MCP server for testing MCP clients and gateways.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: portico_fixture::FixtureArgs,
}

// One thread: a benchmark target should not add scheduling noise of its own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    portico_fixture::run(Cli::parse().args).await
}
