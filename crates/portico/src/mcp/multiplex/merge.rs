//! The `initialize` reply of a multiplexed session: the targets' capabilities merged, their
//! instructions one section each.

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
    fn version_negotiation() {
        assert_eq!(negotiate_version(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate_version(Some("2099-01-01")), "2025-11-25");
        assert_eq!(negotiate_version(None), "2025-11-25");
    }
}
