//! The SSE reader on any stream, cut into chunks anywhere: never panics, never returns an event
//! larger than its limit, and gives the same events however the stream is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::mcp::sse::Reader;

const LIMIT: usize = 4096;

fn events(chunks: &[&[u8]]) -> Result<Vec<String>, ()> {
    let mut reader = Reader::new(LIMIT);
    let mut all = Vec::new();
    for chunk in chunks {
        let events = reader.feed(chunk).map_err(|_| ())?;
        for event in events {
            assert!(event.data.len() <= LIMIT);
            all.push(event.data);
        }
    }
    Ok(all)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(stream.len());
    let whole = events(&[stream]);
    let split = events(&[&stream[..cut], &stream[cut..]]);
    // A `\r` at the end of a chunk waits for the next; everything else is the same either way.
    if let (Ok(whole), Ok(split)) = (whole, split) {
        assert_eq!(whole, split);
    }
});
