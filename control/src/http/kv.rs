//! `/v1/kv/*`: read, write, lock and delete keys.

use super::{Api, ApiError, ApiState, Ctx, QueryMeta};
use crate::raft::admit::MAX_VALUE_SIZE;
use crate::raft::{now_ms, Command, CommandResult};
use crate::state::Topic;
use crate::structs::{DirEntry, KvOp, RaftIndex};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
}

async fn get_root(state: Api, ctx: Ctx) -> Result<Response, ApiError> {
    read(state, ctx, String::new()).await
}

async fn get_key(state: Api, ctx: Ctx, Path(key): Path<String>) -> Result<Response, ApiError> {
    read(state, ctx, key).await
}

async fn put_root(_ctx: Ctx) -> ApiError {
    ApiError::bad_request("Missing key name")
}

async fn put_key(
    State(api): Api,
    ctx: Ctx,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_VALUE_SIZE {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
                body.len()
            ),
        });
    }
    let p = &ctx.params;
    let mut entry = DirEntry {
        key,
        flags: p.u64("flags")?.unwrap_or(0),
        value: Some(body.to_vec()),
        ..Default::default()
    };
    // With both, `release` wins, as in Consul's handler.
    let op = if let Some(session) = p.get("release") {
        entry.session = session.to_string();
        KvOp::Unlock
    } else if let Some(session) = p.get("acquire") {
        entry.session = session.to_string();
        KvOp::Lock
    } else if let Some(cas) = p.u64("cas")? {
        entry.raft = RaftIndex {
            create_index: 0,
            modify_index: cas,
        };
        KvOp::Cas
    } else {
        KvOp::Set
    };
    apply(&api, op, entry).await
}

async fn delete_root(state: Api, ctx: Ctx) -> Result<Response, ApiError> {
    delete(state, ctx, String::new()).await
}

async fn delete_key(state: Api, ctx: Ctx, Path(key): Path<String>) -> Result<Response, ApiError> {
    delete(state, ctx, key).await
}

async fn delete(State(api): Api, ctx: Ctx, key: String) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let mut entry = DirEntry {
        key,
        ..Default::default()
    };
    let op = if p.flag("recurse") {
        KvOp::DeleteTree
    } else if let Some(cas) = p.u64("cas")? {
        entry.raft.modify_index = cas;
        KvOp::DeleteCas
    } else {
        if entry.key.is_empty() {
            return Err(ApiError::bad_request("Missing key name"));
        }
        KvOp::Delete
    };
    apply(&api, op, entry).await
}

async fn apply(api: &ApiState, op: KvOp, entry: DirEntry) -> Result<Response, ApiError> {
    let (_, result) = api
        .cluster
        .write(Command::Kv {
            op,
            entry,
            now_ms: now_ms(),
        })
        .await?;
    match result {
        CommandResult::Bool(ok) => Ok(Json(ok).into_response()),
        CommandResult::Error(crate::state::StateError::InvalidSession(id)) => {
            Err(ApiError::internal(format!("invalid session {id:?}")))
        }
        CommandResult::Error(e) => Err(e.into()),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}

async fn read(State(api): Api, ctx: Ctx, key: String) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let p = &ctx.params;
    if p.flag("keys") {
        let sep = p.get("separator").unwrap_or("").to_string();
        let (qm, keys) = api
            .blocking(&opts, &[Topic::KvPrefix(key.clone())], |d| {
                d.kv_keys(&key, &sep)
            })
            .await?;
        return Ok(found_or_404(qm, keys.is_empty(), &keys));
    }
    if p.flag("recurse") {
        let (qm, entries) = api
            .blocking(&opts, &[Topic::KvPrefix(key.clone())], |d| d.kv_list(&key))
            .await?;
        return Ok(found_or_404(qm, entries.is_empty(), &entries));
    }
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let (qm, entry) = api
        .blocking(&opts, &[Topic::KvPrefix(key.clone())], |d| d.kv_get(&key))
        .await?;
    let Some(entry) = entry else {
        return Ok(found_or_404::<()>(qm, true, &()));
    };
    if p.flag("raw") {
        let mut resp = (
            [
                ("content-type", "application/octet-stream"),
                ("x-content-type-options", "nosniff"),
            ],
            entry.value.unwrap_or_default(),
        )
            .into_response();
        qm.apply(&mut resp);
        return Ok(resp);
    }
    Ok(qm.json(&[entry]))
}

fn found_or_404<T: serde::Serialize>(qm: QueryMeta, empty: bool, body: &T) -> Response {
    if empty {
        let mut resp = StatusCode::NOT_FOUND.into_response();
        qm.apply(&mut resp);
        return resp;
    }
    qm.json(body)
}
