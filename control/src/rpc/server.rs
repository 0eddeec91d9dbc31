//! The RPC listener: answers other servers' Raft traffic, the requests
//! forwarded to this server while it leads, and client agents' requests.

use super::wire::{read_frame, write_frame, WireError, MAX_FRAME, PROTOCOL_MARKER};
use super::{HttpExchange, NodeRecord, Request, Response};
use crate::agent::proxy_view;
use crate::raft::RaftNode;
use crate::server::ca::CaManager;
use axum::body::Body;
use axum::Router;
use mesh_dns::DnsServer;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// What the listener answers with: the Raft node, and this server's HTTP
/// API and DNS for the requests client agents forward.
#[derive(Clone)]
pub struct RpcHandlers {
    /// This server's Raft node.
    pub node: RaftNode,
    /// This server's HTTP API.
    pub http: Router,
    /// This server's DNS.
    pub dns: Arc<DnsServer>,
    /// This server's CA, which signs client agents' leaves.
    pub ca: Arc<CaManager>,
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, handlers: RpcHandlers) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let handlers = handlers.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, &handlers).await {
                        tracing::debug!(%peer, error = %e, "rpc connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "rpc accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn handle(mut conn: TcpStream, handlers: &RpcHandlers) -> Result<(), WireError> {
    let _ = conn.set_nodelay(true);
    let marker = conn.read_u8().await?;
    if marker != PROTOCOL_MARKER {
        return Err(WireError::Protocol(marker));
    }
    loop {
        let req: Request = match read_frame(&mut conn).await {
            Ok(r) => r,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let resp = dispatch(handlers, req).await;
        write_frame(&mut conn, &resp).await?;
    }
}

async fn dispatch(handlers: &RpcHandlers, req: Request) -> Response {
    let node = &handlers.node;
    match req {
        Request::AppendEntries(r) => {
            node.heard_from_leader();
            Response::AppendEntries(node.raft().append_entries(r).await)
        }
        Request::Vote(r) => Response::Vote(node.raft().vote(r).await),
        Request::InstallSnapshot(r) => {
            node.heard_from_leader();
            Response::InstallSnapshot(node.raft().install_snapshot(r).await)
        }
        Request::Info => Response::Info {
            initialized: node.is_initialized().await,
        },
        Request::Http(req) => Response::Http(answer_http(handlers.http.clone(), req).await),
        Request::Dns { query, max_size } => {
            Response::Dns(handlers.dns.answer(&query, max_size).unwrap_or_default())
        }
        Request::NodeRecord { node: name } => {
            Response::NodeRecord(NodeRecord::of(&node.store().read(), &name))
        }
        Request::SignLeaf {
            csr,
            service,
            datacenter,
        } => Response::Signed(handlers.ca.sign(&csr, &service, &datacenter)),
        Request::ProxyView {
            plan,
            datacenter,
            known,
            wait_ms,
        } => {
            let wait = std::time::Duration::from_millis(wait_ms);
            let known = known.map(|k| *k);
            let view = proxy_view::answer(node.store().clone(), plan, datacenter, known, wait);
            Response::ProxyView(Box::new(view.await))
        }
        leader_only => node.handle_as_leader(leader_only).await,
    }
}

/// Runs a forwarded HTTP request through this server's API.
async fn answer_http(router: Router, req: HttpExchange) -> HttpExchange {
    let refused = |why: String| HttpExchange {
        head: "400".into(),
        body: why.into_bytes(),
        ..Default::default()
    };
    let mut builder = axum::http::Request::builder()
        .method(req.head.as_str())
        .uri(req.uri.as_str());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = match builder.body(Body::from(req.body)) {
        Ok(r) => r,
        Err(e) => return refused(format!("forwarded request: {e}")),
    };
    let Ok(resp) = router.oneshot(request).await;
    let head = resp.status().as_u16().to_string();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    match axum::body::to_bytes(resp.into_body(), MAX_FRAME / 2).await {
        Ok(body) => HttpExchange {
            head,
            uri: String::new(),
            headers,
            body: body.to_vec(),
        },
        Err(e) => HttpExchange {
            head: "500".into(),
            body: format!("reading the response: {e}").into_bytes(),
            ..Default::default()
        },
    }
}
