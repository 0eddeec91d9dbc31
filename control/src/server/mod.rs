//! Leader duties: work only the Raft leader does, such as expiring sessions,
//! running the CA and reaping KV tombstones.

pub mod ca;
pub mod leader;
pub mod membership;
mod session_ttl;
pub mod tombstone_gc;

pub use session_ttl::SessionTimers;
