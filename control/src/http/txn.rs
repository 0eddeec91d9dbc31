//! `/v1/txn`: several KV operations, all or nothing.

use super::{decode_body, Api, ApiError, ApiState, Ctx};
use crate::raft::admit::{MAX_TXN_OPS, MAX_TXN_VALUES};
use crate::raft::{now_ms, Command, CommandResult};
use crate::state::TxnOp;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use serde_json::json;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/txn", put(txn))
}

async fn txn(State(api): Api, _ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    // Consul's `txn_max_req_len`: the body bounds the values it carries.
    if body.len() > MAX_TXN_VALUES {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Request body({} bytes) too large, max size: {MAX_TXN_VALUES} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#txn_max_req_len.",
                body.len()
            ),
        });
    }
    let ops: Vec<TxnOp> = decode_body(&body)?;
    if ops.len() > MAX_TXN_OPS {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                ops.len()
            ),
        });
    }
    let (index, result) = api
        .cluster
        .write(Command::Txn {
            ops,
            now_ms: now_ms(),
        })
        .await?;
    match result {
        CommandResult::Txn(Ok(results)) => {
            let mut resp = Json(json!({ "Results": results, "Errors": null })).into_response();
            api.meta(index).apply(&mut resp);
            Ok(resp)
        }
        CommandResult::Txn(Err(errors)) => Ok((
            StatusCode::CONFLICT,
            Json(json!({ "Results": null, "Errors": errors })),
        )
            .into_response()),
        other => Err(ApiError::internal(format!("unexpected result {other:?}"))),
    }
}
