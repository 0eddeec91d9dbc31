//! How an agent reaches the replicated state: a server holds it in its Raft
//! node; a client agent holds none and asks the servers.

use crate::raft::{Command, CommandResult, RaftError, RaftNode};
use crate::rpc::link::ServerLink;
use crate::rpc::NodeRecord;

/// A server's Raft node, or a client agent's link to the servers.
#[derive(Clone)]
pub enum Cluster {
    /// A server agent.
    Server(RaftNode),
    /// A client agent.
    Client(ServerLink),
}

impl Cluster {
    /// Commits `cmd` (through the leader); returns its log index and result.
    pub async fn write(&self, cmd: Command) -> Result<(u64, CommandResult), RaftError> {
        match self {
            Cluster::Server(node) => node.write(cmd).await,
            Cluster::Client(link) => link.write(cmd).await,
        }
    }

    /// What the catalog holds for `node`: from this server's store, or from
    /// a server.
    pub async fn node_record(&self, node: &str) -> Result<NodeRecord, RaftError> {
        match self {
            Cluster::Server(raft) => Ok(NodeRecord::of(&raft.store().read(), node)),
            Cluster::Client(link) => link.node_record(node).await,
        }
    }

    /// The Raft node, on a server.
    pub fn server(&self) -> Option<&RaftNode> {
        match self {
            Cluster::Server(node) => Some(node),
            Cluster::Client(_) => None,
        }
    }
}
