//! SPIFFE identities and the built-in certificate authority of mesh.
//!
//! This crate will hold root and leaf issuance from CSRs, rotation with
//! cross-signing, and rustls verifiers that check SPIFFE IDs. It is a pure
//! library: it opens no sockets. The Connect issue gives it its body; for now it
//! names the identity format every other crate agrees on.

/// The trust domain suffix Consul uses: `<cluster-id>.consul`.
pub const TRUST_DOMAIN_SUFFIX: &str = "consul";
