//! The JSON-RPC envelope reader, on any bytes a client or target could send: the depth pre-check
//! never disagrees with the parser about what is too deep, and reading never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::mcp::jsonrpc;

fuzz_target!(|data: &[u8]| {
    let depth = jsonrpc::nesting_depth(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What the gateway does with a client's body once it is within the depth limit.
    if depth <= 64
        && let Ok(message) = serde_json::from_str::<serde_json::Value>(text)
    {
        let _ = jsonrpc::kind(&message);
        let _ = jsonrpc::method(&message);
        let _ = jsonrpc::error_code(&message);
    }
    // What the gateway does with a target's message.
    if let Ok(jsonrpc::Incoming::Response { payload, .. }) = jsonrpc::parse_incoming(text) {
        let reply = jsonrpc::Reply {
            id: serde_json::Value::Null,
            payload,
        };
        let json = reply.to_json();
        assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
        let _ = reply.error_code();
    }
});
