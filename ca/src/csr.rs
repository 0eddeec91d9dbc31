//! Certificate signing requests: generated where the key is used (agents,
//! proxies), checked where they are signed (servers). Consul
//! `agent/connect/csr.go`.

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::spiffe::SpiffeId;
use crate::CaError;

/// X.509 limits a common name to 64 characters.
const MAX_CN_CHARS: usize = 64;

/// Certificate parameters naming `id`: its service as common name and its
/// URI as the only SAN (shared by CSRs and the leaves signed from them).
pub(crate) fn spiffe_params(id: &SpiffeId) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name(id));
    let uri = Ia5String::try_from(id.uri()).map_err(|e| CaError::Generate(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    Ok(params)
}

/// Generates an EC P-256 key and a CSR for `id`: the SPIFFE URI as the only
/// SAN and the service name (cut to 64 characters) as common name. Returns
/// `(csr_pem, private_key_pem)`; the key is PKCS#8 and never leaves the
/// caller.
pub fn generate_csr(id: &SpiffeId) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = spiffe_params(id)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Parses a PEM CSR, verifies its self-signature and returns the service or
/// client agent SPIFFE ID it asks for. The control plane calls this to
/// authorise a request (token, datacenter, which kind of identity) before
/// signing it. Exactly one URI SAN is required and it must be a service or
/// agent ID; other SANs are ignored.
pub fn inspect_csr(csr_pem: &str) -> Result<SpiffeId, CaError> {
    Ok(ValidatedCsr::parse(csr_pem)?.spiffe_id)
}

/// The common name a leaf for `id` carries: the service name, the node
/// name of a client agent, or the trust domain for a signing ID, cut to 64
/// characters.
fn common_name(id: &SpiffeId) -> String {
    id.service_name()
        .or(id.agent_node())
        .unwrap_or(id.trust_domain())
        .chars()
        .take(MAX_CN_CHARS)
        .collect()
}

/// A CSR whose signature verified and whose SPIFFE ID parsed.
pub(crate) struct ValidatedCsr {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
}

impl ValidatedCsr {
    pub(crate) fn parse(csr_pem: &str) -> Result<Self, CaError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CaError::InvalidPem(format!("no CERTIFICATE REQUEST block: {e}")))?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CaError::InvalidCsr(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::InvalidCsr(
                "trailing bytes after the request".into(),
            ));
        }
        csr.verify_signature().map_err(|_| CaError::CsrSignature)?;

        let mut uris = Vec::new();
        if let Some(extensions) = csr.requested_extensions() {
            for extension in extensions {
                match extension {
                    ParsedExtension::SubjectAlternativeName(san) => {
                        uris.extend(san.general_names.iter().filter_map(|name| match name {
                            GeneralName::URI(uri) => Some(*uri),
                            _ => None,
                        }));
                    }
                    ParsedExtension::ParseError { error } => {
                        return Err(CaError::InvalidCsr(format!(
                            "unparseable extension: {error}"
                        )))
                    }
                    _ => {}
                }
            }
        }
        let uri = match uris.as_slice() {
            [] => return Err(CaError::MissingSpiffeId),
            [uri] => *uri,
            more => return Err(CaError::MultipleSpiffeIds(more.len())),
        };
        let spiffe_id = SpiffeId::parse(uri)?;
        if spiffe_id.is_signing() {
            return Err(CaError::InvalidSpiffeId {
                input: uri.chars().take(200).collect(),
                reason: "a leaf may only be issued for a service or client agent identity",
            });
        }
        let public_key =
            rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::InvalidCsr(format!("unsupported public key: {e}")))?;
        Ok(Self {
            spiffe_id,
            public_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TD;

    fn web() -> SpiffeId {
        SpiffeId::service(TD, "default", "dc1", "web").unwrap()
    }

    #[test]
    fn generated_csr_round_trips() {
        let (csr, key) = generate_csr(&web()).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(inspect_csr(&csr).unwrap(), web());
    }

    #[test]
    fn garbage_is_a_pem_error() {
        for junk in [
            "",
            "garbage",
            "-----BEGIN CERTIFICATE REQUEST-----\n@@\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            let err = inspect_csr(junk).unwrap_err();
            assert!(matches!(err, CaError::InvalidPem(_)), "{junk:?}: {err}");
            assert!(err.is_invalid_csr());
        }
    }

    #[test]
    fn garbage_der_is_a_csr_error() {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE REQUEST-----\n";
        let err = inspect_csr(pem).unwrap_err();
        assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
    }

    #[test]
    fn truncated_and_mutated_csrs_never_panic() {
        let (csr, _) = generate_csr(&web()).unwrap();
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let bytes = der.as_ref().to_vec();
        for cut in 0..bytes.len() {
            let pem = crate::test_util::pem("CERTIFICATE REQUEST", &bytes[..cut]);
            assert!(inspect_csr(&pem).is_err());
        }
        for at in 0..bytes.len() {
            let mut mutated = bytes.clone();
            mutated[at] ^= 0x55;
            let pem = crate::test_util::pem("CERTIFICATE REQUEST", &mutated);
            let _ = inspect_csr(&pem);
        }
    }

    #[test]
    fn common_name_is_cut_to_64() {
        let long = SpiffeId::service(TD, "default", "dc1", &"s".repeat(100)).unwrap();
        assert_eq!(common_name(&long).len(), 64);
        assert_eq!(common_name(&web()), "web");
    }
}
