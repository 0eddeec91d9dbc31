//! The mesh control plane: the state store, Raft, the agent, the HTTP API and
//! the DNS interface.
//!
//! Every write is a Raft [`raft::Command`] applied to the [`state::Store`];
//! the HTTP API ([`http`]) and DNS ([`dns`]) read the store and park blocking
//! queries on its watches. The [`agent`] holds local services and checks and
//! syncs them to the catalog.

pub mod agent;
pub mod auto_encrypt;
pub mod cluster;
pub mod config_entry;
mod conn_limit;
pub mod discovery_chain;
pub mod dns;
pub mod http;
pub mod lan;
pub mod metrics;
pub mod raft;
pub mod rpc;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod structs;
pub mod tls;

/// The version mesh reports in `/v1/agent/self` and `mesh version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod launch;
