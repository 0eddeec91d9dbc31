//! [`NodeId`]: how foca names a member.
//!
//! An identity is the node name, its gossip address and a generation: the
//! start time in milliseconds, bumped when foca renews an identity that the
//! pool wrongly declared down. A node restarted with the same name therefore
//! gets a newer identity that wins over its previous life, even on the same
//! address.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One life of one member, as foca sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeId {
    /// The node name.
    pub name: String,
    /// Where its UDP and TCP gossip listen.
    pub addr: SocketAddr,
    /// Start time in milliseconds, plus one per renewal.
    pub generation: u64,
}

impl NodeId {
    /// The identity of a node starting now.
    pub(crate) fn new(name: String, addr: SocketAddr) -> NodeId {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        NodeId {
            name,
            addr,
            generation,
        }
    }

    /// True if `self` is a later life than `other`.
    pub(crate) fn newer_than(&self, other: &NodeId) -> bool {
        self.generation > other.generation
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
            || (self.generation == adversary.generation && self.name > adversary.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins() {
        let a = NodeId::new("a".into(), "127.0.0.1:1".parse().unwrap());
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert!(b.newer_than(&a));
        assert_eq!(a.addr(), b.addr());
    }
}
