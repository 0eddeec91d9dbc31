//! TCP ping: memberlist's fallback when a UDP probe fails.
//!
//! foca reports a failed probe (`ProbeFailed`) as it marks the member
//! Suspect. The loop then asks the member over TCP, off the loop and within
//! `tcp_timeout`, whether it is alive ([`Request::Ping`], naming the
//! suspected incarnation). A live member refutes the suspicion itself and
//! answers with its alive state ([`Response::Pong`]), which the loop applies
//! and gossips at once, so the member stays alive even where UDP is blocked
//! one way. It is also Lifeguard's buddy system: the suspect hears of the
//! suspicion from its prober instead of waiting for gossip to reach it. If
//! the TCP ping fails too, the suspicion runs its course.

use std::sync::Arc;

use foca::Incarnation;

use crate::error::GossipError;
use crate::identity::NodeId;
use crate::runtime::{Command, Shared};
use crate::wire::{Request, Response};

/// Pings `target`, suspected at `incarnation`, over TCP in the background;
/// its alive state goes back to the loop if it answers.
pub(crate) fn spawn(shared: Arc<Shared>, target: NodeId, incarnation: Incarnation) {
    tokio::spawn(async move {
        match ping(&shared, &target, incarnation).await {
            Ok((id, incarnation)) => {
                tracing::debug!(
                    member = %target.name, addr = %target.addr,
                    "UDP probe failed but the TCP ping was answered; UDP may be blocked between us"
                );
                let _ = shared.send(Command::Alive { id, incarnation }).await;
            }
            Err(e) => tracing::debug!(
                member = %target.name, addr = %target.addr, error = %e,
                "TCP ping after a failed probe failed too"
            ),
        }
    });
}

async fn ping(
    shared: &Shared,
    target: &NodeId,
    incarnation: Incarnation,
) -> Result<(NodeId, Incarnation), GossipError> {
    let req = Request::Ping {
        target: target.clone(),
        incarnation,
    };
    match crate::tcp::request(shared, target.addr, &req).await? {
        Response::Pong { id, incarnation } if speaks_for(target, &id) => Ok((id, incarnation)),
        Response::Pong { id, .. } => Err(GossipError::Protocol(format!(
            "pinged {} at {} but {} at {} answered",
            target.name, target.addr, id.name, id.addr
        ))),
        Response::Error(e) => Err(GossipError::Protocol(format!(
            "the remote node refused: {e}"
        ))),
        other => Err(GossipError::Protocol(format!("unexpected reply {other:?}"))),
    }
}

/// Whether an answer from `id` vouches for the pinged `target`: the same
/// node at the same address, in the same life or a later one.
pub(crate) fn speaks_for(target: &NodeId, id: &NodeId) -> bool {
    id.name == target.name && id.addr == target.addr && id.generation >= target.generation
}

#[cfg(test)]
mod tests;
