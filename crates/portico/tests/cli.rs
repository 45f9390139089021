//! The `portico` command line: validate, help, version, start-up failures.

mod common;

use std::process::{Command, Output};

use common::{EXE, temp_file};

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
    let yaml = yaml.replace("'$UNSET_PORTICO_TEST_KEY'", "secret");
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
        text.contains(":13:15: error:")
            && text.contains("policy `backendAuth` is not supported yet"),
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
