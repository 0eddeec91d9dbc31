//! The proxy's Prometheus metrics (prometheus-client): one registry per
//! proxy, served as text at `GET /metrics` on `ProxyConfig.MetricsBind`.
//!
//! Every name starts with `mesh_proxy_`; labels follow Envoy's and
//! Linkerd's dashboards (`direction`, `upstream`, `service`, `subset`,
//! `route`, `code_class`). The README's "Proxy metrics" section lists
//! them all.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use crate::http::{full, respond, serve_connection, ProxyBody};
use crate::stats::{DirectionStats, ProxyStats};
use crate::ProxyConfig;

/// `inbound` (the public listener) or `outbound` (upstream listeners).
pub(crate) type Direction = &'static str;
/// The public listener's direction label.
pub(crate) const INBOUND: Direction = "inbound";
/// The upstream listeners' direction label.
pub(crate) const OUTBOUND: Direction = "outbound";

/// How long a metrics scrape connection may stay idle.
const SCRAPE_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// The labels of a connection metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    direction: Direction,
}

/// Where a request went: the labels of every per-request metric.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// `inbound` or `outbound`.
    pub(crate) direction: Direction,
    /// The upstream's destination (outbound); empty inbound.
    pub(crate) upstream: String,
    /// The service that served it: the target's (outbound), the proxy's own
    /// (inbound); empty when no target was reached.
    pub(crate) service: String,
    /// The target's subset; empty for none.
    pub(crate) subset: String,
    /// The index of the route taken; empty when none was.
    pub(crate) route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: Direction,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    direction: Direction,
    layer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    service: String,
    endpoint: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric of one proxy.
pub(crate) struct Metrics {
    registry: Registry,
    /// The connection counters, registered here too.
    pub(crate) stats: Arc<ProxyStats>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    retries: Family<RouteLabels, Counter>,
    timeouts: Family<RouteLabels, Counter>,
    request_bytes: Family<BytesLabels, Counter>,
    response_bytes: Family<BytesLabels, Counter>,
    handshake_failures: Family<DirectionLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    leaf_expiry: Gauge<f64, AtomicU64>,
    config_version: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.5ms .. ~16s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// `2xx`, `5xx`, ...
fn code_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh_proxy");
        let accepted = Family::<DirectionLabels, Counter>::default();
        let established = Family::<DirectionLabels, Counter>::default();
        let failed = Family::<DirectionLabels, Counter>::default();
        let open = Family::<DirectionLabels, Gauge>::default();
        let denials = Family::<DenialLabels, Counter>::default();
        let direction_stats = |direction: Direction| {
            let labels = DirectionLabels { direction };
            DirectionStats::registered(
                accepted.get_or_create_owned(&labels),
                established.get_or_create_owned(&labels),
                denials.get_or_create_owned(&DenialLabels {
                    direction,
                    layer: "l4",
                }),
                failed.get_or_create_owned(&labels),
                open.get_or_create_owned(&labels),
            )
        };
        let stats = Arc::new(ProxyStats {
            inbound: direction_stats(INBOUND),
            outbound: direction_stats(OUTBOUND),
        });
        registry.register(
            "connections",
            "Connections accepted by the proxy's listeners",
            accepted,
        );
        registry.register(
            "connections_established",
            "Accepted connections that got as far as forwarding",
            established,
        );
        registry.register(
            "connections_failed",
            "Accepted connections that failed before forwarding",
            failed,
        );
        registry.register("connections_open", "Connections open now", open);

        let this = Self {
            stats,
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            retries: Family::default(),
            timeouts: Family::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            handshake_failures: Family::default(),
            denials,
            ejections: Family::default(),
            leaf_expiry: Gauge::default(),
            config_version: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests answered, by where they went and response code class",
            this.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response headers",
            this.duration.clone(),
        );
        registry.register(
            "request_retries",
            "Tries of HTTP requests after the first",
            this.retries.clone(),
        );
        registry.register(
            "request_timeouts",
            "HTTP requests answered 504 because the request timeout passed",
            this.timeouts.clone(),
        );
        registry.register(
            "request_bytes",
            "Bytes of request bodies (HTTP) or from the client (TCP)",
            this.request_bytes.clone(),
        );
        registry.register(
            "response_bytes",
            "Bytes of response bodies (HTTP) or to the client (TCP)",
            this.response_bytes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "mTLS handshakes refused or timed out",
            this.handshake_failures.clone(),
        );
        registry.register(
            "intention_denials",
            "Connections (layer l4) and requests (layer l7) denied by intentions",
            this.denials.clone(),
        );
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by passive outlier detection",
            this.ejections.clone(),
        );
        registry.register(
            "leaf_cert_expiry_timestamp_seconds",
            "When the proxy's leaf certificate expires, in Unix seconds",
            this.leaf_expiry.clone(),
        );
        registry.register(
            "config_version",
            "The version of the config in force",
            this.config_version.clone(),
        );
        Self { registry, ..this }
    }

    /// Records the config now in force.
    pub(crate) fn config_applied(&self, config: &ProxyConfig) {
        self.config_version
            .set(i64::try_from(config.version).unwrap_or(i64::MAX));
        match mesh_ca::cert_not_after(&config.leaf_cert_pem) {
            Ok(not_after) => {
                let secs = not_after
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                self.leaf_expiry.set(secs);
            }
            Err(error) => warn!(%error, "cannot read the leaf's expiry"),
        }
    }

    /// Records one answered request.
    pub(crate) fn request(&self, labels: &RouteLabels, status: StatusCode, started: Instant) {
        self.requests
            .get_or_create(&RequestLabels {
                route: labels.clone(),
                code_class: code_class(status),
            })
            .inc();
        self.duration
            .get_or_create(labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts a retry.
    pub(crate) fn retry(&self, labels: &RouteLabels) {
        self.retries.get_or_create(labels).inc();
    }

    /// Counts a request timeout.
    pub(crate) fn timeout(&self, labels: &RouteLabels) {
        self.timeouts.get_or_create(labels).inc();
    }

    /// The request and response byte counters of `upstream` (empty for the
    /// public listener).
    pub(crate) fn bytes(&self, direction: Direction, upstream: &str) -> (Counter, Counter) {
        let labels = BytesLabels {
            direction,
            upstream: upstream.to_owned(),
        };
        (
            self.request_bytes.get_or_create_owned(&labels),
            self.response_bytes.get_or_create_owned(&labels),
        )
    }

    /// The counter of failed handshakes in `direction`.
    pub(crate) fn handshake_failures(&self, direction: Direction) -> Counter {
        self.handshake_failures
            .get_or_create_owned(&DirectionLabels { direction })
    }

    /// Counts a request denied by an L7 intention.
    pub(crate) fn l7_denied(&self) {
        self.denials
            .get_or_create(&DenialLabels {
                direction: INBOUND,
                layer: "l7",
            })
            .inc();
    }

    /// Counts an outlier ejection.
    pub(crate) fn ejected(&self, upstream: &str, service: &str, endpoint: std::net::SocketAddr) {
        self.ejections
            .get_or_create(&EndpointLabels {
                upstream: upstream.to_owned(),
                service: service.to_owned(),
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = text::encode(&mut out, &self.registry) {
            warn!(%error, "cannot encode the metrics");
        }
        out
    }
}

/// Serves `/metrics` on one connection of the metrics listener.
pub(crate) async fn serve(
    stream: TcpStream,
    metrics: Arc<Metrics>,
    draining: watch::Receiver<bool>,
) {
    serve_connection(stream, SCRAPE_IDLE, draining, move |req| {
        let response = scrape(&req, &metrics);
        async move { response }
    })
    .await;
}

fn scrape<B>(req: &Request<B>, metrics: &Metrics) -> Response<ProxyBody> {
    if req.uri().path() != "/metrics" {
        return respond(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let mut response = Response::new(full(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_requests_show_in_the_text() {
        let metrics = Metrics::new();
        metrics.stats.inbound.on_accept();
        metrics.stats.inbound.on_denied();
        let labels = RouteLabels {
            direction: OUTBOUND,
            upstream: "api".into(),
            service: "api".into(),
            subset: "v2".into(),
            route: "0".into(),
        };
        metrics.request(&labels, StatusCode::SERVICE_UNAVAILABLE, Instant::now());
        metrics.l7_denied();
        let text = metrics.encode();
        assert!(
            text.contains("mesh_proxy_connections_total{direction=\"inbound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_proxy_connections_open{direction=\"inbound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "mesh_proxy_requests_total{direction=\"outbound\",upstream=\"api\",service=\"api\",subset=\"v2\",route=\"0\",code_class=\"5xx\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "mesh_proxy_intention_denials_total{direction=\"inbound\",layer=\"l4\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "mesh_proxy_intention_denials_total{direction=\"inbound\",layer=\"l7\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mesh_proxy_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
