//! Raft: every write to the state store is a [`Command`] in an openraft log.
//!
//! Even `mesh agent -dev` runs a one-voter cluster, so the log index of each
//! write is the `ModifyIndex` of what it wrote and the `X-Consul-Index` of reads.
//! The log store ([`log_store`]), state machine ([`state_machine`]) and network
//! ([`network`]) are wired together in [`RaftNode::start`].

mod command;
pub mod log_store;
pub mod network;
pub mod state_machine;

pub use command::{Command, CommandResult};

use crate::state::Store;
use openraft::{BasicNode, Raft};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

openraft::declare_raft_types!(
    /// The types this Raft cluster is made of.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// The openraft handle.
pub type MeshRaft = Raft<TypeConfig>;

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// This node is not the leader and no leader is known.
    #[error("No cluster leader")]
    NoLeader,
    /// The log or state machine failed.
    #[error("raft: {0}")]
    Internal(String),
}

/// Where and how the node keeps its log.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's Raft ID.
    pub node_id: u64,
    /// The address peers reach it on (server RPC).
    pub address: String,
    /// Where the log and snapshots live; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_threshold: u64,
}

/// What [`RaftNode::status`] reports.
#[derive(Debug, Clone, Copy)]
pub struct RaftStatus {
    /// The index of the last applied entry.
    pub applied_index: u64,
    /// Whether this node leads.
    pub is_leader: bool,
}

/// A running Raft node with its state store.
#[derive(Clone)]
pub struct RaftNode {
    raft: MeshRaft,
    store: Arc<Store>,
    node_id: u64,
}

impl RaftNode {
    /// Opens the log and state machine and starts Raft. A node with no
    /// existing membership bootstraps itself as the only voter.
    pub async fn start(config: RaftConfig, store: Arc<Store>) -> Result<RaftNode, RaftError> {
        let raft_config = openraft::Config {
            cluster_name: "mesh".into(),
            heartbeat_interval: 250,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Internal(e.to_string()))?;
        let dir = config.data_dir.as_ref().map(|d| d.join("raft"));
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| RaftError::Internal(format!("create {}: {e}", d.display())))?;
        }
        let log = log_store::LogStore::open(dir.as_deref())
            .map_err(|e| RaftError::Internal(e.to_string()))?;
        let sm = state_machine::StateMachine::open(store.clone(), dir.as_deref())
            .map_err(|e| RaftError::Internal(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::Network,
            log,
            sm,
        )
        .await
        .map_err(|e| RaftError::Internal(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Internal(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(
                config.node_id,
                BasicNode {
                    addr: config.address.clone(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|e| RaftError::Internal(e.to_string()))?;
        }
        Ok(RaftNode {
            raft,
            store,
            node_id: config.node_id,
        })
    }

    /// The state store the log applies to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Proposes a command and waits until it is committed and applied.
    /// Returns the log index it was applied at and its result.
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), RaftError> {
        let started = std::time::Instant::now();
        match self.raft.client_write(cmd).await {
            Ok(resp) => {
                crate::metrics::global().on_raft_apply(started.elapsed());
                Ok((resp.log_id.index, resp.data))
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            )) => Err(RaftError::NoLeader),
            Err(e) => Err(RaftError::Internal(e.to_string())),
        }
    }

    /// Waits until this node has applied everything the leader committed
    /// (Consul's `consistent` read mode).
    pub async fn barrier(&self) -> Result<(), RaftError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|_| RaftError::NoLeader)
    }

    /// This node's Raft progress, for metrics.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics().borrow().clone();
        RaftStatus {
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            is_leader: metrics.current_leader == Some(self.node_id),
        }
    }

    /// The current Raft term.
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The leader's address, if one is known.
    pub fn leader(&self) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
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
        let metrics = self.raft.metrics().borrow().clone();
        metrics.millis_since_quorum_ack.unwrap_or(0)
    }

    /// Addresses of every voter.
    pub fn peers(&self) -> Vec<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect()
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

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Wall-clock milliseconds since the Unix epoch, stamped into commands that
/// need time (lock delays) so that applying them is deterministic.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
