//! `/v1/discovery-chain/:service`: a service's compiled discovery chain,
//! as a blocking query over the config entries. `GET` compiles as the
//! entries say; `POST` takes Consul's overrides (`OverrideProtocol`,
//! `OverrideConnectTimeout`, `OverrideMeshGateway`) in its body.

use super::{Api, ApiError, ApiState, Ctx};
use crate::config_entry::service_defaults::MeshGatewayConfig;
use crate::discovery_chain::{compile, ChainEntries, CompileRequest};
use crate::state::{Topic, CONFIG_ENTRIES};
use crate::structs::ConsulDuration;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/discovery-chain/{service}", get(read).post(read_with))
}

/// The overrides a `POST` may carry.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
struct Overrides {
    override_protocol: String,
    override_connect_timeout: ConsulDuration,
    override_mesh_gateway: Option<MeshGatewayConfig>,
}

async fn read(
    State(api): Api,
    ctx: Ctx,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    chain(&api, &ctx, &service, Overrides::default()).await
}

async fn read_with(
    State(api): Api,
    ctx: Ctx,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let overrides: Overrides = super::decode_body(&body)?;
    let protocol = overrides.override_protocol.to_ascii_lowercase();
    if !protocol.is_empty() && !crate::config_entry::PROTOCOLS.contains(&protocol.as_str()) {
        return Err(ApiError::bad_request(format!(
            "OverrideProtocol: {protocol:?} is not one of tcp, http, http2, grpc"
        )));
    }
    chain(
        &api,
        &ctx,
        &service,
        Overrides {
            override_protocol: protocol,
            ..overrides
        },
    )
    .await
}

async fn chain(
    api: &ApiState,
    ctx: &Ctx,
    service: &str,
    overrides: Overrides,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let local_dc = api.agent.config().datacenter.clone();
    let dc = ctx
        .params
        .get("compile-dc")
        .filter(|d| !d.is_empty())
        .unwrap_or(&local_dc)
        .to_string();
    let (qm, compiled) = api
        .blocking(&opts, &[Topic::Exact(CONFIG_ENTRIES.into())], |d| {
            let trust_domain =
                d.ca.config
                    .as_ref()
                    .map(|c| c.trust_domain())
                    .unwrap_or_default();
            let entries = ChainEntries::from_state(d);
            let compiled = compile(&CompileRequest {
                service,
                datacenter: &dc,
                trust_domain: &trust_domain,
                override_protocol: Some(overrides.override_protocol.as_str())
                    .filter(|p| !p.is_empty()),
                override_connect_timeout: Some(overrides.override_connect_timeout.0)
                    .filter(|t| !t.is_zero()),
                entries: &entries,
            });
            (d.index(CONFIG_ENTRIES), compiled)
        })
        .await?;
    let mut compiled = compiled.map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(mg) = overrides.override_mesh_gateway.filter(|m| !m.is_default()) {
        for t in compiled.targets.values_mut() {
            t.mesh_gateway = mg.clone();
        }
    }
    Ok(qm.json(&json!({ "Chain": compiled })))
}
