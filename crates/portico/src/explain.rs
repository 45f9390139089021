//! `portico explain`: for every route and target, the effective policy of each type and the level it
//! came from, read from the resolved config (the same table requests use).

use serde_json::{Value, json};

use crate::config::Config;
use crate::config::runtime::Route;
use crate::policy::{Sourced, TargetPolicies};

/// Policy types that apply per route, in display order.
const ROUTE_TYPES: [&str; 3] = ["jwtAuth", "cors", "localRateLimit"];
/// Policy types that apply per target, in display order.
const TARGET_TYPES: [&str; 9] = [
    "mcpAuthorization",
    "backendAuth",
    "backendTLS",
    "requestHeaderModifier",
    "responseHeaderModifier",
    "ai",
    "a2a",
    "timeout",
    "localRateLimit",
];

fn entry<T>(sourced: &Option<Sourced<T>>, detail: impl Fn(&T) -> Value) -> Value {
    match sourced {
        Some(s) => json!({"level": s.level.name(), "policy": detail(&s.policy)}),
        None => Value::Null,
    }
}

fn route_policies(route: &Route) -> Value {
    json!({
        "jwtAuth": entry(&route.jwt, |jwt| json!(format!("{jwt:?}"))),
        "cors": entry(&route.cors, |cors| json!(format!("{cors:?}"))),
        "localRateLimit": route.rate_limit.as_ref().map_or(Value::Null, |limit| {
            json!({"level": "route", "policy": format!("{limit:?}")})
        }),
    })
}

fn target_policies(policies: &TargetPolicies) -> Value {
    let debug = |p: &dyn std::fmt::Debug| json!(format!("{p:?}"));
    json!({
        "mcpAuthorization": entry(&policies.authorization, |authz| {
            json!(authz.rules.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>())
        }),
        // Debug of backendAuth redacts the secret.
        "backendAuth": entry(&policies.backend_auth, |auth| debug(auth)),
        "backendTLS": entry(&policies.backend_tls, |tls| {
            json!(format!("sni {:?}, insecure {}, insecureHost {}", tls.sni, tls.insecure, tls.insecure_host))
        }),
        "requestHeaderModifier": entry(&policies.request_headers, |m| debug(m)),
        "responseHeaderModifier": entry(&policies.response_headers, |m| debug(m)),
        "ai": entry(&policies.ai, |ai| debug(ai)),
        "a2a": entry(&policies.a2a, |_| json!("agent-to-agent")),
        "timeout": entry(&policies.timeout, |t| json!(format!("{:?} ({})", t.limit, t.field))),
        "localRateLimit": entry(&policies.rate_limit, |limit| debug(limit)),
    })
}

/// The effective policies as JSON, optionally narrowed to one route and/or one target.
pub fn explain(config: &Config, route_filter: Option<&str>, target_filter: Option<&str>) -> Value {
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for bind in &config.binds {
        for listener in &bind.listeners {
            for matcher in &listener.matchers {
                let route = &matcher.route;
                if !seen.insert(std::sync::Arc::as_ptr(route))
                    || route_filter.is_some_and(|f| f != route.name)
                {
                    continue;
                }
                let targets: Vec<Value> = route
                    .backends
                    .iter()
                    .flat_map(|b| b.mcp.targets.iter())
                    .filter(|t| target_filter.is_none_or(|f| *t.name == *f))
                    .map(|t| json!({"name": &*t.name, "kind": t.kind.describe(), "policies": target_policies(&t.policies)}))
                    .chain(route.hosts.iter().map(|h| {
                        json!({"name": h.name, "kind": format!("host: {}", h.url), "policies": target_policies(&h.policies)})
                    }))
                    .collect();
                routes.push(json!({
                    "route": route.name,
                    "listener": listener.name,
                    "address": bind.addr.to_string(),
                    "policies": route_policies(route),
                    "targets": targets,
                }));
            }
        }
    }
    Value::Array(routes)
}

fn line(out: &mut String, indent: &str, name: &str, entry: &Value) {
    let (level, policy) = match entry {
        Value::Null => ("-".to_string(), "none".to_string()),
        e => (
            e["level"].as_str().unwrap_or_default().to_string(),
            match &e["policy"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        ),
    };
    out.push_str(&format!("{indent}{name:<22} {level:<9} {policy}\n"));
}

/// The same, as text for people.
pub fn render(explained: &Value) -> String {
    let mut out = String::new();
    for route in explained.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "route {} (listener {}, {})\n",
            route["route"].as_str().unwrap_or_default(),
            route["listener"].as_str().unwrap_or_default(),
            route["address"].as_str().unwrap_or_default()
        ));
        for name in ROUTE_TYPES {
            line(&mut out, "  ", name, &route["policies"][name]);
        }
        for target in route["targets"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  target {} ({})\n",
                target["name"].as_str().unwrap_or_default(),
                target["kind"].as_str().unwrap_or_default()
            ));
            for name in TARGET_TYPES {
                line(&mut out, "    ", name, &target["policies"][name]);
            }
        }
    }
    out
}
