//! Leader duties: work only the Raft leader does, such as expiring sessions
//! and running the CA.

pub mod ca;
mod session_ttl;

pub use session_ttl::SessionTimers;
