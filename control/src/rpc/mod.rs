//! Server RPC (port 8300): Raft traffic between servers, and the requests
//! followers and client agents forward to the leader.
//!
//! One protocol, small on purpose: a connection opens with a handshake
//! ([`handshake`]: the caller's role, and proof of the gossip key when the
//! agent has one), then carries one [`Request`] and one [`Response`] at a
//! time ([`wire`]: sealed frames on a keyed connection). Callers keep idle connections in a [`pool::RpcPool`]
//! so a steady stream of forwarded writes reuses sockets. Client agents,
//! which hold no state, send their writes here and forward the HTTP API
//! requests they cannot answer locally ([`Request::Http`]).

pub mod handshake;
pub mod link;
pub mod pool;
pub mod server;
pub mod wire;

use crate::raft::{Command, CommandResult, ServerNode, TypeConfig};
use crate::structs::{HealthCheck, Node, NodeService};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one server asks of another.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Raft log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// A Raft election vote.
    Vote(VoteRequest<u64>),
    /// A chunk of a Raft snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this command (sent to the leader).
    Apply(Command),
    /// The index a read must wait for to see every committed write
    /// (Raft's read-index; sent to the leader).
    ReadIndex,
    /// Add this server as a voter (sent to the leader).
    AddVoter {
        /// Its Raft ID.
        id: u64,
        /// Its name and addresses.
        node: ServerNode,
    },
    /// Remove this server from the Raft configuration (sent to the leader).
    RemovePeer {
        /// Its Raft ID.
        id: u64,
    },
    /// Restart a session's TTL timer (sent to the leader, which keeps them).
    SessionRenew {
        /// The session ID.
        id: String,
        /// Its TTL in milliseconds.
        ttl_ms: u64,
    },
    /// Every server's replication progress (sent to the leader).
    Progress,
    /// Whether this server has joined a Raft cluster (for `-bootstrap-expect`).
    Info,
    /// An HTTP API request a client agent forwards, answered by this
    /// server's own API as if it had been sent there.
    Http(HttpExchange),
    /// What the catalog holds for one node (a client agent's anti-entropy).
    NodeRecord {
        /// The node name.
        node: String,
    },
    /// Sign a client agent's leaf CSR (Consul's `ConnectCA.Sign`); the
    /// key stays with the client.
    SignLeaf {
        /// The CSR, PEM.
        csr: String,
        /// The service the leaf is for.
        service: String,
        /// Its datacenter.
        datacenter: String,
    },
    /// Sign a client agent's RPC certificate CSR with the Connect CA
    /// (Consul's `AutoEncrypt.Sign`): the one request a client agent
    /// without a certificate may send.
    AutoEncryptSign {
        /// The CSR, PEM, naming the agent's SPIFFE ID (any trust domain).
        csr: String,
        /// The agent's node name.
        node: String,
        /// Its datacenter.
        datacenter: String,
    },
    /// The servers' side of a client agent's proxy config, once it differs
    /// from `known` (a long poll of at most `wait_ms`).
    ProxyView {
        /// What the proxy listens for and where it sends.
        plan: crate::agent::proxycfg::Plan,
        /// The agent's datacenter.
        datacenter: String,
        /// The view the client holds, if any.
        known: Option<Box<mesh_proxy::ProxyConfig>>,
        /// How long to wait for a change, in milliseconds.
        wait_ms: u64,
    },
    /// A DNS query a client agent forwards, answered by this server's DNS.
    Dns {
        /// The query message.
        #[serde(with = "base64_bytes")]
        query: Vec<u8>,
        /// The largest reply the client's transport carries.
        max_size: usize,
    },
}

impl Request {
    /// The request's name, for messages (never its payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "AppendEntries",
            Request::Vote(_) => "Vote",
            Request::InstallSnapshot(_) => "InstallSnapshot",
            Request::Apply(_) => "Apply",
            Request::ReadIndex => "ReadIndex",
            Request::AddVoter { .. } => "AddVoter",
            Request::RemovePeer { .. } => "RemovePeer",
            Request::SessionRenew { .. } => "SessionRenew",
            Request::Progress => "Progress",
            Request::Info => "Info",
            Request::Http(_) => "Http",
            Request::NodeRecord { .. } => "NodeRecord",
            Request::SignLeaf { .. } => "SignLeaf",
            Request::AutoEncryptSign { .. } => "AutoEncryptSign",
            Request::ProxyView { .. } => "ProxyView",
            Request::Dns { .. } => "Dns",
        }
    }
}

/// An HTTP request or response carried over RPC.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HttpExchange {
    /// The method (requests) or status code (responses), as text.
    pub head: String,
    /// The path and query (requests only).
    pub uri: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, base64 on the wire.
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// What the catalog holds for one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node, if registered.
    pub node: Option<Node>,
    /// Its services by ID.
    pub services: BTreeMap<String, NodeService>,
    /// Its checks by ID.
    pub checks: BTreeMap<String, HealthCheck>,
}

impl NodeRecord {
    /// What `data` holds for `node`.
    pub fn of(data: &crate::state::StateData, node: &str) -> NodeRecord {
        NodeRecord {
            node: data.nodes.get(node).cloned(),
            services: data.services.get(node).cloned().unwrap_or_default(),
            checks: data.checks.get(node).cloned().unwrap_or_default(),
        }
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answers [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Answers [`Request::Vote`].
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Answers [`Request::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The command committed at `index` with `result`.
    Applied {
        /// Its log index.
        index: u64,
        /// What applying it returned.
        result: CommandResult,
    },
    /// Reads must wait until this index is applied.
    ReadIndex {
        /// The leader's read index.
        index: u64,
    },
    /// Done.
    Done,
    /// Answers [`Request::Progress`].
    Progress(Vec<crate::raft::ServerProgress>),
    /// Answers [`Request::Info`].
    Info {
        /// Whether the server has a Raft configuration.
        initialized: bool,
    },
    /// This server does not lead; the leader's RPC address, if known.
    NotLeader {
        /// Where to send it instead.
        leader: Option<String>,
    },
    /// The request failed; the reason.
    Failed(String),
    /// Answers [`Request::Http`].
    Http(HttpExchange),
    /// Answers [`Request::NodeRecord`].
    NodeRecord(NodeRecord),
    /// Answers [`Request::Dns`]: the reply message; empty when the query
    /// gets no reply.
    Dns(#[serde(with = "base64_bytes")] Vec<u8>),
    /// Answers [`Request::SignLeaf`] and [`Request::AutoEncryptSign`].
    Signed(Result<mesh_ca::IssuedCert, crate::server::ca::CaOpError>),
    /// Answers [`Request::ProxyView`].
    ProxyView(Box<mesh_proxy::ProxyConfig>),
}
