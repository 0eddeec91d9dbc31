//! A client agent's link to the servers: it holds no Raft state, so every
//! write, every API request it cannot answer itself, its DNS queries, its
//! leaf CSRs and its proxies' views go to a server over RPC, on pooled
//! connections, to whichever servers gossip says are alive.

use super::handshake::{Role, RpcAuth};
use super::pool::{RpcError, RpcPool};
use super::{HttpExchange, NodeRecord, Request, Response};
use crate::raft::{
    call_for_leader, unexpected, until_leader_answers, Command, CommandResult, RaftError,
    HOLD_TIMEOUT, RETRY_BACKOFF,
};
use crate::server::ca::CaOpError;
use mesh_ca::IssuedCert;
use mesh_proxy::ProxyConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The servers a client agent talks to.
#[derive(Clone)]
pub struct ServerLink {
    pool: Arc<RpcPool>,
    servers: watch::Receiver<Vec<String>>,
}

impl ServerLink {
    /// A link to the servers whose RPC addresses `servers` holds (from
    /// gossip, as they come and go), on connections authenticated by
    /// `auth`.
    pub fn new(servers: watch::Receiver<Vec<String>>, auth: RpcAuth) -> ServerLink {
        ServerLink {
            pool: Arc::new(RpcPool::new(Role::Client, auth)),
            servers,
        }
    }

    /// Whether any server is known.
    pub fn knows_servers(&self) -> bool {
        !self.servers.borrow().is_empty()
    }

    fn any_server(&self) -> Option<String> {
        let servers = self.servers.borrow();
        (!servers.is_empty()).then(|| servers[rand::random::<usize>() % servers.len()].clone())
    }

    /// Sends `req` to the leader: to any server first, then where its "not
    /// the leader" answer points, retrying while no leader answers, for up
    /// to [`HOLD_TIMEOUT`].
    async fn on_leader(&self, req: &Request) -> Result<Response, RaftError> {
        until_leader_answers(|hint, left| {
            let target = hint.or_else(|| self.any_server());
            call_for_leader(&self.pool, target, req, left)
        })
        .await
    }

    /// Sends `req` to any server that answers, trying each known server in
    /// turn; `timeout` bounds one exchange (a long poll's wait included).
    async fn on_any_server(&self, req: &Request, timeout: Duration) -> Result<Response, RaftError> {
        let deadline = Instant::now() + HOLD_TIMEOUT;
        loop {
            let mut servers = self.servers.borrow().clone();
            if servers.is_empty() {
                if Instant::now() >= deadline {
                    return Err(RaftError::NoServers);
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            let start = rand::random::<usize>() % servers.len();
            servers.rotate_left(start);
            let mut last = String::new();
            for addr in &servers {
                match self.pool.call(addr, req, timeout).await {
                    Ok(Response::Failed(e)) => return Err(RaftError::Internal(e)),
                    Ok(resp) => return Ok(resp),
                    Err(e @ RpcError::Connect { .. }) => last = e.to_string(),
                    Err(e) => return Err(RaftError::Internal(e.to_string())),
                }
            }
            if Instant::now() >= deadline {
                return Err(RaftError::Internal(format!("no server answered: {last}")));
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// Has the leader commit `cmd`; returns its log index and result.
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), RaftError> {
        match self.on_leader(&Request::Apply(cmd)).await? {
            Response::Applied { index, result } => Ok((index, result)),
            other => Err(unexpected(other)),
        }
    }

    /// What the catalog holds for `node`, from a server.
    pub async fn node_record(&self, node: &str) -> Result<NodeRecord, RaftError> {
        let req = Request::NodeRecord {
            node: node.to_string(),
        };
        match self.on_any_server(&req, HOLD_TIMEOUT).await? {
            Response::NodeRecord(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Sends an HTTP API request to a server, which answers it with its own
    /// API. `timeout` covers blocking queries.
    pub async fn forward_http(
        &self,
        req: HttpExchange,
        timeout: Duration,
    ) -> Result<HttpExchange, RaftError> {
        match self.on_any_server(&Request::Http(req), timeout).await? {
            Response::Http(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Answers a DNS query through a server's DNS; `None` when the query
    /// gets no reply.
    pub async fn forward_dns(
        &self,
        query: Vec<u8>,
        max_size: usize,
    ) -> Result<Option<Vec<u8>>, RaftError> {
        let req = Request::Dns { query, max_size };
        match self.on_any_server(&req, HOLD_TIMEOUT).await? {
            Response::Dns(reply) => Ok((!reply.is_empty()).then_some(reply)),
            other => Err(unexpected(other)),
        }
    }

    /// Has a server sign a leaf CSR for `service` in `datacenter` (the key
    /// stays here).
    pub async fn sign_leaf(
        &self,
        csr: String,
        service: &str,
        datacenter: &str,
    ) -> Result<IssuedCert, CaOpError> {
        let req = Request::SignLeaf {
            csr,
            service: service.to_string(),
            datacenter: datacenter.to_string(),
        };
        self.signed(&req).await
    }

    /// Has a server sign this client agent's RPC certificate CSR for
    /// `node` in `datacenter` (auto_encrypt; the key stays here).
    pub async fn sign_agent(
        &self,
        csr: String,
        node: &str,
        datacenter: &str,
    ) -> Result<IssuedCert, CaOpError> {
        let req = Request::AutoEncryptSign {
            csr,
            node: node.to_string(),
            datacenter: datacenter.to_string(),
        };
        self.signed(&req).await
    }

    async fn signed(&self, req: &Request) -> Result<IssuedCert, CaOpError> {
        match self.on_any_server(req, HOLD_TIMEOUT).await {
            Ok(Response::Signed(signed)) => signed,
            Ok(other) => Err(CaOpError::Internal(unexpected(other).to_string())),
            Err(e) => Err(CaOpError::Internal(e.to_string())),
        }
    }

    /// Closes the idle connections to the servers, so the next requests
    /// open new ones (with the certificate this agent now dials with).
    pub fn reconnect(&self) {
        self.pool.forget_all();
    }

    /// Asks a server for the view of a proxy `plan`, once it differs from
    /// `known` or `wait` has passed.
    pub async fn proxy_view(
        &self,
        plan: crate::agent::proxycfg::Plan,
        datacenter: String,
        known: Option<ProxyConfig>,
        wait: Duration,
    ) -> Result<ProxyConfig, RaftError> {
        let req = Request::ProxyView {
            plan,
            datacenter,
            known: known.map(Box::new),
            wait_ms: wait.as_millis() as u64,
        };
        match self.on_any_server(&req, wait + HOLD_TIMEOUT).await? {
            Response::ProxyView(view) => Ok(*view),
            other => Err(unexpected(other)),
        }
    }
}
