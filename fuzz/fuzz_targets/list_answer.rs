//! A target's answer to a list request, on any bytes a target could send: the validating walk never
//! takes text serde_json refuses, and the answer read while it is split is the answer serde_json reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::base::json_walk::Walk;
use portico::mcp::jsonrpc::{self, Incoming, Payload};
use portico::mcp::list_result;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut walk = Walk::new(text);
    if walk.value().is_some() && walk.at_end() {
        assert!(
            serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok(),
            "the walk took what serde_json refuses: {text:?}"
        );
    }
    let split = list_result::parse_answer(text, list_result::shape("tools/list"));
    let read = jsonrpc::parse_incoming(text);
    assert_eq!(split.is_ok(), read.is_ok(), "{text:?}");
    if let (
        Ok(Incoming::Response { id, payload }),
        Ok(Incoming::Response {
            id: read_id,
            payload: read_payload,
        }),
    ) = (&split, &read)
    {
        assert_eq!(id, read_id, "{text:?}");
        match (payload, read_payload) {
            (Payload::Result(split), Payload::Result(read)) => {
                assert_eq!(split.get(), read.get(), "{text:?}");
                if let Some(spans) = split.spans() {
                    for item in &spans.items {
                        let item = &split.get()[item.span.clone()];
                        assert!(serde_json::from_str::<serde_json::Value>(item)
                            .is_ok_and(|v| v.is_object()));
                    }
                }
            }
            (Payload::Error(_), Payload::Error(_)) => {}
            _ => panic!("read differently: {text:?}"),
        }
    }
});
