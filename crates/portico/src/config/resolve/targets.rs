//! Backends and their targets: naming, kinds (stdio, mcp, sse, openapi), effective policies, and
//! the fingerprints a reload compares.

use std::collections::HashSet;
use std::sync::Arc;

use super::Resolver;
use crate::base::diagnostic::ConfigError;
use crate::config::model::{self, PrefixMode, StatefulMode};
use crate::config::runtime::{self};
use crate::mcp::upstream::stdio_pool::StdioPool;
use crate::policy::FieldError;
use crate::policy::{Level, LevelPolicies, TargetPolicies};

pub(super) fn backend_rt(
    r: &mut Resolver,
    backend: &model::Backend,
    path: &str,
    name: &str,
    route_policies: &LevelPolicies,
) -> Option<Resolved> {
    let outer = r.policies(
        backend.policies.as_ref(),
        Level::Backend,
        &format!("{path}.policies"),
    );
    match (&backend.mcp, &backend.host) {
        (Some(mcp), None) => {
            let inner = r.policies(
                mcp.policies.as_ref(),
                Level::Backend,
                &format!("{path}.mcp.policies"),
            );
            r.both_backend_spellings(backend.policies.as_ref(), mcp.policies.as_ref(), path);
            let inherited = [route_policies, &outer.or(inner)];
            let mcp = mcp_backend_rt(r, mcp, &format!("{path}.mcp"), name, inherited)?;
            Some(Resolved::Mcp(runtime::Backend {
                weight: backend.weight.unwrap_or(1),
                mcp: Arc::new(mcp),
            }))
        }
        (None, Some(host)) => {
            let own = LevelPolicies::default();
            let policies = TargetPolicies::resolve(route_policies, &outer, &own);
            if policies.authorization.is_some() || policies.ai.is_some() {
                r.error(
                    format!("{path}.policies"),
                    "`mcpAuthorization` and `ai` apply to MCP traffic, not to a `host` backend",
                );
            }
            let base = if host.contains("://") {
                host.clone()
            } else {
                format!("http://{host}")
            };
            let url = http_url(r, &base, &format!("{path}.host"))?;
            let tls_client = match &policies.backend_tls {
                Some(tls) if url.scheme() == "https" => match tls.policy.client(&url) {
                    Ok(client) => Some(client),
                    Err(message) => {
                        r.error(format!("{path}.host"), message);
                        return None;
                    }
                },
                _ => None,
            };
            let outbound = crate::policy::outbound::Outbound::new(&policies, &url, None);
            Some(Resolved::Host(Box::new(runtime::HostBackend {
                name: name.to_string(),
                weight: backend.weight.unwrap_or(1),
                url,
                policies,
                tls_client,
                outbound,
            })))
        }
        _ => {
            r.error(path, "a backend needs exactly one of `mcp` or `host`");
            None
        }
    }
}

pub(super) fn mcp_backend_rt(
    r: &mut Resolver,
    mcp: &model::McpBackend,
    path: &str,
    name: &str,
    inherited: [&LevelPolicies; 2],
) -> Option<runtime::McpBackend> {
    let stateless = mcp.stateful_mode == StatefulMode::Stateless;
    if stateless {
        // A stdio server would be started for every request; a legacy SSE one holds its session on
        // a stream that only lives as long as one request.
        for (t, target) in mcp.targets.iter().enumerate() {
            let kind = match (&target.stdio, &target.sse) {
                (Some(_), _) => "stdio",
                (_, Some(_)) => "sse",
                _ => continue,
            };
            r.error(
                format!("{path}.targets[{t}]"),
                format!("a `statefulMode: stateless` backend serves `mcp` and `openapi` targets; `{}` is a {kind} target", target.name),
            )
            .hint = Some("use `statefulMode: stateful` (the default) for stdio and sse targets, or put them on a route of their own".into());
        }
    }
    if mcp.targets.is_empty() {
        r.error(
            format!("{path}.targets"),
            "an MCP backend needs at least one target",
        );
        return None;
    }
    let mut names = HashSet::new();
    let mut targets = Vec::new();
    for (t, target) in mcp.targets.iter().enumerate() {
        let tpath = format!("{path}.targets[{t}]");
        if !names.insert(target.name.as_str()) {
            r.error(
                format!("{tpath}.name"),
                format!(
                    "target name `{}` is used twice in this backend",
                    target.name
                ),
            );
        }
        if let Some(target) = target_rt(r, target, &tpath, inherited) {
            if target.policies.authorization.is_none() {
                r.warnings.push(
                    ConfigError::warning(&tpath, format!("target `{}` has no mcpAuthorization at any level: every caller sees and calls everything it serves", target.name))
                        .hint("be explicit, even when permissive: `policies: {mcpAuthorization: {rules: [\"true\"]}}`"),
                );
            }
            targets.push(Arc::new(target));
        }
    }
    let prefixed = match mcp.prefix_mode {
        PrefixMode::Always => true,
        PrefixMode::Never => false,
        PrefixMode::Conditional => mcp.targets.len() > 1,
    };
    (targets.len() == mcp.targets.len()).then(|| runtime::McpBackend {
        name: name.to_string(),
        targets,
        prefixed,
        prefix_mode: mcp.prefix_mode,
        failure_mode: mcp.failure_mode,
        dns_rebinding_protection: mcp.dns_rebinding_protection,
        stateless,
    })
}

pub(super) fn target_name_error(name: &str) -> Option<(String, &'static str)> {
    if name.is_empty() {
        return Some((
            "a target name cannot be empty".into(),
            "use e.g. `github` or `files-1`",
        ));
    }
    if let Some(sep) = name.chars().find(|c| *c == '_' || *c == '+') {
        return Some((
            format!("target name `{name}` contains `{sep}`, a multiplexing separator"),
            "use lowercase letters, digits, `-` and `.`",
        ));
    }
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    (!valid).then(|| {
        (
            format!("target name `{name}` may only contain lowercase letters, digits, `-` and `.`"),
            "e.g. `public-tools`",
        )
    })
}

pub(super) fn target_rt(
    r: &mut Resolver,
    target: &model::Target,
    path: &str,
    [route_policies, backend_policies]: [&LevelPolicies; 2],
) -> Option<runtime::Target> {
    if let Some((message, hint)) = target_name_error(&target.name) {
        r.error(format!("{path}.name"), message).hint = Some(hint.into());
    }
    let own = r.policies(
        target.policies.as_ref(),
        Level::Target,
        &format!("{path}.policies"),
    );
    if target.stdio.is_some() && own.backend_tls.is_some() {
        r.error(
            format!("{path}.policies.backendTLS"),
            "backendTLS does not apply to stdio targets: there is no connection to secure",
        );
    }
    if let Some(tls) = &own.backend_tls {
        let relaxed = [
            (
                tls.insecure,
                "insecure",
                "TLS certificates of this target are not verified",
            ),
            (
                tls.insecure_host && !tls.insecure,
                "insecureHost",
                "the server name in this target's TLS certificate is not verified",
            ),
        ];
        for (set, field, message) in relaxed {
            if set {
                r.warnings.push(ConfigError::warning(
                    format!("{path}.policies.backendTLS.{field}"),
                    message,
                ));
            }
        }
    }
    if target.stdio.is_some() && own.backend_auth.is_some() {
        r.error(
            format!("{path}.policies.backendAuth"),
            "backendAuth does not apply to stdio targets: Portico starts them itself, there is nothing to authenticate to",
        )
        .hint = Some("pass credentials in `stdio.env` instead".into());
    }
    if target.stdio.is_some() && own.request_headers.is_some() {
        r.error(
            format!("{path}.policies.requestHeaderModifier"),
            "requestHeaderModifier does not apply to stdio targets: Portico talks to them over stdin, not HTTP",
        )
        .hint = Some("set it on an `mcp` (HTTP) target, or remove it".into());
    }
    let policies = TargetPolicies::resolve(route_policies, backend_policies, &own);
    let kinds = [
        target.stdio.is_some(),
        target.mcp.is_some(),
        target.sse.is_some(),
        target.openapi.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        r.error(
            path,
            "a target needs exactly one of `stdio`, `mcp`, `sse`, `openapi`",
        );
        return None;
    }
    let kind = if let Some(stdio) = &target.stdio {
        if stdio.cmd.trim().is_empty() {
            r.error(format!("{path}.stdio.cmd"), "the command is empty");
            return None;
        }
        runtime::TargetKind::Stdio(runtime::StdioSpec {
            cmd: stdio.cmd.clone().into(),
            args: stdio.args.clone(),
            env: stdio.env.clone(),
            clear_env: stdio.clear_env,
        })
    } else if let Some(http) = &target.mcp {
        let field = format!("{path}.mcp.host");
        let url = http_url(r, &http.host, &field)?;
        let uri = match url.as_str().parse() {
            Ok(uri) => uri,
            Err(e) => {
                r.error(
                    field,
                    format!("`{url}` is not a URL the HTTP client takes: {e}"),
                );
                return None;
            }
        };
        runtime::TargetKind::Http { url, uri }
    } else if let Some(sse) = &target.sse {
        runtime::TargetKind::Sse {
            url: http_url(r, &sse.host, &format!("{path}.sse.host"))?,
        }
    } else if let Some(openapi) = &target.openapi {
        let path = format!("{path}.openapi");
        let host = match &openapi.host {
            Some(host) if host.contains("://") => Some(host.clone()),
            Some(host) => Some(format!("http://{host}")),
            None => None,
        };
        let host = match host {
            Some(host) => Some(http_url(r, &host, &format!("{path}.host"))?),
            None => None,
        };
        let document = crate::config::documents::openapi_document(&openapi.schema);
        let api = match document.and_then(|(field, document)| {
            let api =
                crate::config::openapi::read(&document).map_err(|e| FieldError::new(&field, e))?;
            Ok((api, document))
        }) {
            Ok(api) => api,
            Err(FieldError { field, message }) => {
                r.error(format!("{path}.schema{field}"), message);
                return None;
            }
        };
        let (api, document) = api;
        let document_url = openapi.schema.url.as_deref();
        let url = match crate::config::openapi::base_url(&document, host.as_ref(), document_url) {
            Ok(url) => url,
            Err(message) => {
                r.error(format!("{path}.host"), message).hint = Some(
                    "set `host` to where the service runs, e.g. `http://127.0.0.1:8080`".into(),
                );
                return None;
            }
        };
        runtime::TargetKind::OpenApi {
            url,
            api: std::sync::Arc::new(api),
        }
    } else {
        return None;
    };
    let remote_url = match &kind {
        runtime::TargetKind::Http { url, .. }
        | runtime::TargetKind::Sse { url }
        | runtime::TargetKind::OpenApi { url, .. } => Some(url),
        runtime::TargetKind::Stdio(_) => None,
    };
    let tls_client = match (remote_url, &policies.backend_tls) {
        (Some(url), Some(tls)) if url.scheme() == "https" => {
            match tls_client(&kind, &tls.policy, url) {
                Ok(client) => Some(client),
                Err(message) => {
                    r.error(format!("{path}.{}.host", kind.config_key()), message);
                    return None;
                }
            }
        }
        (Some(url), Some(_)) if own.backend_tls.is_some() => {
            r.error(
                format!("{path}.policies.backendTLS"),
                format!("`{url}` is not an https:// URL"),
            );
            return None;
        }
        _ => None,
    };
    let connection = crate::policy::fingerprint(&(
        (&target.stdio, &target.mcp, &target.sse, &target.openapi),
        [route_policies, backend_policies, &own].map(|level| level.connection),
    ));
    let revision = crate::policy::fingerprint(&(
        connection,
        [route_policies, backend_policies, &own].map(|level| level.revision),
    ));
    let pool =
        match (&kind, target.stdio.as_ref().and_then(|s| s.pool.as_ref())) {
            (runtime::TargetKind::Stdio(spec), Some(pool)) if pool.size > 0 => Some(
                StdioPool::new(target.name.as_str().into(), spec.clone(), pool.size),
            ),
            _ => None,
        };
    Some(runtime::Target {
        name: target.name.as_str().into(),
        kind,
        policies,
        tls_client,
        pool,
        health: Default::default(),
        connection,
        revision,
    })
}

/// A remote target's own client for its `backendTLS` policy.
fn tls_client(
    kind: &runtime::TargetKind,
    tls: &crate::policy::backend_tls::BackendTls,
    url: &reqwest::Url,
) -> Result<runtime::TlsClient, String> {
    match kind {
        runtime::TargetKind::Http { .. } => tls.http_client(url).map(runtime::TlsClient::Mcp),
        _ => tls
            .client(url)
            .map(|(client, url)| runtime::TlsClient::Reqwest(client, url)),
    }
}

pub(super) fn http_url(r: &mut Resolver, host: &str, path: &str) -> Option<reqwest::Url> {
    match reqwest::Url::parse(host) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) | Err(_) => {
            r.error(path, format!("`{host}` is not an http:// or https:// URL"))
                .hint = Some("write the full endpoint, e.g. `http://127.0.0.1:8080/mcp`".into());
            None
        }
    }
}

/// A resolved backend: MCP targets behind the multiplexer, or a plain HTTP (`host`) backend.
pub(super) enum Resolved {
    Mcp(runtime::Backend),
    Host(Box<runtime::HostBackend>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        assert!(target_name_error("files-1.eu").is_none());
        assert!(
            target_name_error("my_tools")
                .unwrap()
                .0
                .contains("separator")
        );
        assert!(target_name_error("a+b").unwrap().0.contains("separator"));
        assert!(target_name_error("Tools").is_some());
    }
}
