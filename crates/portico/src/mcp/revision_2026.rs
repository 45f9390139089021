//! The names of the 2026-07-28 revision that both sides of the gateway use: the client side serves it
//! ([`crate::mcp::per_request`]), the target side speaks it to targets that know nothing older
//! (`upstream::http::per_request`).

/// The revision.
pub const REVISION: &str = "2026-07-28";

/// `_meta` keys of a request's context and of `server/discover`'s result.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Headers that repeat a request's method and the item it names.
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";
