//! The agent's own metrics, served at `/v1/agent/metrics`.
//!
//! One process-wide registry ([`global`]), as Consul keeps one go-metrics
//! sink: Raft records each write, the HTTP layer each request, blocking
//! queries how many are parked. Gauges that describe the store (checks by
//! state, services, nodes) are set from it when the metrics are read, so
//! they cost nothing in between.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

/// Labels of an HTTP API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The route template, e.g. `/v1/kv/{*key}`, or `unmatched`.
    pub path: String,
    /// `2xx`, `4xx`, `5xx`, ...
    pub code_class: String,
}

/// Labels of the timing of an HTTP API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The route template.
    pub path: String,
}

/// Labels of a count of checks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `passing`, `warning` or `critical`.
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric the agent keeps.
pub struct Metrics {
    registry: Registry,
    /// Writes proposed to Raft and applied, by this node.
    pub raft_applies: Counter,
    /// Time from proposing a write to its being applied.
    pub raft_apply_seconds: Histogram,
    /// The index of the last applied log entry.
    pub raft_applied_index: Gauge,
    /// 1 while this node is the Raft leader.
    pub raft_leader: Gauge,
    /// HTTP API requests answered.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP API request durations (blocking queries include their wait).
    pub http_request_seconds: HistogramFamily<RouteLabels>,
    /// Blocking queries waiting for a change right now.
    pub blocking_queries_parked: Gauge,
    /// Proxy config streams open right now.
    pub proxy_config_streams: Gauge,
    /// Health checks in the catalog by state.
    pub checks: Family<StateLabels, Gauge>,
    /// Service names in the catalog.
    pub catalog_services: Gauge,
    /// Nodes in the catalog.
    pub catalog_nodes: Gauge,
    /// This agent's Lifeguard health score in the LAN gossip pool (Consul's
    /// `memberlist.health.score`): 0 is healthy.
    pub gossip_health_score: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            raft_applies: Counter::default(),
            raft_apply_seconds: latency_histogram(),
            raft_applied_index: Gauge::default(),
            raft_leader: Gauge::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
            blocking_queries_parked: Gauge::default(),
            proxy_config_streams: Gauge::default(),
            checks: Family::default(),
            catalog_services: Gauge::default(),
            catalog_nodes: Gauge::default(),
            gossip_health_score: Gauge::default(),
            registry: Registry::with_prefix("mesh"),
        };
        let r = &mut m.registry;
        r.register(
            "raft_applies",
            "Raft writes applied",
            m.raft_applies.clone(),
        );
        r.register(
            "raft_apply_seconds",
            "Time from proposing a Raft write to its being applied",
            m.raft_apply_seconds.clone(),
        );
        r.register(
            "raft_applied_index",
            "Index of the last applied Raft log entry",
            m.raft_applied_index.clone(),
        );
        r.register(
            "raft_leader",
            "1 while this node leads",
            m.raft_leader.clone(),
        );
        r.register(
            "http_requests",
            "HTTP API requests",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_seconds",
            "HTTP API request durations",
            m.http_request_seconds.clone(),
        );
        r.register(
            "blocking_queries_parked",
            "Blocking queries waiting for a change",
            m.blocking_queries_parked.clone(),
        );
        r.register(
            "proxy_config_streams",
            "Proxy config streams open",
            m.proxy_config_streams.clone(),
        );
        r.register("health_checks", "Health checks by state", m.checks.clone());
        r.register(
            "catalog_services",
            "Service names in the catalog",
            m.catalog_services.clone(),
        );
        r.register(
            "catalog_nodes",
            "Nodes in the catalog",
            m.catalog_nodes.clone(),
        );
        r.register(
            "memberlist_health_score",
            "This agent's gossip health score (0 is healthy; probing slows by score + 1)",
            m.gossip_health_score.clone(),
        );
        m
    }

    /// Records one applied Raft write that took `elapsed`.
    pub fn on_raft_apply(&self, elapsed: Duration) {
        self.raft_applies.inc();
        self.raft_apply_seconds.observe(elapsed.as_secs_f64());
    }

    /// The registry, to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts one more of something for as long as it lives (a parked query,
/// an open stream).
pub struct InFlight(&'static Gauge);

impl InFlight {
    /// Increments `gauge` until the guard drops.
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
