//! `/v1/agent/connect/proxy-config`: the stream of config versions the agent
//! pushes to one proxy (design contract 7).
//!
//! `GET /v1/agent/connect/proxy-config/:id` serves the sidecar registered as
//! `id`; `GET /v1/agent/connect/proxy-config?service=NAME` a proxy with no
//! registration. Both take `upstream=DEST:IP:PORT` (repeatable),
//! `bind_address=IP` and `metrics_addr=IP:PORT`. The response is newline-delimited JSON
//! (`application/x-ndjson`): one [`mesh_proxy::ProxyConfig`] per line, the
//! first at once and each new version as it is computed, with an empty line
//! every [`HEARTBEAT`] so the proxy can tell a quiet agent from a dead one.
//! A request the agent cannot serve gets the usual error status instead.

use super::{Api, ApiError, ApiState, Ctx};
use crate::agent::proxycfg::{parse_upstream, ProxyCfgError, ProxyRequest, ProxyTarget};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::convert::Infallible;
use std::time::Duration;

/// How often an idle stream carries an empty line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How long the first config may wait for the CA (a fresh leader, the
/// signing rate limit) before the request fails.
const FIRST_WAIT: Duration = Duration::from_secs(10);

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/agent/connect/proxy-config", get(for_service))
        .route("/v1/agent/connect/proxy-config/{id}", get(for_sidecar))
}

impl From<ProxyCfgError> for ApiError {
    fn from(e: ProxyCfgError) -> Self {
        match e {
            ProxyCfgError::UnknownProxy(_) => ApiError::not_found(e.to_string()),
            ProxyCfgError::Leaf(ca) => ca.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// The query parameter `name` parsed, if given; 400 naming it and `what`
/// it should be otherwise.
fn optional<T: std::str::FromStr>(
    ctx: &Ctx,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match ctx.params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} {v:?} is not {what}"))),
    }
}

/// The request's upstreams, bind and metrics addresses, for `target`.
fn request(ctx: &Ctx, target: ProxyTarget) -> Result<ProxyRequest, ApiError> {
    let extra_upstreams = ctx
        .params
        .all("upstream")
        .iter()
        .map(|u| parse_upstream(u))
        .collect::<Result<_, _>>()?;
    Ok(ProxyRequest {
        target,
        extra_upstreams,
        bind_address: optional(ctx, "bind_address", "an IP address")?,
        metrics_addr: optional(ctx, "metrics_addr", "IP:PORT")?,
    })
}

async fn for_sidecar(
    State(api): Api,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    stream(api, request(&ctx, ProxyTarget::Sidecar(id))?).await
}

async fn for_service(State(api): Api, ctx: Ctx) -> Result<Response, ApiError> {
    let name = ctx
        .params
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("required query parameter 'service' not set"))?;
    let target = ProxyTarget::Service(name.to_string());
    stream(api, request(&ctx, target)?).await
}

fn line(config: &mesh_proxy::ProxyConfig) -> Bytes {
    let mut text = serde_json::to_vec(config).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

async fn stream(api: ApiState, req: ProxyRequest) -> Result<Response, ApiError> {
    let mut rx = api.proxies.open(req, FIRST_WAIT).await?;
    // The first config is there already: send it before any heartbeat.
    let head = rx.try_recv().ok().map(|first| line(&first));
    let heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let open = crate::metrics::InFlight::new(&crate::metrics::global().proxy_config_streams);
    let lines = futures_util::stream::unfold(
        (head, rx, heartbeat, open),
        |(head, mut rx, mut heartbeat, open)| async move {
            let next = match head {
                Some(head) => head,
                None => tokio::select! {
                    config = rx.recv() => line(&config?),
                    _ = heartbeat.tick() => Bytes::from_static(b"\n"),
                },
            };
            Some((Ok::<_, Infallible>(next), (None, rx, heartbeat, open)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
