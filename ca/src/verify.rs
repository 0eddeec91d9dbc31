//! Peer verification for mTLS between sidecars.
//!
//! Mesh leaves carry a SPIFFE URI SAN and no DNS name, so rustls's stock
//! webpki verifiers (which check a DNS server name) cannot be used. These
//! verifiers build the chain to a set of trusted roots with webpki (expiry
//! included) and then check the SPIFFE ID instead of a host name.
//!
//! Roots live in [`SharedRoots`], an atomically swappable set: the proxy
//! stores a new set when roots rotate and every verifier built on it (and so
//! every rustls config) sees the change on its next handshake, without being
//! rebuilt.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::root::CaRoot;
use crate::spiffe::SpiffeId;
use crate::{util, CaError};

/// A set of trusted root certificates, parsed once into webpki trust anchors.
#[derive(Clone, Default)]
pub struct TrustedRoots {
    anchors: Vec<TrustAnchor<'static>>,
}

/// A [`TrustedRoots`] shared by verifiers and swappable at run time: clones
/// share one set, and [`SharedRoots::store`] replaces it for all of them.
/// Reads are a pointer load (`arc-swap`), never a lock.
#[derive(Clone, Default)]
pub struct SharedRoots(Arc<ArcSwap<TrustedRoots>>);

/// The peer a client expects to reach: a service in a trust domain,
/// optionally pinned to a namespace and datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedService {
    trust_domain: String,
    service: String,
    namespace: Option<String>,
    datacenter: Option<String>,
}

/// Verifies the server side of a sidecar-to-sidecar connection: the chain
/// must lead to a trusted root, be valid now, allow server auth, and the
/// leaf's SPIFFE ID must match the [`ExpectedService`]. The TLS server name
/// (SNI) is not checked: the SPIFFE ID replaces it.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: SharedRoots,
    expected: ExpectedService,
    algs: WebPkiSupportedAlgorithms,
}

/// Verifies the client side: client auth is mandatory, the chain must lead
/// to a trusted root, be valid now, allow client auth, and the leaf must
/// carry a service SPIFFE ID of the trust domain. Which services may connect
/// is the caller's decision (intentions): read the peer with
/// [`peer_spiffe_id`] after the handshake.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    roots: SharedRoots,
    trust_domain: String,
    algs: WebPkiSupportedAlgorithms,
}

// === impl TrustedRoots ===

impl TrustedRoots {
    /// An empty set: every chain is refused.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every certificate in a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, CaError> {
        Self::from_pems([pem])
    }

    /// Every certificate in each of the PEM documents.
    pub fn from_pems<'a>(pems: impl IntoIterator<Item = &'a str>) -> Result<Self, CaError> {
        let mut anchors = Vec::new();
        for pem in pems {
            for der in util::parse_certs(pem)? {
                let anchor = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|e| CaError::InvalidCertificate(format!("unusable root: {e}")))?;
                anchors.push(anchor.to_owned());
            }
        }
        Ok(Self { anchors })
    }

    /// The root certificates of `roots` (their intermediates are not
    /// trusted as roots: they are sent by peers in the chain).
    pub fn from_ca_roots(roots: &[CaRoot]) -> Result<Self, CaError> {
        Self::from_pems(roots.iter().map(|root| root.root_cert.as_str()))
    }

    /// How many roots are trusted.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether no root is trusted.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

impl fmt::Debug for TrustedRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedRoots")
            .field("roots", &self.anchors.len())
            .finish()
    }
}

// === impl SharedRoots ===

impl SharedRoots {
    /// Shares `roots`.
    pub fn new(roots: TrustedRoots) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(roots)))
    }

    /// Replaces the trusted set for every holder of this handle. Handshakes
    /// already past verification are unaffected.
    pub fn store(&self, roots: TrustedRoots) {
        self.0.store(Arc::new(roots));
    }

    /// The current set.
    pub fn load(&self) -> Arc<TrustedRoots> {
        self.0.load_full()
    }

    /// The current set for the length of one verification: a pointer load,
    /// no reference-count traffic.
    fn guard(&self) -> arc_swap::Guard<Arc<TrustedRoots>> {
        self.0.load()
    }
}

impl fmt::Debug for SharedRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedRoots")
            .field(&**self.0.load())
            .finish()
    }
}

impl From<TrustedRoots> for SharedRoots {
    fn from(roots: TrustedRoots) -> Self {
        Self::new(roots)
    }
}

// === impl ExpectedService ===

impl ExpectedService {
    /// `service` in `trust_domain`, in any namespace and datacenter.
    pub fn new(trust_domain: &str, service: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_ascii_lowercase(),
            service: service.to_owned(),
            namespace: None,
            datacenter: None,
        }
    }

    /// Exactly the service identity `id` (namespace and datacenter
    /// included). `None` for a signing ID.
    pub fn exact(id: &SpiffeId) -> Option<Self> {
        Some(Self {
            trust_domain: id.trust_domain().to_owned(),
            service: id.service_name()?.to_owned(),
            namespace: id.namespace().map(str::to_owned),
            datacenter: id.datacenter().map(str::to_owned),
        })
    }

    /// Also requires the namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Also requires the datacenter.
    pub fn in_datacenter(mut self, datacenter: &str) -> Self {
        self.datacenter = Some(datacenter.to_owned());
        self
    }

    /// The expected trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The expected service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether `id` is the expected service.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        self.check(id).is_ok()
    }

    /// Like [`ExpectedService::matches`], with the reason for a mismatch.
    pub fn check(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.trust_domain() != self.trust_domain {
            return Err(CaError::TrustDomainMismatch {
                expected: self.trust_domain.clone(),
                id: id.uri(),
            });
        }
        let same = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|want| Some(want) == got)
        };
        if id.service_name() == Some(self.service.as_str())
            && same(&self.namespace, id.namespace())
            && same(&self.datacenter, id.datacenter())
        {
            Ok(())
        } else {
            Err(CaError::IdentityMismatch {
                expected: self.to_string(),
                found: id.uri(),
            })
        }
    }
}

impl fmt::Display for ExpectedService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/dc/{}/svc/{}",
            self.trust_domain,
            self.namespace.as_deref().unwrap_or("*"),
            self.datacenter.as_deref().unwrap_or("*"),
            self.service
        )
    }
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// Trusts `roots` and expects `expected`.
    pub fn new(roots: SharedRoots, expected: ExpectedService) -> Self {
        Self {
            roots,
            expected,
            algs: signature_algorithms(),
        }
    }

    /// The trusted roots (store into it to rotate).
    pub fn roots(&self) -> &SharedRoots {
        &self.roots
    }

    /// The expected peer.
    pub fn expected(&self) -> &ExpectedService {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = self.roots.guard();
        verify_path(
            &roots,
            &self.algs,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(tls_error)?;
        let id = leaf_identity(end_entity).map_err(other_error)?;
        self.expected.check(&id).map_err(other_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// Trusts `roots` and requires client identities in `trust_domain`.
    pub fn new(roots: SharedRoots, trust_domain: &str) -> Self {
        Self {
            roots,
            trust_domain: trust_domain.to_ascii_lowercase(),
            algs: signature_algorithms(),
        }
    }

    /// The trusted roots (store into it to rotate).
    pub fn roots(&self) -> &SharedRoots {
        &self.roots
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: each sidecar has exactly one certificate to offer, and the
    /// root set changes at run time.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let roots = self.roots.guard();
        verify_path(
            &roots,
            &self.algs,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(tls_error)?;
        let id = leaf_identity(end_entity).map_err(other_error)?;
        if id.trust_domain() != self.trust_domain {
            return Err(other_error(CaError::TrustDomainMismatch {
                expected: self.trust_domain.clone(),
                id: id.uri(),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

// === free functions ===

/// The service SPIFFE ID of a peer, from the leaf (first) certificate of its
/// chain, e.g. `ServerConnection::peer_certificates()` after the handshake.
/// This does not verify the chain: the verifiers above already did.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, CaError> {
    let leaf = certs.first().ok_or(CaError::MissingSpiffeId)?;
    leaf_identity(leaf)
}

/// When the first certificate of `cert_chain_pem` (the leaf) stops being
/// valid: its `notAfter`. Proxies export it as a metric.
pub fn cert_not_after(cert_chain_pem: &str) -> Result<SystemTime, CaError> {
    // Never empty: `parse_certs` refuses a document without a certificate.
    let chain = util::parse_certs(cert_chain_pem)?;
    let parsed = util::x509(chain[0].as_ref())?;
    Ok(util::from_asn1(parsed.validity().not_after))
}

/// Verifies a PEM chain (leaf first, then intermediates) against `roots` at
/// `now` for both server and client use, and returns the leaf's service
/// SPIFFE ID. For checking a freshly issued or cached leaf outside a
/// handshake.
pub fn verify_leaf(
    roots: &TrustedRoots,
    cert_chain_pem: &str,
    now: SystemTime,
) -> Result<SpiffeId, CaError> {
    let chain = util::parse_certs(cert_chain_pem)?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::InvalidConfig {
            field: "now",
            reason: "before 1970".into(),
        })?;
    let now = UnixTime::since_unix_epoch(since_epoch);
    let algs = signature_algorithms();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        verify_path(roots, &algs, &chain[0], &chain[1..], now, usage).map_err(ca_error)?;
    }
    leaf_identity(&chain[0])
}

fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn verify_path(
    roots: &TrustedRoots,
    algs: &WebPkiSupportedAlgorithms,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    cert.verify_for_usage(
        algs.all,
        &roots.anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

/// Verifies a client agent's chain (its auto_encrypt RPC certificate, leaf
/// first) against `roots` at `now` for client auth, and returns its agent
/// SPIFFE ID. A service's leaf from the same CA is refused: it is not an
/// agent.
pub fn verify_agent(
    roots: &TrustedRoots,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<SpiffeId, CaError> {
    let algs = signature_algorithms();
    let usage = webpki::KeyUsage::client_auth();
    verify_path(roots, &algs, end_entity, intermediates, now, usage).map_err(ca_error)?;
    let id = leaf_spiffe_id(end_entity)?;
    if !id.is_agent() {
        return Err(CaError::InvalidSpiffeId {
            input: id.uri(),
            reason: "an RPC client certificate from the Connect CA must name a client agent",
        });
    }
    Ok(id)
}

/// The one SPIFFE ID a leaf carries, of any kind.
pub fn leaf_spiffe_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, CaError> {
    let cert = util::x509(leaf)?;
    let uris = util::uri_sans(&cert)?;
    let uri = match uris.as_slice() {
        [] => return Err(CaError::MissingSpiffeId),
        [uri] => *uri,
        more => return Err(CaError::MultipleSpiffeIds(more.len())),
    };
    SpiffeId::parse(uri)
}

fn leaf_identity(leaf: &CertificateDer<'_>) -> Result<SpiffeId, CaError> {
    let id = leaf_spiffe_id(leaf)?;
    if !id.is_service() {
        return Err(CaError::InvalidSpiffeId {
            input: id.uri(),
            reason: "a peer must present a service identity",
        });
    }
    Ok(id)
}

fn ca_error(err: webpki::Error) -> CaError {
    match err {
        webpki::Error::CertExpired { .. } => CaError::Expired,
        webpki::Error::CertNotValidYet { .. } => CaError::NotYetValid,
        other => CaError::Untrusted(format!("{other:?}")),
    }
}

fn tls_error(err: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    rustls::Error::InvalidCertificate(match err {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::CertRevoked => CertificateError::Revoked,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    })
}

fn other_error(err: CaError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}
