//! The outbound path of an L7 upstream listener: plain HTTP/1.1 or HTTP/2
//! from the local app, and per request: route → weighted split → target
//! (or its failover) → load-balanced endpoint → pooled mTLS connection,
//! with retries, a request timeout, header changes and passive outlier
//! detection.
//!
//! Each request reads the config version in force when it arrives, so an
//! update applies to the next request of an open keep-alive connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::client::MeshClient;
use crate::http::{counted, full, respond, retarget, serve_connection, strip_hop_by_hop};
use crate::http::{BoxError, ProxyBody};
use crate::metrics::{RouteLabels, OUTBOUND};
use crate::proxy::{Shared, Snapshot};
use crate::router::{CompiledRoute, CompiledSplit, CompiledTarget, RetryPolicy};

/// Request bodies up to this size are kept so that a retry can send them
/// again; larger or open-ended bodies are streamed and tried once.
pub(crate) const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Serves one connection from the local app on `destination`'s listener.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    destination: String,
    shared: Arc<Shared>,
) {
    let idle = shared.snapshot().config.idle_timeout;
    let destination: Arc<str> = destination.into();
    let draining = shared.draining.subscribe();
    serve_connection(stream, idle, draining, move |req| {
        handle(req, peer, destination.clone(), shared.clone())
    })
    .await;
}

/// What a request carries from one step to the next.
struct Call<'a> {
    snapshot: &'a Snapshot,
    shared: &'a Shared,
    labels: RouteLabels,
    peer: SocketAddr,
}

/// A request body that a retry can send again, or one that can go once.
enum ReqBody {
    Replayable(Bytes),
    Once(Option<ProxyBody>),
}

/// Why no upstream response came back.
enum Failure {
    NoEndpoint,
    Connect,
    Upstream,
    BadRequest,
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    destination: Arc<str>,
    shared: Arc<Shared>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let snapshot = shared.snapshot();
    let mut call = Call {
        snapshot: &snapshot,
        shared: &shared,
        labels: RouteLabels {
            direction: OUTBOUND,
            upstream: destination.to_string(),
            ..RouteLabels::default()
        },
        peer,
    };
    let response = call.route(req, &destination).await;
    shared
        .metrics
        .request(&call.labels, response.status(), started);
    response
}

// === impl Call ===

impl Call<'_> {
    async fn route(
        &mut self,
        mut req: Request<Incoming>,
        destination: &str,
    ) -> Response<ProxyBody> {
        let Some(router) = self.snapshot.routers.get(destination) else {
            // The upstream went away or became L4 since the connection
            // was accepted.
            return respond(StatusCode::SERVICE_UNAVAILABLE, "no such upstream\n");
        };
        let Some((index, route)) = router.route(&req) else {
            return respond(StatusCode::NOT_FOUND, "no route matched\n");
        };
        self.labels.route = index.to_string();
        let split = route.pick_split();
        let Some(target) = router.resolve(split.target) else {
            let wanted = router.target(split.target);
            self.label_target(wanted);
            return respond(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n");
        };
        self.label_target(target);
        if target.id != router.target(split.target).id {
            debug!(from = %router.target(split.target).id, to = %target.id, "failing over");
        }

        strip_hop_by_hop(req.headers_mut());
        route.request_headers.apply(req.headers_mut());
        split.request_headers.apply(req.headers_mut());
        let rewritten = route.rewrite(req.uri().path(), req.uri().query());
        if let Some(path) = &rewritten {
            debug!(from = %req.uri(), to = %path, "prefix rewritten");
        }

        let timeout = route.timeout.or(target.request_timeout);
        let tries = self.tries(req, rewritten, route, target);
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, tries).await {
                Ok(result) => result,
                Err(_) => {
                    self.shared.metrics.timeout(&self.labels);
                    return respond(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout\n");
                }
            },
            None => tries.await,
        };
        match result {
            Ok(response) => self.respond(response, route, split),
            Err(Failure::NoEndpoint) => {
                respond(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n")
            }
            Err(Failure::Connect) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers\n",
            ),
            Err(Failure::Upstream) => respond(
                StatusCode::BAD_GATEWAY,
                "upstream reset before response headers\n",
            ),
            Err(Failure::BadRequest) => respond(StatusCode::BAD_REQUEST, "bad request body\n"),
        }
    }

    fn label_target(&mut self, target: &CompiledTarget) {
        self.labels.service = target.service.clone();
        self.labels.subset = target.subset.clone();
    }

    /// Tries `req` on the target's endpoints as the route's retry policy
    /// allows, returning the first response that is not retried.
    async fn tries(
        &self,
        req: Request<Incoming>,
        path: Option<String>,
        route: &CompiledRoute,
        target: &CompiledTarget,
    ) -> Result<Response<Incoming>, Failure> {
        let connect_timeout = target
            .connect_timeout
            .unwrap_or(self.snapshot.config.connect_timeout);
        let client = self
            .snapshot
            .clients
            .mesh(&target.service, connect_timeout)
            .ok_or(Failure::NoEndpoint)?;
        let (request_bytes, _) = self.bytes();
        let (head, body) = req.into_parts();
        let head = Request::from_parts(head, ());
        let retry: &RetryPolicy = &route.retry;
        let mut body = if retry.num_retries == 0 {
            ReqBody::Once(Some(counted(body, request_bytes)))
        } else {
            ReqBody::read(body, request_bytes).await?
        };
        let tries = if matches!(body, ReqBody::Replayable(_)) {
            retry.num_retries.saturating_add(1)
        } else {
            1
        };
        let mut tried = Vec::new();
        for attempt in 0..tries {
            let last = attempt + 1 == tries;
            if attempt > 0 {
                self.shared.metrics.retry(&self.labels);
            }
            let endpoint = target
                .pick(&tried, &head, self.peer)
                .ok_or(Failure::NoEndpoint)?;
            tried.push(endpoint.addr);
            let mut req = Request::new(body.take().ok_or(Failure::BadRequest)?);
            *req.method_mut() = head.method().clone();
            *req.uri_mut() = head.uri().clone();
            *req.headers_mut() = head.headers().clone();
            *req.version_mut() = Version::HTTP_11;
            if !retarget(&mut req, &endpoint.addr.to_string(), path.as_deref()) {
                return Err(Failure::BadRequest);
            }
            let in_flight = endpoint.start();
            let result = send(&client, req).await;
            drop(in_flight);
            let ok = matches!(&result, Ok(r) if !r.status().is_server_error());
            if endpoint.record(ok, &target.outlier) {
                self.shared
                    .metrics
                    .ejected(&self.labels.upstream, &target.service, endpoint.addr);
            }
            match result {
                Ok(response)
                    if !last && retry.on_status_codes.contains(&response.status().as_u16()) =>
                {
                    debug!(endpoint = %endpoint.addr, status = %response.status(), "retrying");
                }
                Ok(response) => return Ok(response),
                Err(Failure::Connect) if !last && retry.on_connect_failure => {
                    debug!(endpoint = %endpoint.addr, "connect failed, retrying");
                }
                Err(failure) => return Err(failure),
            }
        }
        Err(Failure::NoEndpoint)
    }

    /// The response for the app: hop-by-hop headers out, the route's and
    /// split's response header changes in, bytes counted.
    fn respond(
        &self,
        response: Response<Incoming>,
        route: &CompiledRoute,
        split: &CompiledSplit,
    ) -> Response<ProxyBody> {
        let (_, response_bytes) = self.bytes();
        let (mut head, body) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        route.response_headers.apply(&mut head.headers);
        split.response_headers.apply(&mut head.headers);
        head.version = Version::HTTP_11;
        Response::from_parts(head, counted(body, response_bytes))
    }

    fn bytes(&self) -> (Counter, Counter) {
        self.shared.metrics.bytes(OUTBOUND, &self.labels.upstream)
    }
}

/// Sends one try, sorting errors into connect failures and the rest.
async fn send(client: &MeshClient, req: Request<ProxyBody>) -> Result<Response<Incoming>, Failure> {
    client.request(req).await.map_err(|error| {
        debug!(%error, "upstream request failed");
        if error.is_connect() {
            Failure::Connect
        } else {
            Failure::Upstream
        }
    })
}

// === impl ReqBody ===

impl ReqBody {
    /// Keeps a small body for retries; a large or open-ended one goes once.
    async fn read(body: Incoming, counter: Counter) -> Result<Self, Failure> {
        let small = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= MAX_REPLAY_BODY);
        if !small {
            return Ok(ReqBody::Once(Some(counted(body, counter))));
        }
        let bytes = Limited::new(body, MAX_REPLAY_BODY as usize)
            .collect()
            .await
            .map_err(|_: BoxError| Failure::BadRequest)?
            .to_bytes();
        counter.inc_by(bytes.len() as u64);
        Ok(ReqBody::Replayable(bytes))
    }

    /// The body for the next try.
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            ReqBody::Replayable(bytes) => Some(full(bytes.clone())),
            ReqBody::Once(body) => body.take(),
        }
    }
}
