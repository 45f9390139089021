//! The `portico` command line: validate, help, version, start-up failures.

mod common;

use std::process::{Command, Output};

use common::{EXE, temp_file, validate_failure, validate_output};

fn portico(args: &[&str]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run portico")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn validate_accepts_the_quickstart() {
    let quickstart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.yaml"
    );
    let output = portico(&["validate", "-f", quickstart]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));
}

#[test]
fn validate_reports_every_error_with_position_path_and_hint() {
    let yaml = "\
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          prefixMode: sometimes
          targets:
          - name: files
            stdo:
              cmd: npx
";
    let path = temp_file("bad.yaml", yaml);
    let output = portico(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    let file = path.display().to_string();
    assert!(
        text.contains(&format!(
            "{file}:7:11: error: binds[0].listeners[0].routes[0].backends[0].mcp.prefixMode"
        )),
        "{text}"
    );

    let yaml = yaml.replace("          prefixMode: sometimes\n", "");
    let path = temp_file("bad.yaml", &yaml);
    let text = stderr(&portico(&["validate", "-f", path.to_str().unwrap()]));
    assert!(
        text.contains(
            ":9:13: error: binds[0].listeners[0].routes[0].backends[0].mcp.targets[0].stdo"
        ),
        "{text}"
    );
    assert!(text.contains("hint: did you mean `stdio`?"), "{text}");

    let yaml = "\
binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - mcp:
          targets:
          - name: My_Tools
            stdio: {cmd: npx}
          - name: remote
            mcp: {host: 'localhost:8080'}
            policies:
              backendAuth: {key: '$UNSET_PORTICO_TEST_KEY'}
";
    let path = temp_file("bad.yaml", yaml);
    let text = stderr(&portico(&["validate", "-f", path.to_str().unwrap()]));
    assert!(
        text.contains(":13:34: error:") && text.contains("`UNSET_PORTICO_TEST_KEY` is not set"),
        "{text}"
    );
    let yaml = yaml.replace("backendAuth: {key: '$UNSET_PORTICO_TEST_KEY'}", "cors: {}");
    let path = temp_file("bad.yaml", &yaml);
    let text = stderr(&portico(&["validate", "-f", path.to_str().unwrap()]));
    assert!(
        text.contains(":8:13: error:") && text.contains("multiplexing separator"),
        "{text}"
    );
    assert!(
        text.contains(":11:19: error:") && text.contains("is not an http:// or https:// URL"),
        "{text}"
    );
    assert!(
        text.contains(":13:15: error:") && text.contains("policy `cors` cannot be set on a target"),
        "{text}"
    );
    assert!(text.contains("3 error(s)"), "{text}");
}

#[test]
fn a_missing_file_is_named() {
    let output = portico(&["-f", "/nonexistent/portico.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/portico.yaml: error: cannot read the config file")
    );
}

#[test]
fn a_busy_port_is_reported_and_nothing_starts() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let yaml = format!(
        "binds:\n- port: {port}\n  address: 127.0.0.1\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:\n          - name: a\n            stdio: {{cmd: echo}}\n"
    );
    let path = temp_file("busy.yaml", &yaml);
    let output = portico(&["-f", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_and_version() {
    let help = String::from_utf8_lossy(&portico(&["--help"]).stdout).into_owned();
    for needle in ["-f, --file <FILE>", "validate", "fixture", "--version"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let version = String::from_utf8_lossy(&portico(&["--version"]).stdout).into_owned();
    assert_eq!(
        version.trim(),
        format!("portico {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn explain_shows_each_policy_and_its_level() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed/inheritance.yaml"
    );
    let output = portico(&["explain", "-f", seed]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let after = |heading: &str| {
        lines
            .iter()
            .skip_while(|l| !l.starts_with(heading))
            .nth(1)
            .copied()
            .unwrap_or_default()
    };
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cors") && l.contains("route")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("jwtAuth") && l.contains("none")),
        "{text}"
    );
    let public = after("target public-server");
    assert!(
        public.starts_with("mcpAuthorization")
            && public.contains("target")
            && public.contains("allow: true"),
        "{text}"
    );
    let restricted = after("target restricted-server");
    assert!(
        restricted.contains("backend") && restricted.contains("has(jwt.sub)"),
        "{text}"
    );

    let output = portico(&[
        "explain",
        "-f",
        seed,
        "--json",
        "--target",
        "restricted-server",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let targets = json[0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0]["policies"]["mcpAuthorization"]["level"],
        "backend"
    );
    assert_eq!(json[0]["policies"]["cors"]["level"], "route");
}

#[test]
fn validate_warns_about_targets_without_authorization() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed/inheritance.yaml"
    );
    let output = portico(&["validate", "-f", seed]);
    assert!(output.status.success());
    assert!(
        !stderr(&output).contains("warning"),
        "every target has a policy: {}",
        stderr(&output)
    );
    let yaml = "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:\n          - name: open\n            stdio: {cmd: echo}\n";
    let path = temp_file("open.yaml", yaml);
    let output = portico(&["validate", "-f", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "a warning does not fail validation"
    );
    let text = stderr(&output);
    assert!(
        text.contains(":8:13: warning:") && text.contains("target `open` has no mcpAuthorization"),
        "{text}"
    );
}

/// `portico schema` is a JSON Schema every example config satisfies, and that refuses a misspelt
/// field, as an editor with the YAML language server would check it.
#[test]
fn schema_accepts_every_example_and_refuses_unknown_fields() {
    let output = portico(&["schema"]);
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut checked = 0;
    for dir in [examples.to_string(), format!("{examples}/seed")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let document = portico::config::document(&text).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&document)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked} examples");
    let misspelt = portico::config::document(
        "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - mcp:\n          targets:\n          - name: a\n            stdo: {cmd: x}\n",
    )
    .unwrap();
    assert!(!validator.is_valid(&misspelt));
}

/// The `mcp` shorthand takes the listener's `publicUrl` too, and a malformed one is an error there.
#[test]
fn shorthand_public_url_is_checked() {
    let yaml = "mcp:\n  port: 0\n  publicUrl: https://mcp.example.com/extra\n  targets:\n  - name: a\n    stdio: {cmd: echo}\n";
    let text = validate_failure(yaml);
    assert!(
        text.contains("publicUrl") && text.contains("is not an origin"),
        "{text}"
    );
    let fixed = yaml.replace("/extra", "");
    validate_output(&fixed);
}
