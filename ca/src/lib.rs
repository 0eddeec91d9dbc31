//! SPIFFE identities and the built-in certificate authority of mesh.
//!
//! mesh's service mesh authenticates every sidecar-to-sidecar connection with
//! mTLS, using Consul Connect's certificate shapes:
//!
//! - **Identities** ([`SpiffeId`]): a service is
//!   `spiffe://<cluster-id>.consul/ns/<ns>/dc/<dc>/svc/<name>`, a CA signs as
//!   `spiffe://<cluster-id>.consul`.
//! - **The control plane** keeps [`CaConfiguration`], the [`CaRoot`]s and each
//!   root's [`CaRootKey`] in Raft. It builds a [`ConsulProvider`] (the
//!   built-in [`Provider`]) to generate roots, sign CSRs into
//!   [`IssuedCert`]s, and rotate roots with a cross-signed certificate so
//!   that no connection breaks during rotation. An operator may bring the
//!   root instead ([`ProvidedRoot`], from `Config.RootCert` and
//!   `Config.PrivateKey`).
//! - **Agents and proxies** generate their key and CSR locally with
//!   [`generate_csr`]; the key never travels.
//! - **Sidecars** verify peers with [`SpiffeServerVerifier`] and
//!   [`SpiffeClientVerifier`] (rustls, `ring` provider), whose trusted roots
//!   ([`SharedRoots`]) can be swapped live. [`server_config`] and
//!   [`client_config`] build ready rustls configs; [`peer_spiffe_id`] names
//!   the peer after the handshake for authorisation.
//! - **Agent TLS** (`mesh tls ca create`, `mesh tls cert create`): a plain
//!   agent CA and server, client and CLI certificates in the shape of
//!   Consul's `consul tls` ([`generate_agent_ca`], [`generate_agent_cert`]).
//!
//! The crate is pure: no sockets, no clock (callers pass `now`), no storage.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use mesh_ca::{CaConfiguration, ConsulProvider, Provider, SpiffeId, generate_csr};
//!
//! let config = CaConfiguration::new("11111111-2222-3333-4444-555555555555");
//! let now = SystemTime::now();
//! let bootstrap = ConsulProvider::new(&config)?;
//! let (root, key) = bootstrap.generate_root(now)?;
//! let ca = bootstrap.with_active_root(root, &key)?;
//!
//! let id = SpiffeId::service(ca.trust_domain(), "default", "dc1", "web")?;
//! let (csr_pem, _private_key_pem) = generate_csr(&id)?;
//! let leaf = ca.sign(&csr_pem, Duration::from_secs(72 * 3600), now)?;
//! assert_eq!(leaf.service_uri, id.uri());
//! # Ok::<(), mesh_ca::CaError>(())
//! ```

mod agent_tls;
mod config;
mod csr;
mod error;
mod leaf;
mod provider;
mod root;
mod spiffe;
mod tls;
mod util;
mod verify;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

pub use agent_tls::{
    agent_ca_file_names, generate_agent_ca, generate_agent_cert, AgentCaOptions, AgentCertKind,
    AgentCertOptions, AgentTlsPair, AGENT_CA_NAME_PREFIX, DEFAULT_AGENT_CA_DAYS,
    DEFAULT_AGENT_CERT_DAYS, DEFAULT_AGENT_DATACENTER, DEFAULT_AGENT_DOMAIN,
};
pub use config::{
    parse_go_duration, CaConfiguration, ConsulCaConfig, DEFAULT_INTERMEDIATE_CERT_TTL,
    DEFAULT_LEAF_CERT_TTL, DEFAULT_PRIVATE_KEY_BITS, DEFAULT_PRIVATE_KEY_TYPE,
    DEFAULT_ROOT_CERT_TTL, PROVIDER_CONSUL, REDACTED_PRIVATE_KEY,
};
pub use csr::{generate_csr, inspect_csr};
pub use error::CaError;
pub use leaf::IssuedCert;
pub use provider::{ConsulProvider, Provider};
pub use root::{CaRoot, CaRootKey, IndexedCaRoots, ProvidedRoot, CROSS_SIGN_TTL, ROOT_NAME};
pub use spiffe::{trust_domain, SpiffeId, DEFAULT_NAMESPACE, TRUST_DOMAIN_SUFFIX};
pub use tls::{client_config, crypto_provider, server_config};
pub use verify::{
    cert_not_after, leaf_spiffe_id, peer_spiffe_id, verify_agent, verify_leaf, ExpectedService,
    SharedRoots, SpiffeClientVerifier, SpiffeServerVerifier, TrustedRoots,
};

/// The rustls version this crate's verifiers and configs are built on.
pub use rustls;
