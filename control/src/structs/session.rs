//! Sessions: liveness-bound handles that hold KV locks.

use super::{duration::nanos, ConsulDuration, RaftIndex};
use serde::{Deserialize, Serialize};

/// A session (Consul's `Session`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Session {
    /// The session's UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// A human name.
    pub name: String,
    /// The node the session is bound to.
    pub node: String,
    /// How long a released lock stays unacquirable (nanoseconds in JSON).
    #[serde(with = "nanos")]
    pub lock_delay: ConsulDuration,
    /// `release` or `delete`: what invalidation does to held locks.
    pub behavior: String,
    /// Time to live; zero means none.
    #[serde(rename = "TTL", serialize_with = "ttl_text")]
    pub ttl: ConsulDuration,
    /// Node checks that must stay healthy.
    pub node_checks: Vec<String>,
    /// Service checks that must stay healthy.
    pub service_checks: Option<Vec<ServiceCheckRef>>,
    /// Raft bookkeeping.
    #[serde(flatten)]
    pub raft: RaftIndex,
}

/// A reference to a service check in `ServiceChecks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceCheckRef {
    /// The check ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The namespace (always `default` here).
    pub namespace: String,
}

/// Session behaviours.
pub mod behavior {
    /// Release held locks on invalidation.
    pub const RELEASE: &str = "release";
    /// Delete held keys on invalidation.
    pub const DELETE: &str = "delete";
}

fn ttl_text<S: serde::Serializer>(d: &ConsulDuration, s: S) -> Result<S::Ok, S::Error> {
    if d.is_zero() {
        s.serialize_str("")
    } else {
        d.serialize(s)
    }
}
