//! The LAN pool through the API: `/v1/agent/members`, `join`,
//! `force-leave`, and the gossip keyring (`/v1/operator/keyring`).

use super::{Api, ApiError, ApiState, Ctx};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use mesh_gossip::{GossipError, KeyringResponse, Member};
use serde_json::{json, Value};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/force-leave/{node}", put(force_leave))
        .route(
            "/v1/operator/keyring",
            get(keyring_list)
                .post(keyring_install)
                .put(keyring_use)
                .delete(keyring_remove),
        )
}

/// A member as Consul's API shows it.
pub(super) fn member_json(m: &Member) -> Value {
    json!({
        "Name": m.name,
        "Addr": m.addr.ip().to_string(),
        "Port": m.addr.port(),
        "Tags": m.tags,
        "Status": m.status.code(),
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

/// This agent as a member.
pub(super) fn self_member(api: &ApiState) -> Value {
    let me = api.lan.gossip().name().to_string();
    api.lan
        .gossip()
        .members()
        .iter()
        .find(|m| m.name == me)
        .map(member_json)
        .unwrap_or(Value::Null)
}

async fn members(State(api): Api) -> Json<Value> {
    let mut all = api.lan.gossip().members();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Json(Value::Array(all.iter().map(member_json).collect()))
}

async fn join(State(api): Api, Path(addr): Path<String>) -> Result<(), ApiError> {
    api.lan
        .gossip()
        .join(&[addr])
        .await
        .map(|_| ())
        .map_err(|e| ApiError::internal(e.to_string()))
}

async fn force_leave(State(api): Api, Path(node): Path<String>) -> Result<(), ApiError> {
    api.lan
        .gossip()
        .force_leave(&node)
        .await
        .map_err(|e| match e {
            e if e.is_unknown_member() => ApiError::not_found(e.to_string()),
            e => ApiError::internal(e.to_string()),
        })
}

/// The `{"Key": "..."}` body of a keyring change.
fn key_of(body: &[u8]) -> Result<String, ApiError> {
    let v: Value = super::decode_body(body)?;
    v.get("Key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("Request body must have a \"Key\""))
}

/// Consul's keyring answer: one entry for the LAN pool.
fn keyring_json(r: &KeyringResponse) -> Value {
    let counts = |list: &[(String, usize)]| {
        list.iter()
            .map(|(k, n)| (k.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!([{
        "WAN": false,
        "Datacenter": "",
        "Segment": "",
        "Messages": r.errors,
        "Keys": counts(&r.keys),
        "PrimaryKeys": counts(&r.primary_keys),
        "NumNodes": r.num_nodes,
        "NumResp": r.num_resp,
        "NumErr": r.errors.len(),
    }])
}

fn keyring_error(e: GossipError) -> ApiError {
    match e {
        GossipError::InvalidKey(_) | GossipError::Keyring(_) => {
            ApiError::bad_request(e.to_string())
        }
        e => ApiError::internal(e.to_string()),
    }
}

async fn keyring_list(State(api): Api, _ctx: Ctx) -> Result<Json<Value>, ApiError> {
    let r = api
        .lan
        .gossip()
        .keyring_list()
        .await
        .map_err(keyring_error)?;
    Ok(Json(keyring_json(&r)))
}

/// What a keyring write does with its key.
#[derive(Clone, Copy)]
enum KeyChange {
    Install,
    Use,
    Remove,
}

/// Applies a keyring change across the pool and saves this agent's ring.
async fn change_keyring(api: &ApiState, body: &[u8], change: KeyChange) -> Result<(), ApiError> {
    let key = key_of(body)?;
    let gossip = api.lan.gossip();
    match change {
        KeyChange::Install => gossip.keyring_install(&key).await,
        KeyChange::Use => gossip.keyring_use(&key).await,
        KeyChange::Remove => gossip.keyring_remove(&key).await,
    }
    .map_err(keyring_error)?;
    api.lan.save_keyring();
    Ok(())
}

async fn keyring_install(State(api): Api, body: Bytes) -> Result<(), ApiError> {
    change_keyring(&api, &body, KeyChange::Install).await
}

async fn keyring_use(State(api): Api, body: Bytes) -> Result<(), ApiError> {
    change_keyring(&api, &body, KeyChange::Use).await
}

async fn keyring_remove(State(api): Api, body: Bytes) -> Result<(), ApiError> {
    change_keyring(&api, &body, KeyChange::Remove).await
}
