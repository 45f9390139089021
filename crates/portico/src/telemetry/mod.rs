//! What Portico tells its operators: logs ([`logs`]) and metrics ([`metrics`]).

pub mod logs;
pub mod metrics;

pub use logs::{dropped_log_lines, init_logging};
