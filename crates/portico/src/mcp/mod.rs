//! The Model Context Protocol: messages, the client-facing transport, sessions, multiplexing and the
//! connections to targets.

pub mod endpoint;
pub mod handling;
pub mod header_names;
pub mod jsonrpc;
pub mod legacy_sse;
pub mod list_result;
pub mod message;
pub mod multiplex;
pub mod params;
pub mod per_request;
pub mod post_stream;
pub mod respond;
pub mod revision_2026;
pub mod session;
pub mod session_token;
pub mod sse;
pub mod streamable_http;
pub mod upstream;
