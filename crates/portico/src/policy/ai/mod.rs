//! `ai` (route, backend, target): prompt guards on MCP traffic, and defaults, overrides and model
//! aliases on the `sampling/createMessage` requests a target sends to the client's LLM.
//!
//! Where the guards run (see `mcp/multiplex`):
//! - request side: `tools/call` and `prompts/get` arguments, `completion/complete` arguments, and the
//!   messages and system prompt of a target's `sampling/createMessage`;
//! - response side: `tools/call` results, `prompts/get` messages, `resources/read` contents.
//!
//! A denied request never reaches the target (or, for sampling, the client) and is answered with
//! JSON-RPC error `-32001`; a denied response is replaced by that error.

pub mod guard;
pub mod sampling;

use crate::policy::FieldError;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use guard::{Denied, Guards, Scope};

/// JSON-RPC error code of a prompt-guard denial.
pub const DENIED: i64 = -32001;

/// The YAML form.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub prompt_guard: Option<PromptGuardConfig>,
    pub defaults: Option<serde_json::Map<String, serde_json::Value>>,
    pub overrides: Option<serde_json::Map<String, serde_json::Value>>,
    pub model_aliases: Option<std::collections::BTreeMap<String, String>>,
    // Fields of an LLM gateway's `ai` policy that have no meaning for MCP traffic: refused by name
    // rather than as unknown, so that a config copied from an LLM route says what is wrong.
    #[schemars(skip)]
    pub prompts: Option<IgnoredAny>,
    #[schemars(skip)]
    pub prompt_caching: Option<IgnoredAny>,
    #[schemars(skip)]
    pub routes: Option<IgnoredAny>,
    #[schemars(skip)]
    pub model_routing: Option<IgnoredAny>,
    #[schemars(skip)]
    pub transformations: Option<IgnoredAny>,
}

/// The seed's form (a list: request guards) or `{request, response}`.
#[derive(Debug, schemars::JsonSchema)]
#[schemars(untagged)]
pub enum PromptGuardConfig {
    Request(Vec<guard::GuardConfig>),
    Sides(SidesConfig),
}

// By hand rather than `untagged`, so that a mistake inside a guard is reported as itself, not as
// "did not match any variant".
impl<'de> Deserialize<'de> for PromptGuardConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        match value {
            serde_json::Value::Array(_) => serde_json::from_value(value)
                .map(PromptGuardConfig::Request)
                .map_err(D::Error::custom),
            serde_json::Value::Object(_) => serde_json::from_value(value)
                .map(PromptGuardConfig::Sides)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected a list of guards, or `{request: [...], response: [...]}`",
            )),
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidesConfig {
    #[serde(default)]
    pub request: Vec<guard::GuardConfig>,
    #[serde(default)]
    pub response: Vec<guard::GuardConfig>,
}

/// A compiled `ai` policy.
#[derive(Default)]
pub struct Ai {
    pub request: Option<Guards>,
    pub response: Option<Guards>,
    pub sampling: Option<sampling::Sampling>,
}

impl std::fmt::Debug for Ai {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for guards in [&self.request, &self.response].into_iter().flatten() {
            parts.push(format!("{guards:?}"));
        }
        if let Some(sampling) = &self.sampling {
            parts.push(format!("{sampling:?}"));
        }
        f.write_str(&parts.join("; "))
    }
}

impl Ai {
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let llm_only = [
            ("prompts", config.prompts.is_some()),
            ("promptCaching", config.prompt_caching.is_some()),
            ("routes", config.routes.is_some()),
            ("modelRouting", config.model_routing.is_some()),
            ("transformations", config.transformations.is_some()),
        ];
        if let Some((field, _)) = llm_only.iter().find(|(_, set)| *set) {
            return Err(FieldError::new(
                field.to_string(),
                format!(
                    "`ai.{field}` is not applicable to MCP targets: it shapes LLM API calls, and MCP traffic has none"
                ),
            ));
        }
        let (request, response) = match &config.prompt_guard {
            None => (&[][..], &[][..]),
            Some(PromptGuardConfig::Request(list)) => (&list[..], &[][..]),
            Some(PromptGuardConfig::Sides(sides)) => (&sides.request[..], &sides.response[..]),
        };
        let request_path = match &config.prompt_guard {
            Some(PromptGuardConfig::Sides(_)) => "promptGuard.request",
            _ => "promptGuard",
        };
        let guards = |side, path, list: &[guard::GuardConfig]| match list.is_empty() {
            true => Ok(None),
            false => Guards::compile(side, path, list).map(Some),
        };
        Ok(Self {
            request: guards("request", request_path, request)?,
            response: guards("response", "promptGuard.response", response)?,
            sampling: sampling::Sampling::compile(config)?,
        })
    }
}
