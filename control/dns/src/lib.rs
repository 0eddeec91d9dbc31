//! The agent's DNS interface, compatible with Consul's (port 8600 by default).
//!
//! Applications find services with plain DNS instead of the HTTP API:
//! `dig @127.0.0.1 -p 8600 web.service.consul SRV` answers with the healthy
//! instances of `web`, each an SRV record whose target resolves through the
//! additional section, exactly as Consul does.
//!
//! The crate knows nothing of the state store. The control plane implements
//! [`Catalog`] and hands it to a [`DnsServer`], which
//!
//! * answers one query at a time with [`DnsServer::answer`] (wire bytes in, wire
//!   bytes out — pure, so it is tested without sockets), and
//! * serves UDP and TCP with [`DnsServer::serve`].
//!
//! Names served, below the configured domain (`consul.` unless configured):
//!
//! | name | records |
//! |---|---|
//! | `[tag.]NAME.service[.DC]` | A/AAAA (or CNAME), SRV with targets in the additional section |
//! | `_NAME._TAG.service[.DC]`, `_NAME._tcp[.DC]` | RFC 2782 form; `_tcp` means no tag filter |
//! | `NAME.connect[.DC]` | the healthy Connect proxies of a service, answered like a service |
//! | `NODE.node[.DC]` | A/AAAA (or CNAME), TXT from the node's metadata |
//! | `HEX.addr[.DC]` | the IP address spelled in hex (SRV targets use these) |
//! | any name, type SOA or NS | the zone's SOA, NS records naming up to three servers |
//!
//! Names outside the domain are refused: mesh has no recursors.
//!
//! Modules: `config` holds the settings, `names` parses query names,
//! `records` builds resource records, `resolve` turns a parsed name into
//! answer sections, `truncate` fits a response into the transport's size and
//! `server` holds [`DnsServer`] with its socket loops.

mod config;
mod names;
mod records;
mod resolve;
mod server;
pub mod transport;
mod truncate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use config::{DnsConfig, SoaConfig};
pub use server::{server_failure, DnsServer};

/// What DNS needs to know about the catalog; implemented by the control plane.
///
/// DNS names are case-insensitive, so every name handed to these methods is
/// lowercased: implementations should compare names without regard to case,
/// as Consul's state store does.
pub trait Catalog: Send + Sync + 'static {
    /// The datacenters known (the local one first).
    fn datacenters(&self) -> Vec<String>;

    /// Instances of service `name` in `dc` whose checks are not critical
    /// (include warning), optionally only those carrying `tag`
    /// (case-insensitive). Empty vec if none.
    fn service_instances(&self, dc: &str, name: &str, tag: Option<&str>) -> Vec<ServiceInstance>;

    /// Healthy Connect proxies (and Connect-native instances) fronting service
    /// `name` in `dc`, for `name.connect.consul`.
    fn connect_instances(&self, dc: &str, name: &str) -> Vec<ServiceInstance>;

    /// A node by name in `dc`.
    fn node(&self, dc: &str, name: &str) -> Option<NodeRecord>;
}

/// One healthy instance of a service, as DNS answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInstance {
    /// Name of the node the instance runs on.
    pub node: String,
    /// Address of that node: an IP address or a hostname.
    pub node_address: String,
    /// Address of the service itself; empty means "use the node address".
    pub service_address: String,
    /// Port of the service (the SRV record's port).
    pub port: u16,
    /// The node's metadata, served as TXT records beside SRV answers.
    pub node_meta: BTreeMap<String, String>,
}

/// A catalog node, as DNS answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// The node's address: an IP address or a hostname.
    pub address: String,
    /// The node's metadata, served as TXT records.
    pub meta: BTreeMap<String, String>,
}

/// Errors of the DNS interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field holds a value the server cannot use.
    #[error("invalid DNS configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field's name, as in [`DnsConfig`].
        field: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
}

impl Error {
    /// Whether this error reports a bad configuration value.
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Error::InvalidConfig { .. })
    }
}
