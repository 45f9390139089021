//! Portico: an MCP gateway. Many MCP servers behind one MCP endpoint, with policies per route, backend
//! and target.
//!
//! A request flows one way: listener ([`server`]) → route → MCP endpoint ([`mcp::streamable_http`]) →
//! session ([`mcp::session`]) → multiplexer ([`mcp::multiplex`]) → target ([`mcp::upstream`]); the
//! response walks back. See `docs/architecture.md`.

pub mod base;
pub mod config;
pub mod explain;
pub mod gateway;
pub mod limits;
pub mod mcp;
pub mod policy;
pub mod server;
pub mod telemetry;
