//! `backendTLS` (route, backend, target): how Portico connects to an `https://` target.
//!
//! `sni` (or its synonym `hostname`: the server name sent and verified), `root` (a PEM CA bundle;
//! default: the system's roots), `cert` + `key` (a client certificate, for mutual TLS), `insecure` (no
//! verification; a warning at load), `insecureHost` (the chain is verified, the name is not),
//! `subjectAltNames` (the certificate must be valid for one of these names instead of the server name)
//! and `alpn`. Each target with a policy gets its own TLS client config, built once at load.

use crate::policy::FieldError;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

use crate::base::http_client::HttpClient;

/// The YAML form.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    pub hostname: Option<String>,
    #[serde(default)]
    pub insecure_host: bool,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// A compiled `backendTLS` policy.
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Option<String>,
    pub insecure: bool,
    pub insecure_host: bool,
}

fn pem_certs(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, FieldError> {
    crate::base::pem::certificates(path).map_err(|e| FieldError::new(field.to_string(), e))
}

impl BackendTls {
    /// `Err` names the field (relative to the policy) and what is wrong.
    pub fn compile(config: &Config) -> Result<Self, FieldError> {
        let sni = match (&config.sni, &config.hostname) {
            (Some(sni), Some(hostname)) if sni != hostname => {
                return Err(FieldError::new(
                    "hostname",
                    "`hostname` is another name for `sni`; set one of them",
                ));
            }
            (sni, hostname) => sni.clone().or_else(|| hostname.clone()),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| FieldError::new("", e.to_string()))?;
        let names = config
            .subject_alt_names
            .iter()
            .map(|name| {
                ServerName::try_from(name.clone()).map_err(|_| {
                    FieldError::new(
                        "subjectAltNames",
                        format!("`{name}` is not a DNS name or an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let builder = if config.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else if config.insecure_host || !names.is_empty() {
            let roots = Arc::new(roots(config.root.as_deref())?);
            let chain =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| FieldError::new("root", e.to_string()))?;
            let names = match config.insecure_host {
                true => NameCheck::None,
                false => NameCheck::OneOf(names),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { chain, names }))
        } else {
            builder.with_root_certificates(roots(config.root.as_deref())?)
        };
        let mut client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let certs = pem_certs("cert", cert)?;
                let key =
                    crate::base::pem::private_key(key).map_err(|e| FieldError::new("key", e))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    FieldError::new("cert", format!("certificate and key do not match: {e}"))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(FieldError::new("cert", "`cert` and `key` go together")),
        };
        client.alpn_protocols = if config.alpn.is_empty() {
            vec![b"http/1.1".to_vec()]
        } else {
            config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
        };
        if let Some(sni) = &sni
            && ServerName::try_from(sni.as_str()).is_err()
        {
            return Err(FieldError::new(
                "sni",
                format!("`{sni}` is not a server name"),
            ));
        }
        Ok(Self {
            config: Arc::new(client),
            sni,
            insecure: config.insecure,
            insecure_host: config.insecure_host,
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

    /// The client for a Streamable HTTP target at `url` with this policy. With `sni` naming another
    /// host, the connection goes to `url`'s address, with `sni` as the name sent, verified, and sent
    /// as the `Host` header.
    pub fn http_client(&self, url: &reqwest::Url) -> Result<HttpClient, String> {
        let Some(sni) = self
            .sni
            .as_deref()
            .filter(|sni| url.host_str() != Some(*sni))
        else {
            return Ok(HttpClient::with_tls(self.config.clone(), None));
        };
        let name = ServerName::try_from(sni.to_string())
            .map_err(|_| format!("`{sni}` is not a server name"))?;
        let host = match url.port() {
            Some(port) => format!("{sni}:{port}"),
            None => sni.to_string(),
        };
        let host = http::HeaderValue::try_from(host).map_err(|e| format!("`{sni}`: {e}"))?;
        Ok(HttpClient::with_tls(
            self.config.clone(),
            Some((name, host)),
        ))
    }
}

fn roots(root: Option<&str>) -> Result<rustls::RootCertStore, FieldError> {
    let mut store = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            for cert in pem_certs("root", path)? {
                store
                    .add(cert)
                    .map_err(|e| FieldError::new("root", format!("`{path}`: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
        }
    }
    Ok(store)
}

/// Which names the server certificate must be valid for, beyond a verified chain.
#[derive(Debug)]
enum NameCheck {
    /// `insecureHost: true`.
    None,
    /// `subjectAltNames`: any one of them, instead of the server name.
    OneOf(Vec<ServerName<'static>>),
}

/// `insecureHost` and `subjectAltNames`: the chain is verified against the roots as usual; the name
/// check is relaxed or replaced.
#[derive(Debug)]
struct ChainOnly {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    names: NameCheck,
}

fn wrong_name(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |name: &ServerName<'_>| {
            self.chain
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        };
        match &self.names {
            NameCheck::None => match verify(server_name) {
                Err(e) if wrong_name(&e) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
            NameCheck::OneOf(names) => {
                let mut last = None;
                for name in names {
                    match verify(name) {
                        Ok(verified) => return Ok(verified),
                        Err(e) if wrong_name(&e) => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
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
