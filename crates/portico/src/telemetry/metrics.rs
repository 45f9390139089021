//! Metrics, in Prometheus text at `config.statsAddr` `/metrics`.
//!
//! Names and attributes follow the OpenTelemetry semantic conventions for MCP: Portico is an MCP
//! server to its clients (`mcp.server.operation.duration`, `mcp.server.session.duration`) and an MCP
//! client to its targets (`mcp.client.operation.duration`); attributes become labels with `_` for `.`.
//! Every label value is bounded by the config: routes, targets, methods Portico knows, JSON-RPC error
//! codes, and tool names that targets answered to (at most [`TOOL_LABELS`] per target, then `_other`).
//! Never a session id or a user.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct tool names labelled per target; past this a target's tools share the label `_other`.
const TOOL_LABELS: usize = 1_000;

/// Methods that label as themselves; anything else a client sends is `_other`.
const KNOWN_METHODS: [&str; 17] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "notifications/cancelled",
];

/// What the operation histograms are told about one request.
pub struct Operation<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    /// The tool or prompt the request named (the target's own name), or empty.
    pub item: &'a str,
    pub error: Option<i64>,
    /// The negotiated MCP protocol version.
    pub version: &'a str,
}

/// `mcp.server.operation.duration`: one client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerOperation {
    pub route: String,
    pub mcp_method_name: String,
    pub gen_ai_tool_name: String,
    pub gen_ai_prompt_name: String,
    pub target: String,
    pub error_type: String,
    pub mcp_protocol_version: String,
    pub network_transport: String,
}

/// `mcp.client.operation.duration`: one call Portico made to a target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientOperation {
    pub target: String,
    pub mcp_method_name: String,
    pub gen_ai_tool_name: String,
    pub error_type: String,
    pub network_transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decision {
    pub target: String,
    pub decision: String,
    /// `<level>:<index>` of the rule that decided (`route:0`, `target:2`), or `<level>:none`.
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetEvent {
    pub target: String,
    pub kind: String,
}

/// Every metric Portico records.
pub struct Metrics {
    pub registry: Registry,
    pub server_operation: Family<ServerOperation, Histogram>,
    pub client_operation: Family<ClientOperation, Histogram>,
    pub session_duration: Family<RouteLabel, Histogram>,
    pub sessions_active: Family<RouteLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Authorization decisions on calls by target, decision and deciding rule.
    pub authz: Family<Decision, Counter<u64, AtomicU64>>,
    /// Prompt-guard refusals by target and side (`request`/`response`).
    pub guard: Family<TargetEvent, Counter<u64, AtomicU64>>,
    /// Limits hit: `rate_limit`, `timeout` by target; route rate limits under the route's name.
    pub limits: Family<TargetEvent, Counter<u64, AtomicU64>>,
    /// Config reloads by `result` (`success`, `failure`).
    pub reloads: Family<ReloadResult, Counter<u64, AtomicU64>>,
    /// When the running config was last loaded, in seconds since the epoch.
    pub last_reload: Gauge<f64, AtomicU64>,
    tools: Mutex<HashSet<(String, String)>>,
    recent_server: Recent,
    recent_client: Recent,
}

/// Buckets from 50 µs doubling to about 105 s: 50 µs resolution where a gateway's own cost shows.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// One target's health as the admin API's `/targets` sees it, read at scrape time.
pub struct TargetState {
    pub route: String,
    pub target: String,
    pub up: bool,
    pub restarts: u64,
}

/// Where the scrape reads the targets' health from (the running gateway).
pub type TargetView = Box<dyn Fn() -> Vec<TargetState> + Send + Sync>;

static TARGETS: OnceLock<TargetView> = OnceLock::new();

/// Tells the metrics where to read target health; the first call wins.
pub fn watch_targets(view: TargetView) {
    let _ = TARGETS.set(view);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    route: String,
    target: String,
}

/// The process's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let server_operation = Family::<ServerOperation, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let client_operation = Family::<ClientOperation, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let session_duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.1, 2.0, 20))
        });
        let sessions_active = Family::default();
        let authz = Family::default();
        let guard = Family::default();
        let limits = Family::default();
        let reloads = Family::default();
        let last_reload = Gauge::<f64, AtomicU64>::default();
        last_reload.set(now_seconds());
        registry.register(
            "portico_config_reloads",
            "Config reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "portico_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded (start or reload), seconds since the epoch",
            last_reload.clone(),
        );
        registry.register_with_unit(
            "mcp_server_operation_duration",
            "Duration of an MCP request from a client, as Portico served it",
            prometheus_client::registry::Unit::Seconds,
            server_operation.clone(),
        );
        registry.register_with_unit(
            "mcp_client_operation_duration",
            "Duration of an MCP request Portico sent to a target",
            prometheus_client::registry::Unit::Seconds,
            client_operation.clone(),
        );
        registry.register_with_unit(
            "mcp_server_session_duration",
            "Lifetime of a client session, recorded when it ends",
            prometheus_client::registry::Unit::Seconds,
            session_duration.clone(),
        );
        registry.register(
            "portico_sessions_active",
            "Client sessions open now",
            sessions_active.clone(),
        );
        registry.register(
            "portico_authorization_decisions",
            "mcpAuthorization decisions on calls, by target and decision",
            authz.clone(),
        );
        registry.register(
            "portico_guard_refusals",
            "Requests and results refused by an ai prompt guard",
            guard.clone(),
        );
        registry.register(
            "portico_limit_hits",
            "Requests refused or cut by a rate limit or a timeout",
            limits.clone(),
        );
        registry.register_collector(Box::new(ScrapeCollector));
        Self {
            registry,
            server_operation,
            client_operation,
            session_duration,
            sessions_active,
            authz,
            guard,
            limits,
            reloads,
            last_reload,
            tools: Mutex::default(),
            recent_server: Recent::new(),
            recent_client: Recent::new(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// The tool label for `tool` at `target`: itself while the target has fewer than [`TOOL_LABELS`].
    fn tool_label(&self, target: &str, tool: &str) -> String {
        if tool.is_empty() {
            return String::new();
        }
        let mut seen = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        let key = (target.to_string(), tool.to_string());
        if seen.contains(&key) {
            return key.1;
        }
        let per_target = seen.iter().filter(|(t, _)| t == target).count();
        if per_target >= TOOL_LABELS {
            return "_other".to_string();
        }
        seen.insert(key);
        tool.to_string()
    }

    /// Records `mcp.server.operation.duration` for one client request.
    pub fn record_server_operation(&self, operation: &Operation<'_>, elapsed: Duration) {
        let series = self.recent_server.series(operation, "tcp", || {
            let labels = ServerOperation {
                route: operation.route.to_string(),
                mcp_method_name: method_label(operation.method),
                gen_ai_tool_name: self.item_label(operation, "tools/call"),
                gen_ai_prompt_name: self.item_label(operation, "prompts/get"),
                target: operation.target.to_string(),
                error_type: error_label(operation.error),
                mcp_protocol_version: operation.version.to_string(),
                network_transport: "tcp".to_string(),
            };
            self.server_operation.get_or_create(&labels).clone()
        });
        observe(&series, elapsed);
    }

    /// Records `mcp.client.operation.duration` for one call to a target over `transport`
    /// (`pipe` for stdio, `tcp` otherwise).
    pub fn record_client_operation(
        &self,
        operation: &Operation<'_>,
        transport: &'static str,
        elapsed: Duration,
    ) {
        let series = self.recent_client.series(operation, transport, || {
            let labels = ClientOperation {
                target: operation.target.to_string(),
                mcp_method_name: method_label(operation.method),
                gen_ai_tool_name: self.item_label(operation, "tools/call"),
                error_type: error_label(operation.error),
                network_transport: transport.to_string(),
            };
            self.client_operation.get_or_create(&labels).clone()
        });
        observe(&series, elapsed);
    }

    /// The tool or prompt label of `operation` when its method is `method`. A name becomes a label
    /// only once a target answered to it: an unknown or denied name (-32602) is not one.
    fn item_label(&self, operation: &Operation<'_>, method: &str) -> String {
        if operation.method != method || operation.error == Some(-32602) {
            return String::new();
        }
        self.tool_label(operation.target, operation.item)
    }

    /// Counts one authorization decision on a call.
    pub fn record_authorization(
        &self,
        target: &str,
        allowed: bool,
        level: crate::policy::Level,
        rule: Option<usize>,
    ) {
        let rule = match rule {
            Some(index) => format!("{}:{index}", level.name()),
            None => format!("{}:none", level.name()),
        };
        let labels = Decision {
            target: target.to_string(),
            decision: if allowed { "allow" } else { "deny" }.to_string(),
            rule,
        };
        self.authz.get_or_create(&labels).inc();
    }

    /// Counts one config reload; a successful one also sets the last-success time.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadResult {
                result: result.to_string(),
            })
            .inc();
        if success {
            self.last_reload.set(now_seconds());
        }
    }

    /// Counts one event of `kind` at `target` in `family`.
    pub fn count(family: &Family<TargetEvent, Counter<u64, AtomicU64>>, target: &str, kind: &str) {
        family
            .get_or_create(&TargetEvent {
                target: target.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }
}

/// The operation series recorded lately, found again by the request's own values: a family finds a
/// series by its label set (up to eight `String`s, built for the lookup and hashed with SipHash), so
/// that is done only when a combination is new here. The label values depend on nothing but the
/// values (a tool name, once labelled or once `_other`, stays so), so a series found here is the one
/// the family would give. A slot holds the last combination that hashed to it.
struct Recent(Box<[Mutex<Option<Seen>>]>);

/// One combination of an operation's values, and its series.
struct Seen {
    route: Box<str>,
    method: Box<str>,
    target: Box<str>,
    item: Box<str>,
    error: Option<i64>,
    version: Box<str>,
    transport: &'static str,
    series: Histogram,
}

impl Recent {
    const SLOTS: usize = 64;

    fn new() -> Self {
        Self((0..Self::SLOTS).map(|_| Mutex::new(None)).collect())
    }

    /// The series of `operation` over `transport`; `create` finds it in the family when it is not here.
    fn series(
        &self,
        operation: &Operation<'_>,
        transport: &'static str,
        create: impl FnOnce() -> Histogram,
    ) -> Histogram {
        let slot = &self.0[fx_hash(operation, transport) as usize % Self::SLOTS];
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = slot.as_ref().filter(|seen| seen.is(operation, transport)) {
            return seen.series.clone();
        }
        let series = create();
        *slot = Some(Seen {
            route: operation.route.into(),
            method: operation.method.into(),
            target: operation.target.into(),
            item: operation.item.into(),
            error: operation.error,
            version: operation.version.into(),
            transport,
            series: series.clone(),
        });
        series
    }
}

impl Seen {
    fn is(&self, operation: &Operation<'_>, transport: &str) -> bool {
        *self.item == *operation.item
            && *self.target == *operation.target
            && *self.method == *operation.method
            && self.error == operation.error
            && *self.route == *operation.route
            && *self.version == *operation.version
            && self.transport == transport
    }
}

/// A fast hash of an operation's values. They are bounded by the config and by what targets
/// answered, and a collision only costs a lookup in the family.
fn fx_hash(operation: &Operation<'_>, transport: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = crate::base::fast_hash::FastHasher::default();
    hasher.write_u64(operation.error.unwrap_or_default() as u64);
    for part in [
        operation.route,
        operation.method,
        operation.target,
        operation.item,
        operation.version,
        transport,
    ] {
        hasher.write(part.as_bytes());
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The method label: a method Portico knows, or `_other` (clients may send anything).
pub fn method_label(method: &str) -> String {
    if KNOWN_METHODS.contains(&method) {
        method.to_string()
    } else {
        "_other".to_string()
    }
}

/// `error.type`: the JSON-RPC error code, or empty for a success.
pub fn error_label(code: Option<i64>) -> String {
    code.map(|c| c.to_string()).unwrap_or_default()
}

/// Records one duration in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}

/// What is read when scraped: CPU time, resident memory and open file descriptors from `/proc`, dropped
/// log lines, and each target's health.
#[derive(Debug)]
struct ScrapeCollector;

impl ScrapeCollector {
    fn targets(encoder: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        let states = TARGETS.get().map(|view| view()).unwrap_or_default();
        let labels = |s: &TargetState| TargetLabels {
            route: s.route.clone(),
            target: s.target.clone(),
        };
        let mut up = encoder.encode_descriptor(
            "portico_target_up",
            "1 when the target answers (no sessions yet, or at least one connected), else 0",
            None,
            MetricType::Gauge,
        )?;
        for state in &states {
            let value = Value(MetricType::Gauge, if state.up { 1.0 } else { 0.0 });
            value.encode(up.encode_family(&labels(state))?)?;
        }
        let mut restarts = encoder.encode_descriptor(
            "portico_target_restarts",
            "Connections to the target lost and restarted or retried",
            None,
            MetricType::Counter,
        )?;
        for state in &states {
            let value = Value(MetricType::Counter, state.restarts as f64);
            value.encode(restarts.encode_family(&labels(state))?)?;
        }
        Ok(())
    }
}

impl prometheus_client::collector::Collector for ScrapeCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let cpu = crate::base::process::own_cpu_seconds();
        let rss_kib = crate::base::process::status_kib("self", "VmRSS:") as f64;
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
        let dropped = super::dropped_log_lines() as f64;
        let values = [
            (
                "process_cpu_seconds",
                "CPU time used, user and system",
                MetricType::Counter,
                cpu,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory",
                MetricType::Gauge,
                rss_kib * 1024.0,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                MetricType::Gauge,
                fds,
            ),
            (
                "portico_log_lines_dropped",
                "Log lines dropped because stderr did not keep up",
                MetricType::Counter,
                dropped,
            ),
        ];
        for (name, help, kind, value) in values {
            let metric = encoder.encode_descriptor(name, help, None, kind)?;
            Value(kind, value).encode(metric)?;
        }
        Self::targets(&mut encoder)
    }
}

/// A value read at scrape time.
#[derive(Debug)]
struct Value(MetricType, f64);

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            MetricType::Counter => encoder
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&self.1, None),
            _ => encoder.encode_gauge(&self.1),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(target: &'a str, tool: &'a str) -> Operation<'a> {
        Operation {
            route: "r",
            method: "tools/call",
            target,
            item: tool,
            error: None,
            version: "2025-06-18",
        }
    }

    /// The `_count` of the server series whose labels include every one of `labels`.
    fn count(metrics: &Metrics, labels: &[&str]) -> u64 {
        metrics
            .render()
            .lines()
            .filter(|line| line.starts_with("mcp_server_operation_duration_seconds_count"))
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn each_operation_lands_in_its_own_series_however_the_recent_ones_are_replaced() {
        let metrics = Metrics::new();
        let tools: Vec<String> = (0..200).map(|i| format!("tool{i}")).collect();
        for round in 0..3 {
            for tool in &tools {
                metrics.record_server_operation(&call("t", tool), Duration::from_millis(1));
            }
            let failed = Operation {
                error: Some(-32603),
                ..call("t", "tool7")
            };
            metrics.record_server_operation(&failed, Duration::from_millis(1));
            assert_eq!(
                count(&metrics, &["gen_ai_tool_name=\"tool7\"", "error_type=\"\""]),
                round + 1
            );
            assert_eq!(
                count(
                    &metrics,
                    &["gen_ai_tool_name=\"tool7\"", "error_type=\"-32603\""]
                ),
                round + 1
            );
        }
        assert_eq!(count(&metrics, &["target=\"t\""]), 3 * 201);
    }

    #[test]
    fn past_the_tool_label_limit_a_target_s_new_tools_are_other() {
        let metrics = Metrics::new();
        for i in 0..TOOL_LABELS {
            metrics.record_server_operation(&call("t", &format!("tool{i}")), Duration::ZERO);
        }
        for _ in 0..2 {
            metrics.record_server_operation(&call("t", "one-too-many"), Duration::ZERO);
            metrics.record_server_operation(&call("t", "tool0"), Duration::ZERO);
            metrics.record_server_operation(&call("u", "one-too-many"), Duration::ZERO);
        }
        assert_eq!(
            count(&metrics, &["target=\"t\"", "gen_ai_tool_name=\"_other\""]),
            2
        );
        assert_eq!(
            count(&metrics, &["target=\"t\"", "gen_ai_tool_name=\"tool0\""]),
            3
        );
        assert_eq!(
            count(
                &metrics,
                &["target=\"u\"", "gen_ai_tool_name=\"one-too-many\""]
            ),
            2
        );
    }
}
