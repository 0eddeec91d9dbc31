//! `tls_min_version` and `tls_cipher_suites`, as Consul spells them, turned
//! into what rustls offers.
//!
//! rustls speaks TLS 1.2 and 1.3 only, so a minimum of `TLSv1_0` or
//! `TLSv1_1` (which Consul accepts) means 1.2 here: the floor is never
//! lower than asked. Cipher suites apply to TLS 1.2, as in Consul (TLS
//! 1.3's are not configurable); suites rustls lacks (CBC, RSA key
//! exchange) are skipped with a warning, and a list left empty is refused.

use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use std::sync::Arc;

/// The protocol versions and the crypto provider (its cipher suites) one
/// interface's TLS uses.
pub struct Suites {
    /// The provider, its TLS 1.2 suites cut to `tls_cipher_suites`.
    pub provider: Arc<CryptoProvider>,
    /// The versions from `tls_min_version` up.
    pub versions: &'static [&'static SupportedProtocolVersion],
}

const TLS12_UP: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// What `tls_min_version` and `tls_cipher_suites` ask for; errors name the
/// setting and the value.
pub fn suites(min_version: Option<&str>, cipher_suites: Option<&str>) -> Result<Suites, String> {
    let versions = match min_version.map(str::trim) {
        None | Some("") => TLS12_UP,
        Some("TLSv1_0" | "tls10" | "TLSv1_1" | "tls11" | "TLSv1_2" | "tls12") => TLS12_UP,
        Some("TLSv1_3" | "tls13") => TLS13_ONLY,
        Some(other) => {
            return Err(format!(
                "tls: tls_min_version {other:?} is not one of TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3"
            ))
        }
    };
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = cipher_suites.map(str::trim).filter(|l| !l.is_empty()) {
        if versions == TLS13_ONLY {
            return Err(
                "tls: tls_cipher_suites applies to TLS 1.2, but tls_min_version is TLSv1_3 \
                 (TLS 1.3's suites are not configurable)"
                    .into(),
            );
        }
        let available = provider.cipher_suites.clone();
        let mut chosen: Vec<SupportedCipherSuite> = available
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        let tls13 = chosen.len();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match available
                .iter()
                .find(|s| s.tls13().is_none() && names(s, name))
            {
                Some(suite) if !chosen.contains(suite) => chosen.push(*suite),
                Some(_) => {}
                None => tracing::warn!(
                    suite = name,
                    "tls_cipher_suites: this suite is not available (only ECDHE with AES-GCM \
                     or ChaCha20-Poly1305 are); skipping it"
                ),
            }
        }
        if chosen.len() == tls13 {
            return Err(format!(
                "tls: tls_cipher_suites {list:?} names no suite mesh offers; \
                 choose from {}",
                available
                    .iter()
                    .filter(|s| s.tls13().is_none())
                    .map(|s| format!("{:?}", s.suite()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        provider.cipher_suites = chosen;
    }
    Ok(Suites {
        provider: Arc::new(provider),
        versions,
    })
}

/// Whether `name` (Consul's, which are Go's: the IANA name, the ChaCha20
/// suites also without `_SHA256`) names `suite`.
fn names(suite: &SupportedCipherSuite, name: &str) -> bool {
    let iana = format!("{:?}", suite.suite());
    iana.eq_ignore_ascii_case(name)
        || iana
            .strip_suffix("_SHA256")
            .is_some_and(|short| short.contains("CHACHA20") && short.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls12_names(s: &Suites) -> Vec<String> {
        s.provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn min_version_picks_the_versions() {
        assert_eq!(suites(None, None).unwrap().versions.len(), 2);
        for old in ["TLSv1_0", "tls11", "TLSv1_2"] {
            assert_eq!(suites(Some(old), None).unwrap().versions, TLS12_UP, "{old}");
        }
        assert_eq!(suites(Some("TLSv1_3"), None).unwrap().versions, TLS13_ONLY);
        let err = suites(Some("SSLv3"), None).err().unwrap();
        assert!(err.contains("tls_min_version \"SSLv3\""), "{err}");
    }

    #[test]
    fn cipher_suites_keep_the_named_tls12_suites_and_every_tls13_one() {
        let s = suites(
            None,
            Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_RSA_WITH_AES_128_CBC_SHA"),
        )
        .unwrap();
        assert_eq!(
            tls12_names(&s),
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        let tls13 = s
            .provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some());
        assert_eq!(tls13.count(), 3);
        let err = suites(None, Some("TLS_RSA_WITH_AES_128_CBC_SHA"))
            .err()
            .unwrap();
        assert!(err.contains("names no suite"), "{err}");
        let err = suites(
            Some("TLSv1_3"),
            Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
        )
        .err()
        .unwrap();
        assert!(err.contains("TLSv1_3"), "{err}");
    }
}
