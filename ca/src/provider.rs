//! The `Provider` trait and the built-in CA that implements it (Consul
//! `agent/connect/ca/provider.go`, `provider_consul.go`).

use std::time::{Duration, SystemTime};

use crate::config::{CaConfiguration, ConsulCaConfig};
use crate::csr::ValidatedCsr;
use crate::leaf::{self, IssuedCert};
use crate::root::{self, CaRoot, CaRootKey, RootSigner};
use crate::CaError;

/// A certificate authority: makes roots, signs leaves, and cross-signs the
/// next root so that rotation breaks no connection.
///
/// Implementations are pure: they hold no clock and no storage. The control
/// plane passes `now`, and stores what they return (roots and keys) in Raft.
pub trait Provider {
    /// Generates a new root certificate and its private key for this
    /// provider's trust domain. Nothing is stored or activated.
    fn generate_root(&self, now: SystemTime) -> Result<(CaRoot, CaRootKey), CaError>;

    /// Signs a PEM CSR with the active root, issuing a leaf valid for `ttl`.
    /// The CSR must verify and name exactly one service SPIFFE ID in the
    /// root's trust domain.
    fn sign(&self, csr_pem: &str, ttl: Duration, now: SystemTime) -> Result<IssuedCert, CaError>;

    /// Signs a client agent's PEM CSR (auto_encrypt) with the active root.
    /// The CSR must verify and name a client agent SPIFFE ID; its trust
    /// domain is a placeholder (the agent cannot know the cluster's), so
    /// the leaf names the agent in this provider's trust domain.
    fn sign_agent(
        &self,
        csr_pem: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError>;

    /// Signs `new_root`'s public key and name with the active (old) root and
    /// returns the PEM certificate to put in `new_root.intermediate_certs`: a
    /// peer that trusts only the old root then accepts leaves of the new one.
    fn cross_sign(&self, new_root: &CaRoot, now: SystemTime) -> Result<String, CaError>;
}

/// The built-in CA (`Provider: "consul"`): EC P-256 roots that sign leaves
/// directly, as Consul's provider does in the primary datacenter.
///
/// Build one from the configuration, then give it the active root and key
/// from Raft with [`ConsulProvider::with_active_root`] to sign and
/// cross-sign.
#[derive(Debug)]
pub struct ConsulProvider {
    cluster_id: String,
    trust_domain: String,
    config: ConsulCaConfig,
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    root: CaRoot,
    signer: RootSigner,
}

impl ConsulProvider {
    /// A provider for `config` with no active root yet. The configuration is
    /// validated and must name a cluster ID.
    pub fn new(config: &CaConfiguration) -> Result<Self, CaError> {
        if config.cluster_id.is_empty() {
            return Err(CaError::InvalidConfig {
                field: "ClusterID",
                reason: "must not be empty".into(),
            });
        }
        let trust_domain = config.trust_domain();
        // Refuse a cluster ID that makes no valid SPIFFE trust domain.
        crate::SpiffeId::signing(&trust_domain).map_err(|e| CaError::InvalidConfig {
            field: "ClusterID",
            reason: e.to_string(),
        })?;
        Ok(Self {
            cluster_id: config.cluster_id.clone(),
            trust_domain,
            config: config.consul_config()?,
            active: None,
        })
    }

    /// Makes `root` (with its `key`) the root that signs. The key must match
    /// the certificate and the certificate must carry this provider's
    /// signing SPIFFE ID.
    pub fn with_active_root(mut self, root: CaRoot, key: &CaRootKey) -> Result<Self, CaError> {
        let signer = RootSigner::load(&root, key)?;
        if signer.signing_id.trust_domain() != self.trust_domain {
            return Err(CaError::TrustDomainMismatch {
                expected: self.trust_domain.clone(),
                id: signer.signing_id.uri(),
            });
        }
        self.active = Some(Active { root, signer });
        Ok(self)
    }

    /// The trust domain this provider signs for, `<cluster-id>.consul`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The validated provider settings (leaf TTL and so on).
    pub fn config(&self) -> &ConsulCaConfig {
        &self.config
    }

    /// The root that signs, if one was given.
    pub fn active_root(&self) -> Option<&CaRoot> {
        self.active.as_ref().map(|active| &active.root)
    }

    /// The root the configuration asks for, with its key: the provided one
    /// (`RootCert` and `PrivateKey`) when the configuration has it, else a
    /// newly generated one. Nothing is cross-signed: this is the first root
    /// of a CA, or the start of [`ConsulProvider::rotate`]. A provided root
    /// that has expired at `now` is refused.
    pub fn configured_root(&self, now: SystemTime) -> Result<(CaRoot, CaRootKey), CaError> {
        let Some(provided) = &self.config.provided_root else {
            return self.generate_root(now);
        };
        if provided.root.not_after <= now {
            return Err(CaError::InvalidConfig {
                field: "RootCert",
                reason: "the certificate has expired".into(),
            });
        }
        Ok((provided.root.clone(), provided.key.clone()))
    }

    /// Starts a rotation to the [configured root](Self::configured_root),
    /// cross-signed by the active one. Returns the new root (marked active,
    /// the cross-signed certificate in `IntermediateCerts`) and its key; the
    /// caller stores both and marks the old root inactive. A provided root
    /// that is already the active root is refused: there is nothing to
    /// rotate to.
    pub fn rotate(&self, now: SystemTime) -> Result<(CaRoot, CaRootKey), CaError> {
        let active = self.active()?;
        let (mut new_root, key) = self.configured_root(now)?;
        if new_root.id == active.root.id {
            return Err(CaError::InvalidConfig {
                field: "RootCert",
                reason: "the certificate is already the active root".into(),
            });
        }
        let cross_signed = self.cross_sign(&new_root, now)?;
        new_root.intermediate_certs.push(cross_signed);
        Ok((new_root, key))
    }

    fn active(&self) -> Result<&Active, CaError> {
        self.active.as_ref().ok_or(CaError::NoActiveRoot)
    }
}

impl Provider for ConsulProvider {
    fn generate_root(&self, now: SystemTime) -> Result<(CaRoot, CaRootKey), CaError> {
        root::generate_root(
            &self.cluster_id,
            &self.trust_domain,
            self.config.root_cert_ttl,
            now,
        )
    }

    fn sign(&self, csr_pem: &str, ttl: Duration, now: SystemTime) -> Result<IssuedCert, CaError> {
        let active = self.active()?;
        let csr = ValidatedCsr::parse(csr_pem)?;
        if !csr.spiffe_id.is_service() {
            return Err(CaError::InvalidSpiffeId {
                input: csr.spiffe_id.uri(),
                reason: "a leaf may only be issued for a service identity",
            });
        }
        leaf::issue(
            &active.signer,
            &csr,
            &active.root.intermediate_certs,
            ttl,
            now,
        )
    }

    fn sign_agent(
        &self,
        csr_pem: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let active = self.active()?;
        let mut csr = ValidatedCsr::parse(csr_pem)?;
        if !csr.spiffe_id.is_agent() {
            return Err(CaError::InvalidSpiffeId {
                input: csr.spiffe_id.uri(),
                reason: "an auto_encrypt CSR must name a client agent identity",
            });
        }
        csr.spiffe_id = csr.spiffe_id.in_trust_domain(&self.trust_domain)?;
        leaf::issue(
            &active.signer,
            &csr,
            &active.root.intermediate_certs,
            ttl,
            now,
        )
    }

    fn cross_sign(&self, new_root: &CaRoot, now: SystemTime) -> Result<String, CaError> {
        root::cross_sign(new_root, &self.active()?.signer, now)
    }
}
