//! backendTLS with real TLS: certificates made here for `service-a.example.com`, an HTTPS fixture on
//! 127.0.0.1, and each way the connection can fail named with its target and reason.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["service-a.example.com".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        vec!["portico.example.com".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: temp_file("ca.pem", &ca.pem()),
        server_cert: temp_file("server.pem", &server_cert),
        server_key: temp_file("server-key.pem", &server_key),
        client_cert: temp_file("client.pem", &client_cert),
        client_key: temp_file("client-key.pem", &client_key),
    }
}

async fn https_fixture(pki: &Pki, mutual: bool) -> HttpFixture {
    let (cert, key, ca) = (
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
    );
    let mut args = vec![
        "--name",
        "service-a",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    if mutual {
        args.extend(["--tls-client-ca", &ca]);
    }
    HttpFixture::start(&args).await
}

fn target_with_tls(url: &str, tls: &str) -> String {
    format!(
        "{}            policies:\n              backendTLS:\n{tls}",
        http_target("service-a", url)
    )
}

/// Initializes through a failClosed backend; `Ok` when the target answered, else the error message.
async fn initialize(url: &str, tls: &str) -> Result<(), String> {
    initialize_target(&target_with_tls(url, tls)).await
}

async fn initialize_target(target: &str) -> Result<(), String> {
    let yaml = config_with_targets(target, "          failureMode: failClosed\n");
    let gateway = Gateway::start(&yaml).await;
    let client = Client::new(gateway.url("/mcp"));
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let body: Value = tokio::time::timeout(std::time::Duration::from_secs(20), client.send(init))
        .await
        .expect("no hang")
        .json()
        .await
        .unwrap();
    match body.get("error") {
        None => Ok(()),
        Some(error) => Err(error["message"].as_str().unwrap_or_default().to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_and_root_make_the_connection() {
    let pki = pki();
    let fixture = https_fixture(&pki, false).await;
    assert!(
        fixture.url.starts_with("https://127.0.0.1:"),
        "{}",
        fixture.url
    );
    let tls = format!(
        "                sni: service-a.example.com\n                root: {}\n",
        pki.ca.display()
    );
    let gateway = Gateway::start(&config_with_targets(
        &target_with_tls(&fixture.url, &tls),
        "",
    ))
    .await;
    let mut client = Client::connect(gateway.url("/mcp")).await;
    assert_eq!(text(&client.call("whoami", json!({})).await), "service-a");
    let headers: Value =
        serde_json::from_str(text(&client.call("echo_headers", json!({})).await)).unwrap();
    assert!(
        headers["host"]
            .as_str()
            .unwrap()
            .starts_with("service-a.example.com"),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_name_the_target_and_the_reason() {
    let pki = pki();
    let fixture = https_fixture(&pki, false).await;
    let root = pki.ca.display().to_string();

    let unknown_ca = initialize(&fixture.url, "                sni: service-a.example.com\n")
        .await
        .unwrap_err();
    assert!(
        unknown_ca.contains("target service-a unavailable") && unknown_ca.contains("UnknownIssuer"),
        "{unknown_ca}"
    );

    let wrong_name = initialize(
        &fixture.url,
        &format!("                sni: other.example.com\n                root: {root}\n"),
    )
    .await
    .unwrap_err();
    assert!(
        wrong_name.contains("target service-a unavailable")
            && wrong_name.contains("not valid for name"),
        "{wrong_name}"
    );

    // Without a policy, an https:// target is verified against the system's roots.
    let no_policy = initialize_target(&http_target("service-a", &fixture.url))
        .await
        .unwrap_err();
    assert!(
        no_policy.contains("target service-a unavailable") && no_policy.contains("UnknownIssuer"),
        "{no_policy}"
    );

    let insecure = initialize(&fixture.url, "                insecure: true\n").await;
    assert_eq!(insecure, Ok(()), "insecure skips verification");
}

/// `insecureHost` and `subjectAltNames` relax or replace the name check, never the chain check.
#[tokio::test(flavor = "multi_thread")]
async fn name_checks_can_be_relaxed_but_not_the_chain() {
    let pki = pki();
    let fixture = https_fixture(&pki, false).await;
    let root = pki.ca.display().to_string();
    let with_root = |rest: &str| format!("                root: {root}\n{rest}");
    let cases = [
        // The URL's host (127.0.0.1) is not in the certificate; the SAN list names what is.
        (
            with_root("                subjectAltNames: [service-a.example.com]\n"),
            true,
        ),
        (
            with_root("                subjectAltNames: [other.example.com, 10.0.0.1]\n"),
            false,
        ),
        (with_root("                insecureHost: true\n"), true),
        (
            with_root("                hostname: service-a.example.com\n"),
            true,
        ),
        // No root: the chain is still checked.
        ("                insecureHost: true\n".to_string(), false),
        (
            "                subjectAltNames: [service-a.example.com]\n".to_string(),
            false,
        ),
    ];
    for (tls, works) in cases {
        let outcome = initialize(&fixture.url, &tls).await;
        assert_eq!(outcome.is_ok(), works, "{tls}: {outcome:?}");
        if let Err(e) = outcome {
            assert!(
                e.contains("not valid for name") || e.contains("UnknownIssuer"),
                "{e}"
            );
        }
    }
    let warning = validate_output(&config_with_targets(
        &target_with_tls(
            &fixture.url,
            &with_root("                insecureHost: true\n"),
        ),
        "",
    ));
    assert!(
        warning.contains("backendTLS.insecureHost") && warning.contains("not verified"),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = pki();
    let fixture = https_fixture(&pki, true).await;
    let base = format!(
        "                sni: service-a.example.com\n                root: {}\n",
        pki.ca.display()
    );
    let without = initialize(&fixture.url, &base).await.unwrap_err();
    assert!(
        without.contains("target service-a unavailable"),
        "{without}"
    );
    let with = format!(
        "{base}                cert: {}\n                key: {}\n",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    assert_eq!(initialize(&fixture.url, &with).await, Ok(()));
}

#[test]
fn tls_on_a_stdio_target_is_a_config_error() {
    let yaml = format!(
        "{}            policies:\n              backendTLS:\n                insecure: true\n",
        stdio_target("local", &[])
    );
    let text = validate_failure(&config_with_targets(&yaml, ""));
    assert!(
        text.contains("backendTLS does not apply to stdio targets"),
        "{text}"
    );
}
