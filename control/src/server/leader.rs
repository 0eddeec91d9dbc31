//! The leader loop: what a server does when it wins or loses leadership,
//! and the reconciliation it runs while it leads.

use super::membership::{bootstrap_set, plan_catalog, plan_raft, ClusterMember, RaftChange};
use super::SessionTimers;
use crate::raft::RaftNode;
use crate::server::ca::CaManager;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the leader reconciles even when nothing told it to.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

/// Everything the leader loop drives.
pub struct LeaderDuties {
    /// This server's Raft node.
    pub node: RaftNode,
    /// The CA, initialized by each new leader.
    pub ca: Arc<CaManager>,
    /// Session TTL timers, which only the leader runs.
    pub sessions: Arc<SessionTimers>,
    /// The LAN pool's members, as gossip sees them.
    pub members: watch::Receiver<Vec<ClusterMember>>,
    /// This datacenter.
    pub datacenter: String,
    /// `-bootstrap-expect` (0 when the server bootstraps alone or joins).
    pub bootstrap_expect: u32,
    /// This server's node ID.
    pub node_id: String,
}

impl LeaderDuties {
    /// Runs until the task is dropped.
    pub async fn run(mut self) {
        let mut raft = self.node.watch();
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        let mut leading = false;
        let mut seen = None;
        loop {
            let now = self.node.is_leader();
            if now && !leading {
                leading = self.establish().await;
            } else if !now && leading {
                tracing::info!("lost leadership");
                self.sessions.clear();
                leading = false;
            }
            if !self.node.is_initialized().await {
                self.try_bootstrap().await;
            } else if leading {
                self.reconcile().await;
            }
            // Wait for a change worth acting on: leadership, the Raft
            // configuration, gossip membership, or the periodic tick.
            loop {
                tokio::select! {
                    r = raft.changed() => if r.is_err() { return },
                    r = self.members.changed() => { if r.is_err() { return } break }
                    _ = tick.tick() => break,
                }
                let m = raft.borrow();
                let key = (
                    m.current_leader,
                    m.membership_config.log_id().map(|l| l.index),
                );
                if seen != Some(key) {
                    seen = Some(key);
                    break;
                }
            }
        }
    }

    /// Becomes leader: initializes the CA and restarts session timers.
    /// Returns false (to try again) if the CA could not be initialized.
    async fn establish(&self) -> bool {
        if let Err(e) = self.ca.initialize().await {
            tracing::warn!(error = %e, "initializing the CA as the new leader failed");
            return false;
        }
        self.sessions.reset_all();
        tracing::info!("cluster leadership acquired");
        true
    }

    /// With `-bootstrap-expect`, starts the cluster once enough servers are
    /// known, unless one of them already belongs to a cluster.
    async fn try_bootstrap(&self) {
        if self.bootstrap_expect == 0 {
            return;
        }
        let members = self.members.borrow().clone();
        let Some(servers) = bootstrap_set(&members, self.bootstrap_expect) else {
            return;
        };
        for s in &servers {
            if s.node_id != self.node_id && self.node.peer_initialized(&s.addr).await {
                tracing::info!(peer = %s.name, "existing Raft peers found; not bootstrapping");
                return;
            }
        }
        let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(servers = ?names, "found the expected servers; bootstrapping the cluster");
        let set = servers
            .into_iter()
            .map(|s| (crate::raft::raft_id(&s.node_id), s))
            .collect();
        if let Err(e) = self.node.bootstrap(set).await {
            tracing::warn!(error = %e, "bootstrapping failed");
        }
    }

    /// Brings the voter set and the catalog in line with gossip.
    async fn reconcile(&self) {
        let members = self.members.borrow().clone();
        let min_voters = self.bootstrap_expect.max(1) as usize;
        for change in plan_raft(
            &self.node.configuration(),
            &members,
            self.node.id(),
            min_voters,
        ) {
            let result = match &change {
                RaftChange::AddVoter(id, server) => {
                    tracing::info!(server = %server.name, addr = %server.addr, "adding Raft voter");
                    self.node.add_voter(*id, server.clone()).await
                }
                RaftChange::Remove(id) => {
                    tracing::info!(id, "removing Raft server");
                    self.node.remove_peer(*id).await
                }
            };
            if let Err(e) = result {
                tracing::warn!(?change, error = %e, "changing the Raft configuration failed");
            }
        }
        let plan = plan_catalog(&self.node.store().read(), &members, &self.datacenter);
        for cmd in plan {
            if let Err(e) = self.node.write(cmd).await {
                tracing::warn!(error = %e, "reconciling a member into the catalog failed");
                return;
            }
        }
    }
}
