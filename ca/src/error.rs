//! The one error type of this crate.

/// Everything that can go wrong in `mesh-ca`.
///
/// Errors caused by bad input (a malformed CSR, SPIFFE ID, PEM block or
/// configuration) answer `true` to [`CaError::is_invalid_input`]; an HTTP
/// handler maps those to 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A string is not a SPIFFE ID this crate understands.
    #[error("invalid SPIFFE ID {input:?}: {reason}")]
    InvalidSpiffeId {
        /// The offending input, cut to a readable length.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A PEM document could not be decoded, or held nothing of the wanted kind.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),

    /// A certificate could not be parsed or lacks something this crate needs.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),

    /// A certificate signing request could not be parsed.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),

    /// The signature of a certificate signing request does not verify with
    /// the public key it carries.
    #[error("certificate signing request signature does not verify")]
    CsrSignature,

    /// A CSR or certificate carries no URI SAN, so it names no SPIFFE ID.
    #[error("no SPIFFE ID: the request or certificate carries no URI SAN")]
    MissingSpiffeId,

    /// A CSR or certificate carries more than one URI SAN.
    #[error("expected exactly one URI SAN, found {0}")]
    MultipleSpiffeIds(usize),

    /// A SPIFFE ID belongs to another trust domain than the one expected.
    #[error("SPIFFE ID {id} is not in trust domain {expected:?}")]
    TrustDomainMismatch {
        /// The trust domain this CA or verifier serves.
        expected: String,
        /// The SPIFFE ID that was presented.
        id: String,
    },

    /// A peer presented a valid certificate for another service than expected.
    #[error("peer identity {found} does not match the expected {expected}")]
    IdentityMismatch {
        /// What the caller asked for.
        expected: String,
        /// The SPIFFE ID the peer presented.
        found: String,
    },

    /// A private key could not be parsed or does not match its certificate.
    #[error("invalid private key: {0}")]
    InvalidKey(String),

    /// A certificate in the chain has expired.
    #[error("certificate has expired")]
    Expired,

    /// A certificate in the chain is not valid yet.
    #[error("certificate is not valid yet")]
    NotYetValid,

    /// A certificate chain does not lead to any trusted root.
    #[error("certificate chain is not trusted: {0}")]
    Untrusted(String),

    /// A CA configuration value is wrong; `field` names it as Consul does.
    #[error("invalid CA configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field at fault, e.g. `LeafCertTTL`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// An option of the agent TLS commands is wrong; `option` names the
    /// flag as Consul spells it, e.g. `-days`.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The flag at fault, e.g. `-days`.
        option: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The provider was asked to sign before it was given an active root.
    #[error("the CA has no active root")]
    NoActiveRoot,

    /// Key generation, randomness or certificate encoding failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),

    /// rustls refused a configuration (e.g. a key that does not fit the
    /// certificate).
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl CaError {
    /// Whether the error was caused by input from outside (a CSR, SPIFFE ID,
    /// PEM, key or configuration) rather than by this crate or the system.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpiffeId { .. }
                | Self::InvalidPem(_)
                | Self::InvalidCertificate(_)
                | Self::InvalidCsr(_)
                | Self::CsrSignature
                | Self::MissingSpiffeId
                | Self::MultipleSpiffeIds(_)
                | Self::TrustDomainMismatch { .. }
                | Self::InvalidKey(_)
                | Self::InvalidConfig { .. }
                | Self::InvalidOption { .. }
        )
    }

    /// Whether a certificate signing request was refused for its content or
    /// form (unparseable, bad signature, missing or several URI SANs, an
    /// invalid SPIFFE ID).
    pub fn is_invalid_csr(&self) -> bool {
        matches!(
            self,
            Self::InvalidCsr(_)
                | Self::CsrSignature
                | Self::MissingSpiffeId
                | Self::MultipleSpiffeIds(_)
                | Self::InvalidSpiffeId { .. }
                | Self::InvalidPem(_)
        )
    }

    /// Whether a SPIFFE ID was outside the expected trust domain.
    pub fn is_trust_domain_mismatch(&self) -> bool {
        matches!(self, Self::TrustDomainMismatch { .. })
    }

    /// Whether a string failed to parse as a SPIFFE ID.
    pub fn is_invalid_spiffe_id(&self) -> bool {
        matches!(self, Self::InvalidSpiffeId { .. })
    }

    /// Whether a certificate was refused because of its validity period.
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Expired | Self::NotYetValid)
    }

    /// Whether a certificate was refused as untrusted: no path to a root,
    /// outside its validity period, or naming the wrong peer.
    pub fn is_untrusted(&self) -> bool {
        matches!(
            self,
            Self::Untrusted(_)
                | Self::Expired
                | Self::NotYetValid
                | Self::IdentityMismatch { .. }
                | Self::TrustDomainMismatch { .. }
        )
    }

    /// Whether a CA configuration value was refused.
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Self::InvalidConfig { .. })
    }

    /// Whether the provider has no active root to sign with.
    pub fn is_no_active_root(&self) -> bool {
        matches!(self, Self::NoActiveRoot)
    }
}

impl From<rcgen::Error> for CaError {
    fn from(err: rcgen::Error) -> Self {
        Self::Generate(err.to_string())
    }
}
