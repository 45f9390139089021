//! Config: the YAML model ([`model`]), where each field was written ([`source`]), and its resolution into
//! the immutable runtime form ([`runtime`]) that requests read.

mod documents;
pub mod model;
pub mod openapi;
pub(crate) mod resolve;
pub mod runtime;
mod source;

use std::path::Path;

pub use crate::base::diagnostic::{ConfigError, ConfigErrors};
pub use crate::base::units::parse_duration;
pub use runtime::Config;

/// A YAML (or JSON) text as a JSON value, `$VAR` references left as written: what an editor checks
/// against `portico schema`.
pub fn document(text: &str) -> Result<serde_json::Value, String> {
    source::parse_document(text)
}

/// Reads, checks and resolves a config file; environment variables come from the process.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut error = ConfigError::new("", format!("cannot read the config file: {e}"))
            .hint("pass an existing YAML file with `-f FILE`");
        error.file = file_name.clone();
        ConfigErrors(vec![error])
    })?;
    load_str(&text, &file_name, &|name| std::env::var(name).ok())
}

/// Checks and resolves config `text`, naming `file_name` in errors.
pub fn load_str(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let with_file = |mut errors: Vec<ConfigError>| {
        for error in &mut errors {
            error.file = file_name.to_string();
        }
        ConfigErrors(errors)
    };
    let source = source::parse(text, env).map_err(with_file)?;
    let file: model::File = serde_path_to_error::deserialize(&source.value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let mut error = ConfigError::new(path.clone(), message.clone());
        error.location = source.locate(&path);
        error.hint = crate::base::diagnostic::hint_for_serde_message(&message);
        with_file(vec![error])
    })?;
    let mut config = resolve::resolve(file).map_err(|mut errors| {
        for error in &mut errors {
            error.location = error.location.or_else(|| source.locate(&error.path));
        }
        errors.sort_by_key(|e| e.location.map(|l| (l.line, l.column)));
        with_file(errors)
    })?;
    for warning in &mut config.warnings {
        warning.file = file_name.to_string();
        warning.location = warning.location.or_else(|| source.locate(&warning.path));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        load_str(text, "test.yaml", &|name| {
            (name == "TOKEN").then(|| "t0k".to_string())
        })
    }

    fn first_error(text: &str) -> String {
        load(text).unwrap_err().0[0].to_string()
    }

    const BASE: &str = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:\n";

    #[test]
    fn loads_a_stdio_and_an_http_target() {
        let text = format!(
            "{BASE}          - name: a\n            stdio: {{cmd: echo}}\n          - name: b\n            mcp: {{host: 'http://127.0.0.1:9/mcp'}}\n"
        );
        let config = load(&text).unwrap();
        let backend = &config.binds[0].listeners[0].matchers[0].route.backends[0].mcp;
        assert_eq!(backend.targets.len(), 2);
        assert!(backend.prefixed);
    }

    #[test]
    fn unknown_field_names_line_path_and_hint() {
        let text = format!("{BASE}          - name: a\n            stdo: {{cmd: echo}}\n");
        let error = first_error(&text);
        assert!(error.starts_with("test.yaml:9:13: error: "), "{error}");
        assert!(
            error.contains("binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdo"),
            "{error}"
        );
        assert!(error.contains("did you mean `stdio`?"), "{error}");
    }

    #[test]
    fn policy_errors_name_line_field_and_problem() {
        let text = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - policies:\n        timeout: {requestTimeout: soon}\n      backends:\n      - mcp:\n          targets:\n          - name: a\n            stdio: {cmd: echo}\n";
        let error = first_error(text);
        assert!(
            error.contains("routes[0].policies.timeout.requestTimeout"),
            "{error}"
        );
        assert!(error.contains("`soon` is not a duration"), "{error}");
        assert!(error.contains(":6:"), "{error}");
    }

    #[test]
    fn policy_at_the_wrong_level_says_where_it_belongs() {
        let text = format!(
            "{BASE}          - name: a\n            stdio: {{cmd: echo}}\n            policies:\n              cors: {{}}\n"
        );
        let error = first_error(&text);
        assert!(error.contains("cannot be set on a target"), "{error}");
        assert!(error.contains("listener or route"), "{error}");
    }

    #[test]
    fn env_vars_expand_and_unset_ones_are_named() {
        let text = format!(
            "{BASE}          - name: a\n            stdio: {{cmd: echo, args: ['$TOKEN']}}\n"
        );
        let config = load(&text).unwrap();
        let target = &config.binds[0].listeners[0].matchers[0].route.backends[0]
            .mcp
            .targets[0];
        let runtime::TargetKind::Stdio(spec) = &target.kind else {
            panic!("stdio")
        };
        assert_eq!(spec.args, ["t0k"]);
        let text = format!(
            "{BASE}          - name: a\n            stdio: {{cmd: echo, args: ['$NOPE']}}\n"
        );
        let error = first_error(&text);
        assert!(error.contains("`NOPE` is not set"), "{error}");
        assert!(error.contains("stdio.args[0]"), "{error}");
    }

    #[test]
    fn every_error_is_reported() {
        let text = format!(
            "{BASE}          - name: Bad_Name\n            stdio: {{cmd: echo}}\n          - name: b\n            mcp: {{host: 'ftp://x'}}\n"
        );
        let errors = load(&text).unwrap_err().0;
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn yaml_syntax_error_has_a_position() {
        let error = first_error("binds: [\n");
        assert!(error.starts_with("test.yaml:"), "{error}");
    }

    #[test]
    fn shorthand_builds_one_route() {
        let config =
            load("mcp:\n  port: 3001\n  targets:\n  - name: a\n    stdio: {cmd: echo}\n").unwrap();
        assert_eq!(config.binds[0].addr.port(), 3001);
        assert!(
            !config.binds[0].listeners[0].matchers[0].route.backends[0]
                .mcp
                .prefixed
        );
    }
}
