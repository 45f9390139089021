//! The config file, one struct per YAML object. Unknown fields are errors everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// Shorthand: one bind, listener, route and MCP backend.
    pub mcp: Option<McpShorthand>,
    #[serde(default)]
    pub config: Settings,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bind {
    pub port: u16,
    /// Default: all interfaces.
    pub address: Option<String>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// The origin clients reach this listener at (`https://mcp.example.com`), used in every URL
    /// Portico writes for clients (RFC 9728 metadata, `WWW-Authenticate`, A2A agent cards).
    pub public_url: Option<String>,
    #[serde(default)]
    pub protocol: Protocol,
    pub tls: Option<ListenerTls>,
    pub policies: Option<Policies>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum Protocol {
    #[default]
    #[serde(alias = "http")]
    HTTP,
    #[serde(alias = "https")]
    HTTPS,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerTls {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    pub name: Option<String>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub matches: Vec<Match>,
    pub policies: Option<Policies>,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub headers: Vec<NamedMatch>,
    pub method: Option<String>,
    #[serde(default)]
    pub query: Vec<NamedMatch>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum PathMatch {
    Exact(String),
    PathPrefix(String),
    Regex(String),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamedMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backend {
    pub weight: Option<u32>,
    pub policies: Option<Policies>,
    pub mcp: Option<McpBackend>,
    /// A plain HTTP backend (`host:port`).
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpBackend {
    #[serde(default)]
    pub targets: Vec<Target>,
    pub policies: Option<Policies>,
    #[serde(default)]
    pub prefix_mode: PrefixMode,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default)]
    pub stateful_mode: StatefulMode,
    #[serde(default)]
    pub dns_rebinding_protection: bool,
}

/// The top-level `mcp:` shorthand.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpShorthand {
    pub port: u16,
    pub address: Option<String>,
    /// The listener's `publicUrl`.
    pub public_url: Option<String>,
    #[serde(default)]
    pub targets: Vec<Target>,
    pub policies: Option<Policies>,
    #[serde(default)]
    pub prefix_mode: PrefixMode,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default)]
    pub stateful_mode: StatefulMode,
    #[serde(default)]
    pub dns_rebinding_protection: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PrefixMode {
    /// Prefix names only when the backend has more than one target.
    #[default]
    Conditional,
    Always,
    Never,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// A failing target is left out and retried; the session goes on.
    #[default]
    FailOpen,
    /// A failing target fails the session.
    FailClosed,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StatefulMode {
    #[default]
    Stateful,
    Stateless,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub name: String,
    pub stdio: Option<StdioTarget>,
    pub mcp: Option<HttpTarget>,
    pub sse: Option<HttpTarget>,
    pub openapi: Option<OpenApiTarget>,
    pub policies: Option<Policies>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StdioTarget {
    pub cmd: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start the process with only `env` (plus nothing inherited).
    #[serde(default)]
    pub clear_env: bool,
    /// Processes started ahead of demand, so a new session does not wait for one to start.
    pub pool: Option<StdioPool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StdioPool {
    /// How many started processes wait for sessions.
    pub size: usize,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpTarget {
    pub host: String,
}

/// `openapi: {schema: {file | url | inline}, host?}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiTarget {
    pub schema: OpenApiSchema,
    /// Where the service runs: `http://h:8080` (the document's `servers` path is appended) or
    /// `http://h:8080/api` (the whole base URL), or `h:port` for plain HTTP. Without it, the
    /// document's `servers` says, relative to the document's own URL.
    pub host: Option<String>,
}

/// Where the OpenAPI document is: exactly one field.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenApiSchema {
    pub file: Option<String>,
    pub url: Option<String>,
    /// The document itself, as YAML in the config or as a string of JSON or YAML.
    pub inline: Option<serde_json::Value>,
}

pub use crate::policy::Policies;

/// The static `config:` section.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    pub admin_addr: Option<String>,
    pub stats_addr: Option<String>,
    /// `host:port` serving `/healthz/ready` and `/healthz/live`.
    pub readiness_addr: Option<String>,
    /// How long a shutdown waits for requests in flight, e.g. `20s`.
    pub drain_timeout: Option<String>,
    pub session: Option<SessionSettings>,
    #[serde(default)]
    pub mcp: McpSettings,
    #[serde(default)]
    pub logging: LoggingSettings,
    pub tracing: Option<TracingSettings>,
    #[serde(default)]
    pub limits: LimitSettings,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionSettings {
    /// The key that seals session ids, 64 hex characters; the same on every replica.
    /// `PORTICO_SESSION_KEY` overrides it.
    pub key: Option<String>,
    /// Keys that sealed ids still in use: accepted, never used to seal (key rotation).
    #[serde(default)]
    pub previous_keys: Vec<String>,
    /// How long after its `initialize` a session can be resumed by a replica that does not hold
    /// it, e.g. `24h`.
    pub lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpSettings {
    /// Idle session lifetime, e.g. `30m`.
    pub session_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingSettings {
    pub level: Option<String>,
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSettings {
    /// The OTLP collector, e.g. `http://otel-collector:4318` (`/v1/traces` is added when no path).
    pub otlp_endpoint: Option<String>,
    /// `http` (OTLP/HTTP, protobuf; the default) or `grpc`.
    pub otlp_protocol: Option<String>,
    /// The share of requests traced when the client sends no sampled `traceparent`: 0.0 to 1.0.
    pub sampling_rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitSettings {
    /// Largest request body: bytes, or a size such as `4MiB`.
    pub request_body: Option<serde_json::Value>,
    /// Deepest JSON nesting accepted in a request.
    pub json_depth: Option<usize>,
    pub sessions_per_route: Option<usize>,
    pub stdio_processes: Option<usize>,
    pub requests_in_flight_per_session: Option<usize>,
    pub pending_client_requests_per_session: Option<usize>,
    /// How long a request a target sent to the client waits for its answer, e.g. `10m`.
    pub pending_client_request_timeout: Option<String>,
    /// How long a request goes on after its client lost its reply stream, for it to resume, e.g. `30s`.
    pub stream_resume_grace: Option<String>,
    pub connections_per_listener: Option<usize>,
    /// Largest message a target may send (HTTP body, SSE event, stdio line): a size like `requestBody`.
    pub upstream_response: Option<serde_json::Value>,
}
