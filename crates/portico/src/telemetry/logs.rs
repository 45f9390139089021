//! Logs: text or JSON lines on stderr, written by a background thread so that a slow or blocked stderr
//! never stalls a worker (lines past its buffer are dropped and counted). `RUST_LOG` overrides
//! `config.logging.level`.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::model::LogFormat;

/// Lines the log writer could not keep up with, dropped rather than block a request.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// How many log lines were dropped because stderr did not keep up.
pub fn dropped_log_lines() -> usize {
    DROPPED.get().map_or(0, ErrorCounter::dropped_lines)
}

/// Lines buffered for a slow stderr before new ones are dropped. The buffer is allocated whole at
/// start (about 32 bytes a line): at 128 Ki lines it was two thirds of an idle gateway's own memory.
const LOG_BUFFER_LINES: usize = 16 * 1024;

/// Installs the global subscriber; later calls are no-ops. Keep the guard until exit: dropping it
/// flushes what is buffered.
pub fn init_logging(level: Option<&str>, format: LogFormat) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard): (NonBlocking, WorkerGuard) =
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(LOG_BUFFER_LINES)
            .lossy(true)
            .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
    installed.ok().map(|()| guard)
}

/// One JSON object per line, each key once: `timestamp`, `level`, `logger` (the module that logged,
/// e.g. `portico::access`), `message`, then the event's own fields (`target` there is the MCP target).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert(
            "logger".into(),
            Value::String(metadata.target().to_string()),
        );
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields into the line's object, typed as JSON.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}
