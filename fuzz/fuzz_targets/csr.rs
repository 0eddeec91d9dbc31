//! CSRs as a server signs them for agents (`ConnectCA.Sign`, a client
//! agent's `SignLeaf`, auto_encrypt's `AutoEncryptSign`): `inspect_csr`
//! then the built-in CA's `sign` and `sign_agent`, with one CA made once.
//! The input is tried as PEM text and, wrapped in a `CERTIFICATE REQUEST`
//! block, as DER, so mutations reach the X.509 parser. Nothing may panic; a
//! signed service leaf names the SPIFFE ID the CSR asked for, and an agent
//! certificate names the agent the CSR asked for in the CA's trust domain.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mesh_ca::{inspect_csr, CaConfiguration, ConsulProvider, Provider};

/// The cluster ID the seed CSRs' trust domain is made of.
const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

fn ca() -> &'static (ConsulProvider, SystemTime) {
    static CA: OnceLock<(ConsulProvider, SystemTime)> = OnceLock::new();
    CA.get_or_init(|| {
        let now = SystemTime::now();
        let provider = ConsulProvider::new(&CaConfiguration::new(CLUSTER)).expect("a CA config");
        let (root, key) = provider.generate_root(now).expect("a root");
        let provider = provider
            .with_active_root(root, &key)
            .expect("an active root");
        (provider, now)
    })
}

fn sign(pem: &str) {
    let (ca, now) = ca();
    let Ok(id) = inspect_csr(pem) else {
        return;
    };
    if let Ok(cert) = ca.sign(pem, Duration::from_secs(3600), *now) {
        assert_eq!(
            cert.service_uri,
            id.uri(),
            "the leaf names another identity"
        );
        assert!(cert.valid_after < cert.valid_before);
    }
    if let Ok(cert) = ca.sign_agent(pem, Duration::from_secs(3600), *now) {
        let wanted = id.in_trust_domain(ca.trust_domain()).expect("a trust domain");
        assert!(id.is_agent(), "an agent certificate for {}", id.uri());
        assert_eq!(cert.agent_uri, wanted.uri(), "the certificate names another agent");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        sign(text);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE REQUEST-----\n");
    sign(&pem);
});
