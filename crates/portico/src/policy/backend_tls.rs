//! `backendTLS` (route, backend, target): how Portico connects to an `https://` target.
//!
//! Built: `sni` (the server name sent and verified), `root` (a PEM CA bundle; default: the system's
//! roots), `cert` + `key` (a client certificate, for mutual TLS), `insecure` (no verification; a warning
//! at load) and `alpn`. `hostname`, `insecureHost` and `subjectAltNames` are refused at load until built.
//! Each target with a policy gets its own TLS client config, built once at load.

use std::net::ToSocketAddrs;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The YAML form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub sni: Option<String>,
    pub root: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub alpn: Vec<String>,
    pub hostname: Option<IgnoredAny>,
    pub insecure_host: Option<IgnoredAny>,
    pub subject_alt_names: Option<IgnoredAny>,
}

/// A compiled `backendTLS` policy.
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Option<String>,
    pub insecure: bool,
}

fn pem_certs(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, (String, String)> {
    let pem = std::fs::read(path)
        .map_err(|e| (field.to_string(), format!("cannot read `{path}`: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| (field.to_string(), format!("`{path}`: {e}")))?;
    if certs.is_empty() {
        return Err((
            field.to_string(),
            format!("`{path}` holds no PEM certificate"),
        ));
    }
    Ok(certs)
}

impl BackendTls {
    /// `Err` names the field (relative to the policy) and what is wrong.
    pub fn compile(config: &Config) -> Result<Self, (String, String)> {
        for (field, set) in [
            ("hostname", config.hostname.is_some()),
            ("insecureHost", config.insecure_host.is_some()),
            ("subjectAltNames", config.subject_alt_names.is_some()),
        ] {
            if set {
                return Err((
                    field.into(),
                    format!("backendTLS `{field}` is not supported yet"),
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| (String::new(), e.to_string()))?;
        let builder = if config.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots(config.root.as_deref())?)
        };
        let mut client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let certs = pem_certs("cert", cert)?;
                let pem = std::fs::read(key)
                    .map_err(|e| ("key".to_string(), format!("cannot read `{key}`: {e}")))?;
                let key = rustls_pemfile::private_key(&mut pem.as_slice())
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        (
                            "key".to_string(),
                            format!("`{key}` holds no PEM private key"),
                        )
                    })?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    (
                        "cert".to_string(),
                        format!("certificate and key do not match: {e}"),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(("cert".into(), "`cert` and `key` go together".into())),
        };
        client.alpn_protocols = if config.alpn.is_empty() {
            vec![b"http/1.1".to_vec()]
        } else {
            config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
        };
        if let Some(sni) = &config.sni
            && ServerName::try_from(sni.as_str()).is_err()
        {
            return Err(("sni".into(), format!("`{sni}` is not a server name")));
        }
        Ok(Self {
            config: Arc::new(client),
            sni: config.sni.clone(),
            insecure: config.insecure,
        })
    }

    /// A client for `url` with this policy, and the URL to call: with `sni` set, the request goes to
    /// `url`'s address under the `sni` name, which is then the name sent and verified.
    pub fn client(&self, url: &reqwest::Url) -> Result<(reqwest::Client, reqwest::Url), String> {
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls((*self.config).clone())
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .pool_idle_timeout(std::time::Duration::from_secs(90));
        let mut target = url.clone();
        if let Some(sni) = self
            .sni
            .as_deref()
            .filter(|sni| url.host_str() != Some(*sni))
        {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(443);
            let address = (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
                .next()
                .ok_or_else(|| format!("`{host}` has no address"))?;
            builder = builder.resolve(sni, address);
            target
                .set_host(Some(sni))
                .map_err(|e| format!("`{sni}`: {e}"))?;
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok((client, target))
    }
}

fn roots(root: Option<&str>) -> Result<rustls::RootCertStore, (String, String)> {
    let mut store = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            for cert in pem_certs("root", path)? {
                store
                    .add(cert)
                    .map_err(|e| ("root".to_string(), format!("`{path}`: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
        }
    }
    Ok(store)
}

/// `insecure: true`: any certificate is accepted (signatures are still checked for the handshake).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
