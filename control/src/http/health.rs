//! `/v1/health/*`: checks by node, service and state, and healthy instances.

use super::catalog::{instances_index, instances_topic, node_meta_filter, node_meta_matches};
use super::{apply_filter, Api, ApiError, ApiState, Ctx};
use crate::state::{table, Topic};
use crate::structs::{status, HealthCheck};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/health/node/{node}", get(node))
        .route("/v1/health/checks/{service}", get(checks))
        .route("/v1/health/service/{service}", get(service))
        .route("/v1/health/connect/{service}", get(connect))
        .route("/v1/health/state/{state}", get(state))
}

async fn node(State(api): Api, ctx: Ctx, Path(node): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, checks) = api
        .blocking(&opts, &[Topic::Exact(table::node(&node))], |d| {
            (d.index(table::CHECKS), d.node_checks(&node))
        })
        .await?;
    Ok(qm.json(&apply_filter(checks, opts.filter.as_deref()).await?))
}

async fn checks(State(api): Api, ctx: Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, checks) = api
        .blocking(&opts, &[Topic::Exact(table::service(&name))], |d| {
            (d.service_index(&name), d.service_checks(&name))
        })
        .await?;
    Ok(qm.json(&apply_filter(checks, opts.filter.as_deref()).await?))
}

async fn service(state: Api, ctx: Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    instances(state, ctx, name, false).await
}

async fn connect(state: Api, ctx: Ctx, Path(name): Path<String>) -> Result<Response, ApiError> {
    instances(state, ctx, name, true).await
}

/// Instances of `name` (or, with `connect`, its proxies) with their checks.
async fn instances(
    State(api): Api,
    ctx: Ctx,
    name: String,
    connect: bool,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let tags = ctx.params.all("tag");
    let passing = ctx.params.flag("passing");
    let meta = node_meta_filter(&ctx);
    let (qm, entries) = api
        .blocking(&opts, &[instances_topic(&name, connect)], |d| {
            let out: Vec<_> = d
                .check_service_nodes(&name, &tags, connect)
                .into_iter()
                .filter(|e| node_meta_matches(&e.node, &meta))
                .filter(|e| !passing || e.checks.iter().all(|c| c.status == status::PASSING))
                .collect();
            (instances_index(d, &name, connect), out)
        })
        .await?;
    Ok(qm.json(&apply_filter(entries, opts.filter.as_deref()).await?))
}

async fn state(State(api): Api, ctx: Ctx, Path(state): Path<String>) -> Result<Response, ApiError> {
    if state != status::ANY && !status::is_valid(&state) {
        return Err(ApiError::bad_request("Invalid check state"));
    }
    let opts = ctx.query()?;
    let (qm, checks) = api
        .blocking(&opts, &[Topic::Exact(table::CHECKS.into())], |d| {
            let out: Vec<HealthCheck> = d
                .all_checks()
                .filter(|c| state == status::ANY || c.status == state)
                .cloned()
                .collect();
            (d.index(table::CHECKS), out)
        })
        .await?;
    Ok(qm.json(&apply_filter(checks, opts.filter.as_deref()).await?))
}
