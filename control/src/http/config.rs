//! `/v1/config`: write, read, list and delete config entries.

use super::query::Consistency;
use super::{Api, ApiError, ApiState, Ctx};
use crate::config_entry::{self, ConfigEntry};
use crate::discovery_chain::{validate_write, Change};
use crate::raft::{Command, CommandResult};
use crate::state::{config_topic, StateData, Topic};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::Value;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/config", put(write))
        .route("/v1/config/{kind}", get(list))
        .route("/v1/config/{kind}/{name}", get(read).delete(delete))
}

fn known(kind: &str) -> Result<(), ApiError> {
    if config_entry::is_known_kind(kind) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid config entry kind: {kind}"
        )))
    }
}

async fn bool_result(api: &ApiState, cmd: Command) -> Result<Response, ApiError> {
    match api.write(cmd).await?.1 {
        CommandResult::Bool(ok) => Ok(Json(ok).into_response()),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

/// Refuses a change that would break a discovery chain (or an L7
/// intention) in this datacenter, with Consul's reason. Callers catch up
/// with the leader first (`ApiState::caught_up`), so a follower judges the
/// change against what the leader had committed.
pub(super) fn check_graph(
    api: &ApiState,
    d: &StateData,
    change: Change<'_>,
) -> Result<(), ApiError> {
    validate_write(d, &api.agent.config().datacenter, change)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn write(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))?;
    let entry = config_entry::parse(value)
        .map_err(|e| ApiError::bad_request(format!("Request decoding failed: {e}")))?;
    let cas = ctx.params.u64("cas")?;
    let change = Change {
        kind: &entry.kind,
        name: &entry.name,
        entry: Some(&entry),
    };
    api.caught_up(Consistency::Default).await?;
    check_graph(&api, &api.raft()?.store().read(), change)?;
    bool_result(&api, Command::ConfigEntrySet { entry, cas }).await
}

async fn list(State(api): Api, ctx: Ctx, Path(kind): Path<String>) -> Result<Response, ApiError> {
    known(&kind)?;
    let opts = ctx.query()?;
    let (qm, entries) = api
        .blocking(&opts, &[Topic::Exact(config_topic(&kind))], |d| {
            let out: Vec<Value> = d
                .config_list(&kind)
                .into_iter()
                .map(ConfigEntry::to_json)
                .collect();
            (d.index(&config_topic(&kind)), out)
        })
        .await?;
    Ok(qm.json(&super::apply_filter(entries, opts.filter.as_deref()).await?))
}

async fn read(
    State(api): Api,
    ctx: Ctx,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known(&kind)?;
    let opts = ctx.query()?;
    let (qm, entry) = api
        .blocking(&opts, &[Topic::Exact(config_topic(&kind))], |d| {
            (
                d.index(&config_topic(&kind)),
                d.config_get(&kind, &name).map(ConfigEntry::to_json),
            )
        })
        .await?;
    match entry {
        Some(e) => Ok(qm.json(&e)),
        None => Err(ApiError::not_found(format!(
            "Config entry not found for {kind:?} / {name:?}"
        ))),
    }
}

async fn delete(
    State(api): Api,
    ctx: Ctx,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    known(&kind)?;
    let cas = ctx.params.u64("cas")?;
    let change = Change {
        kind: &kind,
        name: &name,
        entry: None,
    };
    api.caught_up(Consistency::Default).await?;
    check_graph(&api, &api.raft()?.store().read(), change)?;
    bool_result(&api, Command::ConfigEntryDelete { kind, name, cas }).await
}
