//! The one error type of this crate.

use std::io;
use std::net::SocketAddr;

/// Everything [`crate::Proxy::start`] and [`crate::Proxy::update`] can refuse.
///
/// A refused update changes nothing: the running config, listeners and
/// connections stay as they were. Failures of single connections are not
/// errors of this type: they are logged and counted in
/// [`crate::ProxyStats`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A config field is missing or wrong; `field` names it in the config's
    /// PascalCase (e.g. `Upstreams[1].Bind`).
    #[error("invalid proxy config: {field}: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: String,
        /// Why it was refused.
        reason: String,
    },

    /// A certificate, key or root could not be used: bad PEM, a key that
    /// does not match its certificate, a leaf for another identity.
    #[error("invalid proxy config: {field}: {source}")]
    Certificate {
        /// The field that holds the bad material (`LeafCertPEM`, ...).
        field: &'static str,
        /// What `mesh-ca` or rustls said.
        #[source]
        source: mesh_ca::CaError,
    },

    /// A listener could not bind its address.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the operating system refused.
        #[source]
        source: io::Error,
    },

    /// The offered config is older than the running one.
    #[error("config version {offered} is older than the running version {current}")]
    StaleVersion {
        /// The running version.
        current: u64,
        /// The version offered.
        offered: u64,
    },
}

impl ProxyError {
    /// Whether the config itself is at fault (a field or its certificates):
    /// sending it again will fail again.
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Self::InvalidConfig { .. } | Self::Certificate { .. })
    }

    /// Whether a listener address could not be bound.
    pub fn is_bind(&self) -> bool {
        matches!(self, Self::Bind { .. })
    }

    /// Whether the config was older than the running one.
    pub fn is_stale_version(&self) -> bool {
        matches!(self, Self::StaleVersion { .. })
    }
}
