//! `ai.defaults`, `ai.overrides`, `ai.modelAliases`: what a target's `sampling/createMessage`
//! requests look like when they reach the client's LLM. `defaults` fill parameters the target left
//! out, `overrides` replace them whatever the target sent, and `modelAliases` rewrite the names in
//! `modelPreferences.hints` (e.g. `fast` → a concrete model).

use crate::policy::FieldError;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Config;

/// The `sampling/createMessage` parameters that `defaults` and `overrides` may set.
const PARAMETERS: [&str; 7] = [
    "maxTokens",
    "temperature",
    "stopSequences",
    "systemPrompt",
    "includeContext",
    "modelPreferences",
    "metadata",
];

pub struct Sampling {
    defaults: Map<String, Value>,
    overrides: Map<String, Value>,
    aliases: BTreeMap<String, String>,
}

impl std::fmt::Debug for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sampling: defaults {}, overrides {}, aliases {:?}",
            serde_json::Value::Object(self.defaults.clone()),
            serde_json::Value::Object(self.overrides.clone()),
            self.aliases
        )
    }
}

impl Sampling {
    pub fn compile(config: &Config) -> Result<Option<Self>, FieldError> {
        let defaults = config.defaults.clone().unwrap_or_default();
        let overrides = config.overrides.clone().unwrap_or_default();
        let aliases = config.model_aliases.clone().unwrap_or_default();
        for (field, map) in [("defaults", &defaults), ("overrides", &overrides)] {
            if let Some(key) = map.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
                return Err(FieldError::new(
                    format!("{field}.{key}"),
                    format!(
                        "`{key}` is not a sampling/createMessage parameter; expected one of {}",
                        PARAMETERS.join(", ")
                    ),
                ));
            }
        }
        if defaults.is_empty() && overrides.is_empty() && aliases.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            defaults,
            overrides,
            aliases,
        }))
    }

    /// Rewrites the `params` of a `sampling/createMessage` request in place.
    pub fn apply(&self, params: &mut Value) {
        if !params.is_object() {
            *params = Value::Object(Map::new());
        }
        let Some(params) = params.as_object_mut() else {
            return;
        };
        for (key, value) in &self.defaults {
            if params.get(key).is_none_or(Value::is_null) {
                params.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in &self.overrides {
            params.insert(key.clone(), value.clone());
        }
        if self.aliases.is_empty() {
            return;
        }
        let hints = params
            .get_mut("modelPreferences")
            .and_then(|p| p.get_mut("hints"))
            .and_then(Value::as_array_mut);
        for hint in hints.into_iter().flatten() {
            let alias = hint.get("name").and_then(Value::as_str);
            if let Some(model) = alias.and_then(|name| self.aliases.get(name)) {
                hint["name"] = Value::String(model.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sampling(policy: Value) -> Sampling {
        let config: Config = serde_json::from_value(policy).unwrap();
        Sampling::compile(&config).unwrap().unwrap()
    }

    #[test]
    fn defaults_fill_overrides_replace_aliases_rename() {
        let s = sampling(json!({
            "defaults": {"maxTokens": 256, "temperature": 0.2},
            "overrides": {"maxTokens": 1024},
            "modelAliases": {"fast": "claude-haiku-4-5"}
        }));
        let mut params = json!({
            "messages": [], "temperature": 0.9, "maxTokens": 99999,
            "modelPreferences": {"hints": [{"name": "fast"}, {"name": "other"}], "speedPriority": 1}
        });
        s.apply(&mut params);
        assert_eq!(params["maxTokens"], 1024);
        assert_eq!(
            params["temperature"], 0.9,
            "a default does not replace what was sent"
        );
        assert_eq!(
            params["modelPreferences"]["hints"],
            json!([{"name": "claude-haiku-4-5"}, {"name": "other"}])
        );
        assert_eq!(params["modelPreferences"]["speedPriority"], 1);
        let mut bare = json!({"messages": []});
        s.apply(&mut bare);
        assert_eq!(bare["temperature"], 0.2);
    }

    #[test]
    fn unknown_parameters_are_refused() {
        let config: Config =
            serde_json::from_value(json!({"defaults": {"max_tokens": 5}})).unwrap();
        let FieldError { field: at, message } = Sampling::compile(&config).unwrap_err();
        assert_eq!(at, "defaults.max_tokens");
        assert!(message.contains("maxTokens"), "{message}");
    }
}
