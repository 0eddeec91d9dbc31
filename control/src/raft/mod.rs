//! Raft: every write to the state store is a [`Command`] in an openraft log.
//!
//! Even `mesh agent -dev` runs a one-voter cluster, so the log index of each
//! write is the `ModifyIndex` of what it wrote and the `X-Consul-Index` of reads.
//! The log store ([`log_store`]), state machine ([`state_machine`]) and network
//! ([`network`]) are wired together in [`RaftNode::start`]. A server that does
//! not lead forwards writes and read-index requests to the one that does
//! (`leader.rs`), so every server takes writes and answers default reads.

pub mod admit;
mod command;
mod leader;
pub mod log_store;
pub mod network;
mod proposer;
pub mod state_machine;

pub use command::{Command, CommandResult};

use crate::rpc::handshake::{Role, RpcAuth};
use crate::rpc::pool::RpcPool;
use crate::rpc::{Request, Response};
use crate::state::Store;
pub(crate) use leader::{call_for_leader, unexpected, until_leader_answers};
use openraft::Raft;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

openraft::declare_raft_types!(
    /// The types this Raft cluster is made of.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        Node = ServerNode,
);

/// The openraft handle.
pub type MeshRaft = Raft<TypeConfig>;

/// How long a write or read waits for a leader before it fails with "No
/// cluster leader" (Consul's `rpc_hold_timeout`).
pub(crate) const HOLD_TIMEOUT: Duration = Duration::from_secs(7);

/// Pause between attempts while no leader answers.
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A server in the Raft configuration: what `list-peers` shows of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNode {
    /// Its server RPC address, `ip:port`.
    pub addr: String,
    /// Its node name.
    #[serde(default)]
    pub name: String,
    /// Its node ID (a UUID).
    #[serde(default)]
    pub node_id: String,
}

/// The Raft ID of a node: the first 64 bits of its node-ID UUID, so that a
/// server keeps its Raft identity across restarts with its `-data-dir`.
pub fn raft_id(node_id: &str) -> u64 {
    let hex: String = node_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or(0).max(1)
}

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// This node is not the leader and no leader is known.
    #[error("No cluster leader")]
    NoLeader,
    /// A client agent knows no server to send the request to.
    #[error("No known Consul servers")]
    NoServers,
    /// The log or state machine failed.
    #[error("raft: {0}")]
    Internal(String),
}

/// Where and how the node keeps its log.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This server's name, ID and RPC address.
    pub server: ServerNode,
    /// Where the log and snapshots live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_threshold: u64,
    /// Start a one-voter cluster if there is no Raft state yet
    /// (`-dev`, `-bootstrap`, `-bootstrap-expect=1`).
    pub bootstrap_alone: bool,
    /// How this server's RPC connections authenticate (the gossip
    /// keyring, TLS).
    pub auth: RpcAuth,
}

/// What [`RaftNode::status`] reports.
#[derive(Debug, Clone, Copy)]
pub struct RaftStatus {
    /// The index of the last applied entry.
    pub applied_index: u64,
    /// Whether this node leads.
    pub is_leader: bool,
}

/// One server of the Raft configuration.
#[derive(Debug, Clone)]
pub struct RaftServer {
    /// Its Raft ID.
    pub id: u64,
    /// Its name and address.
    pub node: ServerNode,
    /// Whether it votes (otherwise it is a learner catching up).
    pub voter: bool,
    /// Whether it is the leader this node knows of.
    pub leader: bool,
}

/// A running Raft node with its state store.
#[derive(Clone)]
pub struct RaftNode {
    raft: MeshRaft,
    store: Arc<Store>,
    node_id: u64,
    pool: Arc<RpcPool>,
    leader_contact: Arc<Mutex<Instant>>,
    renew_session: Arc<OnceLock<RenewSession>>,
    contacts: network::Contacts,
    proposer: proposer::Proposer,
}

/// How far one server has replicated, as its leader sees it (for
/// autopilot's server health).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerProgress {
    /// Its Raft ID.
    pub id: u64,
    /// Its name and address.
    pub node: ServerNode,
    /// Whether it votes.
    pub voter: bool,
    /// Whether it leads.
    pub leader: bool,
    /// The last log index it holds.
    pub last_index: u64,
    /// Milliseconds since it last answered the leader; `None` if it never has.
    pub last_contact_ms: Option<u64>,
    /// The leader's term.
    pub term: u64,
}

/// Restarts a session's TTL timer on the leader.
pub type RenewSession = Box<dyn Fn(&str, Duration) + Send + Sync>;

impl RaftNode {
    /// Opens the log and state machine and starts Raft. With
    /// `bootstrap_alone`, a node with no Raft state makes itself the only
    /// voter; otherwise it waits to be bootstrapped or added by a leader.
    pub async fn start(config: RaftConfig, store: Arc<Store>) -> Result<RaftNode, RaftError> {
        let raft_config = openraft::Config {
            cluster_name: "mesh".into(),
            // A follower with a leader waits its leader lease
            // (`election_timeout_max`) plus its own election timeout (drawn
            // once from the range) without a heartbeat before it stands, so
            // a lost leader is replaced after max + [min, max]: 1.4–1.6 s
            // here (openraft 0.9 `RaftCore::handle_tick_election`;
            // bench/RESULTS.md).
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: 800,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(internal)?;
        let dir = config.data_dir.as_ref().map(|d| d.join("raft"));
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| RaftError::Internal(format!("create {}: {e}", d.display())))?;
        }
        let log = log_store::LogStore::open(dir.as_deref()).map_err(internal)?;
        let sm =
            state_machine::StateMachine::open(store.clone(), dir.as_deref()).map_err(internal)?;
        let pool = Arc::new(RpcPool::new(Role::Server, config.auth.clone()));
        let contacts = network::Contacts::default();
        let node_id = raft_id(&config.server.node_id);
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            network::Network::new(pool.clone(), contacts.clone()),
            log,
            sm,
        )
        .await
        .map_err(internal)?;
        let node = RaftNode {
            store,
            node_id,
            pool,
            leader_contact: Arc::new(Mutex::new(Instant::now())),
            renew_session: Arc::default(),
            contacts,
            proposer: proposer::Proposer::start(raft.clone()),
            raft,
        };
        if config.bootstrap_alone && !node.is_initialized().await {
            node.bootstrap(BTreeMap::from([(node_id, config.server)]))
                .await?;
        }
        Ok(node)
    }

    /// This node's Raft ID.
    pub fn id(&self) -> u64 {
        self.node_id
    }

    /// The state store the log applies to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The openraft handle, for the RPC listener.
    pub(crate) fn raft(&self) -> &MeshRaft {
        &self.raft
    }

    /// Whether this node has a Raft configuration (bootstrapped or joined).
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Starts a cluster of exactly `servers`. Every one of them may call
    /// this with the same set; openraft elects one leader among them.
    pub async fn bootstrap(&self, servers: BTreeMap<u64, ServerNode>) -> Result<(), RaftError> {
        match self.raft.initialize(servers).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    /// Proposes a command and waits until it is committed and applied,
    /// forwarding it to the leader when this node does not lead. Returns the
    /// log index it was applied at and its result.
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), RaftError> {
        let started = Instant::now();
        match self.on_leader(Request::Apply(cmd)).await? {
            Response::Applied { index, result } => {
                crate::metrics::global().on_raft_apply(started.elapsed());
                Ok((index, result))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Waits until this node has applied everything the leader had
    /// committed when it was asked (Raft's read-index): what a default or
    /// `consistent` read does before it reads the local store.
    pub async fn barrier(&self) -> Result<(), RaftError> {
        let index = match self.on_leader(Request::ReadIndex).await? {
            Response::ReadIndex { index } => index,
            other => return Err(unexpected(other)),
        };
        self.raft
            .wait(Some(HOLD_TIMEOUT))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| RaftError::NoLeader)
    }

    /// Adds a server as a voter, through the leader. Nothing happens if it
    /// already votes at the same address.
    pub async fn add_voter(&self, id: u64, server: ServerNode) -> Result<(), RaftError> {
        self.on_leader(Request::AddVoter { id, node: server })
            .await
            .map(|_| ())
    }

    /// Removes a server from the Raft configuration, through the leader.
    pub async fn remove_peer(&self, id: u64) -> Result<(), RaftError> {
        self.on_leader(Request::RemovePeer { id }).await.map(|_| ())
    }

    /// Whether the server at `addr` already belongs to a Raft cluster
    /// (false when it cannot be asked).
    pub async fn peer_initialized(&self, addr: &str) -> bool {
        matches!(
            self.pool
                .call(addr, &Request::Info, RETRY_BACKOFF * 20)
                .await,
            Ok(Response::Info { initialized: true })
        )
    }

    /// Every server's replication progress, from the leader.
    pub async fn progress(&self) -> Result<Vec<ServerProgress>, RaftError> {
        match self.on_leader(Request::Progress).await? {
            Response::Progress(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Sets what a session renewal forwarded to this leader does (once).
    pub fn on_session_renew(&self, renew: RenewSession) {
        let _ = self.renew_session.set(renew);
    }

    /// Restarts session `id`'s TTL timer on the leader.
    pub async fn renew_session_on_leader(&self, id: &str, ttl: Duration) -> Result<(), RaftError> {
        let req = Request::SessionRenew {
            id: id.to_string(),
            ttl_ms: ttl.as_millis() as u64,
        };
        self.on_leader(req).await.map(|_| ())
    }

    /// Records that the leader was just heard from (for `X-Consul-LastContact`).
    pub(crate) fn heard_from_leader(&self) {
        *lock(&self.leader_contact) = Instant::now();
    }

    /// This node's Raft progress, for metrics.
    pub fn status(&self) -> RaftStatus {
        let rx = self.raft.metrics();
        let metrics = rx.borrow();
        RaftStatus {
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            is_leader: metrics.current_leader == Some(self.node_id),
        }
    }

    /// The leader's RPC address, if one is known.
    pub fn leader(&self) -> Option<String> {
        let rx = self.raft.metrics();
        let metrics = rx.borrow();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// True when this node leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Milliseconds since the leader was last heard from (0 on the leader).
    pub fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            return 0;
        }
        lock(&self.leader_contact).elapsed().as_millis() as u64
    }

    /// Addresses of every voter.
    pub fn peers(&self) -> Vec<String> {
        self.configuration()
            .into_iter()
            .filter(|s| s.voter)
            .map(|s| s.node.addr)
            .collect()
    }

    /// The Raft configuration: every voter and learner.
    pub fn configuration(&self) -> Vec<RaftServer> {
        let rx = self.raft.metrics();
        let metrics = rx.borrow();
        let membership = metrics.membership_config.membership();
        membership
            .nodes()
            .map(|(id, node)| RaftServer {
                id: *id,
                node: node.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
                leader: metrics.current_leader == Some(*id),
            })
            .collect()
    }

    /// The log index of the Raft configuration in force.
    pub fn membership_index(&self) -> u64 {
        let rx = self.raft.metrics();
        let index = rx
            .borrow()
            .membership_config
            .log_id()
            .map_or(0, |l| l.index);
        index
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Waits until a leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), RaftError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader")
            .await
            .map(|_| ())
            .map_err(|_| RaftError::NoLeader)
    }

    /// A receiver that changes whenever Raft's state does (leadership,
    /// membership, progress).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, ServerNode>> {
        self.raft.metrics()
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

fn internal(e: impl std::fmt::Display) -> RaftError {
    RaftError::Internal(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock milliseconds since the Unix epoch, stamped into commands that
/// need time (lock delays) so that applying them is deterministic.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
