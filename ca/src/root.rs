//! CA roots: the serde record Consul serves at `/v1/connect/ca/roots`, the
//! private key the control plane keeps beside it, and the certificate work
//! behind root generation and cross-signing.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::SectionKind;
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;

use crate::spiffe::SpiffeId;
use crate::util::{self, rfc3339};
use crate::CaError;

/// `Name` of roots made by the built-in provider, as Consul names them.
pub const ROOT_NAME: &str = "Consul CA Primary Cert";

/// How long a cross-signed root stays valid. Consul uses seven days: it is
/// needed only while leaves signed before the rotation are still in use.
pub const CROSS_SIGN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Certificates are valid from a minute before `now`, as Consul does, so a
/// peer whose clock lags a little accepts them at once.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60);

/// A trusted CA root, in Consul's JSON shape (`structs.CARoot`).
///
/// The private key is not here: it lives in [`CaRootKey`], which the control
/// plane stores in Raft but never serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRoot {
    /// SHA-1 fingerprint of the root certificate, colon-hex (Consul
    /// `connect.CalculateCertFingerprint`).
    #[serde(rename = "ID")]
    pub id: String,
    /// Human-friendly name, opaque to everything.
    pub name: String,
    /// The certificate's serial number; the low 64 bits of a longer one.
    pub serial_number: u64,
    /// The root's subject key identifier, colon-hex: leaves it signs carry it
    /// as their authority key identifier.
    #[serde(rename = "SigningKeyID")]
    pub signing_key_id: String,
    /// The cluster ID the root was generated under (Consul sets it to the
    /// cluster ID; it is informational).
    #[serde(default)]
    pub external_trust_domain: String,
    /// Start of the certificate's validity.
    #[serde(with = "rfc3339")]
    pub not_before: SystemTime,
    /// End of the certificate's validity.
    #[serde(with = "rfc3339")]
    pub not_after: SystemTime,
    /// The root certificate, PEM.
    pub root_cert: String,
    /// PEM certificates to send along with every leaf this root signs. During
    /// a rotation it holds the new root cross-signed by the old one.
    #[serde(default, deserialize_with = "util::null_as_empty")]
    pub intermediate_certs: Vec<String>,
    /// Whether this root signs new leaves; exactly one root is active.
    pub active: bool,
    /// Key type of the root: `ec`.
    pub private_key_type: String,
    /// Key size of the root: 256.
    pub private_key_bits: u32,
}

/// The private key of a root, kept by the control plane in Raft beside the
/// [`CaRoot`] it belongs to and never served over the API. `Debug` does not
/// print the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaRootKey {
    /// The [`CaRoot::id`] this key signs for.
    #[serde(rename = "RootID")]
    pub root_id: String,
    /// The PKCS#8 private key, PEM.
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
}

/// A root the operator brings instead of a generated one: the built-in
/// provider's `Config.RootCert` and `Config.PrivateKey`, checked to belong
/// together and to the cluster's trust domain. `Debug` does not print the
/// key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvidedRoot {
    /// The root certificate, described as any root (marked active, no
    /// intermediates).
    pub root: CaRoot,
    /// Its private key, under the root's ID.
    pub key: CaRootKey,
}

/// The set of trusted roots, as served at `/v1/connect/ca/roots`
/// (`structs.IndexedCARoots`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexedCaRoots {
    /// The [`CaRoot::id`] of the active root.
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    /// The cluster's trust domain, `<cluster-id>.consul`.
    pub trust_domain: String,
    /// Every trusted root, active or being rotated out.
    #[serde(default, deserialize_with = "util::null_as_empty")]
    pub roots: Vec<CaRoot>,
}

// === impl CaRoot ===

impl CaRoot {
    /// Describes an existing root certificate as Consul's `newCARoot` does:
    /// ID from the fingerprint, serial, signing key ID, validity. The result
    /// is marked active and has no intermediates.
    pub fn from_pem(root_cert_pem: &str, cluster_id: &str) -> Result<Self, CaError> {
        let der = util::parse_cert(root_cert_pem)?;
        let cert = util::x509(&der)?;
        if !cert.is_ca() {
            return Err(CaError::InvalidCertificate(
                "a root certificate must be a CA certificate".into(),
            ));
        }
        let fingerprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        let raw_serial = cert.raw_serial();
        let first = raw_serial
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(raw_serial.len());
        let serial = &raw_serial[first..];
        // Longer serials (openssl makes 20-byte ones) keep their low 64 bits,
        // as Consul's `uint64` field gets them from Go's `big.Int.Uint64`.
        let low = &serial[serial.len().saturating_sub(8)..];
        let serial_number = low.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let signing_key_id = util::subject_key_id(&cert).ok_or_else(|| {
            CaError::InvalidCertificate("the root has no subject key identifier".into())
        })?;
        let (private_key_type, private_key_bits) = match cert.public_key().parsed() {
            Ok(x509_parser::public_key::PublicKey::EC(point)) => ("ec", point.key_size()),
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => ("rsa", rsa.key_size()),
            _ => {
                return Err(CaError::InvalidCertificate(
                    "a root key must be EC or RSA".into(),
                ))
            }
        };
        let mut pem = root_cert_pem.trim_end().to_owned();
        pem.push('\n');
        Ok(Self {
            id: util::colon_hex(fingerprint.as_ref()),
            name: ROOT_NAME.to_owned(),
            serial_number,
            signing_key_id: util::colon_hex(&signing_key_id),
            external_trust_domain: cluster_id.to_owned(),
            not_before: util::from_asn1(cert.validity().not_before),
            not_after: util::from_asn1(cert.validity().not_after),
            root_cert: pem,
            intermediate_certs: Vec::new(),
            active: true,
            private_key_type: private_key_type.to_owned(),
            private_key_bits: u32::try_from(private_key_bits).unwrap_or(0),
        })
    }

    /// The signing SPIFFE ID in the root certificate's URI SAN.
    pub fn signing_id(&self) -> Result<SpiffeId, CaError> {
        let der = util::parse_cert(&self.root_cert)?;
        signing_id_of(&util::x509(&der)?)
    }
}

// === impl ProvidedRoot ===

impl ProvidedRoot {
    /// Checks a provided root as the configuration gives it: exactly one CA
    /// certificate (no other PEM block) carrying the signing SPIFFE ID of
    /// `cluster_id`'s trust domain (not checked while the cluster ID is
    /// still empty), and one PKCS#8 private key this crate can sign with
    /// that matches the certificate. Each failure is
    /// [`CaError::InvalidConfig`] naming `RootCert` or `PrivateKey`.
    pub(crate) fn parse(
        root_cert_pem: &str,
        private_key_pem: &str,
        cluster_id: &str,
    ) -> Result<Self, CaError> {
        let bad_cert = |err: CaError| CaError::InvalidConfig {
            field: "RootCert",
            reason: err.to_string(),
        };
        // The PEM is served as given: one certificate, and never a key.
        let kinds = util::pem_kinds(root_cert_pem).map_err(bad_cert)?;
        if kinds != [SectionKind::Certificate] {
            return Err(CaError::InvalidConfig {
                field: "RootCert",
                reason: format!("expected exactly one CERTIFICATE block, found {kinds:?}"),
            });
        }
        let root = CaRoot::from_pem(root_cert_pem, cluster_id).map_err(bad_cert)?;
        let bad_key = |reason: String| CaError::InvalidConfig {
            field: "PrivateKey",
            reason,
        };
        let key_kinds = util::pem_kinds(private_key_pem).map_err(|e| bad_key(e.to_string()))?;
        if key_kinds != [SectionKind::PrivateKey] {
            return Err(bad_key(format!(
                "expected exactly one PKCS#8 PRIVATE KEY block, found {key_kinds:?} \
                 (`openssl pkcs8 -topk8 -nocrypt` converts an EC PRIVATE KEY)"
            )));
        }
        let key = CaRootKey {
            root_id: root.id.clone(),
            private_key_pem: private_key_pem.to_owned(),
        };
        let signer = RootSigner::load(&root, &key).map_err(|err| match err {
            CaError::InvalidKey(_) => bad_key(err.to_string()),
            other => bad_cert(other),
        })?;
        let trust_domain = crate::spiffe::trust_domain(cluster_id);
        if !cluster_id.is_empty() && signer.signing_id.trust_domain() != trust_domain {
            return Err(CaError::InvalidConfig {
                field: "RootCert",
                reason: format!(
                    "the certificate carries {}, not this cluster's signing ID spiffe://{trust_domain}",
                    signer.signing_id
                ),
            });
        }
        Ok(Self { root, key })
    }
}

// === impl CaRootKey ===

impl fmt::Debug for CaRootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaRootKey")
            .field("root_id", &self.root_id)
            .field("private_key_pem", &"[redacted]")
            .finish()
    }
}

// === impl IndexedCaRoots ===

impl IndexedCaRoots {
    /// Indexes `roots` for `trust_domain`, taking the first active root as
    /// the active one.
    pub fn new(trust_domain: impl Into<String>, roots: Vec<CaRoot>) -> Self {
        let active_root_id = roots
            .iter()
            .find(|root| root.active)
            .map(|root| root.id.clone())
            .unwrap_or_default();
        Self {
            active_root_id,
            trust_domain: trust_domain.into(),
            roots,
        }
    }

    /// The active root, if any.
    pub fn active(&self) -> Option<&CaRoot> {
        self.roots
            .iter()
            .find(|root| root.id == self.active_root_id)
    }
}

// === certificate work ===

/// A root's certificate and key, ready to sign.
pub(crate) struct RootSigner {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) signing_id: SpiffeId,
    pub(crate) not_after: SystemTime,
}

impl fmt::Debug for RootSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootSigner")
            .field("issuer", &self.issuer)
            .field("signing_id", &self.signing_id)
            .finish()
    }
}

impl RootSigner {
    /// Loads a root and its key, checking that they belong together.
    pub(crate) fn load(root: &CaRoot, key: &CaRootKey) -> Result<Self, CaError> {
        if key.root_id != root.id {
            return Err(CaError::InvalidKey(format!(
                "the key is for root {:?}, not {:?}",
                key.root_id, root.id
            )));
        }
        let key_pair = KeyPair::from_pem(&key.private_key_pem)
            .map_err(|e| CaError::InvalidKey(e.to_string()))?;
        let der = util::parse_cert(&root.root_cert)?;
        let cert = util::x509(&der)?;
        if cert.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(CaError::InvalidKey(
                "the private key does not match the root certificate".into(),
            ));
        }
        let signing_id = signing_id_of(&cert)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = util::distinguished_name(cert.subject())?;
        params.key_identifier_method = match util::subject_key_id(&cert) {
            Some(id) => KeyIdMethod::PreSpecified(id),
            None => KeyIdMethod::Sha256,
        };
        params.key_usages = ca_key_usages();
        Ok(Self {
            issuer: Issuer::new(params, key_pair),
            signing_id,
            not_after: util::from_asn1(cert.validity().not_after),
        })
    }
}

fn signing_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, CaError> {
    let uris = util::uri_sans(cert)?;
    let [uri] = uris.as_slice() else {
        return Err(if uris.is_empty() {
            CaError::MissingSpiffeId
        } else {
            CaError::MultipleSpiffeIds(uris.len())
        });
    };
    let id = SpiffeId::parse(uri)?;
    if !id.is_signing() {
        return Err(CaError::InvalidCertificate(format!(
            "a root must carry a signing SPIFFE ID, not {id}"
        )));
    }
    Ok(id)
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ]
}

fn uri_san(uri: String) -> Result<SanType, CaError> {
    Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|e| CaError::Generate(e.to_string()))
}

/// Generates a P-256 key and a self-signed root for `trust_domain`, valid
/// from a minute before `now` for `ttl`.
pub(crate) fn generate_root(
    cluster_id: &str,
    trust_domain: &str,
    ttl: Duration,
    now: SystemTime,
) -> Result<(CaRoot, CaRootKey), CaError> {
    let signing_id = SpiffeId::signing(trust_domain)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // Consul's connect.CACN: pri-<unique>.<provider>.ca.<first 8 of the trust domain>.consul
    let short: String = trust_domain.chars().take(8).collect();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("pri-{}.consul.ca.{short}.consul", util::random_token(8)?),
    );
    params.subject_alt_names = vec![uri_san(signing_id.uri())?];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = ca_key_usages();
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from(util::random_serial()?));
    params.not_before = util::to_offset(util::saturating_sub(now, BACKDATE))?;
    params.not_after = util::to_offset(util::checked_add(now, ttl, "RootCertTTL")?)?;
    let cert = params.self_signed(&key)?;
    let root = CaRoot::from_pem(&cert.pem(), cluster_id)?;
    let key = CaRootKey {
        root_id: root.id.clone(),
        private_key_pem: key.serialize_pem(),
    };
    Ok((root, key))
}

/// Certifies the public key and subject of `new_root` with `signer` (the old
/// root), valid for [`CROSS_SIGN_TTL`] from a minute before `now`. The result
/// keeps the new root's name, key identifier and SPIFFE ID, so a leaf signed
/// by the new root chains through it to the old root.
pub(crate) fn cross_sign(
    new_root: &CaRoot,
    signer: &RootSigner,
    now: SystemTime,
) -> Result<String, CaError> {
    let der = util::parse_cert(&new_root.root_cert)?;
    let cert = util::x509(&der)?;
    let new_id = signing_id_of(&cert)?;
    if !signer.signing_id.can_sign(&new_id) {
        return Err(CaError::TrustDomainMismatch {
            expected: signer.signing_id.trust_domain().to_owned(),
            id: new_id.uri(),
        });
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw)
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = util::distinguished_name(cert.subject())?;
    params.subject_alt_names = util::uri_sans(&cert)?
        .into_iter()
        .map(|uri| uri_san(uri.to_owned()))
        .collect::<Result<_, _>>()?;
    params.is_ca = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => match bc.value.path_len_constraint {
            Some(len) => IsCa::Ca(BasicConstraints::Constrained(
                u8::try_from(len).unwrap_or(u8::MAX),
            )),
            None => IsCa::Ca(BasicConstraints::Unconstrained),
        },
        _ => {
            return Err(CaError::InvalidCertificate(
                "the new root is not a CA certificate".into(),
            ))
        }
    };
    params.key_usages = ca_key_usages();
    params.key_identifier_method = match util::subject_key_id(&cert) {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::Sha256,
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from(util::random_serial()?));
    params.not_before = util::to_offset(util::saturating_sub(now, BACKDATE))?;
    params.not_after = util::to_offset(util::checked_add(now, CROSS_SIGN_TTL, "now")?)?;
    Ok(params.signed_by(&public_key, &signer.issuer)?.pem())
}
