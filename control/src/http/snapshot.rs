//! `/v1/snapshot`: save (`GET`) and restore (`PUT`) the whole state as a
//! verified archive ([`crate::snapshot`]).

use super::{Api, ApiError, ApiState, Ctx};
use crate::raft::Command;
use crate::snapshot::{self, SnapshotError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::SystemTime;

/// The largest archive `PUT /v1/snapshot` accepts; other routes keep
/// axum's default limit.
pub const MAX_RESTORE_BODY: usize = 256 * 1024 * 1024;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/snapshot", get(save).put(restore))
        .layer(DefaultBodyLimit::max(MAX_RESTORE_BODY))
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        if e.is_bad_archive() {
            ApiError::bad_request(format!("Invalid snapshot: {e}"))
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

/// Every table, read under one guard after the consistency barrier (or
/// without it for `?stale`), as an archive; `X-Consul-Index` is the index
/// of the last write it holds.
async fn save(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    if !ctx.params.flag("stale") {
        api.raft()?.barrier().await?;
    }
    let term = api.raft()?.term();
    let (index, state) = {
        let data = api.raft()?.store().read();
        (data.last_index(), snapshot::state_json(&data)?)
    };
    let (meta, bytes) =
        tokio::task::spawn_blocking(move || snapshot::pack(&state, index, term, SystemTime::now()))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    let mut resp = (
        [
            ("content-type", "application/x-gzip"),
            ("x-content-type-options", "nosniff"),
        ],
        bytes,
    )
        .into_response();
    api.meta(meta.index.max(1)).apply(&mut resp);
    Ok(resp)
}

/// Verifies the archive completely, then replaces every table through one
/// Raft entry, so every server applies the same restore. Nothing is
/// proposed unless the archive is sound.
async fn restore(State(api): Api, _ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let snap = tokio::task::spawn_blocking(move || snapshot::read(&body))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(
        id = %snap.meta.id,
        index = snap.meta.index,
        "restoring snapshot"
    );
    api.write(Command::Restore {
        data: Box::new(snap.data),
    })
    .await?;
    // Restored sessions with a TTL need their timers (a leader duty).
    api.server()?.sessions.reset_all();
    Ok(([("content-type", "text/plain; charset=utf-8")], "").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn bad_archives_are_400_with_the_reason() {
        let e: ApiError = SnapshotError::ChecksumMismatch(snapshot::STATE).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "Invalid snapshot: checksum mismatch for state.json: the archive was modified or damaged"
        );
        let e: ApiError = SnapshotError::Write("disk full".into()).into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
