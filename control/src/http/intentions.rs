//! `/v1/connect/intentions/*` and `/v1/agent/connect/authorize`: intentions
//! by source and destination name, kept in `service-intentions` entries.

use super::query::Consistency;
use super::{Api, ApiError, ApiState, Ctx};
use crate::config_entry::intentions::{
    decide, sort_by_precedence, Action, Intention, IntentionPermission, LegacyIntention,
    LegacyIntentionOp, SourceIntention, WILDCARD,
};
use crate::config_entry::kind::SERVICE_INTENTIONS;
use crate::raft::Command;
use crate::state::{config_topic, Topic};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/connect/intentions", get(list).post(create))
        .route(
            "/v1/connect/intentions/{id}",
            get(by_id_get).put(by_id_put).delete(by_id_delete),
        )
        .route(
            "/v1/connect/intentions/exact",
            get(exact_get).put(exact_put).delete(exact_delete),
        )
        .route("/v1/connect/intentions/match", get(matches))
        .route("/v1/connect/intentions/check", get(check))
        .route("/v1/agent/connect/authorize", post(authorize))
}

fn topic() -> Topic {
    Topic::Exact(config_topic(SERVICE_INTENTIONS))
}

/// Every intention and the index they were read at.
fn read_all(d: &crate::state::StateData) -> (u64, Vec<Intention>) {
    (d.index(&config_topic(SERVICE_INTENTIONS)), d.intentions())
}

fn required<'a>(ctx: &'a Ctx, name: &str) -> Result<&'a str, ApiError> {
    ctx.params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("required query parameter '{name}' not set")))
}

async fn list(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, mut all) = api.blocking(&opts, &[topic()], read_all).await?;
    sort_by_precedence(&mut all);
    Ok(qm.json(&super::apply_filter(all, opts.filter.as_deref()).await?))
}

fn find(all: Vec<Intention>, source: &str, destination: &str) -> Option<Intention> {
    all.into_iter()
        .find(|i| i.source_name == source && i.destination_name == destination)
}

async fn exact_get(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let (source, destination) = (required(&ctx, "source")?, required(&ctx, "destination")?);
    let opts = ctx.query()?;
    let (qm, all) = api.blocking(&opts, &[topic()], read_all).await?;
    match find(all, source, destination) {
        Some(i) => Ok(qm.json(&i)),
        None => Err(ApiError::not_found("Intention not found")),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ExactBody {
    action: Option<Action>,
    description: String,
    source_type: String,
    permissions: Vec<IntentionPermission>,
}

/// The action of a legacy (ID-based) intention write: L7 permissions have
/// no place there, as in Consul, whose legacy API predates them.
fn checked_action(
    action: Option<Action>,
    source_type: &str,
    permissions: Option<&Value>,
) -> Result<Action, ApiError> {
    if permissions.is_some_and(|p| !p.is_null()) {
        return Err(ApiError::bad_request(
            "Permissions cannot be set through the legacy ID-based intentions API; \
             use PUT /v1/connect/intentions/exact or a service-intentions config entry",
        ));
    }
    checked_source_type(source_type)?;
    action.ok_or_else(|| ApiError::bad_request("Action must be set to 'allow' or 'deny'"))
}

fn checked_source_type(source_type: &str) -> Result<(), ApiError> {
    if !source_type.is_empty() && source_type != "consul" {
        return Err(ApiError::bad_request("SourceType must be \"consul\""));
    }
    Ok(())
}

/// Refuses an exact write that would leave the destination's entry
/// invalid, or an L7 intention on a service that does not speak HTTP.
async fn check_exact_write(
    api: &ApiState,
    source: &str,
    destination: &str,
    b: &ExactBody,
) -> Result<(), ApiError> {
    api.caught_up(Consistency::Default).await?;
    let d = api.raft()?.store().read();
    let source = SourceIntention::new(
        source,
        destination,
        b.action,
        b.permissions.clone(),
        &b.description,
    );
    let proposed = d.intention_entry_with(destination, source)?;
    super::config::check_graph(
        api,
        &d,
        crate::discovery_chain::Change {
            kind: SERVICE_INTENTIONS,
            name: destination,
            entry: Some(&proposed),
        },
    )
}

async fn exact_put(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let (source, destination) = (required(&ctx, "source")?, required(&ctx, "destination")?);
    let b: ExactBody = super::decode_body(&body)?;
    checked_source_type(&b.source_type)?;
    match (b.action, b.permissions.is_empty()) {
        (None, true) => {
            return Err(ApiError::bad_request(
                "Action must be set to 'allow' or 'deny'",
            ))
        }
        (Some(_), false) => {
            return Err(ApiError::bad_request(
                "Action must be omitted if Permissions are specified",
            ))
        }
        _ => {}
    }
    check_exact_write(&api, source, destination, &b).await?;
    api.write(Command::IntentionUpsert {
        source: source.to_string(),
        destination: destination.to_string(),
        action: b.action,
        permissions: b.permissions,
        description: b.description,
    })
    .await?;
    Ok(Json(true).into_response())
}

async fn exact_delete(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let (source, destination) = (required(&ctx, "source")?, required(&ctx, "destination")?);
    api.write(Command::IntentionDelete {
        source: source.to_string(),
        destination: destination.to_string(),
    })
    .await?;
    Ok(Json(true).into_response())
}

/// The body of the legacy ID-based writes.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct LegacyBody {
    source_name: String,
    destination_name: String,
    source_type: String,
    action: Option<Action>,
    description: String,
    meta: Option<serde_json::Map<String, Value>>,
    permissions: Option<Value>,
}

impl LegacyBody {
    fn decode(body: &[u8]) -> Result<LegacyIntention, ApiError> {
        let b: LegacyBody = super::decode_body(body)?;
        let action = checked_action(b.action, &b.source_type, b.permissions.as_ref())?;
        for (field, value) in [
            ("SourceName", &b.source_name),
            ("DestinationName", &b.destination_name),
        ] {
            if value.is_empty() {
                return Err(ApiError::bad_request(format!("{field} must be set")));
            }
        }
        if let Some((key, _)) = b.meta.iter().flatten().find(|(_, v)| !v.is_string()) {
            return Err(ApiError::bad_request(format!(
                "Meta value of {key:?} must be a string"
            )));
        }
        Ok(LegacyIntention {
            source: b.source_name,
            destination: b.destination_name,
            action,
            description: b.description,
            meta: b.meta.map(Value::Object),
        })
    }
}

/// `POST /v1/connect/intentions`: creates an intention with a new ID.
async fn create(State(api): Api, _ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let intention = LegacyBody::decode(&body)?;
    let id = uuid::Uuid::new_v4().to_string();
    api.write(Command::IntentionLegacy(LegacyIntentionOp::Create {
        id: id.clone(),
        intention,
    }))
    .await?;
    Ok(Json(json!({ "ID": id })).into_response())
}

async fn by_id_get(
    State(api): Api,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let opts = ctx.query()?;
    let (qm, all) = api.blocking(&opts, &[topic()], read_all).await?;
    match all.into_iter().find(|i| i.id == id) {
        Some(i) => Ok(qm.json(&i)),
        None => Err(ApiError::not_found("Intention not found")),
    }
}

async fn by_id_put(
    State(api): Api,
    _ctx: Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let intention = LegacyBody::decode(&body)?;
    api.write(Command::IntentionLegacy(LegacyIntentionOp::Update {
        id,
        intention,
    }))
    .await?;
    Ok(Json(true).into_response())
}

async fn by_id_delete(
    State(api): Api,
    _ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    api.write(Command::IntentionLegacy(LegacyIntentionOp::Delete { id }))
        .await?;
    Ok(Json(true).into_response())
}

async fn matches(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let by = required(&ctx, "by")?;
    if by != "source" && by != "destination" {
        return Err(ApiError::bad_request(format!(
            "'by' parameter must be 'source' or 'destination', got {by:?}"
        )));
    }
    let names = ctx.params.all("name");
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "required query parameter 'name' not set",
        ));
    }
    let opts = ctx.query()?;
    let (qm, all) = api.blocking(&opts, &[topic()], read_all).await?;
    let mut out = Map::new();
    for name in names {
        let mut hits: Vec<Intention> = all
            .iter()
            .filter(|i| {
                let side = if by == "source" {
                    &i.source_name
                } else {
                    &i.destination_name
                };
                side == &name || side == WILDCARD
            })
            .cloned()
            .collect();
        sort_by_precedence(&mut hits);
        out.insert(name, serde_json::to_value(hits).unwrap_or_default());
    }
    Ok(qm.json(&Value::Object(out)))
}

async fn check(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let (source, destination) = (required(&ctx, "source")?, required(&ctx, "destination")?);
    api.caught_up(ctx.query()?.consistency).await?;
    let all = api.raft()?.store().read().intentions();
    let (action, _) = decide(
        &all,
        source,
        destination,
        api.agent.config().default_intention_policy,
    );
    Ok(Json(json!({ "Allowed": action == Action::Allow })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AuthorizeBody {
    target: String,
    #[serde(rename = "ClientCertURI")]
    client_cert_uri: String,
}

/// The service named by a SPIFFE service URI.
fn spiffe_service(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (_, path) = rest.split_once('/')?;
    path.rsplit_once("/svc/")
        .map(|(_, svc)| svc)
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

async fn authorize(State(api): Api, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let b: AuthorizeBody = super::decode_body(&body)?;
    if b.target.is_empty() {
        return Err(ApiError::bad_request("Target service must be specified"));
    }
    let source = spiffe_service(&b.client_cert_uri).ok_or_else(|| {
        ApiError::bad_request(format!(
            "ClientCertURI not a valid Connect identifier: {:?}",
            b.client_cert_uri
        ))
    })?;
    api.caught_up(ctx.query()?.consistency).await?;
    let all = api.raft()?.store().read().intentions();
    let (action, by) = decide(
        &all,
        source,
        &b.target,
        api.agent.config().default_intention_policy,
    );
    let reason = match by {
        Some(i) if !i.permissions.is_empty() => format!(
            "Matched L7 intention: {} => {}; the L4 authorize endpoint cannot evaluate its permissions",
            i.source_name, i.destination_name
        ),
        Some(i) => format!(
            "Matched L4 intention: {} => {} ({})",
            i.source_name,
            i.destination_name,
            action.as_str()
        ),
        None => "Default behavior configured by ACLs".to_string(),
    };
    Ok(Json(json!({ "Authorized": action == Action::Allow, "Reason": reason })).into_response())
}

#[cfg(test)]
mod tests {
    use super::spiffe_service;

    #[test]
    fn spiffe_uris_name_their_service() {
        assert_eq!(
            spiffe_service("spiffe://11111111.consul/ns/default/dc/dc1/svc/web"),
            Some("web")
        );
        assert_eq!(spiffe_service("spiffe://td/ns/default/dc/dc1/svc/"), None);
        assert_eq!(spiffe_service("https://td/svc/web"), None);
        assert_eq!(spiffe_service("spiffe://td"), None);
    }
}
