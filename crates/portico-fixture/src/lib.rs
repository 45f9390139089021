//! `portico-fixture`: the MCP server that Portico's tests, quickstart and benchmarks talk to.
//!
//! It exposes everything the MCP conformance suite expects of a server (see `docs/testing.md`) plus a
//! few tools that only a gateway's tests need: `echo`, `echo_headers`, `sleep`, `crash`, `whoami`.
//! The `portico` binary embeds it as `portico fixture`.

mod handler;
pub mod petstore_v3;
pub mod rest;
mod sigv4;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use handler::{Fixture, FixtureOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Transport {
    /// Newline-delimited JSON-RPC on stdin/stdout.
    Stdio,
    /// Streamable HTTP on `--listen`, endpoint `/mcp`.
    Http,
    /// Not MCP: a REST pet store on `--listen` with its OpenAPI document at `/openapi.json` (for
    /// `openapi` targets).
    Rest,
}

/// Options of the fixture server.
#[derive(Debug, Args)]
pub struct FixtureArgs {
    /// How clients reach the server.
    #[arg(long, value_enum, default_value = "stdio")]
    pub transport: Transport,
    /// Address to listen on with `--transport http` or `rest` (port 0 picks a free port; the chosen
    /// address is printed on stdout as `listening on http://ADDR/mcp`, or `http://ADDR` for `rest`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Name reported by the `whoami` tool and in `serverInfo`.
    #[arg(long, default_value = "portico-fixture")]
    pub name: String,
    /// Extra generated tools `tool_0` .. `tool_{N-1}` (for list benchmarks and pagination tests).
    #[arg(long, default_value_t = 0)]
    pub extra_tools: usize,
    /// Items per page of tools/prompts/resources lists (0 = no pagination).
    #[arg(long, default_value_t = 0)]
    pub page_size: usize,
    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`), as a remote server would.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Refuse (HTTP 403) requests not signed with AWS SigV4 for `REGION/SERVICE` by a key of `--sigv4-key`.
    #[arg(long, value_name = "REGION/SERVICE", requires = "sigv4_key")]
    pub sigv4: Option<String>,
    /// An access key the `--sigv4` check accepts, as `ACCESS_KEY_ID:SECRET` (repeatable).
    #[arg(long, value_name = "ID:SECRET")]
    pub sigv4_key: Vec<String>,
    /// Send `notifications/tools/list_changed` this many milliseconds after each session starts,
    /// outside any request.
    #[arg(long, value_name = "MS")]
    pub list_changed_after: Option<u64>,
    /// Wait this many milliseconds before serving, as a slow-starting server (node, python) does.
    #[arg(long, value_name = "MS")]
    pub startup_delay: Option<u64>,
    /// Speak only the 2026-07-28 revision (`--transport http`): `server/discover`, requests with their
    /// context in `_meta`, no `initialize` and no sessions; `test_sampling` asks by `input_required`,
    /// and `ask_forever` (not listed) asks again whatever the answer.
    #[arg(long)]
    pub only_2026: bool,
    /// Make every `tools/list` answer differ from the one before and from other fixtures' (the first
    /// tool's description names the fixture and counts the lists served), as a server whose tools
    /// keep changing would.
    #[arg(long)]
    pub changing_tools: bool,
}

/// Serves until stdin closes (stdio) or forever (http).
pub async fn run(cli: FixtureArgs) -> anyhow::Result<()> {
    if let Some(ms) = cli.startup_delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let tls = tls_config(&cli)?;
    let sigv4 = sigv4_verifier(&cli)?;
    let options = Arc::new(FixtureOptions {
        name: cli.name,
        tools: handler::tool_list(cli.extra_tools),
        page_size: cli.page_size,
        list_changed_after: cli.list_changed_after.map(std::time::Duration::from_millis),
        only_2026: cli.only_2026,
        changing_tools: cli.changing_tools,
        lists_served: Default::default(),
    });
    match cli.transport {
        Transport::Stdio => serve_stdio(options).await,
        Transport::Http => serve_http(options, cli.listen, tls, sigv4).await,
        Transport::Rest => rest::serve(cli.listen).await,
    }
}

async fn serve_stdio(options: Arc<FixtureOptions>) -> anyhow::Result<()> {
    let service = Fixture::new(options)
        .serve(rmcp::transport::io::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}

fn sigv4_verifier(cli: &FixtureArgs) -> anyhow::Result<Option<Arc<sigv4::Verifier>>> {
    let Some(scope) = &cli.sigv4 else {
        return Ok(None);
    };
    let (region, service) = scope
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--sigv4 takes REGION/SERVICE"))?;
    let keys = cli
        .sigv4_key
        .iter()
        .map(|key| {
            key.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--sigv4-key takes ID:SECRET"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(Arc::new(sigv4::Verifier {
        region: region.into(),
        service: service.into(),
        keys,
    })))
}

fn pem_certs(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(path)?;
    Ok(rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>()?)
}

fn tls_config(cli: &FixtureArgs) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) else {
        return Ok(None);
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs = pem_certs(cert)?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
        .ok_or_else(|| anyhow::anyhow!("no private key in {}", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &cli.tls_client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(ca)? {
                roots.add(cert)?;
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

async fn serve_http(
    options: Arc<FixtureOptions>,
    listen: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    sigv4: Option<Arc<sigv4::Verifier>>,
) -> anyhow::Result<()> {
    // The default allows only loopback Hosts: the MCP DNS-rebinding defence the conformance suite checks.
    // Over TLS the fixture stands in for a remote server, which clients reach by its own name.
    let mut config = match tls {
        Some(_) => StreamableHttpServerConfig::default().disable_allowed_hosts(),
        None => StreamableHttpServerConfig::default(),
    };
    if options.only_2026 {
        config = config.with_legacy_session_mode(false);
        config.stateless_protocol_metadata_required = true;
    }
    let service = StreamableHttpService::new(
        move || Ok(Fixture::new(options.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mut app = axum::Router::new().nest_service("/mcp", service);
    if let Some(verifier) = sigv4 {
        app = app.layer(axum::middleware::from_fn_with_state(
            verifier,
            sigv4::require_signature,
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}/mcp", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        // Without NODELAY, delayed ACKs against small SSE writes cost ~40 ms per request.
        stream.set_nodelay(true)?;
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| tower::ServiceExt::oneshot(app.clone(), req));
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                }
                Some(tls) => {
                    // A refused handshake (unknown client certificate) just ends the connection.
                    let Ok(stream) = tls.accept(stream).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
