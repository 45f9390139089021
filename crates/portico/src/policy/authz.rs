//! `mcpAuthorization`: which tools, prompts and resources a caller sees and may use.
//!
//! Rules are CEL, compiled once at load. The decision for one item (SPEC §3): no rules → allow; any
//! `deny` true → deny; any `require` not true → deny; any `allow` true → allow; otherwise deny when there
//! are allow rules, allow when there are only deny/require rules. A rule that fails to evaluate or does
//! not give a bool never opens access: it counts as false for `allow`, and as true for `deny` and
//! `require` (it denies), and is logged with its error.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// The YAML form.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub rules: Vec<RuleConfig>,
}

/// A rule: a CEL string (an allow rule) or `{allow|deny|require: CEL}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RuleConfig {
    Allow(String),
    Tagged(TaggedRule),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum TaggedRule {
    Allow(String),
    Deny(String),
    Require(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
    Require,
}

impl Effect {
    fn name(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Require => "require",
        }
    }
}

pub struct Rule {
    pub effect: Effect,
    pub source: String,
    program: cel::Program,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.effect.name(), self.source)
    }
}

impl Rule {
    /// The rule's boolean value, or `None` (logged) when it fails or gives something else.
    fn evaluate(&self, context: &cel::Context) -> Option<bool> {
        let error = match self.program.execute(context) {
            Ok(cel::Value::Bool(value)) => return Some(value),
            Ok(other) => format!("gave {other:?}, not a bool"),
            Err(e) => e.to_string(),
        };
        let counted_as = if self.effect == Effect::Allow {
            "false"
        } else {
            "true (denied)"
        };
        tracing::warn!(target: "portico::authz", rule = %self.source, effect = self.effect.name(),
            error = %error, counted_as, "authorization rule could not be evaluated");
        None
    }
}

/// Compiled rules of one `mcpAuthorization` policy.
#[derive(Debug)]
pub struct Authorization {
    pub rules: Vec<Rule>,
    has_allow: bool,
    /// Whether any rule reads `mcp`; when none does, one decision holds for every item of a list.
    pub per_item: bool,
    /// Whether any rule reads `request` or `source`, which then belong to a caller's identity.
    pub reads_request: bool,
}

/// Why an item was allowed or denied: the rule (index into `rules`) that decided, if one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<usize>,
}

impl Authorization {
    /// Compiles every rule; `Err` lists `(rule index, message)` for each rule that is not valid CEL.
    pub fn compile(config: &Config) -> Result<Self, Vec<(usize, String)>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let (effect, source) = match rule {
                RuleConfig::Allow(s) | RuleConfig::Tagged(TaggedRule::Allow(s)) => {
                    (Effect::Allow, s)
                }
                RuleConfig::Tagged(TaggedRule::Deny(s)) => (Effect::Deny, s),
                RuleConfig::Tagged(TaggedRule::Require(s)) => (Effect::Require, s),
            };
            match cel::Program::compile(source) {
                Ok(program) => rules.push(Rule {
                    effect,
                    source: source.clone(),
                    program,
                }),
                Err(e) => errors.push((i, format!("invalid CEL `{source}`: {e}"))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let has_allow = rules.iter().any(|r| r.effect == Effect::Allow);
        let reads = |name: &str| {
            rules
                .iter()
                .any(|r| r.program.references().has_variable(name))
        };
        let per_item = reads("mcp");
        let reads_request = reads("request") || reads("source");
        Ok(Self {
            rules,
            has_allow,
            per_item,
            reads_request,
        })
    }

    /// Decides for one item in `context` (which holds `jwt`, `mcp`, `request`, `source`).
    pub fn decide(&self, context: &cel::Context) -> Decision {
        let mut allowed_by = None;
        for (i, rule) in self.rules.iter().enumerate() {
            match rule.effect {
                Effect::Deny if rule.evaluate(context) != Some(false) => {
                    return Decision {
                        allowed: false,
                        rule: Some(i),
                    };
                }
                Effect::Require if rule.evaluate(context) != Some(true) => {
                    return Decision {
                        allowed: false,
                        rule: Some(i),
                    };
                }
                Effect::Allow if allowed_by.is_none() && rule.evaluate(context) == Some(true) => {
                    allowed_by = Some(i)
                }
                _ => {}
            }
        }
        match allowed_by {
            Some(i) => Decision {
                allowed: true,
                rule: Some(i),
            },
            None => Decision {
                allowed: !self.has_allow,
                rule: None,
            },
        }
    }
}

/// CEL's built-in functions, registered once: every request's variables live in a scope below it.
static BUILTINS: std::sync::LazyLock<cel::Context<'static, 'static>> =
    std::sync::LazyLock::new(cel::Context::default);

/// What a request tells the rules about its caller, built once per request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The validated token's claims; `{}` when anonymous.
    pub jwt: Value,
    pub method: String,
    pub path: String,
    /// Lower-case header names.
    pub headers: serde_json::Map<String, Value>,
    pub address: String,
}

impl Caller {
    pub fn new(
        headers: &http::HeaderMap,
        method: &str,
        path: &str,
        peer: std::net::SocketAddr,
        jwt: Value,
    ) -> Self {
        let mut names = serde_json::Map::new();
        for (name, value) in headers {
            // The client's credentials never reach a rule's variables.
            if name == http::header::AUTHORIZATION {
                continue;
            }
            if let Ok(value) = value.to_str() {
                names.insert(name.as_str().to_string(), Value::String(value.to_string()));
            }
        }
        Self {
            jwt,
            method: method.to_string(),
            path: path.to_string(),
            headers: names,
            address: peer.ip().to_string(),
        }
    }

    /// What identifies this caller to the rules: the claims, and the request's headers and address
    /// when rules read them.
    /// `keys` should be random per session, so fingerprints cannot be forged to collide.
    pub fn fingerprint(
        &self,
        with_request: bool,
        keys: &std::collections::hash_map::RandomState,
    ) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut hasher = keys.build_hasher();
        self.jwt.to_string().hash(&mut hasher);
        if with_request {
            Value::Object(self.headers.clone())
                .to_string()
                .hash(&mut hasher);
            self.address.hash(&mut hasher);
            self.path.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The request-wide CEL variables.
    pub fn context(&self) -> cel::Context<'static, 'static> {
        let mut context = BUILTINS.new_inner_scope();
        let jwt = if self.jwt.is_object() {
            self.jwt.clone()
        } else {
            json!({})
        };
        context.add_variable_from_value("jwt", to_cel(&jwt));
        context.add_variable_from_value(
            "request",
            to_cel(&json!({"method": self.method, "path": self.path, "headers": self.headers})),
        );
        context.add_variable_from_value("source", to_cel(&json!({"address": self.address})));
        context
    }
}

/// The `mcp` variable for one item, built as a CEL map directly (it is made once per listed item).
pub fn mcp_variable(
    method: &str,
    target: &str,
    kind: &str,
    name: &str,
    arguments: Option<&Value>,
) -> cel::Value {
    let key = if kind == "resource" { "uri" } else { "name" };
    let mut item: HashMap<&str, cel::Value> = HashMap::from([(key, cel::Value::from(name))]);
    if let Some(arguments) = arguments {
        item.insert("arguments", to_cel(arguments));
    }
    cel::Value::from(HashMap::from([
        ("method", cel::Value::from(method)),
        ("target", cel::Value::from(target)),
        (kind, cel::Value::from(item)),
    ]))
}

pub fn to_cel(value: &Value) -> cel::Value {
    cel::to_value(value).unwrap_or(cel::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rules: &[&str]) -> Authorization {
        let config: Config =
            serde_json::from_value(json!({"rules": rules.iter().map(|r| serde_json::from_str::<Value>(r).unwrap()).collect::<Vec<_>>()}))
                .unwrap();
        Authorization::compile(&config).unwrap()
    }

    fn decide(authz: &Authorization, jwt: Value, tool: &str) -> Decision {
        let caller = Caller {
            jwt,
            ..Caller::default()
        };
        let base = caller.context();
        let mut context = base.new_inner_scope();
        context.add_variable_from_value("mcp", mcp_variable("tools/call", "t", "tool", tool, None));
        authz.decide(&context)
    }

    #[test]
    fn no_rules_allow() {
        assert!(decide(&rules(&[]), json!({}), "x").allowed);
    }

    #[test]
    fn allow_rules_need_one_true() {
        let authz = rules(&[
            r#""has(jwt.sub) && 'admin' in jwt.roles""#,
            r#""mcp.tool.name == 'echo'""#,
        ]);
        assert_eq!(
            decide(&authz, json!({}), "echo"),
            Decision {
                allowed: true,
                rule: Some(1)
            }
        );
        assert_eq!(
            decide(&authz, json!({}), "add"),
            Decision {
                allowed: false,
                rule: None
            }
        );
        let admin = json!({"sub": "ada", "roles": ["admin"]});
        assert_eq!(
            decide(&authz, admin, "add"),
            Decision {
                allowed: true,
                rule: Some(0)
            }
        );
        assert!(!decide(&authz, json!({"sub": "bob", "roles": ["dev"]}), "add").allowed);
    }

    #[test]
    fn a_rule_that_fails_never_opens_access() {
        // `jwt.sub` does not exist for an anonymous caller: evaluating it is an error.
        let deny = rules(&[r#"{"deny": "jwt.sub == 'mallory'"}"#]);
        assert!(
            !decide(&deny, json!({}), "echo").allowed,
            "deny + error = deny"
        );
        assert!(decide(&deny, json!({"sub": "ada"}), "echo").allowed);
        let require = rules(&[r#"{"require": "jwt.sub != ''"}"#]);
        assert!(
            !decide(&require, json!({}), "echo").allowed,
            "require + error = deny"
        );
        let allow = rules(&[r#""jwt.sub == 'ada'""#]);
        assert!(
            !decide(&allow, json!({}), "echo").allowed,
            "allow + error = not allowed"
        );
        let not_bool = rules(&[r#"{"deny": "'yes'"}"#]);
        assert!(!decide(&not_bool, json!({}), "echo").allowed);
    }

    #[test]
    fn deny_wins_and_only_deny_rules_allow_the_rest() {
        let authz = rules(&[r#"{"deny": "mcp.tool.name == 'crash'"}"#]);
        assert_eq!(
            decide(&authz, json!({}), "crash"),
            Decision {
                allowed: false,
                rule: Some(0)
            }
        );
        assert!(decide(&authz, json!({}), "echo").allowed);
        let authz = rules(&[r#""true""#, r#"{"deny": "mcp.tool.name == 'crash'"}"#]);
        assert!(!decide(&authz, json!({}), "crash").allowed);
    }

    #[test]
    fn require_must_hold() {
        let authz = rules(&[r#"{"require": "has(jwt.sub)"}"#]);
        assert!(!decide(&authz, json!({}), "echo").allowed);
        assert!(decide(&authz, json!({"sub": "ada"}), "echo").allowed);
    }

    #[test]
    fn errors_and_non_bools_count_as_false() {
        let authz = rules(&[r#""jwt.missing.deeper == 1""#, r#""'a string'""#]);
        assert!(!decide(&authz, json!({}), "echo").allowed);
        let authz = rules(&[r#"{"require": "jwt.nested.claim == 'x'"}"#]);
        assert!(!decide(&authz, json!({}), "echo").allowed);
        assert!(decide(&authz, json!({"nested": {"claim": "x"}}), "echo").allowed);
    }

    #[test]
    fn invalid_cel_is_refused_at_compile() {
        let config: Config = serde_json::from_value(json!({"rules": ["ok == ", "true"]})).unwrap();
        let errors = Authorization::compile(&config).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 0);
    }
}

#[cfg(test)]
mod reads_tests {
    use super::*;

    #[test]
    fn knows_which_rules_read_the_item() {
        let compile = |rules: serde_json::Value| {
            Authorization::compile(&serde_json::from_value(json!({"rules": rules})).unwrap())
                .unwrap()
        };
        let claims = compile(
            json!([{"deny": "has(jwt.banned_0)"}, "true", "has(jwt.sub) && \"admin\" in jwt.roles"]),
        );
        assert!(!claims.per_item && !claims.reads_request);
        let items = compile(json!([{"deny": "mcp.tool.name == \"x\""}]));
        assert!(items.per_item);
        let request = compile(json!(["request.headers[\"x-team\"] == \"blue\""]));
        assert!(request.reads_request && !request.per_item);
    }
}
