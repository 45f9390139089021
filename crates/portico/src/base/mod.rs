//! The bottom layer: what every other module may use and that uses none of them. The allocator's
//! tuning, config diagnostics (file, line, field, hint), coarse deadlines, reading capped HTTP
//! bodies, the HTTP client for targets, JSON text read without a tree (and validated by a walk that
//! gives the places of values), PEM files, what `/proc` says about a process, and the units config
//! files are written in.

pub mod allocator;
pub mod coarse_timer;
pub mod diagnostic;
pub mod fast_hash;
pub mod http;
pub mod http_client;
pub mod json_text;
pub mod json_walk;
pub mod pem;
pub mod process;
pub mod spawn;
pub mod units;
