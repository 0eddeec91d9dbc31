//! Consul's HTTP API under `/v1/`: one module per endpoint group.
//!
//! Every handler resolves the request's datacenter and token first
//! ([`Ctx`]), reads through [`ApiState::blocking`] so clients may watch, and
//! writes only through Raft.

mod agent;
mod blocking;
mod catalog;
mod config;
mod connect_ca;
mod discovery_chain;
mod error;
mod filter;
mod forward;
mod health;
mod intentions;
mod internal;
mod kv;
mod members;
mod metrics;
mod operator;
mod prometheus_sd;
mod proxy_config;
mod query;
pub mod serve;
mod session;
mod snapshot;
mod status;
mod txn;

pub use blocking::QueryMeta;
pub use error::ApiError;
pub use forward::client_router;
pub use query::{Consistency, Params, QueryOptions};

use filter::{apply_filter, parse_filter, retain_matching};

use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::raft::{Command, CommandResult, RaftNode};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Router;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// How this agent reaches the replicated state: a server's Raft node,
    /// or a client agent's link to the servers.
    pub cluster: Cluster,
    /// What only a server has (`None` on a client agent).
    pub server: Option<ServerApi>,
    /// The local agent.
    pub agent: Arc<Agent>,
    /// The agent's leaf certificates.
    pub leaves: Arc<crate::agent::leaf::LeafCache>,
    /// The configs the agent pushes to its proxies.
    pub proxies: crate::agent::proxycfg::ProxyConfigs,
    /// The LAN gossip pool.
    pub lan: crate::lan::Lan,
}

/// The leader duties a server's API reaches.
#[derive(Clone)]
pub struct ServerApi {
    /// Session TTL timers.
    pub sessions: Arc<crate::server::SessionTimers>,
    /// The certificate authority.
    pub ca: Arc<crate::server::ca::CaManager>,
}

/// The request's context: its query parameters, its target datacenter and its
/// ACL token. Federation forwards on `dc`; ACLs turn `token` into an
/// authorizer. Until then every token may do everything.
pub struct Ctx {
    /// The decoded query parameters.
    pub params: Params,
    /// The datacenter the request is for.
    pub dc: String,
    /// The ACL token, if any.
    pub token: Option<String>,
}

impl Ctx {
    /// The read options of this request.
    pub fn query(&self) -> Result<QueryOptions, ApiError> {
        QueryOptions::from_params(&self.params)
    }
}

impl FromRequestParts<ApiState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let params = Params::parse(parts.uri.query().unwrap_or(""));
        let local = &state.agent.config().datacenter;
        let dc = match params.get("dc") {
            Some(dc) if !dc.is_empty() => dc.to_string(),
            _ => local.clone(),
        };
        if &dc != local {
            return Err(ApiError::internal("No path to datacenter"));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let token = header("X-Consul-Token")
            .or_else(|| {
                header("Authorization")
                    .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
            })
            .or_else(|| params.get("token").map(str::to_string))
            .filter(|t| !t.is_empty());
        Ok(Ctx { params, dc, token })
    }
}

/// The answer of an endpoint only servers serve, asked of a client agent
/// (whose router forwards such requests, so this is a wiring mistake).
fn not_a_server() -> ApiError {
    ApiError::internal("this endpoint is served by server agents")
}

impl ApiState {
    /// The server's Raft node and store, for endpoints only servers serve.
    pub fn raft(&self) -> Result<&RaftNode, ApiError> {
        self.cluster.server().ok_or_else(not_a_server)
    }

    /// The server's leader duties, for endpoints only servers serve.
    pub fn server(&self) -> Result<&ServerApi, ApiError> {
        self.server.as_ref().ok_or_else(not_a_server)
    }

    /// Commits a command, turning a refusal into a 400/404.
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), ApiError> {
        let (index, result) = self.cluster.write(cmd).await?;
        if let CommandResult::Error(e) = result {
            return Err(e.into());
        }
        Ok((index, result))
    }
}

/// Decodes a JSON body with keys matched case-insensitively, as Consul's
/// decoder does; 400 with the reason if it is malformed.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bad = |e: serde_json::Error| ApiError::bad_request(format!("Request decode failed: {e}"));
    let value: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).map_err(bad)?
    };
    serde_path_to_error::deserialize(crate::structs::keys::normalize(value)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::bad_request(format!("Request decode failed: {path}: {}", e.inner()))
    })
}

/// The whole `/v1` API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(internal::routes())
        .merge(config::routes())
        .merge(connect_ca::routes())
        .merge(discovery_chain::routes())
        .merge(intentions::routes())
        .merge(proxy_config::routes())
        .merge(kv::routes())
        .merge(session::routes())
        .merge(snapshot::routes())
        .merge(status::routes())
        .merge(operator::routes())
        .merge(members::routes())
        .merge(txn::routes())
        .merge(metrics::routes())
        .merge(prometheus_sd::routes())
        .fallback(|| async { ApiError::not_found("Not found") })
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Extracts the shared state (re-exported for handler signatures).
pub type Api = State<ApiState>;
