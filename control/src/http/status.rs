//! `/v1/status/*`: the Raft leader and peers.

use super::{Api, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

async fn leader(State(api): Api) -> Json<String> {
    Json(api.node.leader().unwrap_or_default())
}

async fn peers(State(api): Api) -> Json<Vec<String>> {
    Json(api.node.peers())
}
