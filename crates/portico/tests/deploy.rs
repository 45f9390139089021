//! The deployment files cannot rot: the Kubernetes manifests validate against the Kubernetes schemas
//! (offline, `kubernetes-validate --strict`), the ConfigMap's config loads, and the Deployment agrees
//! with it (ports, probes, drain time, the session key's Secret).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const MANIFESTS: [&str; 6] = [
    "configmap.yaml",
    "secret.yaml",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
    "hpa.yaml",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifests() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The venv with kubernetes-validate and PyYAML (scripts/setup.sh), unless interop tests are skipped.
fn venv() -> Option<PathBuf> {
    let bin = interop_tools()?.join("venv/bin");
    assert!(
        bin.join("kubernetes-validate").exists(),
        "kubernetes-validate missing in {}: run scripts/setup.sh",
        bin.display()
    );
    Some(bin)
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let Some(bin) = venv() else { return };
    let output = Command::new(bin.join("kubernetes-validate"))
        .arg("--strict")
        .args(MANIFESTS)
        .current_dir(manifests())
        .output()
        .expect("run kubernetes-validate");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    for file in MANIFESTS {
        assert!(
            text.contains(&format!("{file} passed")),
            "{file} not validated:\n{text}"
        );
    }
    // The validator does catch a field that is not in the schema.
    let broken = std::fs::read_to_string(manifests().join("deployment.yaml"))
        .unwrap()
        .replace("  replicas: 3\n", "  replicas: 3\n  replica: 3\n");
    let path = temp_file("deployment.yaml", &broken);
    let rejected = Command::new(bin.join("kubernetes-validate"))
        .arg("--strict")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!rejected.status.success());
}

/// What the test reads of the manifests, via PyYAML.
fn facts(bin: &Path) -> Value {
    let script = r#"
import json, sys, yaml
d = lambda f: yaml.safe_load(open(f))
config_map, deployment, secret = d("configmap.yaml"), d("deployment.yaml"), d("secret.yaml")
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
config = config_map["data"]["config.yaml"]
print(json.dumps({
    "config": config,
    "parsed": yaml.safe_load(config),
    "replicas": deployment["spec"]["replicas"],
    "grace": pod["terminationGracePeriodSeconds"],
    "preStop": container["lifecycle"]["preStop"]["sleep"]["seconds"],
    "runAsNonRoot": pod["securityContext"]["runAsNonRoot"],
    "readOnlyRoot": container["securityContext"]["readOnlyRootFilesystem"],
    "ports": {p["name"]: p["containerPort"] for p in container["ports"]},
    "readiness": container["readinessProbe"]["httpGet"],
    "liveness": container["livenessProbe"]["httpGet"],
    "keyFrom": [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "PORTICO_SESSION_KEY"],
    "secretName": secret["metadata"]["name"],
    "secretKey": secret["stringData"]["key"],
}))
"#;
    let output = Command::new(bin.join("python"))
        .args(["-c", script])
        .current_dir(manifests())
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn seconds(text: &str) -> u64 {
    text.trim_end_matches('s').parse().unwrap()
}

#[test]
fn the_deployment_agrees_with_its_config() {
    let Some(bin) = venv() else { return };
    let facts = facts(&bin);
    let config = facts["config"].as_str().unwrap();
    let warnings = validate_output(config);
    assert!(!warnings.contains("error"), "{warnings}");

    let settings = &facts["parsed"]["config"];
    assert!(facts["replicas"].as_u64().unwrap() >= 2);
    assert!(facts["runAsNonRoot"].as_bool().unwrap());
    assert!(facts["readOnlyRoot"].as_bool().unwrap());
    let drain = seconds(settings["drainTimeout"].as_str().unwrap());
    assert!(
        facts["grace"].as_u64().unwrap() > facts["preStop"].as_u64().unwrap() + drain,
        "terminationGracePeriodSeconds must exceed the preStop sleep plus config.drainTimeout"
    );
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    let health = port_of(settings["readinessAddr"].as_str().unwrap());
    assert_eq!(facts["ports"]["health"], health);
    assert_eq!(
        facts["ports"]["metrics"],
        port_of(settings["statsAddr"].as_str().unwrap())
    );
    assert_eq!(facts["ports"]["mcp"], facts["parsed"]["binds"][0]["port"]);
    assert_eq!(facts["readiness"]["path"], "/healthz/ready");
    assert_eq!(facts["liveness"]["path"], "/healthz/live");
    assert_eq!(facts["readiness"]["port"], "health");
    assert_eq!(facts["keyFrom"][0]["name"], facts["secretName"]);
}

/// The Secret ships a placeholder that Portico refuses, so no two installations share a published
/// key: replaced by a real key, the config loads and sessions are portable.
#[test]
fn the_placeholder_session_key_is_refused() {
    let Some(bin) = venv() else { return };
    let facts = facts(&bin);
    let config = facts["config"].as_str().unwrap();
    let placeholder = facts["secretKey"].as_str().unwrap();
    let path = temp_file("config.yaml", config);
    let run = |key: &str| {
        Command::new(EXE)
            .args(["validate", "-f", path.to_str().unwrap()])
            .env("PORTICO_SESSION_KEY", key)
            .output()
            .unwrap()
    };
    let refused = run(placeholder);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("PORTICO_SESSION_KEY"), "{stderr}");
    assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
    let accepted = run(&"ab".repeat(32));
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

#[test]
fn the_image_is_multi_stage_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p portico"));
}
