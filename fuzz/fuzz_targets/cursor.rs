//! The composite list cursor a client hands back: any string decodes or is refused, and what decodes
//! encodes back to a cursor that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::mcp::multiplex::cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(pages) = cursor::decode(text) {
        assert_eq!(cursor::decode(&cursor::encode(&pages)), Some(pages));
    }
});
