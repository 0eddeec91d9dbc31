//! The records of Consul's data model, with Consul's JSON field names.
//!
//! These are the types stored in the state store, carried in Raft commands and
//! returned by the HTTP API. Field names on the wire are Consul's PascalCase.

mod catalog;
mod duration;
pub mod hcl;
pub mod keys;
mod kv;
mod session;

pub use catalog::*;
pub use duration::{parse_duration, ConsulDuration};
pub use kv::*;
pub use session::*;

use serde::{Deserialize, Serialize};

/// The Raft indexes at which a record was created and last modified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RaftIndex {
    /// Index of the write that created the record.
    pub create_index: u64,
    /// Index of the write that last changed the record.
    pub modify_index: u64,
}

impl RaftIndex {
    /// A record first written at `index`.
    pub fn new(index: u64) -> Self {
        RaftIndex {
            create_index: index,
            modify_index: index,
        }
    }
}
