//! Traces: a span per client request and a child span per call to a target, exported over OTLP
//! (HTTP with protobuf, or gRPC) to `config.tracing.otlpEndpoint`, with the W3C trace context carried
//! both ways.
//!
//! A client's `traceparent` (HTTP header, or `params._meta.traceparent`) is the parent of its request's
//! span; each call to a target carries its own span's context to the target (`params._meta.traceparent`
//! for every kind, and the `traceparent` header for HTTP targets), as the MCP semantic conventions
//! describe. Spans are handed to a background exporter through a bounded queue: a slow collector drops
//! spans, never requests.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use rand::RngCore;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Spans waiting for the exporter; past this new ones are dropped.
const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How long one export may take, connecting included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans go and how many requests are traced.
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// `http://collector:4318/v1/traces` (HTTP) or `http://collector:4317` (gRPC).
    pub endpoint: reqwest::Url,
    pub protocol: OtlpProtocol,
    /// The share of requests without a sampled parent that are traced, 0.0 to 1.0.
    pub sampling: f64,
}

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318).
    Http,
    /// OTLP/gRPC, `TraceService/Export` (a collector's port 4317).
    Grpc,
}

impl OtlpProtocol {
    pub fn name(self) -> &'static str {
        match self {
            OtlpProtocol::Http => "http",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

struct Tracer {
    queue: mpsc::Sender<Span>,
    sampling: f64,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

tokio::task_local! {
    /// The context of the span a request is in: its own, then its target call's.
    static CURRENT: Context;
}

/// A span's W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Context {
    /// Reads a `traceparent` (`00-<trace id>-<parent id>-<flags>`); `None` when malformed or all zero.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        let flags = unhex::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    while bytes == [0; N] {
        rand::rng().fill_bytes(&mut bytes);
    }
    bytes
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Starts exporting to `settings.endpoint`; the exporter runs on the calling runtime.
pub fn start(settings: &TracingSettings, http: reqwest::Client) {
    let (queue, spans) = mpsc::channel(QUEUE);
    if TRACER
        .set(Tracer {
            queue,
            sampling: settings.sampling,
        })
        .is_ok()
    {
        let exporter = match settings.protocol {
            OtlpProtocol::Http => Exporter::Http {
                client: http,
                endpoint: settings.endpoint.clone(),
            },
            OtlpProtocol::Grpc => match grpc_client(&settings.endpoint) {
                Ok(client) => Exporter::Grpc(client),
                Err(e) => {
                    tracing::error!(target: "portico::traces", error = %e, endpoint = %settings.endpoint, "cannot export traces over gRPC");
                    return;
                }
            },
        };
        tokio::spawn(export(spans, exporter));
    }
}

/// A gRPC client of the collector's trace service; it connects on first use and reconnects as needed.
fn grpc_client(
    endpoint: &reqwest::Url,
) -> Result<TraceServiceClient<Channel>, tonic::transport::Error> {
    let mut channel = Endpoint::from_shared(endpoint.to_string())?
        .timeout(EXPORT_TIMEOUT)
        .connect_timeout(EXPORT_TIMEOUT);
    if endpoint.scheme() == "https" {
        channel = channel.tls_config(ClientTlsConfig::new().with_native_roots())?;
    }
    Ok(TraceServiceClient::new(channel.connect_lazy()))
}

/// Whether spans are recorded at all.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span being timed; sent to the exporter by [`OpenSpan::end`].
pub struct OpenSpan {
    context: Context,
    parent: Option<[u8; 8]>,
    name: String,
    kind: span::SpanKind,
    start: u64,
    attributes: Vec<KeyValue>,
}

impl OpenSpan {
    /// The span of a client request, child of `parent` (the client's context) if there is one. A
    /// request that starts a trace and is not sampled gets no span at all, so it costs nothing; one
    /// whose client sent an unsampled context still passes that context on.
    pub fn server(name: &str, parent: Option<Context>) -> Option<Self> {
        let tracer = TRACER.get()?;
        let sampled = match parent {
            Some(parent) => parent.sampled,
            None if rand::random::<f64>() < tracer.sampling => true,
            None => return None,
        };
        Some(Self::new(name, span::SpanKind::Server, parent, sampled))
    }

    /// The span of a call to a target, child of the request's span (if the request is traced).
    pub fn client(name: &str) -> Option<Self> {
        let parent = CURRENT.try_with(|c| *c).ok()?;
        Some(Self::new(
            name,
            span::SpanKind::Client,
            Some(parent),
            parent.sampled,
        ))
    }

    fn new(name: &str, kind: span::SpanKind, parent: Option<Context>, sampled: bool) -> Self {
        Self {
            context: Context {
                trace_id: parent.map_or_else(random, |p| p.trace_id),
                span_id: random(),
                sampled,
            },
            parent: parent.map(|p| p.span_id),
            name: name.to_string(),
            kind,
            start: now_nanos(),
            attributes: Vec::new(),
        }
    }

    /// `<method> <item>` (or the method alone): the name the MCP conventions give a span.
    pub fn rename(&mut self, method: &str, item: &str) {
        self.name = if item.is_empty() {
            method.to_string()
        } else {
            format!("{method} {item}")
        };
    }

    pub fn context(&self) -> Context {
        self.context
    }

    /// Adds a string attribute (skipped when empty).
    pub fn attribute(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        self.attributes.push(KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_string())),
            }),
            ..Default::default()
        });
    }

    /// Ends the span; an `error` (a JSON-RPC code) marks it failed with `error.type`.
    pub fn end(mut self, error: Option<i64>) {
        if !self.context.sampled {
            return;
        }
        let status = error.map(|code| {
            self.attribute("error.type", &code.to_string());
            self.attribute("rpc.jsonrpc.error_code", &code.to_string());
            Status {
                message: String::new(),
                code: status::StatusCode::Error as i32,
            }
        });
        let span = Span {
            trace_id: self.context.trace_id.to_vec(),
            span_id: self.context.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name: self.name,
            kind: self.kind as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: now_nanos(),
            attributes: self.attributes,
            status,
            ..Default::default()
        };
        if let Some(tracer) = TRACER.get() {
            // A full queue drops the span: a slow collector never slows a request.
            let _ = tracer.queue.try_send(span);
        }
    }
}

/// Runs `future` inside span context `context`: calls it makes to targets become its children, and
/// carry it.
pub async fn within<F: Future>(context: Context, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// The `traceparent` to send with a call made now, if it is traced.
pub fn current_traceparent() -> Option<String> {
    CURRENT.try_with(|c| c.traceparent()).ok()
}

/// Sends spans as they come: whatever queued while the last batch was in flight goes in the next one.
/// Where the exporter sends its batches.
enum Exporter {
    Http {
        client: reqwest::Client,
        endpoint: reqwest::Url,
    },
    Grpc(TraceServiceClient<Channel>),
}

async fn export(mut spans: mpsc::Receiver<Span>, mut exporter: Exporter) {
    let mut batch = Vec::with_capacity(BATCH);
    while spans.recv_many(&mut batch, BATCH).await > 0 {
        let count = batch.len();
        let request = export_request(std::mem::take(&mut batch));
        let refused = match &mut exporter {
            Exporter::Http { client, endpoint } => send_http(client, endpoint, request).await,
            Exporter::Grpc(client) => client
                .export(request)
                .await
                .err()
                .map(|status| format!("{}: {}", status.code(), status.message())),
        };
        if let Some(error) = refused {
            tracing::warn!(target: "portico::traces", error, spans = count, "spans not exported");
        }
    }
}

/// Sends one batch over OTLP/HTTP; why it failed, if it did.
async fn send_http(
    http: &reqwest::Client,
    endpoint: &reqwest::Url,
    request: ExportTraceServiceRequest,
) -> Option<String> {
    let sent = http
        .post(endpoint.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .timeout(EXPORT_TIMEOUT)
        .body(request.encode_to_vec())
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!(
            "the collector answered HTTP {}",
            response.status().as_u16()
        )),
        Err(e) => Some(e.without_url().to_string()),
    }
}

/// One batch as the OTLP export request, under Portico's resource and scope.
fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("portico".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "portico".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed() {
        let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = Context::parse(text).unwrap();
        assert!(context.sampled);
        assert_eq!(context.traceparent(), text);
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "garbage",
        ] {
            assert_eq!(Context::parse(bad), None, "{bad}");
        }
    }
}
