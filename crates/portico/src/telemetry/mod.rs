//! What Portico tells its operators: logs ([`logs`]), metrics ([`metrics`]) and traces ([`traces`]).

pub mod logs;
pub mod metrics;
pub mod traces;

pub use logs::{dropped_log_lines, init_logging};
