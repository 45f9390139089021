//! Config loading on any text: every problem is an error with a position, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // No environment: an unset variable is an error like any other.
    let _ = portico::config::load_str(text, "fuzz.yaml", &|_| None);
});
