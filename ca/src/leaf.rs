//! Leaf certificates: the `IssuedCert` record Consul returns from a sign
//! request, and the issuance itself.

use std::time::{Duration, SystemTime};

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber};
use serde::{Deserialize, Serialize};

use crate::csr::ValidatedCsr;
use crate::root::{RootSigner, BACKDATE};
use crate::util::{self, rfc3339};
use crate::CaError;

/// A certificate issued by the CA (Consul `structs.IssuedCert`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IssuedCert {
    /// The serial number, colon-hex as Consul encodes it.
    pub serial_number: String,
    /// The leaf certificate PEM followed by the signing root's intermediate
    /// certificates (during a rotation: the new root cross-signed by the old),
    /// ready to present in a TLS handshake.
    #[serde(rename = "CertPEM", default, skip_serializing_if = "String::is_empty")]
    pub cert_pem: String,
    /// The leaf's private key PEM. Empty when the cert was signed from a CSR:
    /// the key stayed with whoever made the request.
    #[serde(
        rename = "PrivateKeyPEM",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub private_key_pem: String,
    /// The service the certificate identifies.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// The SPIFFE URI in the certificate.
    #[serde(
        rename = "ServiceURI",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub service_uri: String,
    /// The client agent (node) the certificate identifies (auto_encrypt).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// The client agent's SPIFFE URI.
    #[serde(rename = "AgentURI", default, skip_serializing_if = "String::is_empty")]
    pub agent_uri: String,
    /// Start of the certificate's validity.
    #[serde(with = "rfc3339")]
    pub valid_after: SystemTime,
    /// End of the certificate's validity.
    #[serde(with = "rfc3339")]
    pub valid_before: SystemTime,
}

/// Consul's leaf key usages: digital signature, key encipherment, key
/// agreement and data encipherment.
fn leaf_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
        KeyUsagePurpose::DataEncipherment,
    ]
}

/// Issues a leaf for a checked CSR: not a CA, server and client auth, the
/// CSR's SPIFFE URI as the only SAN, valid from a minute before `now` for
/// `ttl` (never past the signing root's own expiry).
pub(crate) fn issue(
    signer: &RootSigner,
    csr: &ValidatedCsr,
    intermediates: &[String],
    ttl: Duration,
    now: SystemTime,
) -> Result<IssuedCert, CaError> {
    if ttl.is_zero() {
        return Err(CaError::InvalidConfig {
            field: "LeafCertTTL",
            reason: "must be positive".into(),
        });
    }
    let id = &csr.spiffe_id;
    if !signer.signing_id.can_sign(id) {
        return Err(CaError::TrustDomainMismatch {
            expected: signer.signing_id.trust_domain().to_owned(),
            id: id.uri(),
        });
    }
    let not_before = util::saturating_sub(now, BACKDATE);
    let not_after = util::checked_add(now, ttl, "LeafCertTTL")?.min(signer.not_after);
    if not_after <= not_before {
        return Err(CaError::InvalidConfig {
            field: "now",
            reason: "the signing root has expired".into(),
        });
    }
    let serial = util::random_serial()?;

    let mut params = crate::csr::spiffe_params(id)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = leaf_key_usages();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = util::to_offset(not_before)?;
    params.not_after = util::to_offset(not_after)?;
    let cert = params.signed_by(&csr.public_key, &signer.issuer)?;

    let mut cert_pem = cert.pem();
    for intermediate in intermediates {
        if !cert_pem.ends_with('\n') {
            cert_pem.push('\n');
        }
        cert_pem.push_str(intermediate);
    }
    if !cert_pem.ends_with('\n') {
        cert_pem.push('\n');
    }
    let parsed = util::x509(cert.der())?;
    Ok(IssuedCert {
        serial_number: util::serial_hex(serial),
        cert_pem,
        private_key_pem: String::new(),
        service: id.service_name().unwrap_or_default().to_owned(),
        service_uri: if id.is_service() {
            id.uri()
        } else {
            String::new()
        },
        agent: id.agent_node().unwrap_or_default().to_owned(),
        agent_uri: if id.is_agent() {
            id.uri()
        } else {
            String::new()
        },
        valid_after: util::from_asn1(parsed.validity().not_before),
        valid_before: util::from_asn1(parsed.validity().not_after),
    })
}
