//! The Streamable HTTP transport's header names, which both sides of the gateway read and write.
//!
//! `HeaderName`s rather than `&str`s: a `HeaderMap` parses a `&str` name at every use, and copies it
//! into a new allocation at every insert.

use http::HeaderName;

/// The session a request belongs to.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");

/// The protocol revision the session speaks.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
