//! Portico: an MCP gateway. Many MCP servers behind one MCP endpoint, with policies per route, backend
//! and target.
//!
//! A request flows one way: listener → route → MCP endpoint → session → multiplexer → upstream target;
//! the response walks back. See `docs/architecture.md`.

pub mod config;
