//! The path normaliser on any request path: the result is a plain absolute path, normalising it again
//! changes nothing, and it has no dot segment or empty segment left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::server::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalize(path) else {
        return;
    };
    assert!(normal.starts_with('/'), "{normal}");
    assert_eq!(normalize(&normal).as_deref(), Ok(&*normal));
    let inner = normal.trim_start_matches('/').trim_end_matches('/');
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{path} → {normal}");
        }
    }
    assert!(!normal.to_ascii_lowercase().contains("%2f"), "{normal}");
});
