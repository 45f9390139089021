//! The `initialize` reply of a multiplexed session: the targets' capabilities merged, their
//! instructions one section each.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// Protocol versions Portico speaks with clients, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The client's version when Portico speaks it, else the newest Portico speaks.
pub fn negotiate_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_VERSIONS.iter().find(|v| **v == r))
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1])
}

/// Merged results kept per worker thread: enough for the backends one worker starts sessions on
/// in turn.
const MERGED_KEPT: usize = 8;

/// One merge: its inputs (each target's name and `initialize` result text) and its output.
struct Merged {
    version: &'static str,
    inputs: Vec<(Box<str>, Box<str>)>,
    text: Arc<str>,
}

impl Merged {
    fn is_for(&self, version: &str, targets: &[(&str, &str)]) -> bool {
        self.version == version
            && self.inputs.len() == targets.len()
            && self
                .inputs
                .iter()
                .zip(targets)
                .all(|((name, result), (n, r))| **name == **n && **result == **r)
    }
}

thread_local! {
    static MERGED: RefCell<Vec<Merged>> = const { RefCell::new(Vec::new()) };
}

/// [`initialize_result`] as JSON text, from the targets' result texts (`(target name, result)`).
/// The merge is a function of its inputs, and a backend's targets answer every session alike, so
/// the last few merges of this thread are kept and a repeated one is not merged again (through
/// `Value`s it cost about an eighth of a session's start).
pub fn initialize_result_text(version: &'static str, targets: &[(&str, &str)]) -> Arc<str> {
    let kept = MERGED.with_borrow(|merged| {
        merged
            .iter()
            .find(|m| m.is_for(version, targets))
            .map(|m| m.text.clone())
    });
    if let Some(text) = kept {
        return text;
    }
    let results: Vec<Value> = targets
        .iter()
        .map(|(_, result)| serde_json::from_str(result).unwrap_or_default())
        .collect();
    let answered: Vec<(&str, &Value)> = targets
        .iter()
        .zip(&results)
        .map(|((name, _), result)| (*name, result))
        .collect();
    let text: Arc<str> = initialize_result(version, &answered).to_string().into();
    MERGED.with_borrow_mut(|merged| {
        if merged.len() == MERGED_KEPT {
            merged.pop();
        }
        let inputs = targets
            .iter()
            .map(|(name, result)| (Box::from(*name), Box::from(*result)))
            .collect();
        merged.insert(
            0,
            Merged {
                version,
                inputs,
                text: text.clone(),
            },
        );
    });
    text
}

/// Merges the `initialize` results of the targets that answered (`(target name, result)`).
pub fn initialize_result(version: &str, targets: &[(&str, &Value)]) -> Value {
    let mut capabilities = Map::new();
    let mut instructions = Vec::new();
    for (name, result) in targets {
        if let Some(caps) = result.get("capabilities").and_then(Value::as_object) {
            for (key, value) in caps {
                merge_capability(&mut capabilities, key, value);
            }
        }
        if let Some(text) = result
            .get("instructions")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        {
            instructions.push(format!("## {name}\n{text}"));
        }
    }
    // A target may come back later with capabilities it could not declare now; list changes are how
    // the client hears of it.
    for key in ["tools", "prompts", "resources"] {
        let entry = capabilities.entry(key).or_insert_with(|| json!({}));
        if let Some(object) = entry.as_object_mut() {
            object.insert("listChanged".into(), Value::Bool(true));
        }
    }
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": {"name": "portico", "version": env!("CARGO_PKG_VERSION")},
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    result
}

/// Union of two capability objects: a flag is true when any target sets it.
fn merge_capability(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match (into.get_mut(key), value) {
        (None, _) => {
            into.insert(key.to_string(), value.clone());
        }
        (Some(Value::Object(existing)), Value::Object(incoming)) => {
            for (k, v) in incoming {
                match (existing.get(k), v) {
                    (Some(Value::Bool(true)), _) => {}
                    (Some(Value::Object(_)), Value::Object(_)) => {
                        if let Some(Value::Object(nested)) = existing.get_mut(k) {
                            for (nk, nv) in v.as_object().into_iter().flatten() {
                                nested.entry(nk.clone()).or_insert_with(|| nv.clone());
                            }
                        }
                    }
                    _ => {
                        existing.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_union_and_instruction_sections() {
        let a = json!({"capabilities": {"tools": {"listChanged": false}, "logging": {}}, "instructions": "Use a."});
        let b = json!({"capabilities": {"tools": {}, "resources": {"subscribe": true}}, "instructions": ""});
        let merged = initialize_result("2025-06-18", &[("a", &a), ("b", &b)]);
        assert_eq!(merged["capabilities"]["logging"], json!({}));
        assert_eq!(
            merged["capabilities"]["resources"]["subscribe"],
            json!(true)
        );
        assert_eq!(merged["capabilities"]["tools"]["listChanged"], json!(true));
        assert_eq!(merged["instructions"], json!("## a\nUse a."));
        assert_eq!(merged["serverInfo"]["name"], json!("portico"));
    }

    #[test]
    fn a_merge_as_text_is_the_merge_and_follows_its_inputs() {
        let (a, b) = (
            r#"{"capabilities":{"tools":{}},"instructions":"Use a."}"#,
            r#"{"capabilities":{"logging":{}}}"#,
        );
        let text = initialize_result_text("2025-06-18", &[("a", a), ("b", b)]);
        let merged: Value = serde_json::from_str(&text).unwrap();
        let values: Vec<Value> = [a, b]
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(
            merged,
            initialize_result("2025-06-18", &[("a", &values[0]), ("b", &values[1])])
        );
        // The same inputs give the kept text; any change of name, result, order or version is merged anew.
        let again = initialize_result_text("2025-06-18", &[("a", a), ("b", b)]);
        assert!(Arc::ptr_eq(&text, &again));
        for changed in [
            initialize_result_text("2025-06-18", &[("c", a), ("b", b)]),
            initialize_result_text("2025-06-18", &[("a", b), ("b", b)]),
            initialize_result_text("2025-06-18", &[("b", b), ("a", a)]),
            initialize_result_text("2025-06-18", &[("a", a)]),
            initialize_result_text("2025-03-26", &[("a", a), ("b", b)]),
        ] {
            assert_ne!(changed, text);
        }
        // Bounded: more distinct merges than are kept still give each its own result.
        for i in 0..3 * MERGED_KEPT {
            let instructions = format!(r#"{{"instructions":"run {i}"}}"#);
            let merged = initialize_result_text("2025-06-18", &[("a", &instructions)]);
            assert!(merged.contains(&format!("## a\\nrun {i}")), "{merged}");
        }
        assert_eq!(MERGED.with_borrow(Vec::len), MERGED_KEPT);
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate_version(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate_version(Some("2099-01-01")), "2025-11-25");
        assert_eq!(negotiate_version(None), "2025-11-25");
    }
}
