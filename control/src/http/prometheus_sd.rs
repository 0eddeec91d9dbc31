//! `/v1/agent/prometheus-sd`: the catalog as a Prometheus HTTP service
//! discovery (`http_sd_configs`) target list, labelled exactly as
//! Prometheus's `consul_sd_configs` labels its targets.
//!
//! A mesh extension, not a Consul endpoint: some Prometheus builds (Debian's
//! 2.42 among them) ship without Consul discovery, and with this endpoint
//! the relabelling written for `consul_sd_configs` works unchanged. Query
//! parameters `service` (repeatable), `tag` (repeatable, all must match)
//! and `passing` narrow the list as Consul SD's `services`, `tags` and
//! health filter do.

use super::{Api, ApiError, ApiState, Ctx};
use crate::structs::{status, CheckServiceNode};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/agent/prometheus-sd", get(targets))
}

/// A label name as Prometheus allows it: `[a-zA-Z0-9_]`, others become `_`.
fn label_name(prefix: &str, key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}{clean}")
}

/// One target group, labelled as Consul SD labels it.
fn group(e: &CheckServiceNode, dc: &str) -> Value {
    let svc = &e.service;
    let address = e.address();
    let mut labels = Map::new();
    let mut put = |k: String, v: &str| {
        labels.insert(k, Value::from(v));
    };
    put("__meta_consul_address".into(), &e.node.address);
    put("__meta_consul_dc".into(), dc);
    put("__meta_consul_health".into(), e.aggregate_status());
    put("__meta_consul_node".into(), &e.node.node);
    put("__meta_consul_partition".into(), "");
    put("__meta_consul_service".into(), &svc.service);
    put("__meta_consul_service_address".into(), &svc.address);
    put("__meta_consul_service_id".into(), &svc.id);
    put("__meta_consul_service_port".into(), &svc.port.to_string());
    put(
        "__meta_consul_tags".into(),
        &format!(",{},", svc.tags.join(",")),
    );
    for (k, v) in &e.node.meta {
        put(label_name("__meta_consul_metadata_", k), v);
    }
    for (k, v) in &svc.meta {
        put(label_name("__meta_consul_service_metadata_", k), v);
    }
    for (k, v) in &e.node.tagged_addresses {
        put(label_name("__meta_consul_tagged_address_", k), v);
    }
    json!({"targets": [format!("{address}:{}", svc.port)], "labels": labels})
}

async fn targets(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let services = ctx.params.all("service");
    let tags = ctx.params.all("tag");
    let passing = ctx.params.flag("passing");
    api.caught_up(ctx.query()?.consistency).await?;
    let d = api.raft()?.store().read();
    let names: Vec<String> = if services.is_empty() {
        d.service_names().into_keys().collect()
    } else {
        services
    };
    let groups: Vec<Value> = names
        .iter()
        .flat_map(|name| d.check_service_nodes(name, &tags, false))
        .filter(|e| !passing || e.aggregate_status() == status::PASSING)
        .map(|e| group(&e, &ctx.dc))
        .collect();
    Ok(Json(groups).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{HealthCheck, Node, NodeService};

    #[test]
    fn labels_follow_consul_sd() {
        let e = CheckServiceNode {
            node: Node {
                node: "n1".into(),
                address: "10.0.0.1".into(),
                meta: [("rack-id".to_string(), "r1".to_string())].into(),
                ..Node::default()
            },
            service: NodeService {
                id: "web-1".into(),
                service: "web".into(),
                port: 9102,
                tags: vec!["a".into(), "b".into()],
                meta: [("metrics.port".to_string(), "9102".to_string())].into(),
                ..NodeService::default()
            },
            checks: vec![HealthCheck {
                status: status::WARNING.into(),
                ..HealthCheck::default()
            }],
        };
        let g = group(&e, "dc1");
        assert_eq!(g["targets"], json!(["10.0.0.1:9102"]));
        let l = &g["labels"];
        assert_eq!(l["__meta_consul_service"], "web");
        assert_eq!(l["__meta_consul_tags"], ",a,b,");
        assert_eq!(l["__meta_consul_health"], "warning");
        assert_eq!(l["__meta_consul_metadata_rack_id"], "r1");
        assert_eq!(l["__meta_consul_service_metadata_metrics_port"], "9102");
        assert_eq!(l["__meta_consul_dc"], "dc1");
    }
}
