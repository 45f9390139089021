//! `ai.promptGuard`: regex guards over the text of MCP messages.
//!
//! Each guard has `deny` and `mask` lists of `{pattern}` or `{builtin}` rules, compiled once at load
//! into a `RegexSet` per list, so one pass over a string tells which rules match. Guards run on the
//! *decoded* string values of the JSON (and the decimal form of numbers), never on its serialization:
//! `pass\u0077ord`, a value nested deep in an argument object, or an array element are all seen as
//! the text they are.

use crate::policy::FieldError;
use regex::{Regex, RegexSet};
use serde::Deserialize;
use serde_json::Value;

/// One guard of a `promptGuard` list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    pub regex: RegexConfig,
    pub rejection: Option<RejectionConfig>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexConfig {
    #[serde(default)]
    pub deny: Vec<RuleConfig>,
    #[serde(default)]
    pub mask: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectionConfig {
    pub message: String,
}

/// `{pattern: "..."}` or `{builtin: email | phoneNumber | ssn | creditCard}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub pattern: Option<String>,
    pub builtin: Option<Builtin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Builtin {
    Email,
    PhoneNumber,
    Ssn,
    CreditCard,
}

impl Builtin {
    fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::PhoneNumber => "phoneNumber",
            Builtin::Ssn => "ssn",
            Builtin::CreditCard => "creditCard",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Builtin::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            // North American numbers with optional +1, and international ones with a + prefix.
            // ASCII word boundaries (`(?-u:\b)`) keep these on the regex crate's fast DFA.
            Builtin::PhoneNumber => {
                r"(?:\+1[ .-]?)?\(?(?-u:\b)[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4}(?-u:\b)|\+[1-9][0-9]{0,2}[ .-]?(?:[0-9][ .-]?){6,12}[0-9](?-u:\b)"
            }
            Builtin::Ssn => r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
            // 13 to 19 digits, optionally grouped by spaces or dashes; confirmed by the Luhn check.
            Builtin::CreditCard => r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        }
    }
}

/// Passes the Luhn checksum that every payment card number carries.
fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| match i % 2 {
            1 if d * 2 > 9 => d * 2 - 9,
            1 => d * 2,
            _ => *d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// One compiled rule list: the set that says which rules match, and each rule on its own (to find
/// where, for masking and for the credit-card check).
struct Rules {
    set: RegexSet,
    each: Vec<(Regex, Option<Builtin>)>,
    /// `deny[1]`, `deny[0] (ssn)`: what the log names.
    labels: Vec<String>,
}

impl Rules {
    fn compile(list: &str, rules: &[RuleConfig]) -> Result<Self, FieldError> {
        let mut patterns = Vec::new();
        let mut each = Vec::new();
        let mut labels = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{list}[{i}]");
            let (pattern, builtin) = match (&rule.pattern, rule.builtin) {
                (Some(pattern), None) => (pattern.as_str(), None),
                (None, Some(builtin)) => (builtin.pattern(), Some(builtin)),
                _ => {
                    return Err(FieldError::new(
                        at,
                        "set exactly one of `pattern` and `builtin`",
                    ));
                }
            };
            let regex = Regex::new(pattern).map_err(|e| {
                FieldError::new(format!("{at}.pattern"), format!("not a valid regex: {e}"))
            })?;
            labels.push(match builtin {
                Some(b) => format!("{at} ({})", b.name()),
                None => at,
            });
            patterns.push(pattern.to_string());
            each.push((regex, builtin));
        }
        let set = RegexSet::new(&patterns)
            .map_err(|e| FieldError::new(list.to_string(), e.to_string()))?;
        Ok(Self { set, each, labels })
    }

    fn is_empty(&self) -> bool {
        self.each.is_empty()
    }

    /// The first rule that really matches `text` (a card number must pass the Luhn check).
    fn first_match(&self, text: &str) -> Option<usize> {
        // Most text matches nothing: `is_match` stops early and skips finding which rules matched.
        if !self.set.is_match(text) {
            return None;
        }
        self.set
            .matches(text)
            .iter()
            .find(|&i| self.confirmed(i, text))
    }

    fn confirmed(&self, i: usize, text: &str) -> bool {
        let (regex, builtin) = &self.each[i];
        match builtin {
            Some(Builtin::CreditCard) => regex.find_iter(text).any(|m| luhn(m.as_str())),
            _ => true,
        }
    }

    /// `text` with every match of every matching rule replaced by `<masked>`; `None` if none matched.
    fn mask(&self, text: &str) -> Option<String> {
        if !self.set.is_match(text) {
            return None;
        }
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return None;
        }
        let mut out = text.to_string();
        let mut changed = false;
        for i in matched.iter() {
            let (regex, builtin) = &self.each[i];
            let replaced = regex.replace_all(&out, |caps: &regex::Captures<'_>| {
                let found = &caps[0];
                if *builtin == Some(Builtin::CreditCard) && !luhn(found) {
                    return found.to_string();
                }
                MASK.to_string()
            });
            if let std::borrow::Cow::Owned(replaced) = replaced
                && replaced != out
            {
                out = replaced;
                changed = true;
            }
        }
        changed.then_some(out)
    }
}

/// What a masked match becomes.
pub const MASK: &str = "<masked>";

/// The message of a denial without `rejection.message`.
pub const DEFAULT_REJECTION: &str = "Request blocked by prompt guard";

struct Guard {
    deny: Rules,
    mask: Rules,
    rejection: String,
}

/// The guards of one side (request or response), in order.
pub struct Guards {
    guards: Vec<Guard>,
    /// `request` or `response`, for labels.
    side: &'static str,
}

impl std::fmt::Debug for Guards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: usize = self
            .guards
            .iter()
            .map(|g| g.deny.each.len() + g.mask.each.len())
            .sum();
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let guards = self.guards.len();
        write!(
            f,
            "{} guard{}: {guards} with {rules} rule{}",
            self.side,
            plural(guards),
            plural(rules)
        )
    }
}

/// A denial: which rule matched (never the text) and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: String,
    pub message: String,
}

impl Guards {
    /// `path` is where the list is in the policy (`promptGuard`, `promptGuard.request`).
    pub fn compile(
        side: &'static str,
        path: &str,
        configs: &[GuardConfig],
    ) -> Result<Self, FieldError> {
        let mut guards = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let with_path =
                |e: FieldError| FieldError::new(format!("{at}.regex.{}", e.field), e.message);
            let deny = Rules::compile("deny", &config.regex.deny).map_err(with_path)?;
            let mask = Rules::compile("mask", &config.regex.mask).map_err(with_path)?;
            if deny.is_empty() && mask.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.regex"),
                    "a guard needs a `deny` or a `mask` rule",
                ));
            }
            let rejection = match &config.rejection {
                Some(r) if r.message.trim().is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.rejection.message"),
                        "the message is empty",
                    ));
                }
                Some(r) => r.message.clone(),
                None => DEFAULT_REJECTION.to_string(),
            };
            guards.push(Guard {
                deny,
                mask,
                rejection,
            });
        }
        Ok(Self { guards, side })
    }

    /// Runs every guard over the text of `value` (as chosen by `scope`): the first `deny` match refuses
    /// it; otherwise `mask` matches are replaced in place. Returns whether anything was masked.
    pub fn apply(&self, value: &mut Value, scope: Scope) -> Result<bool, Denied> {
        let mut masked = false;
        for (i, guard) in self.guards.iter().enumerate() {
            if !guard.deny.is_empty()
                && let Some(rule) = find_denied(value, scope, &guard.deny)
            {
                return Err(Denied {
                    rule: format!("{}[{i}].{}", self.side, guard.deny.labels[rule]),
                    message: guard.rejection.clone(),
                });
            }
            if !guard.mask.is_empty() {
                masked |= mask_all(value, scope, &guard.mask);
            }
        }
        Ok(masked)
    }
}

/// Which strings of a message are text to guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every string and number (tool and prompt arguments: free-form input).
    All,
    /// Strings under a `text` key, and everything under `structuredContent` or `systemPrompt`
    /// (results, prompt messages, resource contents, sampling messages): not the protocol's own fields
    /// such as `type`, `mimeType` or `uri`.
    Text,
}

fn find_denied(value: &Value, scope: Scope, rules: &Rules) -> Option<usize> {
    let mut found = None;
    visit(value, scope, false, &mut |text| {
        found = rules.first_match(text);
        found.is_some()
    });
    found
}

/// Calls `check` on each guarded string (and number, as written) until it returns `true`.
fn visit(value: &Value, scope: Scope, inside: bool, check: &mut dyn FnMut(&str) -> bool) -> bool {
    let guarded = inside || scope == Scope::All;
    match value {
        Value::String(s) if guarded => check(s),
        Value::Number(n) if guarded => check(&n.to_string()),
        Value::Array(items) => items.iter().any(|v| visit(v, scope, inside, check)),
        Value::Object(map) => map
            .iter()
            .any(|(key, v)| visit(v, scope, inside || is_text_key(key), check)),
        _ => false,
    }
}

fn is_text_key(key: &str) -> bool {
    matches!(key, "text" | "structuredContent" | "systemPrompt")
}

fn mask_all(value: &mut Value, scope: Scope, rules: &Rules) -> bool {
    mask_within(value, scope, false, rules)
}

fn mask_within(value: &mut Value, scope: Scope, inside: bool, rules: &Rules) -> bool {
    let guarded = inside || scope == Scope::All;
    match value {
        Value::String(s) if guarded => match rules.mask(s) {
            Some(masked) => {
                *s = masked;
                true
            }
            None => false,
        },
        Value::Number(n) if guarded => match rules.mask(&n.to_string()) {
            Some(masked) => {
                *value = Value::String(masked);
                true
            }
            None => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| mask_within(v, scope, inside, rules) | any),
        Value::Object(map) => map.iter_mut().fold(false, |any, (key, v)| {
            let inside = inside || is_text_key(key);
            mask_within(v, scope, inside, rules) | any
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guards(yaml: Value) -> Guards {
        let configs: Vec<GuardConfig> = serde_json::from_value(yaml).unwrap();
        Guards::compile("request", "promptGuard", &configs).unwrap()
    }

    #[test]
    fn deny_sees_decoded_nested_and_array_text() {
        let g = guards(json!([{"regex": {"deny": [{"pattern": ".*password.*"}]}}]));
        // `\u0077` is `w`: the JSON escape is decoded before matching.
        let escaped: Value = serde_json::from_str(r#"{"note": "my pass\u0077ord"}"#).unwrap();
        for mut args in [
            escaped,
            json!({"a": {"b": {"c": "the password is x"}}}),
            json!({"list": ["fine", ["still fine", "password!"]]}),
        ] {
            let denied = g.apply(&mut args, Scope::All).unwrap_err();
            assert_eq!(denied.rule, "request[0].deny[0]");
            assert_eq!(denied.message, DEFAULT_REJECTION);
        }
        assert_eq!(
            g.apply(&mut json!({"note": "pass word"}), Scope::All),
            Ok(false)
        );
    }

    #[test]
    fn builtins_mask_what_they_name() {
        let g = guards(json!([{"regex": {"mask": [
            {"builtin": "email"}, {"builtin": "ssn"}, {"builtin": "creditCard"}, {"builtin": "phoneNumber"}
        ]}}]));
        let mut value = json!({
            "text": "mail ada@example.com, ssn 123-45-6789, card 4111 1111 1111 1111, call (415) 555-0134",
            "type": "ada@example.com"
        });
        assert_eq!(g.apply(&mut value, Scope::Text), Ok(true));
        assert_eq!(
            value["text"],
            "mail <masked>, ssn <masked>, card <masked>, call <masked>"
        );
        assert_eq!(
            value["type"], "ada@example.com",
            "protocol fields are not text"
        );
        // 16 digits that fail the Luhn check are not a card number.
        let mut order = json!({"text": "order 1234 5678 9012 3456"});
        assert_eq!(g.apply(&mut order, Scope::Text), Ok(false));
    }

    #[test]
    fn a_card_number_as_a_json_number_is_caught() {
        let g = guards(
            json!([{"regex": {"deny": [{"builtin": "creditCard"}]}, "rejection": {"message": "no cards"}}]),
        );
        let denied = g
            .apply(&mut json!({"card": 4111111111111111u64}), Scope::All)
            .unwrap_err();
        assert_eq!(denied.rule, "request[0].deny[0] (creditCard)");
        assert_eq!(denied.message, "no cards");
    }

    #[test]
    fn broken_rules_are_config_errors() {
        let configs: Vec<GuardConfig> =
            serde_json::from_value(json!([{"regex": {"deny": [{"pattern": "("}]}}])).unwrap();
        let FieldError { field: at, message } =
            Guards::compile("request", "promptGuard", &configs).unwrap_err();
        assert_eq!(at, "promptGuard[0].regex.deny[0].pattern");
        assert!(message.contains("not a valid regex"), "{message}");
        let configs: Vec<GuardConfig> = serde_json::from_value(json!([{"regex": {}}])).unwrap();
        assert!(Guards::compile("request", "promptGuard", &configs).is_err());
    }
}
