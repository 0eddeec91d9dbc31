//! `/v1/session/*`: create, destroy, renew and list sessions.

use super::{decode_body, Api, ApiError, ApiState, Ctx, QueryOptions};
use crate::raft::{now_ms, Command};
use crate::state::{table, Topic};
use crate::structs::{behavior, ConsulDuration, Session, SERF_HEALTH_CHECK};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// The shortest and longest TTL Consul accepts.
const MIN_TTL: Duration = Duration::from_secs(10);
const MAX_TTL: Duration = Duration::from_secs(86400);

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/destroy/{id}", put(destroy))
        .route("/v1/session/renew/{id}", put(renew))
        .route("/v1/session/info/{id}", get(info))
        .route("/v1/session/node/{node}", get(node))
        .route("/v1/session/list", get(list))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateRequest {
    name: String,
    node: String,
    lock_delay: Option<ConsulDuration>,
    behavior: String,
    #[serde(rename = "TTL")]
    ttl: Option<ConsulDuration>,
    checks: Option<Vec<String>>,
    node_checks: Option<Vec<String>>,
    service_checks: Option<Vec<crate::structs::ServiceCheckRef>>,
}

async fn create(State(api): Api, _ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateRequest = decode_body(&body)?;
    let ttl = req.ttl.unwrap_or_default();
    if !ttl.is_zero() && (ttl.0 < MIN_TTL || ttl.0 > MAX_TTL) {
        return Err(ApiError::bad_request(format!(
            "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
            ttl.0.as_secs_f64()
        )));
    }
    // serfHealth stays unless node checks are given (ServiceChecks alone keep it).
    let explicit_checks = req.checks.is_some() || req.node_checks.is_some();
    let mut node_checks: Vec<String> = req.node_checks.unwrap_or_default();
    node_checks.extend(req.checks.unwrap_or_default());
    if !explicit_checks {
        node_checks.push(SERF_HEALTH_CHECK.to_string());
    }
    let session = Session {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name,
        node: if req.node.is_empty() {
            api.agent.config().node_name.clone()
        } else {
            req.node
        },
        lock_delay: req
            .lock_delay
            .unwrap_or(ConsulDuration(Duration::from_secs(15))),
        behavior: if req.behavior.is_empty() {
            behavior::RELEASE.to_string()
        } else {
            req.behavior
        },
        ttl,
        node_checks,
        service_checks: req.service_checks,
        raft: Default::default(),
    };
    let id = session.id.clone();
    api.write(Command::SessionCreate { session }).await?;
    api.server()?.sessions.reset(&id, ttl.0);
    Ok(Json(json!({ "ID": id })).into_response())
}

async fn destroy(State(api): Api, _ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    api.write(Command::SessionDestroy {
        id: id.clone(),
        now_ms: now_ms(),
    })
    .await?;
    api.server()?.sessions.cancel(&id);
    Ok(Json(true).into_response())
}

async fn renew(State(api): Api, _ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    // A default read: on a follower it first catches up with the leader, so
    // a session just created through another server is found.
    let (qm, found) = api
        .blocking(
            &QueryOptions::default(),
            &[Topic::Exact(table::SESSIONS.into())],
            |d| (d.index(table::SESSIONS), d.sessions.get(&id).cloned()),
        )
        .await?;
    let Some(session) = found else {
        return Err(ApiError::not_found(format!("Session id '{id}' not found")));
    };
    api.server()?.sessions.reset(&id, session.ttl.0);
    Ok(qm.json(&[session]))
}

async fn info(State(api): Api, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, out) = api
        .blocking(&opts, &[Topic::Exact(table::SESSIONS.into())], |d| {
            let s: Vec<Session> = d.sessions.get(&id).cloned().into_iter().collect();
            (d.index(table::SESSIONS), s)
        })
        .await?;
    Ok(qm.json(&out))
}

async fn node(State(api): Api, ctx: Ctx, Path(node): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, out) = api
        .blocking(&opts, &[Topic::Exact(table::SESSIONS.into())], |d| {
            (d.index(table::SESSIONS), d.node_sessions(&node))
        })
        .await?;
    Ok(qm.json(&out))
}

async fn list(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, out) = api
        .blocking(&opts, &[Topic::Exact(table::SESSIONS.into())], |d| {
            let all: Vec<Session> = d.sessions.values().cloned().collect();
            (d.index(table::SESSIONS), all)
        })
        .await?;
    Ok(qm.json(&out))
}
