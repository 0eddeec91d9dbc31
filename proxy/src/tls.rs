//! The TLS material of one config version: the acceptor of the public
//! listener and one connector per upstream, all built on the same leaf and
//! roots with `mesh-ca`'s SPIFFE verifiers.
//!
//! Built in full before a config is swapped in, so a bad certificate refuses
//! the whole update and changes nothing. Each version gets its own configs
//! (a new leaf needs them anyway), so a connection verifies against exactly
//! the roots and presents exactly the leaf of the version it started under.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use mesh_ca::rustls::pki_types::pem::PemObject;
use mesh_ca::rustls::pki_types::{CertificateDer, ServerName};
use mesh_ca::{ExpectedService, SharedRoots, TrustedRoots};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{ProxyConfig, ProxyError};

/// Everything TLS for one config version.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    /// Terminates mTLS on the public listener: requires a client certificate
    /// chaining to the roots, in the trust domain.
    pub(crate) acceptor: TlsAcceptor,
    /// Originates mTLS to each upstream, by destination.
    pub(crate) upstreams: HashMap<String, UpstreamTls>,
    /// Originates mTLS with ALPN (`h2`, `http/1.1`) to each service an L7
    /// chain targets, by service.
    pub(crate) targets: HashMap<String, UpstreamTls>,
    /// Equal for two versions with the same leaf, key, roots and identity
    /// settings: their pooled connections are interchangeable.
    pub(crate) key: u64,
}

/// How to open mTLS to one destination.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    /// Presents the leaf and accepts only the destination's identity.
    pub(crate) connector: TlsConnector,
    /// The SNI to send: Consul's `<svc>.<ns>.<dc>.internal.<trust-domain>`,
    /// which mesh gateways route by.
    pub(crate) server_name: ServerName<'static>,
}

impl TlsMaterial {
    /// Builds and checks the TLS material of `config`: roots and leaf must
    /// parse, the key must match the leaf, and the leaf must name the
    /// config's service in its trust domain.
    pub(crate) fn build(config: &ProxyConfig) -> Result<Self, ProxyError> {
        let cert_err =
            |field: &'static str| move |source| ProxyError::Certificate { field, source };

        let trusted = TrustedRoots::from_pems(
            config
                .roots_pem
                .iter()
                .map(String::as_str)
                .filter(|pem| !pem.trim().is_empty()),
        )
        .map_err(cert_err("RootsPEM"))?;
        if trusted.is_empty() {
            return Err(ProxyError::InvalidConfig {
                field: "RootsPEM".into(),
                reason: "holds no certificate".into(),
            });
        }
        let roots = SharedRoots::new(trusted);

        let server = mesh_ca::server_config(
            &config.leaf_cert_pem,
            &config.leaf_key_pem,
            roots.clone(),
            &config.trust_domain,
        )
        .map_err(cert_err("LeafCertPEM"))?;
        check_leaf(config, &roots)?;

        let connector = |service: &str, alpn: bool| {
            let expected = ExpectedService::new(&config.trust_domain, service);
            let mut client = mesh_ca::client_config(
                &config.leaf_cert_pem,
                &config.leaf_key_pem,
                roots.clone(),
                expected,
            )
            .map_err(cert_err("LeafCertPEM"))?;
            if alpn {
                client.alpn_protocols = crate::client::alpn();
            }
            Ok::<_, ProxyError>(UpstreamTls {
                connector: TlsConnector::from(Arc::new(client)),
                server_name: sni(service, config),
            })
        };
        let mut upstreams = HashMap::new();
        let mut targets = HashMap::new();
        for upstream in &config.upstreams {
            let destination = &upstream.destination;
            upstreams.insert(destination.clone(), connector(destination, false)?);
            for target in upstream.l7_chain().iter().flat_map(|c| c.targets.values()) {
                if !targets.contains_key(&target.service) {
                    targets.insert(target.service.clone(), connector(&target.service, true)?);
                }
            }
        }
        let mut server = server;
        if config
            .public_listener
            .as_ref()
            .is_some_and(|public| public.protocol.is_l7())
        {
            server.alpn_protocols = crate::client::alpn();
        }
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            upstreams,
            targets,
            key: identity_key(config),
        })
    }
}

/// A hash of everything a pooled upstream connection depends on.
fn identity_key(config: &ProxyConfig) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &config.leaf_cert_pem,
        &config.leaf_key_pem,
        &config.roots_pem,
        &config.trust_domain,
        &config.datacenter,
        config.handshake_timeout,
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// The leaf must be this proxy's identity: a leaf for another service is an
/// agent bug that would otherwise surface as confusing peer refusals. An
/// expired or untrusted leaf is only logged: the new roots and endpoints of
/// the config are still worth applying while a renewed leaf is on its way.
fn check_leaf(config: &ProxyConfig, roots: &SharedRoots) -> Result<(), ProxyError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.leaf_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ProxyError::InvalidConfig {
                field: "LeafCertPEM".into(),
                reason: format!("bad PEM: {e}"),
            })?;
    let id = mesh_ca::peer_spiffe_id(&chain).map_err(|source| ProxyError::Certificate {
        field: "LeafCertPEM",
        source,
    })?;
    let ours = id.service_name() == Some(config.service.as_str())
        && id.trust_domain().eq_ignore_ascii_case(&config.trust_domain);
    if !ours {
        return Err(ProxyError::InvalidConfig {
            field: "LeafCertPEM".into(),
            reason: format!(
                "the leaf names {}, not service {:?} in trust domain {:?}",
                id.uri(),
                config.service,
                config.trust_domain
            ),
        });
    }
    if let Err(err) = mesh_ca::verify_leaf(&roots.load(), &config.leaf_cert_pem, SystemTime::now())
    {
        tracing::warn!(
            service = %config.service,
            version = config.version,
            error = %err,
            "the proxy's leaf certificate does not verify: peers will refuse it"
        );
    }
    Ok(())
}

/// Consul's SNI for a service: `<svc>.default.<dc>.internal.<trust-domain>`.
/// A name that is no valid DNS name falls back to the trust domain alone:
/// SNI only routes, the SPIFFE ID is what gets verified.
fn sni(destination: &str, config: &ProxyConfig) -> ServerName<'static> {
    let name = format!(
        "{destination}.{}.{}.internal.{}",
        mesh_ca::DEFAULT_NAMESPACE,
        config.datacenter,
        config.trust_domain
    );
    ServerName::try_from(name)
        .or_else(|_| ServerName::try_from(config.trust_domain.clone()))
        .unwrap_or_else(|_| ServerName::try_from("mesh.invalid").expect("a valid DNS name"))
}
