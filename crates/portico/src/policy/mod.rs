//! Policies: one file per type, each with its YAML form, its compiled form and its behaviour.
//!
//! Levels, least to most specific: listener → route → backend → target. For each type the most specific
//! level that sets it wins, whole; [`resolve`] computes that once per config load.

pub mod a2a;
pub mod ai;
pub mod authz;
pub mod backend_auth;
pub mod backend_tls;
pub mod cors;
pub mod headers;
pub mod jwt;
pub mod mcp_authn;
pub mod outbound;
pub mod rate_limit;
pub mod timeout;

use std::sync::Arc;

use serde::Deserialize;

use crate::base::diagnostic::ConfigError;

/// The `policies` object of any level. Each type is checked against the levels where it may appear;
/// types whose behaviour is not built yet are refused at load rather than ignored.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policies {
    pub cors: Option<cors::Config>,
    pub jwt_auth: Option<jwt::Config>,
    pub mcp_authentication: Option<mcp_authn::Config>,
    pub mcp_authorization: Option<authz::Config>,
    pub backend_auth: Option<backend_auth::Config>,
    #[serde(rename = "backendTLS")]
    pub backend_tls: Option<backend_tls::Config>,
    pub request_header_modifier: Option<headers::Config>,
    pub response_header_modifier: Option<headers::Config>,
    pub ai: Option<ai::Config>,
    pub a2a: Option<a2a::Config>,
    pub local_rate_limit: Option<rate_limit::Config>,
    pub timeout: Option<timeout::Config>,
}

impl Policies {
    /// The YAML names of the policy types this object sets.
    pub fn present(&self) -> Vec<&'static str> {
        let all = [
            ("cors", self.cors.is_some()),
            ("jwtAuth", self.jwt_auth.is_some()),
            ("mcpAuthentication", self.mcp_authentication.is_some()),
            ("mcpAuthorization", self.mcp_authorization.is_some()),
            ("backendAuth", self.backend_auth.is_some()),
            ("backendTLS", self.backend_tls.is_some()),
            (
                "requestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            ("ai", self.ai.is_some()),
            ("a2a", self.a2a.is_some()),
            ("localRateLimit", self.local_rate_limit.is_some()),
            ("timeout", self.timeout.is_some()),
        ];
        all.into_iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| name)
            .collect()
    }
}

/// Where a policy was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Listener,
    Route,
    Backend,
    Target,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Listener => "listener",
            Level::Route => "route",
            Level::Backend => "backend",
            Level::Target => "target",
        }
    }
}

/// A policy and the level it came from.
#[derive(Debug)]
pub struct Sourced<T> {
    pub policy: Arc<T>,
    pub level: Level,
}

impl<T> Sourced<T> {
    /// `policy`, if set, as coming from `level`.
    pub fn at(policy: &Option<Arc<T>>, level: Level) -> Option<Self> {
        policy.clone().map(|policy| Self { policy, level })
    }
}

impl<T> Clone for Sourced<T> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            level: self.level,
        }
    }
}

/// The most specific of the candidates (given least specific first) that is set.
pub fn resolve<T>(candidates: impl IntoIterator<Item = Option<Sourced<T>>>) -> Option<Sourced<T>> {
    candidates.into_iter().flatten().last()
}

/// The levels at which each policy type may be set (SPEC §3).
pub fn allowed_levels(policy: &str) -> &'static [Level] {
    use Level::*;
    match policy {
        "cors" | "jwtAuth" => &[Listener, Route],
        "mcpAuthentication" => &[Route],
        _ => &[Route, Backend, Target],
    }
}

/// The policies set at one level, compiled.
#[derive(Debug, Default, Clone)]
pub struct LevelPolicies {
    pub authorization: Option<Arc<authz::Authorization>>,
    pub jwt: Option<Arc<jwt::JwtAuth>>,
    pub cors: Option<Arc<cors::Cors>>,
    pub request_headers: Option<Arc<headers::HeaderModifier>>,
    pub response_headers: Option<Arc<headers::HeaderModifier>>,
    pub mcp_authentication: Option<Arc<mcp_authn::McpAuthentication>>,
    pub backend_auth: Option<Arc<backend_auth::BackendAuth>>,
    pub backend_tls: Option<Arc<backend_tls::BackendTls>>,
    pub ai: Option<Arc<ai::Ai>>,
    pub a2a: Option<Arc<a2a::A2a>>,
    pub timeout: Option<Arc<timeout::Timeout>>,
    pub rate_limit: Option<Arc<rate_limit::RateLimit>>,
    /// What a target's connection depends on at this level (`backendAuth`, `backendTLS`,
    /// `requestHeaderModifier`), as a fingerprint: a reload reconnects a live session's target only
    /// when it changes.
    pub connection: u64,
    /// The whole `policies` object as a fingerprint: a reload tells live sessions their lists may
    /// have changed only when some level's policies did.
    pub revision: u64,
}

/// A fingerprint of a config value, to tell whether a reload changed it. Config types derive `Debug`
/// (not `Hash`: they hold floats and maps), and their `Debug` form is the whole value.
pub fn fingerprint(value: &impl std::fmt::Debug) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{value:?}").hash(&mut hasher);
    hasher.finish()
}

impl LevelPolicies {
    /// Checks and compiles the `policies` object at `path`, a `level` object; errors go to `errors`.
    pub fn compile(
        policies: Option<&Policies>,
        level: Level,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let mut compiled = Self {
            // Absent policies fingerprint like absent connection policies, so adding e.g. only an
            // `mcpAuthorization` leaves the connection fingerprint as it was.
            connection: fingerprint(
                &policies
                    .map(|p| (&p.backend_auth, &p.backend_tls, &p.request_header_modifier))
                    .unwrap_or((&None, &None, &None)),
            ),
            ..Self::default()
        };
        let Some(policies) = policies else {
            return compiled;
        };
        compiled.revision = fingerprint(policies);
        for policy in policies.present() {
            let field = format!("{path}.{policy}");
            let levels = allowed_levels(policy);
            if !levels.contains(&level) {
                let names: Vec<_> = levels.iter().map(|l| l.name()).collect();
                errors.push(
                    ConfigError::new(
                        field,
                        format!("policy `{policy}` cannot be set on a {}", level.name()),
                    )
                    .hint(format!("set it at {} level", names.join(" or "))),
                );
                continue;
            }
        }
        if let Some(config) = &policies.mcp_authorization {
            match authz::Authorization::compile(config) {
                Ok(authorization) => compiled.authorization = Some(Arc::new(authorization)),
                Err(rule_errors) => errors.extend(rule_errors.into_iter().map(|(i, message)| {
                    ConfigError::new(format!("{path}.mcpAuthorization.rules[{i}]"), message)
                })),
            }
        }
        compiled.jwt = compile(
            &policies.jwt_auth,
            "jwtAuth",
            path,
            errors,
            jwt::JwtAuth::compile,
        );
        compiled.cors = compile(&policies.cors, "cors", path, errors, cors::Cors::compile);
        compiled.backend_auth = compile(
            &policies.backend_auth,
            "backendAuth",
            path,
            errors,
            backend_auth::BackendAuth::compile,
        );
        compiled.backend_tls = compile(
            &policies.backend_tls,
            "backendTLS",
            path,
            errors,
            backend_tls::BackendTls::compile,
        );
        compiled.mcp_authentication = compile(
            &policies.mcp_authentication,
            "mcpAuthentication",
            path,
            errors,
            mcp_authn::McpAuthentication::compile,
        );
        compiled.request_headers = compile(
            &policies.request_header_modifier,
            "requestHeaderModifier",
            path,
            errors,
            headers::HeaderModifier::compile,
        );
        compiled.response_headers = compile(
            &policies.response_header_modifier,
            "responseHeaderModifier",
            path,
            errors,
            headers::HeaderModifier::compile,
        );
        compiled.ai = compile(&policies.ai, "ai", path, errors, ai::Ai::compile);
        compiled.a2a = compile(&policies.a2a, "a2a", path, errors, a2a::A2a::compile);
        compiled.timeout = compile(
            &policies.timeout,
            "timeout",
            path,
            errors,
            timeout::Timeout::compile,
        );
        compiled.rate_limit = compile(
            &policies.local_rate_limit,
            "localRateLimit",
            path,
            errors,
            rate_limit::RateLimit::compile,
        );
        if policies.mcp_authentication.is_some() && policies.jwt_auth.is_some() {
            errors.push(
                ConfigError::new(
                    format!("{path}.mcpAuthentication"),
                    "jwtAuth and mcpAuthentication are both set",
                )
                .hint("mcpAuthentication validates tokens itself; keep one of the two"),
            );
        }
        compiled
    }

    /// Joins the two spellings of the backend level (`backends[].policies`, `backends[].mcp.policies`);
    /// a type set in both was already reported.
    pub fn or(self, other: Self) -> Self {
        Self {
            authorization: self.authorization.or(other.authorization),
            jwt: self.jwt.or(other.jwt),
            cors: self.cors.or(other.cors),
            request_headers: self.request_headers.or(other.request_headers),
            response_headers: self.response_headers.or(other.response_headers),
            mcp_authentication: self.mcp_authentication.or(other.mcp_authentication),
            backend_auth: self.backend_auth.or(other.backend_auth),
            backend_tls: self.backend_tls.or(other.backend_tls),
            ai: self.ai.or(other.ai),
            a2a: self.a2a.or(other.a2a),
            timeout: self.timeout.or(other.timeout),
            rate_limit: self.rate_limit.or(other.rate_limit),
            connection: fingerprint(&(self.connection, other.connection)),
            revision: fingerprint(&(self.revision, other.revision)),
        }
    }
}

/// Why a policy's config cannot be compiled: the field, relative to the policy (empty for the policy
/// as a whole), and what is wrong with it. Reported at `<path>.<policy>.<field>` with the config's line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Compiles one policy type's config, if set; its errors are reported at `<path>.<name>.<field>`.
fn compile<C, T>(
    config: &Option<C>,
    name: &str,
    path: &str,
    errors: &mut Vec<ConfigError>,
    compile: impl Fn(&C) -> Result<T, FieldError>,
) -> Option<Arc<T>> {
    match compile(config.as_ref()?) {
        Ok(policy) => Some(Arc::new(policy)),
        Err(FieldError { field, message }) => {
            let at = if field.is_empty() {
                format!("{path}.{name}")
            } else {
                format!("{path}.{name}.{field}")
            };
            errors.push(ConfigError::new(at, message));
            None
        }
    }
}

/// A target's effective policies: per type, the most specific level that sets it.
#[derive(Debug, Default, Clone)]
pub struct TargetPolicies {
    pub authorization: Option<Sourced<authz::Authorization>>,
    pub request_headers: Option<Sourced<headers::HeaderModifier>>,
    pub response_headers: Option<Sourced<headers::HeaderModifier>>,
    pub backend_auth: Option<Sourced<backend_auth::BackendAuth>>,
    pub backend_tls: Option<Sourced<backend_tls::BackendTls>>,
    pub ai: Option<Sourced<ai::Ai>>,
    pub a2a: Option<Sourced<a2a::A2a>>,
    pub timeout: Option<Sourced<timeout::Timeout>>,
    /// Backend or target level only: a route's `localRateLimit` counts the route's requests as a
    /// whole (HTTP 429), not each target's.
    pub rate_limit: Option<Sourced<rate_limit::RateLimit>>,
}

impl TargetPolicies {
    pub fn resolve(route: &LevelPolicies, backend: &LevelPolicies, target: &LevelPolicies) -> Self {
        fn pick<T>(
            get: impl Fn(&LevelPolicies) -> &Option<Arc<T>>,
            levels: [&LevelPolicies; 3],
        ) -> Option<Sourced<T>> {
            resolve([
                Sourced::at(get(levels[0]), Level::Route),
                Sourced::at(get(levels[1]), Level::Backend),
                Sourced::at(get(levels[2]), Level::Target),
            ])
        }
        let levels = [route, backend, target];
        Self {
            authorization: pick(|l| &l.authorization, levels),
            request_headers: pick(|l| &l.request_headers, levels),
            response_headers: pick(|l| &l.response_headers, levels),
            backend_auth: pick(|l| &l.backend_auth, levels),
            backend_tls: pick(|l| &l.backend_tls, levels),
            ai: pick(|l| &l.ai, levels),
            a2a: pick(|l| &l.a2a, levels),
            timeout: pick(|l| &l.timeout, levels),
            rate_limit: resolve([
                Sourced::at(&backend.rate_limit, Level::Backend),
                Sourced::at(&target.rate_limit, Level::Target),
            ]),
        }
    }
}
