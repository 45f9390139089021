//! Logs: text or JSON lines on stderr. `RUST_LOG` overrides `config.logging.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::model::LogFormat;

/// Installs the global subscriber; later calls are no-ops.
pub fn init_logging(level: Option<&str>, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
