//! [`GossipError`]: everything the gossip pool can refuse or fail at.

use std::io;
use std::net::SocketAddr;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// A configuration field is invalid.
    #[error("invalid gossip config: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An encryption key could not be used.
    #[error("invalid gossip encryption key: {0}")]
    InvalidKey(String),
    /// The gossip sockets could not be bound.
    #[error("cannot bind gossip port {addr} (UDP and TCP): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// Tags are too large to gossip.
    #[error("member tags are {0} bytes encoded; at most 512 fit in gossip")]
    TagsTooLarge(usize),
    /// No join address could be contacted; one entry per address.
    #[error("failed to join any node: {}", join_list(.0))]
    Join(Vec<(String, GossipError)>),
    /// The peer and this node share no usable encryption key.
    #[error("{0}; check -encrypt: every member needs a common gossip key")]
    Encryption(String),
    /// A network exchange with a peer failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A peer sent something that is not this protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The named member is not known to this node.
    #[error("no member named {0:?} is known to this node")]
    UnknownMember(String),
    /// A keyring operation was refused locally or by members.
    #[error("keyring: {0}")]
    Keyring(String),
    /// The request makes no sense for its target.
    #[error("{0}")]
    Refused(String),
    /// The gossip pool has been shut down or has left.
    #[error("the gossip pool is shut down")]
    Shutdown,
}

fn join_list(failures: &[(String, GossipError)]) -> String {
    if failures.is_empty() {
        return "no addresses given".into();
    }
    failures
        .iter()
        .map(|(addr, e)| format!("{addr}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl GossipError {
    /// True if the failure comes from encryption keys that do not match,
    /// including inside a [`GossipError::Join`] where every attempt failed so.
    pub fn is_encryption(&self) -> bool {
        match self {
            GossipError::Encryption(_) => true,
            GossipError::Join(f) => !f.is_empty() && f.iter().all(|(_, e)| e.is_encryption()),
            _ => false,
        }
    }

    /// True if the pool was already shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, GossipError::Shutdown)
    }

    /// True if a named member is unknown.
    pub fn is_unknown_member(&self) -> bool {
        matches!(self, GossipError::UnknownMember(_))
    }
}
