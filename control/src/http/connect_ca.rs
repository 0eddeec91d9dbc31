//! `/v1/connect/ca/*` and the agent's `/v1/agent/connect/ca/*`: roots,
//! configuration and leaf certificates.

use super::{Api, ApiError, ApiState, Ctx};
use crate::server::ca::CaOpError;
use crate::state::{ca::CA, StateData, Topic};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mesh_ca::{CaConfiguration, IndexedCaRoots};
use serde_json::{json, Value};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/connect/ca/roots", get(roots))
        .route("/v1/agent/connect/ca/roots", get(roots))
        .route(
            "/v1/connect/ca/configuration",
            get(get_config).put(put_config),
        )
        .merge(agent_leaf_route())
}

/// The agent's own leaf endpoint, which a client agent serves too.
pub(super) fn agent_leaf_route() -> Router<ApiState> {
    Router::new().route("/v1/agent/connect/ca/leaf/{service}", get(leaf))
}

impl From<CaOpError> for ApiError {
    fn from(e: CaOpError) -> Self {
        match e {
            CaOpError::RateLimited => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
            },
            CaOpError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn with_indexes(v: Value, index: u64) -> Value {
    let mut v = v;
    if let Value::Object(m) = &mut v {
        m.insert("CreateIndex".into(), index.into());
        m.insert("ModifyIndex".into(), index.into());
    }
    v
}

/// The roots as `/v1/connect/ca/roots` shows them.
fn indexed_roots(d: &StateData) -> Value {
    let index = d.index(CA);
    let td =
        d.ca.config
            .as_ref()
            .map(|c| c.trust_domain())
            .unwrap_or_default();
    let roots = IndexedCaRoots::new(td, d.ca.roots.clone());
    let mut v = serde_json::to_value(&roots).unwrap_or_default();
    if let Some(list) = v.get_mut("Roots").and_then(Value::as_array_mut) {
        for r in list.iter_mut() {
            *r = with_indexes(r.take(), index);
        }
    }
    v
}

async fn roots(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, v) = api
        .blocking(&opts, &[Topic::Exact(CA.into())], |d| {
            (d.index(CA), indexed_roots(d))
        })
        .await?;
    if ctx.params.flag("pem") {
        let pems: Vec<String> = v["Roots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["RootCert"].as_str().map(str::to_string))
            .collect();
        let mut resp = pems.join("\n").into_response();
        qm.apply(&mut resp);
        return Ok(resp);
    }
    Ok(qm.json(&v))
}

async fn get_config(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, config) = api
        .blocking(&opts, &[Topic::Exact(CA.into())], |d| {
            (
                d.index(CA),
                d.ca.config.as_ref().map(CaConfiguration::redacted),
            )
        })
        .await?;
    let config = config.ok_or_else(|| ApiError::internal("CA is not initialized yet"))?;
    Ok(qm.json(&with_indexes(
        serde_json::to_value(config).unwrap_or_default(),
        qm.index,
    )))
}

async fn put_config(State(api): Api, body: Bytes) -> Result<Response, ApiError> {
    let config: CaConfiguration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    api.server()?.ca.set_config(config).await?;
    Ok(StatusCode::OK.into_response())
}

async fn leaf(
    State(api): Api,
    ctx: Ctx,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (index, cert) = api
        .leaves
        .get_blocking(&service, opts.min_index, opts.max_wait)
        .await?;
    let mut v = serde_json::to_value(cert).unwrap_or_default();
    v = with_indexes(v, index);
    if let Value::Object(m) = &mut v {
        m.entry("PrivateKeyPEM").or_insert(json!(""));
    }
    Ok(api.meta(index).json(&v))
}
