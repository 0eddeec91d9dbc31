//! `/v1/catalog/*`: register, deregister and read nodes and services.

use super::{
    apply_filter, decode_body, parse_filter, retain_matching, Api, ApiError, ApiState, Ctx,
};
use crate::raft::{now_ms, Command};
use crate::state::{table, StateData, Topic};
use crate::structs::{DeregisterRequest, Node, NodeService, RegisterRequest, ServiceNode};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/connect/{name}", get(connect))
        .route("/v1/catalog/node/{node}", get(node))
        .route("/v1/catalog/node-services/{node}", get(node_services))
}

async fn register(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let mut req: RegisterRequest = decode_body(&body)?;
    if req.datacenter.is_empty() {
        req.datacenter = ctx.dc.clone();
    }
    if let Some(svc) = req.service.as_mut() {
        if svc.id.is_empty() {
            svc.id = svc.service.clone();
        }
        svc.datacenter = req.datacenter.clone();
    }
    api.write(Command::Register {
        req: Box::new(req),
        now_ms: now_ms(),
    })
    .await?;
    Ok(Json(true).into_response())
}

async fn deregister(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let mut req: DeregisterRequest = decode_body(&body)?;
    if req.datacenter.is_empty() {
        req.datacenter = ctx.dc;
    }
    api.write(Command::Deregister {
        req,
        now_ms: now_ms(),
    })
    .await?;
    Ok(Json(true).into_response())
}

async fn datacenters(State(api): Api) -> Json<Vec<String>> {
    Json(vec![api.agent.config().datacenter.clone()])
}

/// Parses `node-meta=key:value` parameters.
pub(super) fn node_meta_filter(ctx: &Ctx) -> Vec<(String, String)> {
    ctx.params
        .all("node-meta")
        .into_iter()
        .map(|kv| match kv.split_once(':') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect()
}

/// True when the node carries every `node-meta` pair.
pub(super) fn node_meta_matches(node: &Node, want: &[(String, String)]) -> bool {
    want.iter()
        .all(|(k, v)| node.meta.get(k).is_some_and(|have| have == v))
}

async fn nodes(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let meta = node_meta_filter(&ctx);
    let (qm, nodes) = api
        .blocking(&opts, &[Topic::Exact(table::NODES.into())], |d| {
            let nodes: Vec<Node> = d
                .all_nodes()
                .into_iter()
                .filter(|n| node_meta_matches(n, &meta))
                .collect();
            (d.index(table::NODES), nodes)
        })
        .await?;
    Ok(qm.json(&apply_filter(nodes, opts.filter.as_deref()).await?))
}

async fn services(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let meta = node_meta_filter(&ctx);
    let filter = opts.filter.as_deref().map(parse_filter).transpose()?;
    let topics = [Topic::Exact(table::SERVICES.into())];
    if meta.is_empty() && filter.is_none() {
        let (qm, out) = api
            .blocking(&opts, &topics, |d| {
                (d.index(table::SERVICES), d.service_names())
            })
            .await?;
        return Ok(qm.json(&out));
    }
    // The filter runs after the read, off the async workers, not under
    // the store's lock.
    let (qm, instances) = api
        .blocking(&opts, &topics, |d| {
            (d.index(table::SERVICES), service_instances(d, &meta))
        })
        .await?;
    let kept = retain_matching(instances, filter).await?;
    Ok(qm.json(&service_tags(kept)))
}

/// Every service instance, flattened with its node, on the nodes that carry
/// every `node-meta` pair.
fn service_instances(d: &StateData, meta: &[(String, String)]) -> Vec<ServiceNode> {
    d.all_instances()
        .filter(|(n, _)| node_meta_matches(n, meta))
        .map(|(n, s)| ServiceNode::new(n, s))
        .collect()
}

/// Service names with the tags their instances carry, sorted.
fn service_tags(instances: Vec<ServiceNode>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sn in instances {
        let tags = out.entry(sn.service_name).or_default();
        for t in sn.service_tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        tags.sort();
    }
    out
}

async fn service(state: Api, ctx: Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    instances(state, ctx, name, false).await
}

async fn connect(state: Api, ctx: Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    instances(state, ctx, name, true).await
}

/// The topic a read of `name`'s instances (or proxies) watches.
pub(super) fn instances_topic(name: &str, connect: bool) -> Topic {
    Topic::Exact(if connect {
        table::connect(name)
    } else {
        table::service(name)
    })
}

/// The index a read of `name`'s instances (or proxies) reports.
pub(super) fn instances_index(d: &StateData, name: &str, connect: bool) -> u64 {
    if connect {
        d.connect_index(name)
    } else {
        d.service_index(name)
    }
}

/// Instances of `name` (or, with `connect`, its proxies) flattened with nodes.
async fn instances(
    State(api): Api,
    ctx: Ctx,
    name: String,
    connect: bool,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let tags = ctx.params.all("tag");
    let meta = node_meta_filter(&ctx);
    let (qm, nodes) = api
        .blocking(&opts, &[instances_topic(&name, connect)], |d| {
            let out: Vec<_> = d
                .service_nodes(&name, &tags, connect)
                .into_iter()
                .filter(|sn| meta.iter().all(|(k, v)| sn.node_meta.get(k) == Some(v)))
                .collect();
            (instances_index(d, &name, connect), out)
        })
        .await?;
    Ok(qm.json(&apply_filter(nodes, opts.filter.as_deref()).await?))
}

fn node_read(d: &StateData, node: &str) -> (u64, Option<(Node, Vec<NodeService>)>) {
    (
        d.max_index(&[table::NODES, table::SERVICES]),
        d.node_services(node),
    )
}

async fn node(State(api): Api, ctx: Ctx, Path(node): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, found) = api
        .blocking(&opts, &[Topic::Exact(table::node(&node))], |d| {
            node_read(d, &node)
        })
        .await?;
    let body = match found {
        None => serde_json::Value::Null,
        Some((n, svcs)) => {
            let svcs = apply_filter(svcs, opts.filter.as_deref()).await?;
            let by_id: serde_json::Map<String, serde_json::Value> = svcs
                .into_iter()
                .map(|s| (s["ID"].as_str().unwrap_or_default().to_string(), s))
                .collect();
            json!({ "Node": n, "Services": by_id })
        }
    };
    Ok(qm.json(&body))
}

async fn node_services(
    State(api): Api,
    ctx: Ctx,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, found) = api
        .blocking(&opts, &[Topic::Exact(table::node(&node))], |d| {
            node_read(d, &node)
        })
        .await?;
    let body = match found {
        None => serde_json::Value::Null,
        Some((n, svcs)) => json!({
            "Node": n,
            "Services": apply_filter(svcs, opts.filter.as_deref()).await?,
        }),
    };
    Ok(qm.json(&body))
}
