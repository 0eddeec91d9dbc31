//! Group commit on the leader: writes that arrive while earlier ones are
//! being committed ride in one log entry ([`Command::Batch`]).
//!
//! openraft 0.9 appends (and fsyncs) the log once per client write, so a
//! leader proposing each write on its own commits at most one write per
//! fsync. The proposer keeps a few proposals in flight; whatever queues up
//! meanwhile goes out as the next one, so a quiet leader proposes each
//! write at once and a busy one commits many per fsync. Every write in a
//! batch is applied in order at the entry's log index, as a transaction's
//! operations are, and gets its own result.

use super::{Command, CommandResult, MeshRaft, Response, HOLD_TIMEOUT};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Proposals in flight at once: one being appended while others replicate.
const IN_FLIGHT: usize = 3;

/// The most writes in one entry.
pub(super) const MAX_BATCH: usize = 128;

/// A write waiting to be proposed, and who waits for its answer.
struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Response>,
}

/// Hands writes to the group-commit loop.
#[derive(Clone)]
pub(super) struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the loop proposing through `raft`.
    pub(super) fn start(raft: MeshRaft) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes `cmd`: `Applied` with its index and result once committed
    /// and applied, `NotLeader` when this node does not lead, `Failed`
    /// otherwise.
    pub(super) async fn propose(&self, cmd: Command) -> Response {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Pending { cmd, reply }).is_err() {
            return Response::Failed("this server is shutting down".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Response::Failed("this server is shutting down".into()))
    }
}

async fn run(raft: MeshRaft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // While every slot is busy, more writes queue up behind `first`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry (a lone write as itself) and answers each
/// writer.
async fn commit(raft: &MeshRaft, batch: Vec<Pending>) {
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    let cmd = match <[Command; 1]>::try_from(cmds) {
        Ok([one]) => one,
        Err(cmds) => Command::Batch(cmds),
    };
    // A leader cut off from its quorum cannot commit; answer rather than
    // hold the callers forever. The entry may still commit later, as with
    // any timed-out write.
    let written = tokio::time::timeout(HOLD_TIMEOUT, raft.client_write(cmd)).await;
    let (index, results) = match written {
        Err(_) => {
            let why = format!("no quorum committed the write within {HOLD_TIMEOUT:?}");
            return answer_all(replies, || Response::Failed(why.clone()));
        }
        Ok(Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(f),
        ))) => {
            let leader = f.leader_node.map(|n| n.addr);
            return answer_all(replies, || Response::NotLeader {
                leader: leader.clone(),
            });
        }
        Ok(Err(e)) => return answer_all(replies, || Response::Failed(e.to_string())),
        Ok(Ok(r)) => match (n, r.data) {
            (1, result) => (r.log_id.index, vec![result]),
            (n, CommandResult::Batch(results)) if results.len() == n => (r.log_id.index, results),
            (_, other) => {
                let why = format!("a batch of writes was answered with {other:?}");
                return answer_all(replies, || Response::Failed(why.clone()));
            }
        },
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(Response::Applied { index, result });
    }
}

fn answer_all(replies: Vec<oneshot::Sender<Response>>, answer: impl Fn() -> Response) {
    for reply in replies {
        let _ = reply.send(answer());
    }
}
