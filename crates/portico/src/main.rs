//! The `portico` command: run the gateway, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Portico, an MCP gateway: many MCP servers behind one MCP endpoint, with policies per route,
/// backend and target.
///
/// Run it with a config file: `portico -f config.yaml`. See examples/ and docs/ for the format.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, long_about)]
struct Cli {
    /// The config file (YAML) to serve.
    #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
    file: Option<PathBuf>,
    /// Worker threads serving connections, each with its own single-threaded runtime
    /// (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and report every error with file, line, column, field path and a hint.
    /// Exits 0 when the file is valid, 1 otherwise.
    Validate,
    /// Run the built-in test MCP server (the one Portico's own tests and quickstart use): the MCP
    /// conformance tools, prompts and resources, plus `echo`, `echo_headers`, `sleep`, `crash`,
    /// `whoami`, `nested`. In a config, start it with `cmd: $PORTICO_EXE` and `args: [fixture]`.
    /// `--transport rest` serves a REST pet store with its OpenAPI document instead.
    Fixture(portico_fixture::FixtureArgs),
    /// Print, for every route and target, the effective policy of each type and the level it came
    /// from (target, backend, route, listener).
    Explain {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the config file, for editors: with the YAML language server, put
    /// `# yaml-language-server: $schema=portico.schema.json` at the top of a config.
    Schema,
}

fn main() -> ExitCode {
    portico::base::allocator::tune();
    let cli = Cli::parse();
    if let Some(Command::Fixture(args)) = cli.command {
        return run_fixture(args);
    }
    if let Some(Command::Schema) = cli.command {
        let schema = schemars::schema_for!(portico::config::model::File);
        println!(
            "{}",
            serde_json::to_string_pretty(&schema).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    expose_own_path();
    let Some(file) = cli.file else {
        eprintln!("portico: no config file; run `portico -f config.yaml` (see `portico --help`)");
        return ExitCode::from(2);
    };
    let config = match portico::config::load_file(&file) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); nothing started",
                file.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    if cli.command.is_some() {
        for warning in &config.warnings {
            eprintln!("{warning}");
        }
    }
    match &cli.command {
        Some(Command::Validate) => {
            println!("{}: valid", file.display());
            return ExitCode::SUCCESS;
        }
        Some(Command::Explain {
            route,
            target,
            json,
        }) => {
            let explained = portico::explain::explain(&config, route.as_deref(), target.as_deref());
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&explained).unwrap_or_default()
                );
            } else {
                print!("{}", portico::explain::render(&explained));
            }
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let _logs = portico::telemetry::init_logging(
        config.settings.log_level.as_deref(),
        config.settings.log_format,
    );
    for warning in &config.warnings {
        tracing::warn!(target: "portico::config", "{warning}");
    }
    portico::base::allocator::return_memory_after_bursts();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    match portico::server::run(config, Some(file), workers, wait_for_signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "portico::server", "{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets `PORTICO_EXE` to this binary's path (unless set), so configs can start `$PORTICO_EXE fixture`.
fn expose_own_path() {
    if std::env::var_os("PORTICO_EXE").is_some() {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        // SAFETY: called before the runtime or any other thread starts.
        unsafe { std::env::set_var("PORTICO_EXE", exe) };
    }
}

fn run_fixture(args: portico_fixture::FixtureArgs) -> ExitCode {
    let _logs =
        portico::telemetry::init_logging(Some("warn"), portico::config::model::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portico fixture: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portico_fixture::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico fixture: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
