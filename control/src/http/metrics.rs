//! `/v1/agent/metrics`: the agent's metrics, as Consul's JSON summary or,
//! with `?format=prometheus`, as Prometheus text. Also the layer that
//! counts and times every API request.

use super::{Api, ApiError, ApiState, Ctx};
use crate::metrics::{global, HttpLabels, RouteLabels};
use crate::structs::status;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/agent/metrics", get(metrics))
}

/// Counts and times one API request by method, route and status class.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let m = global();
    m.http_request_seconds
        .get_or_create(&RouteLabels {
            method: method.clone(),
            path: path.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            path,
            code_class: format!("{}xx", resp.status().as_u16() / 100),
        })
        .inc();
    resp
}

/// Sets the gossip health gauge, and the gauges that describe the store and
/// Raft (on servers: a client agent holds neither, and leaves them unset as
/// Consul's do).
fn refresh(api: &ApiState) {
    let m = global();
    m.gossip_health_score
        .set(i64::from(api.lan.gossip().health_score()));
    let Some(node) = api.cluster.server() else {
        return;
    };
    {
        let d = node.store().read();
        let mut by_state: BTreeMap<&str, i64> =
            [status::PASSING, status::WARNING, status::CRITICAL]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        for c in d.all_checks() {
            if let Some(n) = by_state.get_mut(c.status.as_str()) {
                *n += 1;
            }
        }
        for (state, n) in by_state {
            m.checks
                .get_or_create(&crate::metrics::StateLabels {
                    state: state.to_string(),
                })
                .set(n);
        }
        m.catalog_services.set(d.service_names().len() as i64);
        m.catalog_nodes.set(d.nodes.len() as i64);
    }
    let raft = node.status();
    m.raft_applied_index.set(raft.applied_index as i64);
    m.raft_leader.set(i64::from(raft.is_leader));
}

async fn metrics(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    refresh(&api);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, global().registry())
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    match ctx.params.get("format") {
        Some("prometheus") => Ok((
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response()),
        None | Some("") => Ok(Json(summary(&text)).into_response()),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown metrics format {other:?}: want prometheus or none"
        ))),
    }
}

/// One sample line of the Prometheus text format: name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, Map<String, Value>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, Map::new()),
        Some((name, rest)) => {
            let mut labels = Map::new();
            for pair in rest.trim_end_matches('}').split("\",") {
                let (k, v) = pair.split_once("=\"")?;
                labels.insert(k.to_string(), Value::from(v.trim_end_matches('"')));
            }
            (name, labels)
        }
    };
    Some((name, labels, value))
}

/// A histogram folded to Consul's sample summary.
#[derive(Default)]
struct Sample {
    labels: Map<String, Value>,
    count: f64,
    sum: f64,
}

/// Consul's JSON metrics summary (`Gauges`, `Counters`, `Samples`) built
/// from the Prometheus text: gauges and counters as they are, histograms as
/// samples with their count, sum and mean. Names use dots, as Consul's do.
fn summary(text: &str) -> Value {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let (mut gauges, mut counters) = (Vec::new(), Vec::new());
    let mut samples: BTreeMap<(String, String), Sample> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, mut labels, value)) = parse_sample(line) else {
            continue;
        };
        let dotted = |n: &str| n.replace('_', ".");
        if let Some(base) = name.strip_suffix("_total") {
            if types.get(base) == Some(&"counter") {
                counters.push(json!({"Name": dotted(base), "Count": value, "Sum": value,
                    "Labels": labels}));
                continue;
            }
        }
        if types.get(name) == Some(&"gauge") {
            gauges.push(json!({"Name": dotted(name), "Value": value, "Labels": labels}));
            continue;
        }
        for (suffix, is_sum) in [("_count", false), ("_sum", true)] {
            if let Some(base) = name.strip_suffix(suffix) {
                labels.remove("le");
                let key = (base.to_string(), Value::Object(labels.clone()).to_string());
                let entry = samples.entry(key).or_insert_with(|| Sample {
                    labels: labels.clone(),
                    ..Sample::default()
                });
                if is_sum {
                    entry.sum = value;
                } else {
                    entry.count = value;
                }
            }
        }
    }
    let samples: Vec<Value> = samples
        .into_iter()
        .map(|((name, _), s)| {
            let mean = if s.count > 0.0 { s.sum / s.count } else { 0.0 };
            json!({"Name": name.replace('_', "."), "Count": s.count, "Sum": s.sum, "Mean": mean,
                "Labels": s.labels})
        })
        .collect();
    json!({
        "Timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP mesh_raft_applies Raft writes applied.\n\
        # TYPE mesh_raft_applies counter\n\
        mesh_raft_applies_total 7\n\
        # TYPE mesh_raft_leader gauge\n\
        mesh_raft_leader 1\n\
        # TYPE mesh_http_request_seconds histogram\n\
        mesh_http_request_seconds_sum{method=\"GET\",path=\"/v1/kv/{*key}\"} 0.5\n\
        mesh_http_request_seconds_count{method=\"GET\",path=\"/v1/kv/{*key}\"} 4\n\
        mesh_http_request_seconds_bucket{le=\"0.001\",method=\"GET\",path=\"/v1/kv/{*key}\"} 1\n\
        # EOF\n";

    #[test]
    fn the_summary_has_consuls_shape() {
        let v = summary(TEXT);
        assert_eq!(v["Counters"][0]["Name"], "mesh.raft.applies");
        assert_eq!(v["Counters"][0]["Count"], 7.0);
        assert_eq!(v["Gauges"][0]["Name"], "mesh.raft.leader");
        assert_eq!(v["Gauges"][0]["Value"], 1.0);
        let s = &v["Samples"][0];
        assert_eq!(s["Name"], "mesh.http.request.seconds");
        assert_eq!(s["Count"], 4.0);
        assert_eq!(s["Mean"], 0.125);
        assert_eq!(s["Labels"]["path"], "/v1/kv/{*key}");
        assert_eq!(v["Samples"].as_array().unwrap().len(), 1, "buckets fold in");
    }

    #[test]
    fn odd_lines_are_skipped() {
        for line in ["", "x", "name{broken 1", "name notanumber"] {
            assert!(parse_sample(line).is_none(), "{line}");
        }
    }
}
