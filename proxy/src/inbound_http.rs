//! The inbound path of an L7 public listener, after mTLS and the peer's
//! SPIFFE identity: parse HTTP (HTTP/1.1 or HTTP/2 as ALPN and the
//! preface say) → authorise each request by intentions and their L7
//! permissions (403 `RBAC: access denied` when denied) → forward to the
//! local app over a pooled plain connection.
//!
//! Each request reads the config version in force when it arrives:
//! intentions changed by an update apply to the next request of an open
//! connection.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::chain::Protocol;
use crate::http::{counted, respond, retarget, serve_connection, strip_hop_by_hop, ProxyBody};
use crate::metrics::{RouteLabels, INBOUND};
use crate::proxy::Shared;

/// Serves one authenticated connection from `source` (a service name).
pub(crate) async fn serve<I>(io: I, source: String, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.snapshot().config.idle_timeout;
    let source: Arc<str> = source.into();
    let draining = shared.draining.subscribe();
    serve_connection(io, idle, draining, move |req| {
        handle(req, source.clone(), shared.clone())
    })
    .await;
}

async fn handle(
    mut req: Request<Incoming>,
    source: Arc<str>,
    shared: Arc<Shared>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let labels = RouteLabels {
        direction: INBOUND,
        service: config.service.clone(),
        ..RouteLabels::default()
    };
    let response = 'response: {
        let decision = snapshot.authz.decide_request(&source, &req);
        if !decision.allow {
            shared.metrics.l7_denied();
            info!(
                source = &*source,
                method = %req.method(),
                path = req.uri().path(),
                rule = decision.rule.as_deref().unwrap_or("default"),
                destination = %config.service,
                "request denied by intention"
            );
            break 'response respond(StatusCode::FORBIDDEN, "RBAC: access denied");
        }
        let (Some(public), Some(client)) = (&config.public_listener, snapshot.clients.app()) else {
            // The listener became L4 or went away since the connection
            // was accepted.
            break 'response respond(StatusCode::SERVICE_UNAVAILABLE, "no local app\n");
        };
        let (request_bytes, response_bytes) = shared.metrics.bytes(INBOUND, "");
        strip_hop_by_hop(req.headers_mut());
        *req.version_mut() = match public.protocol {
            Protocol::Http2 | Protocol::Grpc => Version::HTTP_2,
            _ => Version::HTTP_11,
        };
        if !retarget(&mut req, &public.local_app.to_string(), None) {
            break 'response respond(StatusCode::BAD_REQUEST, "bad request target\n");
        }
        let req = req.map(|body| counted(body, request_bytes));
        match client.request(req).await {
            Ok(response) => {
                let (mut head, body) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                head.version = Version::HTTP_11;
                Response::from_parts(head, counted(body, response_bytes))
            }
            Err(error) => {
                debug!(local_app = %public.local_app, %error, "local app request failed");
                let text = if error.is_connect() {
                    "local app connect error\n"
                } else {
                    "local app reset before response headers\n"
                };
                respond(StatusCode::SERVICE_UNAVAILABLE, text)
            }
        }
    };
    shared.metrics.request(&labels, response.status(), started);
    response
}
