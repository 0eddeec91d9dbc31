//! The leader's side of forwarding: [`RaftNode::on_leader`] sends a request
//! to the leader (or handles it here when this node leads), retrying while
//! no leader answers; [`RaftNode::handle_as_leader`] answers requests only a
//! leader may (commit a command, give a read index, change the voter set,
//! report replication progress, restart a session timer).

use super::{RaftError, RaftNode, ServerNode, ServerProgress, HOLD_TIMEOUT, RETRY_BACKOFF};
use crate::rpc::pool::{RpcError, RpcPool};
use crate::rpc::{Request, Response};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

impl RaftNode {
    /// Sends `req` to the leader (handling it here when this node leads),
    /// retrying while no leader answers, for up to [`HOLD_TIMEOUT`].
    pub(super) async fn on_leader(&self, req: Request) -> Result<Response, RaftError> {
        until_leader_answers(|hint, left| {
            let req = &req;
            async move {
                if self.is_leader() {
                    return Ok(self.handle_as_leader(clone_request(req)).await);
                }
                // This node's view of the leader first; where the last "not
                // the leader" answer pointed while it has none.
                let target = self.leader().or(hint);
                call_for_leader(&self.pool, target, req, left).await
            }
        })
        .await
    }

    /// Handles a request that only the leader may: Apply, ReadIndex,
    /// AddVoter, RemovePeer. Answers NotLeader when this node does not lead.
    pub(crate) async fn handle_as_leader(&self, req: Request) -> Response {
        let result = match req {
            Request::Apply(cmd) => {
                if let Err(e) = cmd.admit() {
                    return Response::Failed(format!("{} refused: {e}", cmd.kind()));
                }
                return self.proposer.propose(cmd).await;
            }
            Request::ReadIndex => {
                let read = tokio::time::timeout(HOLD_TIMEOUT, self.raft.get_read_log_id()).await;
                let Ok(read) = read else {
                    return Response::Failed(format!(
                        "no quorum confirmed this leader within {HOLD_TIMEOUT:?}"
                    ));
                };
                return match read {
                    Ok((read, _)) => Response::ReadIndex {
                        index: read.map_or(0, |l| l.index),
                    },
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::CheckIsLeaderError::ForwardToLeader(f),
                    )) => not_leader(f),
                    Err(e) => Response::Failed(e.to_string()),
                };
            }
            Request::AddVoter { id, node } => self.add_voter_here(id, node).await,
            Request::RemovePeer { id } => {
                if !self.configuration().iter().any(|s| s.id == id) {
                    return Response::Done;
                }
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map(|_| Response::Done)
            }
            Request::Progress => {
                if !self.is_leader() {
                    return Response::NotLeader {
                        leader: self.leader(),
                    };
                }
                return Response::Progress(self.progress_here());
            }
            Request::SessionRenew { id, ttl_ms } => {
                if !self.is_leader() {
                    return Response::NotLeader {
                        leader: self.leader(),
                    };
                }
                return match self.renew_session.get() {
                    Some(renew) => {
                        renew(&id, Duration::from_millis(ttl_ms));
                        Response::Done
                    }
                    None => Response::Failed("this server keeps no session timers".into()),
                };
            }
            other => return Response::Failed(format!("not a leader request: {other:?}")),
        };
        match result {
            Ok(resp) => resp,
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => not_leader(f),
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    async fn add_voter_here(&self, id: u64, node: ServerNode) -> Result<Response, WriteError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let current = membership.membership().get_node(&id).cloned();
        let voter = membership.membership().voter_ids().any(|v| v == id);
        match current {
            // A server that came back on another address: re-address it.
            Some(known) if known != node => {
                self.raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
                    .await?;
            }
            Some(_) => {}
            None => {
                self.raft.add_learner(id, node, true).await?;
            }
        }
        if !voter {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await?;
        }
        Ok(Response::Done)
    }

    pub(super) fn progress_here(&self) -> Vec<ServerProgress> {
        let m = self.raft.metrics().borrow().clone();
        let contacts = super::lock(&self.contacts).clone();
        let replication = m.replication.clone().unwrap_or_default();
        self.configuration()
            .into_iter()
            .map(|s| {
                let me = s.id == self.node_id;
                ServerProgress {
                    last_index: if me {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        replication
                            .get(&s.id)
                            .copied()
                            .flatten()
                            .map_or(0, |l| l.index)
                    },
                    last_contact_ms: if me {
                        Some(0)
                    } else {
                        contacts.get(&s.id).map(|t| t.elapsed().as_millis() as u64)
                    },
                    id: s.id,
                    node: s.node,
                    voter: s.voter,
                    leader: s.leader,
                    term: m.current_term,
                }
            })
            .collect()
    }
}

type WriteError =
    openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, ServerNode>>;

fn not_leader(f: openraft::error::ForwardToLeader<u64, ServerNode>) -> Response {
    Response::NotLeader {
        leader: f.leader_node.map(|n| n.addr),
    }
}

fn clone_request(req: &Request) -> Request {
    match req {
        Request::Apply(cmd) => Request::Apply(cmd.clone()),
        Request::ReadIndex => Request::ReadIndex,
        Request::AddVoter { id, node } => Request::AddVoter {
            id: *id,
            node: node.clone(),
        },
        Request::RemovePeer { id } => Request::RemovePeer { id: *id },
        Request::Progress => Request::Progress,
        Request::SessionRenew { id, ttl_ms } => Request::SessionRenew {
            id: id.clone(),
            ttl_ms: *ttl_ms,
        },
        // Raft traffic never goes through `on_leader`.
        _ => Request::Info,
    }
}

/// Asks `ask` until the answer is not "not the leader", handing it the
/// leader the last such answer named (if any) and the time left, for up to
/// [`HOLD_TIMEOUT`]; waits a moment between answers that name no leader.
pub(crate) async fn until_leader_answers<F, Fut>(mut ask: F) -> Result<Response, RaftError>
where
    F: FnMut(Option<String>, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Response, RaftError>>,
{
    let deadline = Instant::now() + HOLD_TIMEOUT;
    let mut hint = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ask(hint.take(), left).await? {
            Response::NotLeader { leader } if Instant::now() < deadline => {
                hint = leader;
                if hint.is_none() {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
            Response::NotLeader { .. } => return Err(RaftError::NoLeader),
            Response::Failed(e) => return Err(RaftError::Internal(e)),
            other => return Ok(other),
        }
    }
}

/// Sends `req` to the server at `target` through `pool`, within `left`; no
/// target, or one that cannot be reached, counts as "not the leader".
pub(crate) async fn call_for_leader(
    pool: &RpcPool,
    target: Option<String>,
    req: &Request,
    left: Duration,
) -> Result<Response, RaftError> {
    let Some(addr) = target else {
        return Ok(Response::NotLeader { leader: None });
    };
    match pool.call(&addr, req, left.max(RETRY_BACKOFF)).await {
        Ok(resp) => Ok(resp),
        Err(RpcError::Connect { .. }) => Ok(Response::NotLeader { leader: None }),
        Err(e) => Err(RaftError::Internal(e.to_string())),
    }
}

pub(crate) fn unexpected(resp: Response) -> RaftError {
    RaftError::Internal(format!("unexpected answer from a server: {resp:?}"))
}
