//! `/v1/internal/ui/*`: the summaries Consul's web UI reads.

use super::{apply_filter, Api, ApiError, ApiState, Ctx};
use crate::state::{table, StateData, Topic};
use crate::structs::status;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/internal/ui/nodes", get(nodes))
        .route("/v1/internal/ui/services", get(services))
}

const CATALOG: [&str; 3] = [table::NODES, table::SERVICES, table::CHECKS];

fn catalog_topics() -> Vec<Topic> {
    CATALOG
        .iter()
        .map(|t| Topic::Exact(t.to_string()))
        .collect()
}

/// Every node with its services and checks (Consul's `NodeDump`).
fn node_dump(d: &StateData) -> Vec<Value> {
    d.nodes
        .values()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            let services: Vec<_> = d
                .services
                .get(&n.node)
                .map(|s| s.values().collect())
                .unwrap_or_default();
            v["Services"] = json!(services);
            v["Checks"] = json!(d.node_checks(&n.node));
            v
        })
        .collect()
}

async fn nodes(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, dump) = api
        .blocking(&opts, &catalog_topics(), |d| {
            (d.max_index(&CATALOG), node_dump(d))
        })
        .await?;
    Ok(qm.json(&apply_filter(dump, opts.filter.as_deref()).await?))
}

/// One row per service name: instances, nodes, tags and check counts.
fn service_summaries(d: &StateData) -> Vec<Value> {
    #[derive(Default)]
    struct Summary {
        kind: String,
        tags: Vec<String>,
        nodes: Vec<String>,
        instances: usize,
        counts: BTreeMap<&'static str, usize>,
    }
    let mut by_name: BTreeMap<String, Summary> = BTreeMap::new();
    for (node, svc) in d.all_instances() {
        let s = by_name.entry(svc.service.clone()).or_default();
        s.kind = svc.kind.clone();
        s.instances += 1;
        if !s.nodes.contains(&node.node) {
            s.nodes.push(node.node.clone());
        }
        for t in &svc.tags {
            if !s.tags.contains(t) {
                s.tags.push(t.clone());
            }
        }
        let checks = d
            .checks
            .get(&node.node)
            .into_iter()
            .flat_map(|c| c.values());
        for c in checks.filter(|c| c.service_id.is_empty() || c.service_id == svc.id) {
            let key = match c.status.as_str() {
                status::PASSING => status::PASSING,
                status::WARNING => status::WARNING,
                _ => status::CRITICAL,
            };
            *s.counts.entry(key).or_default() += 1;
        }
    }
    by_name
        .into_iter()
        .map(|(name, s)| {
            json!({
                "Kind": s.kind,
                "Name": name,
                "Datacenter": d.nodes.values().next().map(|n| n.datacenter.clone()).unwrap_or_default(),
                "Tags": s.tags,
                "Nodes": s.nodes,
                "InstanceCount": s.instances,
                "ChecksPassing": s.counts.get(status::PASSING).copied().unwrap_or(0),
                "ChecksWarning": s.counts.get(status::WARNING).copied().unwrap_or(0),
                "ChecksCritical": s.counts.get(status::CRITICAL).copied().unwrap_or(0),
                "ExternalSources": [],
                "ConnectedWithProxy": false,
                "ConnectedWithGateway": false,
            })
        })
        .collect()
}

async fn services(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, summaries) = api
        .blocking(&opts, &catalog_topics(), |d| {
            (d.max_index(&CATALOG), service_summaries(d))
        })
        .await?;
    Ok(qm.json(&apply_filter(summaries, opts.filter.as_deref()).await?))
}
