//! A client agent's API. It answers what it holds itself (`/v1/agent/*`: its
//! services, checks, members and metrics, its leaves and its proxies'
//! configs) and forwards every other request to a server over RPC, which
//! answers it with its own API, blocking queries included.

use super::{agent, connect_ca, members, metrics, proxy_config, Api, ApiError, ApiState};
use crate::cluster::Cluster;
use crate::rpc::HttpExchange;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Duration;

/// The longest a forwarded request may take: a blocking query's 10-minute
/// maximum wait, its jitter, and a margin.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(11 * 60);

/// The largest request body forwarded (a snapshot restore's limit).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Headers that describe one hop's framing, not the message: each side
/// sets its own.
fn end_to_end(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "host"
    )
}

/// The API of a client agent.
pub fn client_router(state: ApiState) -> Router {
    Router::new()
        .merge(agent::routes())
        .merge(members::routes())
        .merge(metrics::routes())
        .merge(connect_ca::agent_leaf_route())
        .merge(proxy_config::routes())
        .fallback(forward)
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

async fn forward(State(api): Api, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading the body: {e}")).into_response(),
    };
    let exchange = HttpExchange {
        head: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string()),
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| end_to_end(k.as_str()))
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    let Cluster::Client(link) = &api.cluster else {
        return ApiError::internal("a server answers its whole API itself").into_response();
    };
    match link.forward_http(exchange, FORWARD_TIMEOUT).await {
        Ok(answer) => into_response(answer),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn into_response(answer: HttpExchange) -> Response {
    let status = answer
        .head
        .parse()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::new(Body::from(Bytes::from(answer.body)));
    *resp.status_mut() = status;
    for (name, value) in answer.headers.into_iter().filter(|(k, _)| end_to_end(k)) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
