//! `/v1/status/*`: the Raft leader and peers.

use super::{Api, ApiError, ApiState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

async fn leader(State(api): Api) -> Result<Json<String>, ApiError> {
    Ok(Json(api.raft()?.leader().unwrap_or_default()))
}

async fn peers(State(api): Api) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(api.raft()?.peers()))
}
