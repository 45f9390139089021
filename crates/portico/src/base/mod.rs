//! The bottom layer: what every other module may use and that uses none of them. Config diagnostics
//! (file, line, field, hint), reading capped HTTP bodies, PEM files, and the units config files are written in.

pub mod diagnostic;
pub mod http;
pub mod pem;
pub mod units;
