//! rustls configurations for sidecar mTLS, built from a leaf chain and key
//! in PEM, shared roots, and the peer to expect.
//!
//! Both use the `ring` crypto provider explicitly (TLS 1.2 and 1.3), so they
//! work whatever other providers the build enables. Roots rotate through the
//! [`SharedRoots`] handle; a renewed leaf needs a new config (cheap to build).
//!
//! Session resumption is off on both sides: a resumed session skips
//! certificate verification, so it would outlive a removed root or an expired
//! leaf. Every connection is verified against the roots current at its
//! handshake.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::verify::{ExpectedService, SharedRoots, SpiffeClientVerifier, SpiffeServerVerifier};
use crate::{util, CaError};

/// The crypto provider every config of this crate uses: rustls's `ring`.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config for a sidecar's public listener: presents
/// `cert_chain_pem` (leaf first, then intermediates, as in
/// [`crate::IssuedCert::cert_pem`]) with `private_key_pem`, and requires a
/// client certificate that chains to `roots` and names a service in
/// `trust_domain`.
pub fn server_config(
    cert_chain_pem: &str,
    private_key_pem: &str,
    roots: SharedRoots,
    trust_domain: &str,
) -> Result<ServerConfig, CaError> {
    let chain = util::parse_certs(cert_chain_pem)?;
    let key = util::parse_private_key(private_key_pem)?;
    let verifier = Arc::new(SpiffeClientVerifier::new(roots, trust_domain));
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client config for an upstream connection: presents `cert_chain_pem`
/// with `private_key_pem` as client certificate, and accepts only a server
/// that chains to `roots` and is the `expected` service. The server name
/// given to `ClientConnection::new` is used for SNI only.
pub fn client_config(
    cert_chain_pem: &str,
    private_key_pem: &str,
    roots: SharedRoots,
    expected: ExpectedService,
) -> Result<ClientConfig, CaError> {
    let chain = util::parse_certs(cert_chain_pem)?;
    let key = util::parse_private_key(private_key_pem)?;
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, expected));
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.resumption = Resumption::disabled();
    Ok(config)
}
