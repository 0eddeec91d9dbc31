//! The RPC listener: answers other servers' Raft traffic, the requests
//! forwarded to this server while it leads, and client agents' requests.
//!
//! Every connection opens with the handshake ([`super::handshake`]) within
//! [`RpcLimits::handshake_timeout`]; a caller that does not finish it, or
//! does not hold the gossip key when this agent has one, is closed before a
//! frame is parsed. A client agent may send only what a client agent needs
//! ([`permitted`]); one address may hold [`RpcLimits::max_conns_per_client`]
//! connections besides servers' own; a connection silent for
//! [`RpcLimits::idle_timeout`] between requests is closed.

use super::handshake::{self, Role, RpcAuth};
use super::wire::{WireError, MAX_FRAME};
use super::{HttpExchange, NodeRecord, Request, Response};
use crate::agent::proxy_view;
use crate::conn_limit::{ClientConns, ConnGuard};
use crate::raft::{Command, RaftNode};
use crate::server::ca::{CaManager, CaOpError};
use axum::body::Body;
use axum::Router;
use mesh_dns::DnsServer;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    /// How callers must authenticate (no key and no TLS: open).
    pub auth: RpcAuth,
    /// Time and connection limits.
    pub limits: RpcLimits,
}

/// Time and connection limits of the RPC port.
#[derive(Debug, Clone, Copy)]
pub struct RpcLimits {
    /// How long a caller has to finish the handshake (Consul's
    /// `limits.rpc_handshake_timeout`, 5 s).
    pub handshake_timeout: Duration,
    /// How long a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Connections one address may hold at once, other servers' aside
    /// (Consul's `limits.rpc_max_conns_per_client`, 100). Each request in
    /// flight holds one: a client agent's forwarded blocking queries count.
    pub max_conns_per_client: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_conns_per_client: 100,
        }
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, handlers: RpcHandlers) {
    let counts = ClientConns::default();
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let Some(slot) = counts.admit(peer.ip(), handlers.limits.max_conns_per_client)
                else {
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(
                            %peer,
                            limit = handlers.limits.max_conns_per_client,
                            "refusing RPC connections: rpc_max_conns_per_client reached"
                        );
                    }
                    continue;
                };
                let handlers = handlers.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, slot, &handlers).await {
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

async fn handle(
    stream: TcpStream,
    slot: ConnGuard,
    handlers: &RpcHandlers,
) -> Result<(), WireError> {
    let _ = stream.set_nodelay(true);
    let limit = handlers.limits.handshake_timeout;
    let (mut conn, role) = tokio::time::timeout(limit, handshake::accept(stream, &handlers.auth))
        .await
        .map_err(|_| WireError::Timeout(limit))??;
    // Servers pool many connections to each other; only the others count.
    let _slot = (role == Role::Client).then_some(slot);
    conn.set_idle_timeout(handlers.limits.idle_timeout);
    loop {
        let req: Request = match conn.recv().await {
            Ok(r) => r,
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e),
        };
        let resp = match permitted(role, &req) {
            Ok(()) => dispatch(handlers, req).await,
            Err(why) => Response::Failed(why),
        };
        conn.send(&resp).await?;
    }
}

/// Whether a peer in `role` may send `req`: servers anything; client
/// agents their catalog sync, forwarded API requests (not a server's own
/// `/v1/agent/` endpoints, which hand out its leaves and keys), DNS,
/// node records, leaf CSRs, proxy views and their RPC certificate's CSR;
/// an enrolling client agent only that CSR.
pub fn permitted(role: Role, req: &Request) -> Result<(), String> {
    match (role, req) {
        (Role::Server, _) | (_, Request::AutoEncryptSign { .. }) => return Ok(()),
        (Role::Enrolling, other) => {
            return Err(format!(
                "a client agent without its auto_encrypt certificate may not send {}; \
                 only AutoEncryptSign",
                other.kind()
            ))
        }
        (Role::Client, _) => {}
    }
    match req {
        Request::Apply(Command::Register { .. } | Command::Deregister { .. })
        | Request::NodeRecord { .. }
        | Request::SignLeaf { .. }
        | Request::ProxyView { .. }
        | Request::Dns { .. } => Ok(()),
        Request::Http(http) if !is_agent_path(&http.uri) => Ok(()),
        Request::Http(http) => Err(format!(
            "a client agent may not forward {}: a server's /v1/agent/ endpoints are its own",
            http.uri
        )),
        Request::Apply(cmd) => Err(format!(
            "a client agent may not propose {} writes; only its catalog registrations",
            cmd.kind()
        )),
        other => Err(format!(
            "a client agent may not send {}; only servers do",
            other.kind()
        )),
    }
}

/// Whether `uri` names one of the agent's own endpoints, however its path
/// is spelled (percent-escapes, repeated slashes, case, or an absolute
/// `http://host/...` form, whose path is what the router matches).
fn is_agent_path(uri: &str) -> bool {
    let parsed = uri.parse::<axum::http::Uri>().ok();
    let path = parsed.as_ref().map_or(uri, |u| u.path());
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(b) => {
                decoded.push(b);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segments = decoded.split('/').filter(|s| !s.is_empty() && *s != ".");
    segments.next() == Some("v1") && segments.next() == Some("agent")
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
        Request::AutoEncryptSign {
            csr,
            node: name,
            datacenter,
        } => Response::Signed(match handlers.auth.tls.as_ref() {
            Some(tls) if tls.auto_encrypt().allow_tls => {
                handlers.ca.sign_agent(&csr, &name, &datacenter)
            }
            _ => Err(CaOpError::Invalid(
                "this server does not sign client agents' RPC certificates: \
                 set auto_encrypt { allow_tls = true } on the servers"
                    .into(),
            )),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::{DeregisterRequest, DirEntry, KvOp};

    fn http(uri: &str) -> Request {
        Request::Http(HttpExchange {
            head: "GET".into(),
            uri: uri.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_client_agent_may_send_only_what_a_client_needs() {
        let deregister = Request::Apply(Command::Deregister {
            req: DeregisterRequest::default(),
            now_ms: 0,
        });
        let kv = Request::Apply(Command::Kv {
            op: KvOp::Set,
            entry: DirEntry::default(),
            now_ms: 0,
        });
        for ok in [
            deregister,
            http("/v1/kv/a?recurse"),
            http("/v1/catalog/nodes"),
        ] {
            assert_eq!(permitted(Role::Client, &ok), Ok(()), "{ok:?}");
        }
        let refused = [
            kv,
            Request::ReadIndex,
            Request::Progress,
            Request::RemovePeer { id: 1 },
            Request::Info,
            http("/v1/agent/connect/ca/leaf/db"),
            http("/v1//agent/self"),
            http("/v1/%61gent/self"),
            http("/V1/Agent/services?x=1"),
            http("/./v1/./agent"),
        ];
        for bad in refused {
            let why = permitted(Role::Client, &bad).unwrap_err();
            assert!(why.contains("client agent may not"), "{why}");
            assert_eq!(permitted(Role::Server, &bad), Ok(()), "servers may");
        }
        assert!(!is_agent_path("/v1/agents"), "another word");
        assert!(!is_agent_path("/v1/kv/v1/agent"));
    }

    /// The router matches the path of the parsed URI, so an absolute-form
    /// URI (`http://host/v1/agent/...`) used to reach a server's own agent
    /// endpoints; the `rpc_request` fuzz target checks this too.
    #[test]
    fn an_absolute_form_uri_is_judged_by_the_path_the_router_sees() {
        for uri in [
            "http://x/v1/agent/self",
            "https://127.0.0.1:8500/v1/agent/connect/ca/leaf/db?x=1",
            "http://x//v1/%61gent/services",
        ] {
            let why = permitted(Role::Client, &http(uri)).unwrap_err();
            assert!(why.contains("client agent may not"), "{uri}: {why}");
        }
        assert_eq!(
            permitted(Role::Client, &http("http://x/v1/catalog/nodes")),
            Ok(())
        );
        assert!(!is_agent_path("/v1/kv/http://x/v1/agent/self"), "a key");
    }
}
