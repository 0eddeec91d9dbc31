//! What the leader does with gossip membership: keep the Raft voter set and
//! the catalog's `serfHealth` checks in step with who is alive, failed or
//! gone (Consul's leader reconciliation and autopilot's dead-server cleanup).
//!
//! The functions here only plan; [`super::leader`] carries the plans out.

use crate::raft::{now_ms, Command, RaftServer, ServerNode};
use crate::state::StateData;
use crate::structs::{status, DeregisterRequest, HealthCheck, RegisterRequest, SERF_HEALTH_CHECK};

/// A member's gossip status, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Stopped answering probes: presumed failed.
    Failed,
    /// Left gracefully, or was forced out.
    Left,
}

/// What a server member advertises about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its RPC address, `ip:port`.
    pub rpc_addr: String,
    /// Its `-bootstrap-expect` (0: none).
    pub expect: u32,
}

/// One member of the LAN pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// Node name.
    pub name: String,
    /// Node ID (a UUID).
    pub node_id: String,
    /// Its advertised IP address.
    pub address: String,
    /// Alive, failed or left.
    pub status: MemberStatus,
    /// Set when the member is a server of this datacenter.
    pub server: Option<ServerInfo>,
}

impl ClusterMember {
    fn server_node(&self) -> Option<ServerNode> {
        self.server.as_ref().map(|s| ServerNode {
            addr: s.rpc_addr.clone(),
            name: self.name.clone(),
            node_id: self.node_id.clone(),
        })
    }
}

/// A change to the Raft configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftChange {
    /// Add (or re-address) a voter.
    AddVoter(u64, ServerNode),
    /// Remove a server.
    Remove(u64),
}

/// The servers to bootstrap with, once `expect` alive servers (this one
/// included) are known; `None` until then.
pub fn bootstrap_set(members: &[ClusterMember], expect: u32) -> Option<Vec<ServerNode>> {
    let servers: Vec<ServerNode> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .filter(|m| m.server.as_ref().is_some_and(|s| s.expect == expect))
        .filter_map(ClusterMember::server_node)
        .collect();
    (expect > 0 && servers.len() >= expect as usize).then_some(servers)
}

/// How the voter set should change. Alive servers that do not vote are
/// added; servers that left are removed; failed (or vanished) voters are
/// removed only once replaced: while more than `min_voters` vote and the
/// healthy ones keep a quorum of what remains.
pub fn plan_raft(
    config: &[RaftServer],
    members: &[ClusterMember],
    me: u64,
    min_voters: usize,
) -> Vec<RaftChange> {
    let member = |node: &ServerNode| members.iter().find(|m| m.node_id == node.node_id);
    let mut changes = Vec::new();
    for m in members.iter().filter(|m| m.status == MemberStatus::Alive) {
        let Some(node) = m.server_node() else {
            continue;
        };
        let id = crate::raft::raft_id(&m.node_id);
        let current = config.iter().find(|s| s.id == id);
        if !current.is_some_and(|s| s.voter && s.node == node) {
            changes.push(RaftChange::AddVoter(id, node));
        }
    }
    let mut voters = config.iter().filter(|s| s.voter).count();
    let healthy = config
        .iter()
        .filter(|s| s.voter && member(&s.node).is_some_and(|m| m.status == MemberStatus::Alive))
        .count();
    for s in config.iter().filter(|s| s.id != me) {
        match member(&s.node).map(|m| m.status) {
            Some(MemberStatus::Alive) => {}
            Some(MemberStatus::Left) => {
                changes.push(RaftChange::Remove(s.id));
                voters -= usize::from(s.voter);
            }
            Some(MemberStatus::Failed) | None => {
                let remaining = voters - usize::from(s.voter);
                if !s.voter || (remaining >= min_voters.max(1) && healthy > remaining / 2) {
                    changes.push(RaftChange::Remove(s.id));
                    voters = remaining;
                }
            }
        }
    }
    changes
}

/// The catalog writes that make every member's `serfHealth` check say what
/// gossip says: passing when alive, critical when failed; a node that left
/// (or was reaped from gossip) is deregistered. Nodes without a
/// `serfHealth` check were registered through the catalog API and are left
/// alone.
pub fn plan_catalog(data: &StateData, members: &[ClusterMember], datacenter: &str) -> Vec<Command> {
    let mut out = Vec::new();
    for m in members {
        let current = data
            .checks
            .get(&m.name)
            .and_then(|c| c.get(SERF_HEALTH_CHECK))
            .map(|c| c.status.as_str());
        let (want, output) = match m.status {
            MemberStatus::Alive => (status::PASSING, "Agent alive and reachable"),
            MemberStatus::Failed => (status::CRITICAL, "Agent not live or unreachable"),
            MemberStatus::Left => {
                if data.nodes.contains_key(&m.name) {
                    out.push(deregister(&m.name, datacenter));
                }
                continue;
            }
        };
        if current == Some(want) {
            continue;
        }
        let exists = data.nodes.contains_key(&m.name);
        if !exists && m.status == MemberStatus::Failed {
            continue;
        }
        out.push(Command::Register {
            req: Box::new(RegisterRequest {
                datacenter: datacenter.to_string(),
                id: m.node_id.clone(),
                node: m.name.clone(),
                address: m.address.clone(),
                skip_node_update: exists,
                check: Some(HealthCheck {
                    node: m.name.clone(),
                    check_id: SERF_HEALTH_CHECK.into(),
                    name: "Serf Health Status".into(),
                    status: want.into(),
                    output: output.into(),
                    check_type: "serf".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            now_ms: now_ms(),
        });
    }
    for (node, checks) in &data.checks {
        if checks.contains_key(SERF_HEALTH_CHECK) && !members.iter().any(|m| &m.name == node) {
            out.push(deregister(node, datacenter));
        }
    }
    out
}

fn deregister(node: &str, datacenter: &str) -> Command {
    Command::Deregister {
        req: DeregisterRequest {
            datacenter: datacenter.to_string(),
            node: node.to_string(),
            ..Default::default()
        },
        now_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::raft_id;

    fn member(i: u8, status: MemberStatus, server: bool) -> ClusterMember {
        ClusterMember {
            name: format!("n{i}"),
            node_id: format!("{i:02x}000000-0000-0000-0000-000000000000"),
            address: format!("10.0.0.{i}"),
            status,
            server: server.then(|| ServerInfo {
                rpc_addr: format!("10.0.0.{i}:8300"),
                expect: 3,
            }),
        }
    }

    fn voter(m: &ClusterMember) -> RaftServer {
        RaftServer {
            id: raft_id(&m.node_id),
            node: m.server_node().unwrap(),
            voter: true,
            leader: false,
        }
    }

    #[test]
    fn bootstrap_waits_for_expect_alive_servers_with_the_same_expect() {
        let mut members = vec![
            member(1, MemberStatus::Alive, true),
            member(2, MemberStatus::Alive, true),
            member(9, MemberStatus::Alive, false),
        ];
        assert_eq!(bootstrap_set(&members, 3), None);
        members.push(member(3, MemberStatus::Failed, true));
        assert_eq!(bootstrap_set(&members, 3), None);
        members.push(member(4, MemberStatus::Alive, true));
        let set = bootstrap_set(&members, 3).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|s| s.addr.ends_with(":8300")));
    }

    #[test]
    fn joiners_are_added_leavers_removed_and_failed_voters_only_once_replaced() {
        let a = member(1, MemberStatus::Alive, true);
        let b = member(2, MemberStatus::Alive, true);
        let mut c = member(3, MemberStatus::Failed, true);
        let config = vec![voter(&a), voter(&b), voter(&c)];
        let me = raft_id(&a.node_id);
        // A failed voter of a three-server cluster stays: nothing replaced it.
        let members = vec![a.clone(), b.clone(), c.clone()];
        assert!(plan_raft(&config, &members, me, 3).is_empty());

        // A fourth server joins: it is added, and then the failed one goes.
        let d = member(4, MemberStatus::Alive, true);
        let members = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        let plan = plan_raft(&config, &members, me, 3);
        assert_eq!(
            plan,
            [RaftChange::AddVoter(
                raft_id(&d.node_id),
                d.server_node().unwrap()
            )]
        );
        let config4 = vec![voter(&a), voter(&b), voter(&c), voter(&d)];
        assert_eq!(
            plan_raft(&config4, &members, me, 3),
            [RaftChange::Remove(raft_id(&c.node_id))]
        );

        // A server that left is removed at once; client members never vote.
        c.status = MemberStatus::Left;
        let members = vec![
            a.clone(),
            b.clone(),
            c.clone(),
            member(7, MemberStatus::Alive, false),
        ];
        assert_eq!(
            plan_raft(&config, &members, me, 3),
            [RaftChange::Remove(raft_id(&c.node_id))]
        );

        // Two failed of three: no quorum of healthy voters, remove nothing.
        let members = vec![
            a.clone(),
            member(2, MemberStatus::Failed, true),
            member(3, MemberStatus::Failed, true),
        ];
        assert!(plan_raft(&config, &members, me, 1).is_empty());
    }

    #[test]
    fn serf_health_follows_membership() {
        let mut data = StateData::default();
        let alive = member(1, MemberStatus::Alive, false);
        let plan = plan_catalog(&data, std::slice::from_ref(&alive), "dc1");
        assert_eq!(plan.len(), 1);
        let index = 5;
        for cmd in &plan {
            cmd.apply(index, &mut data, &mut Default::default());
        }
        assert!(plan_catalog(&data, std::slice::from_ref(&alive), "dc1").is_empty());

        let failed = ClusterMember {
            status: MemberStatus::Failed,
            ..alive.clone()
        };
        let plan = plan_catalog(&data, std::slice::from_ref(&failed), "dc1");
        for cmd in &plan {
            cmd.apply(6, &mut data, &mut Default::default());
        }
        assert_eq!(
            data.checks["n1"][SERF_HEALTH_CHECK].status,
            status::CRITICAL
        );

        // Reaped from gossip: the node goes. A catalog-API node stays.
        let plan = plan_catalog(&data, &[], "dc1");
        assert!(matches!(plan.as_slice(), [Command::Deregister { .. }]));
        for cmd in &plan {
            cmd.apply(7, &mut data, &mut Default::default());
        }
        assert!(!data.nodes.contains_key("n1"));
    }
}
