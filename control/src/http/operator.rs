//! `/v1/operator/raft/*` and `/v1/operator/autopilot/health`: the Raft
//! configuration, removing a peer, and server health as the leader sees it.

use super::{Api, ApiError, ApiState, Ctx};
use crate::server::membership::MemberStatus;
use axum::extract::State;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A server is unhealthy once the leader has not heard from it for this
/// long (Consul's `LastContactThreshold`, scaled to our heartbeat).
const LAST_CONTACT_THRESHOLD_MS: u64 = 1000;

/// ... or once it trails the leader by more entries than this (Consul's
/// `MaxTrailingLogs`).
const MAX_TRAILING_LOGS: u64 = 250;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/operator/raft/configuration", get(configuration))
        .route("/v1/operator/raft/peer", delete(remove_peer))
        .route("/v1/operator/autopilot/health", get(health))
}

async fn configuration(State(api): Api, _ctx: Ctx) -> Result<Json<Value>, ApiError> {
    let servers: Vec<Value> = api
        .raft()?
        .configuration()
        .into_iter()
        .map(|s| {
            json!({
                "ID": s.node.node_id,
                "Node": s.node.name,
                "Address": s.node.addr,
                "Leader": s.leader,
                "ProtocolVersion": "3",
                "Voter": s.voter,
            })
        })
        .collect();
    let index = api.raft()?.membership_index();
    Ok(Json(json!({ "Servers": servers, "Index": index })))
}

async fn remove_peer(State(api): Api, ctx: Ctx) -> Result<(), ApiError> {
    let id = ctx.params.get("id").filter(|v| !v.is_empty());
    let address = ctx.params.get("address").filter(|v| !v.is_empty());
    let (what, value) = match (id, address) {
        (Some(id), None) => ("id", id.to_string()),
        (None, Some(addr)) => ("address", addr.to_string()),
        _ => {
            return Err(ApiError::bad_request(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ))
        }
    };
    let server = api
        .raft()?
        .configuration()
        .into_iter()
        .find(|s| match what {
            "id" => s.node.node_id == value,
            _ => s.node.addr == value,
        })
        .ok_or_else(|| {
            ApiError::internal(format!(
                "{what} {value:?} was not found in the Raft configuration"
            ))
        })?;
    api.raft()?.remove_peer(server.id).await?;
    Ok(())
}

async fn health(State(api): Api, _ctx: Ctx) -> Result<Json<Value>, ApiError> {
    let progress = api.raft()?.progress().await?;
    let members = api.lan.members().borrow().clone();
    let leader_index = progress
        .iter()
        .find(|p| p.leader)
        .map_or(0, |p| p.last_index);
    let mut healthy_voters = 0;
    let mut voters = 0;
    let servers: Vec<Value> = progress
        .iter()
        .map(|p| {
            let serf = members
                .iter()
                .find(|m| m.node_id == p.node.node_id)
                .map_or("none", |m| match m.status {
                    MemberStatus::Alive => "alive",
                    MemberStatus::Failed => "failed",
                    MemberStatus::Left => "left",
                });
            let healthy = serf == "alive"
                && p.last_contact_ms
                    .is_some_and(|ms| ms <= LAST_CONTACT_THRESHOLD_MS)
                && p.last_index + MAX_TRAILING_LOGS >= leader_index;
            if p.voter {
                voters += 1;
                healthy_voters += usize::from(healthy);
            }
            json!({
                "ID": p.node.node_id,
                "Name": p.node.name,
                "Address": p.node.addr,
                "SerfStatus": serf,
                "Version": crate::VERSION,
                "Leader": p.leader,
                "LastContact": p.last_contact_ms.map_or("never".to_string(), |ms| {
                    if ms == 0 { "0s".to_string() } else { format!("{ms}ms") }
                }),
                "LastTerm": p.term,
                "LastIndex": p.last_index,
                "Healthy": healthy,
                "Voter": p.voter,
            })
        })
        .collect();
    let quorum = voters / 2 + 1;
    Ok(Json(json!({
        "Healthy": healthy_voters == voters,
        "FailureTolerance": healthy_voters.saturating_sub(quorum),
        "Servers": servers,
    })))
}
