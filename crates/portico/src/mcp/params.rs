//! The shape of `params` for the methods the gateway reads, checked before anything reads them.
//!
//! A request whose `params` the gateway must look into (a name to route by, a cursor to split) is
//! answered `-32602` here when that shape is wrong, so routing code only ever sees objects and
//! strings where it expects them. Fields the gateway does not read are not checked: they are the
//! target's business and pass through as sent. Methods the gateway forwards without reading them are
//! not checked at all.

use serde_json::{Map, Value};

/// What is wrong with a request's `params`, said to the client as a `-32602` message.
pub type Invalid = String;

fn object<'a>(params: Option<&'a Value>, method: &str) -> Result<&'a Map<String, Value>, Invalid> {
    match params {
        Some(Value::Object(params)) => Ok(params),
        Some(other) => Err(format!(
            "{method}: params must be an object, not {}",
            type_name(other)
        )),
        None => Err(format!("{method}: params are required")),
    }
}

/// `params` that may be left out (or `null`) but are an object when present.
fn optional_object<'a>(
    params: Option<&'a Value>,
    method: &str,
) -> Result<Option<&'a Map<String, Value>>, Invalid> {
    match params {
        None | Some(Value::Null) => Ok(None),
        params => object(params, method).map(Some),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(params: &Map<String, Value>, field: &str, method: &str) -> Result<(), Invalid> {
    match params.get(field) {
        Some(Value::String(_)) => Ok(()),
        Some(other) => Err(format!(
            "{method}: `{field}` must be a string, not {}",
            type_name(other)
        )),
        None => Err(format!("{method}: `{field}` is required")),
    }
}

/// A field that may be absent (or `null`, passed on as sent); else of the kind `is_kind` accepts.
fn optional(
    params: &Map<String, Value>,
    field: &str,
    method: &str,
    kind: &str,
    is_kind: fn(&Value) -> bool,
) -> Result<(), Invalid> {
    match params.get(field) {
        Some(value) if !value.is_null() && !is_kind(value) => Err(format!(
            "{method}: `{field}` must be {kind}, not {}",
            type_name(value)
        )),
        _ => Ok(()),
    }
}

fn common(params: &Map<String, Value>, method: &str) -> Result<(), Invalid> {
    optional(params, "_meta", method, "an object", Value::is_object)
}

/// Checks the `params` of a client request for `method`; `Err` is the `-32602` message.
pub fn check(method: &str, params: Option<&Value>) -> Result<(), Invalid> {
    match method {
        "initialize" => {
            let params = object(params, method)?;
            common(params, method)?;
            optional(
                params,
                "protocolVersion",
                method,
                "a string",
                Value::is_string,
            )
        }
        "ping" => {
            optional_object(params, method).and_then(|p| p.map_or(Ok(()), |p| common(p, method)))
        }
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
            let Some(params) = optional_object(params, method)? else {
                return Ok(());
            };
            common(params, method)?;
            optional(params, "cursor", method, "a string", Value::is_string)
        }
        "tools/call" | "prompts/get" => {
            let params = object(params, method)?;
            common(params, method)?;
            required_string(params, "name", method)?;
            optional(params, "arguments", method, "an object", Value::is_object)
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let params = object(params, method)?;
            common(params, method)?;
            required_string(params, "uri", method)
        }
        "completion/complete" => {
            let params = object(params, method)?;
            common(params, method)?;
            let reference = object(params.get("ref"), "completion/complete `ref`")?;
            match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => {
                    required_string(reference, "name", "completion/complete `ref`")
                }
                Some("ref/resource") => {
                    required_string(reference, "uri", "completion/complete `ref`")
                }
                _ => Err(
                    "completion/complete: `ref.type` must be `ref/prompt` or `ref/resource`"
                        .to_string(),
                ),
            }?;
            optional(params, "argument", method, "an object", Value::is_object)?;
            optional(params, "context", method, "an object", Value::is_object)
        }
        "logging/setLevel" => {
            let params = object(params, method)?;
            common(params, method)?;
            required_string(params, "level", method)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn well_formed_params_pass() {
        for (method, params) in [
            ("tools/list", None),
            ("tools/list", Some(json!({"cursor": "c"}))),
            ("ping", Some(Value::Null)),
            ("tools/call", Some(json!({"name": "t"}))),
            (
                "tools/call",
                Some(json!({"name": "t", "arguments": {}, "_meta": {"progressToken": 1}})),
            ),
            (
                "completion/complete",
                Some(
                    json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": ""}}),
                ),
            ),
            ("resources/read", Some(json!({"uri": "x://y"}))),
            ("vendor/anything", Some(json!(7))),
        ] {
            assert_eq!(
                check(method, params.as_ref()),
                Ok(()),
                "{method} {params:?}"
            );
        }
    }

    #[test]
    fn wrong_shapes_are_named() {
        assert_eq!(
            check("tools/call", Some(&json!([1]))).unwrap_err(),
            "tools/call: params must be an object, not an array"
        );
        assert_eq!(
            check("tools/call", Some(&json!({"name": "t", "arguments": "x"}))).unwrap_err(),
            "tools/call: `arguments` must be an object, not a string"
        );
        assert!(check("completion/complete", Some(&json!({"ref": "x"}))).is_err());
        assert!(
            check(
                "completion/complete",
                Some(&json!({"ref": {"type": "ref/prompt"}}))
            )
            .is_err()
        );
        assert!(check("tools/list", Some(&json!({"cursor": 3}))).is_err());
        assert!(check("tools/list", Some(&json!(true))).is_err());
        assert!(check("resources/read", None).is_err());
    }
}
