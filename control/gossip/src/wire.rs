//! What travels between members, in postcard, inside the envelope of
//! [`crate::crypto`].
//!
//! UDP payloads start with a kind byte: [`UDP_FOCA`] for foca's SWIM messages,
//! [`UDP_INTENT`] for an [`Intent`] sent directly rather than piggybacked.
//! TCP carries one length-prefixed [`Request`] and one [`Response`] per
//! connection. New variants go at the end of an enum: postcard numbers them.

use std::collections::BTreeMap;

use foca::Incarnation;
use serde::{Deserialize, Serialize};

use crate::identity::NodeId;
use crate::members::MemberStatus;

/// UDP kind byte: a foca packet follows.
pub(crate) const UDP_FOCA: u8 = 0;
/// UDP kind byte: an encoded [`Intent`] follows.
pub(crate) const UDP_INTENT: u8 = 1;

/// Serf-style intents, disseminated as foca custom broadcasts (and sent
/// directly by their origin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Intent {
    /// A member's tags, newest `version` wins within one life.
    Tags {
        /// The member.
        id: NodeId,
        /// Bumped on every change.
        version: u64,
        /// The tags.
        tags: BTreeMap<String, String>,
    },
    /// The member is leaving gracefully: when it goes down it is Left, not
    /// Failed.
    Leave {
        /// The member.
        id: NodeId,
    },
    /// An operator declared a failed member gone (`force-leave`).
    ForceLeave {
        /// The member.
        id: NodeId,
        /// Distinguishes repeated requests so each one spreads.
        ltime: u64,
    },
}

impl Intent {
    /// The dissemination key: a newer intent of the same kind about the same
    /// member replaces an older one.
    pub(crate) fn key(&self) -> IntentKey {
        let (name, kind, version) = match self {
            Intent::Tags { id, version, .. } => (&id.name, 0, (id.generation, *version)),
            Intent::Leave { id } => (&id.name, 1, (id.generation, 0)),
            Intent::ForceLeave { id, ltime } => (&id.name, 2, (id.generation, *ltime)),
        };
        IntentKey {
            name: name.clone(),
            kind,
            version,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Identifies an intent for foca's broadcast queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntentKey {
    pub name: String,
    pub kind: u8,
    pub version: (u64, u64),
}

impl foca::Invalidates for IntentKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind && self.version >= other.version
    }
}

/// One member as exchanged in push-pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberState {
    pub id: NodeId,
    pub status: MemberStatus,
    pub tags_version: u64,
    pub tags: BTreeMap<String, String>,
    /// For a Left or Failed member: how long ago, in milliseconds, so every
    /// node reaps it at the same time instead of re-teaching it to the others.
    pub gone_ms: u64,
}

/// A keyring operation, applied by every member that receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyringOp {
    /// Report installed keys.
    List,
    /// Install a key as secondary.
    Install(Vec<u8>),
    /// Make an installed key primary.
    Use(Vec<u8>),
    /// Remove a secondary key.
    Remove(Vec<u8>),
}

/// What a TCP client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Full state exchange (memberlist's push-pull); `join` when the sender
    /// is joining.
    PushPull {
        join: bool,
        members: Vec<MemberState>,
    },
    /// A keyring operation.
    Keyring(KeyringOp),
    /// memberlist's TCP ping, sent when a UDP probe of `target` failed: the
    /// sender suspects `target` at `incarnation`. If `target` is the
    /// receiver's current identity, it refutes the suspicion (Lifeguard's
    /// buddy system: it hears of it from the prober itself).
    Ping {
        target: NodeId,
        incarnation: Incarnation,
    },
}

/// What a TCP server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The server's full state.
    PushPull { members: Vec<MemberState> },
    /// The server's keys after the operation (primary first), or why it
    /// refused.
    Keyring(Result<Vec<Vec<u8>>, String>),
    /// The server could not serve the request.
    Error(String),
    /// Answer to [`Request::Ping`]: the server is alive as `id` at (at least)
    /// `incarnation`, above the suspected one if `id` was the target.
    Pong {
        id: NodeId,
        incarnation: Incarnation,
    },
}

/// Encoded size of a tag map, as gossiped.
pub(crate) fn tags_size(tags: &BTreeMap<String, String>) -> usize {
    postcard::to_allocvec(tags)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Invalidates;

    fn id(generation: u64) -> NodeId {
        NodeId {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation,
        }
    }

    #[test]
    fn newer_intents_invalidate_older() {
        let t = |g, v| {
            Intent::Tags {
                id: id(g),
                version: v,
                tags: BTreeMap::new(),
            }
            .key()
        };
        assert!(t(1, 2).invalidates(&t(1, 1)));
        assert!(t(2, 0).invalidates(&t(1, 9)));
        assert!(!t(1, 1).invalidates(&t(1, 2)));
        assert!(!Intent::Leave { id: id(5) }.key().invalidates(&t(1, 1)));
    }

    #[test]
    fn new_variants_keep_the_old_numbers() {
        let first_byte = |bytes: Vec<u8>| bytes[0];
        let req = |r: &Request| first_byte(postcard::to_allocvec(r).unwrap());
        let resp = |r: &Response| first_byte(postcard::to_allocvec(r).unwrap());
        assert_eq!(req(&Request::Keyring(KeyringOp::List)), 1);
        let ping = Request::Ping {
            target: id(7),
            incarnation: 3,
        };
        assert_eq!(req(&ping), 2);
        assert_eq!(resp(&Response::Error(String::new())), 2);
        let pong = Response::Pong {
            id: id(7),
            incarnation: 4,
        };
        assert_eq!(resp(&pong), 3);
        let back: Response = postcard::from_bytes(&postcard::to_allocvec(&pong).unwrap()).unwrap();
        assert!(matches!(back, Response::Pong { id: i, incarnation: 4 } if i == id(7)));
    }

    #[test]
    fn intents_roundtrip() {
        let i = Intent::ForceLeave {
            id: id(3),
            ltime: 9,
        };
        assert_eq!(postcard::from_bytes::<Intent>(&i.encode()).unwrap(), i);
    }
}
