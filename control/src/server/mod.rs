//! Leader duties: work only the Raft leader does, such as expiring sessions.

mod session_ttl;

pub use session_ttl::SessionTimers;
