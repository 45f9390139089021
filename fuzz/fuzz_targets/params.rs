//! The params checker and the session-owner key on any JSON: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::mcp::{params, session};

const METHODS: [&str; 14] = [
    "initialize",
    "ping",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "tools/call",
    "prompts/get",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "vendor/other",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let method = METHODS[usize::from(which) % METHODS.len()];
    let _ = params::check(method, Some(&value));
    let _ = session::owner(&value);
});
