//! `/v1/agent/*`: this agent's services, checks, maintenance, reload and leave.

use super::{Api, ApiError, ApiState, Ctx};
use crate::agent::{AgentError, CheckDefinition, ServiceDefinition, Source};
use crate::structs::{aggregate_status, status, HealthCheck};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        )
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/check/{verb}/{*id}", put(check_ttl))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/reload", put(reload))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/health/service/name/{name}", get(health_by_name))
        .route("/v1/agent/health/service/id/{id}", get(health_by_id))
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::NotFound(m) => ApiError::not_found(m),
            AgentError::Invalid(m) => ApiError::bad_request(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// A record as the agent endpoints show it: without Raft indexes.
fn without_indexes<T: serde::Serialize>(record: &T) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.remove("CreateIndex");
        m.remove("ModifyIndex");
    }
    v
}

async fn agent_self(State(api): Api) -> Json<Value> {
    let c = api.agent.config();
    Json(json!({
        "Config": {
            "Datacenter": c.datacenter,
            "PrimaryDatacenter": c.datacenter,
            "NodeName": c.node_name,
            "NodeID": c.node_id,
            "Server": c.server,
            "Revision": "",
            "Version": crate::VERSION,
        },
        "DebugConfig": {
            "Datacenter": c.datacenter,
            "NodeName": c.node_name,
            "DNSDomain": c.domain,
            "EnableScriptChecks": c.enable_script_checks,
            "HTTPPort": c.ports.http.map_or(-1, i32::from),
            "HTTPSPort": c.ports.https.map_or(-1, i32::from),
            "DNSPort": c.ports.dns,
            "ServerPort": c.ports.server,
            "SerfPortLAN": c.ports.serf_lan,
        },
        "Coord": null,
        "Member": super::members::self_member(&api),
        "Stats": {},
        "Meta": c.node_meta,
    }))
}

async fn services(State(api): Api, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    let opts = ctx.query()?;
    let all: Vec<Value> = api
        .agent
        .local()
        .services
        .values()
        .map(|s| without_indexes(&s.service))
        .collect();
    let kept = super::apply_filter(all, opts.filter.as_deref()).await?;
    let map: Map<String, Value> = kept
        .into_iter()
        .map(|v| (v["ID"].as_str().unwrap_or_default().to_string(), v))
        .collect();
    Ok(Json(Value::Object(map)))
}

/// The instance with its `ContentHash`, or `None` if unknown.
fn hashed_service(api: &ApiState, id: &str) -> Option<(String, Value)> {
    let mut v = without_indexes(&api.agent.local().services.get(id)?.service);
    let hash = format!("{:016x}", fnv1a(v.to_string().as_bytes()));
    if let Value::Object(m) = &mut v {
        m.insert("ContentHash".into(), Value::String(hash.clone()));
    }
    Some((hash, v))
}

/// `/v1/agent/service/:id`, blocking on `?hash=` until the instance's
/// content hash differs (Consul's hash-based blocking query).
async fn service(State(api): Api, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let want = ctx
        .params
        .get("hash")
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let mut changes = api.agent.local().subscribe();
    let deadline = tokio::time::Instant::now() + opts.max_wait;
    loop {
        let (hash, v) = hashed_service(&api, &id)
            .ok_or_else(|| ApiError::not_found(format!("unknown service ID: {id}")))?;
        let unchanged = want.as_deref() == Some(hash.as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            let mut resp = Json(v).into_response();
            if let Ok(h) = axum::http::HeaderValue::from_str(&hash) {
                resp.headers_mut().insert("X-Consul-ContentHash", h);
            }
            return Ok(resp);
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return Err(ApiError::internal("agent stopped")) },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

async fn register_service(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let def = ServiceDefinition::from_json(json_body(&body)?)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let replace = ctx.params.flag("replace-existing-checks");
    api.agent.add_service(def, Source::Api, replace).await?;
    Ok(StatusCode::OK.into_response())
}

async fn deregister_service(State(api): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    api.agent.remove_service(&id).await?;
    Ok(StatusCode::OK.into_response())
}

fn maintenance_params(ctx: &Ctx) -> Result<(bool, String), ApiError> {
    let enable = ctx
        .params
        .bool("enable")?
        .ok_or_else(|| ApiError::bad_request("Missing value for enable"))?;
    Ok((enable, ctx.params.get("reason").unwrap_or("").to_string()))
}

async fn service_maintenance(
    State(api): Api,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (enable, reason) = maintenance_params(&ctx)?;
    api.agent.service_maintenance(&id, enable, &reason).await?;
    Ok(StatusCode::OK.into_response())
}

async fn node_maintenance(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let (enable, reason) = maintenance_params(&ctx)?;
    api.agent.node_maintenance(enable, &reason).await?;
    Ok(StatusCode::OK.into_response())
}

async fn checks(State(api): Api, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    let opts = ctx.query()?;
    let all: Vec<Value> = api
        .agent
        .local()
        .checks
        .values()
        .map(|c| without_indexes(&c.check))
        .collect();
    let kept = super::apply_filter(all, opts.filter.as_deref()).await?;
    let map: Map<String, Value> = kept
        .into_iter()
        .map(|v| (v["CheckID"].as_str().unwrap_or_default().to_string(), v))
        .collect();
    Ok(Json(Value::Object(map)))
}

async fn register_check(State(api): Api, body: Bytes) -> Result<Response, ApiError> {
    let def = CheckDefinition::from_json(json_body(&body)?)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    api.agent.add_check(def, Source::Api).await?;
    Ok(StatusCode::OK.into_response())
}

async fn deregister_check(State(api): Api, Path(id): Path<String>) -> Result<Response, ApiError> {
    api.agent.remove_check(&id).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct CheckUpdate {
    #[serde(alias = "status")]
    #[serde(rename = "Status")]
    status: String,
    #[serde(alias = "output")]
    #[serde(rename = "Output")]
    output: String,
}

/// `/v1/agent/check/{pass,warn,fail}/:id?note=` and
/// `/v1/agent/check/update/:id` with a `{Status, Output}` body.
async fn check_ttl(
    State(api): Api,
    ctx: Ctx,
    Path((verb, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let note = ctx.params.get("note").unwrap_or("").to_string();
    let (state, output) = match verb.as_str() {
        "pass" => (status::PASSING.to_string(), note),
        "warn" => (status::WARNING.to_string(), note),
        "fail" => (status::CRITICAL.to_string(), note),
        "update" => {
            let update: CheckUpdate = super::decode_body(&body)?;
            if !status::is_valid(&update.status) {
                return Err(ApiError::bad_request(format!(
                    "Invalid check status: {:?}",
                    update.status
                )));
            }
            (update.status, update.output)
        }
        _ => return Err(ApiError::not_found("Not found")),
    };
    api.agent.update_ttl(&id, &state, &output).await?;
    Ok(StatusCode::OK.into_response())
}

async fn reload(State(api): Api) -> Result<Response, ApiError> {
    api.agent
        .reload()
        .await
        .map_err(|e| ApiError::internal(format!("Failed to reload configs: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

async fn leave(State(api): Api) -> Response {
    api.agent.leave();
    StatusCode::OK.into_response()
}

/// The status code `/v1/agent/health/service/*` answers with.
fn health_code(aggregate: &str) -> StatusCode {
    match aggregate {
        status::PASSING => StatusCode::OK,
        status::WARNING => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// (aggregate status, instance, checks) of one local instance.
fn local_health(api: &ApiState, id: &str) -> Option<(&'static str, Value, Vec<Value>)> {
    let local = api.agent.local();
    let svc = local.services.get(id)?;
    let checks: Vec<&HealthCheck> = local
        .checks
        .values()
        .map(|c| &c.check)
        .filter(|c| c.service_id == id || c.service_id.is_empty() && c.check_id.starts_with('_'))
        .collect();
    let agg = aggregate_status(checks.iter().map(|c| c.status.as_str()));
    Some((
        agg,
        without_indexes(&svc.service),
        checks.into_iter().map(without_indexes).collect(),
    ))
}

async fn health_by_id(
    State(api): Api,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some((agg, svc, checks)) = local_health(&api, &id) else {
        return Err(ApiError::not_found(format!("ServiceId {id} not found")));
    };
    if ctx.params.get("format") == Some("text") {
        return Ok((health_code(agg), agg).into_response());
    }
    Ok((
        health_code(agg),
        Json(json!({ "AggregatedStatus": agg, "Service": svc, "Checks": checks })),
    )
        .into_response())
}

async fn health_by_name(
    State(api): Api,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let ids: Vec<String> = api
        .agent
        .local()
        .services
        .values()
        .filter(|s| s.service.service == name)
        .map(|s| s.service.id.clone())
        .collect();
    if ids.is_empty() {
        return Err(ApiError::not_found(format!("ServiceName {name} Not Found")));
    }
    let entries: Vec<(&'static str, Value, Vec<Value>)> =
        ids.iter().filter_map(|id| local_health(&api, id)).collect();
    let worst = aggregate_status(entries.iter().map(|(a, _, _)| *a));
    if ctx.params.get("format") == Some("text") {
        return Ok((health_code(worst), worst).into_response());
    }
    let body: Vec<Value> = entries
        .into_iter()
        .map(|(agg, svc, checks)| json!({ "AggregatedStatus": agg, "Service": svc, "Checks": checks }))
        .collect();
    Ok((health_code(worst), Json(body)).into_response())
}
