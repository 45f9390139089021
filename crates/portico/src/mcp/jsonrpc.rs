//! JSON-RPC 2.0 messages as MCP carries them.
//!
//! Messages stay `serde_json::Value`s end to end: the gateway reads the few fields a decision needs
//! and forwards everything else untouched, so fields it does not know survive the trip.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::base::json_text::scan;
use crate::mcp::list_result;

/// JSON-RPC error codes used by the gateway.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The request names a protocol version the server does not speak (MCP 2026-07-28); `data`
    /// carries `supported` and `requested`.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// An HTTP header disagrees with the request body (MCP 2026-07-28: `MCP-Protocol-Version`
    /// against `_meta`, `Mcp-Method` against `method`, `Mcp-Name` against the named item).
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// What a message is, by the fields it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

pub fn kind(message: &Value) -> Kind {
    let Some(object) = message.as_object() else {
        return Kind::Invalid;
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Kind::Invalid;
    }
    let has_id = object
        .get("id")
        .is_some_and(|id| id.is_string() || id.is_number());
    match (object.get("method").and_then(Value::as_str), has_id) {
        (Some(_), true) => Kind::Request,
        (Some(_), false) if object.get("id").is_none() => Kind::Notification,
        (None, true) if object.contains_key("result") || object.contains_key("error") => {
            Kind::Response
        }
        _ => Kind::Invalid,
    }
}

pub fn method(message: &Value) -> &str {
    message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The message's `params`, when they are an object: the only shape the gateway writes into.
pub fn params_mut(message: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    message.get_mut("params")?.as_object_mut()
}

/// Sets `message.id` (a no-op on a message that is not an object).
pub fn set_id(message: &mut Value, id: Value) {
    if let Some(message) = message.as_object_mut() {
        message.insert("id".to_string(), id);
    }
}

/// A response carrying `result`.
pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A response carrying an error.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// The payload of a response, left unparsed: results pass through the gateway as the target wrote them.
#[derive(Debug)]
pub enum Payload {
    Result(Json),
    Error(Json),
}

impl Payload {
    /// The result or the error object.
    pub fn json(&self) -> &Json {
        match self {
            Payload::Result(json) | Payload::Error(json) => json,
        }
    }
}

/// JSON text known to be valid: validated when it was read from a target, or written by the gateway
/// from valid parts (a merged list), which is not validated again. A list result read in one walk
/// also knows where its items are ([`crate::mcp::list_result`]).
#[derive(Debug, Clone)]
pub struct Json {
    text: Box<str>,
    /// Shared with the worker's kept splits ([`list_result`]).
    page: Option<Arc<list_result::Spans>>,
}

impl Json {
    pub fn get(&self) -> &str {
        &self.text
    }

    /// Text the gateway wrote itself, from parts that are valid JSON.
    pub fn written(text: String) -> Self {
        Self {
            text: text.into_boxed_str(),
            page: None,
        }
    }

    /// A list result validated as it was split into its items.
    pub fn page(text: &str, spans: Arc<list_result::Spans>) -> Self {
        Self {
            text: text.into(),
            page: Some(spans),
        }
    }

    /// Where the items are, for a list result read in one walk.
    pub fn spans(&self) -> Option<&list_result::Spans> {
        self.page.as_deref()
    }

    /// `value` written as JSON.
    pub fn of(value: &Value) -> Self {
        // Serializing a `Value` cannot fail: its keys are strings.
        Self::written(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }
}

impl From<&RawValue> for Json {
    fn from(raw: &RawValue) -> Self {
        Self {
            text: raw.get().into(),
            page: None,
        }
    }
}

/// A response on its way to the client.
#[derive(Debug)]
pub struct Reply {
    pub id: Value,
    pub payload: Payload,
}

impl Reply {
    pub fn result(id: Value, result: &Value) -> Self {
        Self {
            id,
            payload: Payload::Result(Json::of(result)),
        }
    }

    pub fn error(id: Value, code: i64, message: impl Into<String>) -> Self {
        let error = json!({"code": code, "message": message.into()});
        Self {
            id,
            payload: Payload::Error(Json::of(&error)),
        }
    }

    /// The result, if this is not an error.
    pub fn result_raw(&self) -> Option<&Json> {
        match &self.payload {
            Payload::Result(result) => Some(result),
            Payload::Error(_) => None,
        }
    }

    /// The JSON-RPC error code, if this is an error.
    pub fn error_code(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct Code {
            code: i64,
        }
        match &self.payload {
            Payload::Result(_) => None,
            Payload::Error(error) => serde_json::from_str::<Code>(error.get())
                .ok()
                .map(|c| c.code),
        }
    }

    /// The error message, if this is an error.
    pub fn error_message(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Message {
            message: String,
        }
        match &self.payload {
            Payload::Result(_) => None,
            Payload::Error(error) => serde_json::from_str::<Message>(error.get())
                .ok()
                .map(|m| m.message),
        }
    }

    /// The whole response, serialized.
    pub fn to_json(&self) -> String {
        let payload = self.payload.json().get();
        let mut json = String::with_capacity(payload.len() + 64);
        self.write_head(&mut json);
        json.push_str(payload);
        json.push('}');
        json
    }

    /// The response as three parts: the text before the payload, the payload, the closing brace;
    /// a large payload is sent as it is rather than copied once more.
    pub fn into_parts(self) -> (String, Box<str>, &'static str) {
        let mut head = String::with_capacity(64);
        self.write_head(&mut head);
        let payload = match self.payload {
            Payload::Result(json) | Payload::Error(json) => json.text,
        };
        (head, payload, "}")
    }

    fn write_head(&self, out: &mut String) {
        let key = match &self.payload {
            Payload::Result(_) => "result",
            Payload::Error(_) => "error",
        };
        out.push_str(r#"{"jsonrpc":"2.0","id":"#);
        // Written in place: `to_string` would allocate for it. Writing to a String cannot fail.
        let _ = write!(out, "{}", self.id);
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
    }
}

/// A message read from a target: a response (payload unparsed), or anything else (parsed).
#[derive(Debug)]
pub enum Incoming {
    Response { id: Option<u64>, payload: Payload },
    Other(Value),
}

/// Reads one message without parsing a response's payload.
pub fn parse_incoming(text: &str) -> Result<Incoming, serde_json::Error> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        method: Option<&'a RawValue>,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let envelope: Envelope = serde_json::from_str(text)?;
    let payload = match (envelope.method, envelope.result, envelope.error) {
        (None, Some(result), _) => Payload::Result(result.into()),
        (None, None, Some(error)) => Payload::Error(error.into()),
        _ => return serde_json::from_str(text).map(Incoming::Other),
    };
    let id = envelope.id.and_then(|id| id.get().parse().ok());
    Ok(Incoming::Response { id, payload })
}

/// How deeply `bytes` nest arrays and objects, counted without parsing, so that hostile input is refused
/// before the parser recurses into it.
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut at) = (0usize, 0usize, 0);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            // Strings, most of a message's bytes, are skipped eight bytes at a time.
            b'"' => {
                at = scan::string_end(bytes, at);
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            kind(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
            Kind::Request
        );
        assert_eq!(
            kind(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc": "2.0", "id": "a", "result": {}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc": "2.0", "id": null, "method": "ping"})),
            Kind::Invalid
        );
        assert_eq!(
            kind(&json!({"jsonrpc": "1.0", "id": 1, "method": "ping"})),
            Kind::Invalid
        );
        assert_eq!(kind(&json!([1, 2])), Kind::Invalid);
    }

    #[test]
    fn responses_keep_their_payload_verbatim() {
        let text = r#"{"jsonrpc":"2.0","id":7,"result":{"b":1,"a":[1, 2]}}"#;
        let Incoming::Response { id, payload } = parse_incoming(text).unwrap() else {
            panic!("response")
        };
        assert_eq!(id, Some(7));
        let reply = Reply {
            id: json!("client-1"),
            payload,
        };
        assert_eq!(
            reply.to_json(),
            r#"{"jsonrpc":"2.0","id":"client-1","result":{"b":1,"a":[1, 2]}}"#
        );
        let error = Reply::error(json!(3), code::INVALID_PARAMS, "Unknown tool: x");
        assert_eq!(error.error_code(), Some(-32602));
        assert_eq!(error.error_message().as_deref(), Some("Unknown tool: x"));
        let parsed: Value = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(parsed["error"]["message"], "Unknown tool: x");
    }

    #[test]
    fn other_messages_are_parsed() {
        let text = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#;
        assert!(matches!(parse_incoming(text).unwrap(), Incoming::Other(_)));
        let request = r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#;
        assert!(matches!(
            parse_incoming(request).unwrap(),
            Incoming::Other(_)
        ));
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":[{"b":"[[[[\"{{"}]}"#), 3);
        assert_eq!(nesting_depth(b"1"), 0);
    }

    /// The depth as counted byte by byte, a string's state carried along.
    fn depth_byte_by_byte(bytes: &[u8]) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in bytes {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn depth_of_any_text_is_the_byte_by_byte_count() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"{}[]\"\\ab:,";
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            assert_eq!(
                nesting_depth(&text),
                depth_byte_by_byte(&text),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
    }
}
