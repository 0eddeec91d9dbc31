//! Behaviour across modules: roots, signing, rotation and mTLS handshakes,
//! with certificates checked by verifiers that are not this crate's code.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConnection};
use x509_parser::extensions::ParsedExtension;

use crate::test_util::{
    self, ca, ca_for, handshake, leaf, leaf_at, service_id, Side, CLUSTER, TD, TTL,
};
use crate::util::{parse_cert, parse_certs, x509};
use crate::*;

const HOUR: Duration = Duration::from_secs(3600);

fn roots_of(cas: &[&ConsulProvider]) -> SharedRoots {
    let roots: Vec<CaRoot> = cas
        .iter()
        .map(|ca| ca.active_root().unwrap().clone())
        .collect();
    SharedRoots::new(TrustedRoots::from_ca_roots(&roots).unwrap())
}

fn connect(
    client_leaf: &(IssuedCert, String),
    client_roots: SharedRoots,
    expect: ExpectedService,
    server_leaf: &(IssuedCert, String),
    server_roots: SharedRoots,
) -> (Result<(), (Side, rustls::Error)>, ServerConnection) {
    let client_config = client_config(
        &client_leaf.0.cert_pem,
        &client_leaf.1,
        client_roots,
        expect,
    )
    .unwrap();
    let server_config =
        server_config(&server_leaf.0.cert_pem, &server_leaf.1, server_roots, TD).unwrap();
    let name = ServerName::try_from("db.default.dc1.internal.consul").unwrap();
    let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    let result = handshake(&mut client, &mut server);
    (result, server)
}

fn expect_db() -> ExpectedService {
    ExpectedService::new(TD, "db")
}

fn cert_error(result: Result<(), (Side, rustls::Error)>, side: Side) -> CertificateError {
    match result {
        Err((failed, rustls::Error::InvalidCertificate(err))) if failed == side => err,
        other => panic!("expected a certificate error on the {side:?} side, got {other:?}"),
    }
}

fn is_expired(err: &CertificateError) -> bool {
    matches!(
        err,
        CertificateError::Expired | CertificateError::ExpiredContext { .. }
    )
}

fn ca_error_of(err: &CertificateError) -> &CaError {
    match err {
        CertificateError::Other(other) => other
            .0
            .downcast_ref::<CaError>()
            .unwrap_or_else(|| panic!("not a CaError: {other:?}")),
        other => panic!("expected a CaError inside, got {other:?}"),
    }
}

// === roots ===

#[test]
fn generated_root_is_a_spiffe_ca() {
    let ca = ca();
    let root = ca.active_root().unwrap();
    assert!(root.active);
    assert_eq!(root.name, ROOT_NAME);
    assert_eq!(root.private_key_type, "ec");
    assert_eq!(root.private_key_bits, 256);
    assert_eq!(root.external_trust_domain, CLUSTER);
    assert!(root.intermediate_certs.is_empty());
    assert!(root.serial_number > 0);
    // ID is the SHA-1 fingerprint, SigningKeyID the SKI: colon-hex.
    assert_eq!(root.id.len(), 20 * 3 - 1);
    assert!(root.id.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
    assert!(!root.signing_key_id.is_empty());
    let validity = root.not_after.duration_since(root.not_before).unwrap();
    assert!(validity >= Duration::from_secs(87600 * 3600));

    let der = parse_cert(&root.root_cert).unwrap();
    let cert = x509(&der).unwrap();
    assert!(cert.is_ca());
    assert_eq!(cert.subject(), cert.issuer());
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    let uris = crate::util::uri_sans(&cert).unwrap();
    assert_eq!(uris, vec![format!("spiffe://{TD}")]);
    assert_eq!(root.signing_id().unwrap(), SpiffeId::signing(TD).unwrap());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert!(cn.as_str().unwrap().starts_with("pri-"));
    // Self-signed: the signature verifies with its own key.
    cert.verify_signature(None).unwrap();
    // webpki accepts it as a trust anchor.
    webpki::anchor_from_trusted_cert(&der).unwrap();
}

#[test]
fn roots_differ_and_keys_are_checked() {
    let provider = ConsulProvider::new(&CaConfiguration::new(CLUSTER)).unwrap();
    let now = SystemTime::now();
    let (a, key_a) = provider.generate_root(now).unwrap();
    let (b, key_b) = provider.generate_root(now).unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(a.signing_key_id, b.signing_key_id);
    let err = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
        .unwrap()
        .with_active_root(a.clone(), &key_b)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err}");
    let mut forged = key_b.clone();
    forged.root_id = a.id.clone();
    let err = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
        .unwrap()
        .with_active_root(a.clone(), &forged)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err}");
    // A root of another cluster cannot become this provider's root.
    let other = ConsulProvider::new(&CaConfiguration::new("other")).unwrap();
    assert!(other
        .with_active_root(a, &key_a)
        .unwrap_err()
        .is_trust_domain_mismatch());
    assert!(format!("{key_a:?}").contains("redacted"));
    assert!(!format!("{key_a:?}").contains("BEGIN"));
}

#[test]
fn root_json_uses_consul_names() {
    let root = ca().active_root().unwrap().clone();
    let json = serde_json::to_value(&root).unwrap();
    for field in [
        "ID",
        "Name",
        "SerialNumber",
        "SigningKeyID",
        "ExternalTrustDomain",
        "NotBefore",
        "NotAfter",
        "RootCert",
        "IntermediateCerts",
        "Active",
        "PrivateKeyType",
        "PrivateKeyBits",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    assert!(json["NotBefore"].as_str().unwrap().ends_with('Z'));
    let back: CaRoot = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, root);
    // Go writes a nil slice as null.
    let mut go = json;
    go["IntermediateCerts"] = serde_json::Value::Null;
    let back: CaRoot = serde_json::from_value(go).unwrap();
    assert!(back.intermediate_certs.is_empty());

    let indexed = IndexedCaRoots::new(TD, vec![root.clone()]);
    let json = serde_json::to_value(&indexed).unwrap();
    assert_eq!(json["ActiveRootID"], root.id.as_str());
    assert_eq!(json["TrustDomain"], TD);
    assert_eq!(indexed.active(), Some(&root));
}

#[test]
fn provider_needs_a_valid_config_and_root() {
    assert!(ConsulProvider::new(&CaConfiguration::new(""))
        .unwrap_err()
        .is_invalid_config());
    assert!(ConsulProvider::new(&CaConfiguration::new("bad id/"))
        .unwrap_err()
        .is_invalid_config());
    let bare = ConsulProvider::new(&CaConfiguration::new(CLUSTER)).unwrap();
    let (csr, _) = generate_csr(&SpiffeId::service(TD, "default", "dc1", "web").unwrap()).unwrap();
    assert!(bare
        .sign(&csr, TTL, SystemTime::now())
        .unwrap_err()
        .is_no_active_root());
    let (root, _) = bare.generate_root(SystemTime::now()).unwrap();
    assert!(bare
        .cross_sign(&root, SystemTime::now())
        .unwrap_err()
        .is_no_active_root());
}

// === signing ===

#[test]
fn signed_leaf_passes_independent_verifiers() {
    let ca = ca();
    let now = SystemTime::now();
    let (issued, _key) = leaf_at(&ca, "web", TTL, now);
    let id = service_id(&ca, "web");
    assert_eq!(issued.service, "web");
    assert_eq!(issued.service_uri, id.uri());
    assert!(issued.private_key_pem.is_empty());
    assert!(issued.serial_number.contains(':') || issued.serial_number.len() == 2);
    let lifetime = issued
        .valid_before
        .duration_since(issued.valid_after)
        .unwrap();
    assert_eq!(lifetime, TTL + Duration::from_secs(60));
    assert!(issued.valid_after <= now - Duration::from_secs(59));

    let chain = parse_certs(&issued.cert_pem).unwrap();
    assert_eq!(chain.len(), 1);
    let root_der = parse_cert(&ca.active_root().unwrap().root_cert).unwrap();

    // rustls's own client-certificate verifier (not this crate's code).
    let mut store = RootCertStore::empty();
    store.add(root_der.clone()).unwrap();
    let stock = WebPkiClientVerifier::builder_with_provider(Arc::new(store), crypto_provider())
        .build()
        .unwrap();
    stock
        .verify_client_cert(&chain[0], &[], UnixTime::now())
        .unwrap();

    // webpki directly, for server use.
    let anchor = webpki::anchor_from_trusted_cert(&root_der).unwrap();
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();

    // The certificate's shape, read with x509-parser.
    let cert = x509(&chain[0]).unwrap();
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment());
    assert!(!usage.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(
        crate::util::uri_sans(&cert).unwrap(),
        vec![id.uri().as_str()]
    );
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        crate::util::colon_hex(aki.0),
        ca.active_root().unwrap().signing_key_id
    );

    // And our own checker agrees.
    let roots = TrustedRoots::from_ca_roots(&[ca.active_root().unwrap().clone()]).unwrap();
    assert_eq!(verify_leaf(&roots, &issued.cert_pem, now).unwrap(), id);
    let json = serde_json::to_value(&issued).unwrap();
    assert!(json.get("CertPEM").is_some() && json.get("ServiceURI").is_some());
    assert!(json.get("PrivateKeyPEM").is_none());
}

#[test]
fn independent_verifier_rejects_a_leaf_of_another_ca() {
    let (issued, _) = leaf(&ca(), "web");
    let other = ca();
    let mut store = RootCertStore::empty();
    store
        .add(parse_cert(&other.active_root().unwrap().root_cert).unwrap())
        .unwrap();
    let stock = WebPkiClientVerifier::builder_with_provider(Arc::new(store), crypto_provider())
        .build()
        .unwrap();
    let chain = parse_certs(&issued.cert_pem).unwrap();
    let err = stock
        .verify_client_cert(&chain[0], &[], UnixTime::now())
        .unwrap_err();
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    ));
}

fn csr_with_sans(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "web");
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(text: &str) -> SanType {
    SanType::URI(Ia5String::try_from(text).unwrap())
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let ca = ca();
    let (csr, _) = generate_csr(&service_id(&ca, "web")).unwrap();
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let mut tampered = der.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let pem = test_util::pem("CERTIFICATE REQUEST", &tampered);
    let err = ca.sign(&pem, TTL, SystemTime::now()).unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");
    assert!(err.is_invalid_csr() && err.is_invalid_input());

    // A request whose body was swapped for another's keeps a signature that
    // no longer matches.
    let (other, _) = generate_csr(&service_id(&ca, "admin")).unwrap();
    let other_der =
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(other.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
    let spliced = splice_signature(&other_der, &der);
    let err = ca
        .sign(
            &test_util::pem("CERTIFICATE REQUEST", &spliced),
            TTL,
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");
}

/// `body`'s request info with `sig`'s algorithm and signature.
fn splice_signature(body: &[u8], sig: &[u8]) -> Vec<u8> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;
    let (_, a) = X509CertificationRequest::from_der(body).unwrap();
    let info = a.certification_request_info.raw;
    // The outer SEQUENCE header of `sig`, then everything after its info.
    let (_, b) = X509CertificationRequest::from_der(sig).unwrap();
    let b_info = b.certification_request_info.raw;
    let start = sig.windows(b_info.len()).position(|w| w == b_info).unwrap();
    let tail = &sig[start + b_info.len()..];
    let mut content = info.to_vec();
    content.extend_from_slice(tail);
    let mut out = vec![0x30];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend(content);
    out
}

#[test]
fn csr_for_a_foreign_trust_domain_is_refused() {
    let ca = ca();
    let foreign = SpiffeId::service(
        "99999999-0000-0000-0000-000000000000.consul",
        "default",
        "dc1",
        "web",
    )
    .unwrap();
    let (csr, _) = generate_csr(&foreign).unwrap();
    let err = ca.sign(&csr, TTL, SystemTime::now()).unwrap_err();
    assert!(err.is_trust_domain_mismatch(), "{err}");
    assert!(err.is_invalid_input());
}

#[test]
fn csr_without_a_spiffe_san_is_refused() {
    let ca = ca();
    let now = SystemTime::now();
    let none = csr_with_sans(vec![]);
    assert!(matches!(
        ca.sign(&none, TTL, now),
        Err(CaError::MissingSpiffeId)
    ));
    let dns_only = csr_with_sans(vec![SanType::DnsName(
        Ia5String::try_from("web.local").unwrap(),
    )]);
    assert!(matches!(
        ca.sign(&dns_only, TTL, now),
        Err(CaError::MissingSpiffeId)
    ));
    let two = csr_with_sans(vec![
        uri(&service_id(&ca, "web").uri()),
        uri(&service_id(&ca, "admin").uri()),
    ]);
    assert!(matches!(
        ca.sign(&two, TTL, now),
        Err(CaError::MultipleSpiffeIds(2))
    ));
    for bad in [
        "https://example.com/web".to_owned(),
        format!("spiffe://{TD}"),
        format!("spiffe://{TD}/ns/default/dc/dc1/svc/"),
        format!("spiffe://{TD}/agent/client/dc/dc1/id/node"),
    ] {
        let csr = csr_with_sans(vec![uri(&bad)]);
        let err = ca.sign(&csr, TTL, now).unwrap_err();
        assert!(err.is_invalid_spiffe_id(), "{bad}: {err}");
    }
    // Extra DNS names are not copied into the leaf.
    let with_dns = csr_with_sans(vec![
        uri(&service_id(&ca, "web").uri()),
        SanType::DnsName(Ia5String::try_from("evil.example.com").unwrap()),
    ]);
    let issued = ca.sign(&with_dns, TTL, now).unwrap();
    let der = parse_cert(&issued.cert_pem).unwrap();
    let cert = x509(&der).unwrap();
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names.len(), 1);
}

#[test]
fn garbage_csr_pem_is_refused() {
    let ca = ca();
    for junk in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n",
    ] {
        let err = ca.sign(junk, TTL, SystemTime::now()).unwrap_err();
        assert!(err.is_invalid_csr(), "{junk:?}: {err}");
    }
    // A certificate is not a CSR.
    let err = ca
        .sign(&ca.active_root().unwrap().root_cert, TTL, SystemTime::now())
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidPem(_)), "{err}");
}

#[test]
fn leaf_never_outlives_its_root() {
    let ca = ca();
    let root_end = ca.active_root().unwrap().not_after;
    let (issued, _) = leaf_at(
        &ca,
        "web",
        Duration::from_secs(100_000 * 3600),
        SystemTime::now(),
    );
    assert!(issued.valid_before <= root_end);
    assert_eq!(
        crate::cert_not_after(&issued.cert_pem).unwrap(),
        issued.valid_before
    );
    assert!(crate::cert_not_after("no pem here").is_err());
    let (csr, _) = generate_csr(&service_id(&ca, "web")).unwrap();
    assert!(ca.sign(&csr, Duration::ZERO, SystemTime::now()).is_err());
    let too_late = root_end + HOUR;
    assert!(ca.sign(&csr, TTL, too_late).is_err());
}

// === handshakes ===

#[test]
fn valid_pair_handshakes_and_server_sees_client_identity() {
    let ca = ca();
    let roots = roots_of(&[&ca]);
    let web = leaf(&ca, "web");
    let db = leaf(&ca, "db");
    let (result, server) = connect(&web, roots.clone(), expect_db(), &db, roots);
    result.unwrap();
    let peer = peer_spiffe_id(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(peer, service_id(&ca, "web"));
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let ca = ca();
    let rogue = ca_for(CLUSTER); // same trust domain, different root
    let roots = roots_of(&[&ca]);
    let (result, _) = connect(
        &leaf(&rogue, "web"),
        roots.clone(),
        expect_db(),
        &leaf(&ca, "db"),
        roots,
    );
    assert_eq!(
        cert_error(result, Side::Server),
        CertificateError::UnknownIssuer
    );
}

#[test]
fn server_certificate_from_another_ca_is_refused() {
    let ca = ca();
    let rogue = ca_for(CLUSTER);
    let roots = roots_of(&[&ca]);
    let (result, _) = connect(
        &leaf(&ca, "web"),
        roots.clone(),
        expect_db(),
        &leaf(&rogue, "db"),
        roots,
    );
    assert_eq!(
        cert_error(result, Side::Client),
        CertificateError::UnknownIssuer
    );
}

#[test]
fn client_of_another_trust_domain_is_refused_even_if_its_root_is_trusted() {
    let ca = ca();
    let other = ca_for("22222222-0000-0000-0000-000000000000");
    let server_roots = roots_of(&[&ca, &other]);
    let (result, _) = connect(
        &leaf(&other, "web"),
        roots_of(&[&ca]),
        expect_db(),
        &leaf(&ca, "db"),
        server_roots,
    );
    let err = cert_error(result, Side::Server);
    assert!(ca_error_of(&err).is_trust_domain_mismatch(), "{err:?}");
}

#[test]
fn missing_client_certificate_is_refused() {
    let ca = ca();
    let roots = roots_of(&[&ca]);
    let db = leaf(&ca, "db");
    let server_config = server_config(&db.0.cert_pem, &db.1, roots.clone(), TD).unwrap();
    let client_config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(roots, expect_db())))
        .with_no_client_auth();
    let name = ServerName::try_from("db").unwrap();
    let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    match handshake(&mut client, &mut server) {
        Err((Side::Server, rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected the server to demand a certificate, got {other:?}"),
    }
}

#[test]
fn expired_leaves_are_refused_both_ways() {
    let ca = ca();
    let roots = roots_of(&[&ca]);
    let past = SystemTime::now() - 3 * HOUR;
    let expired_db = leaf_at(&ca, "db", HOUR, past);
    let expired_web = leaf_at(&ca, "web", HOUR, past);
    assert!(
        verify_leaf(&roots.load(), &expired_db.0.cert_pem, SystemTime::now())
            .unwrap_err()
            .is_expired()
    );

    let (result, _) = connect(
        &leaf(&ca, "web"),
        roots.clone(),
        expect_db(),
        &expired_db,
        roots.clone(),
    );
    assert!(is_expired(&cert_error(result, Side::Client)));

    let (result, _) = connect(
        &expired_web,
        roots.clone(),
        expect_db(),
        &leaf(&ca, "db"),
        roots,
    );
    assert!(is_expired(&cert_error(result, Side::Server)));
}

#[test]
fn leaf_for_the_wrong_service_fails_the_clients_check() {
    let ca = ca();
    let roots = roots_of(&[&ca]);
    let (result, _) = connect(
        &leaf(&ca, "web"),
        roots.clone(),
        expect_db(),
        &leaf(&ca, "cache"),
        roots.clone(),
    );
    let err = cert_error(result, Side::Client);
    assert!(
        matches!(ca_error_of(&err), CaError::IdentityMismatch { found, .. } if found.ends_with("/svc/cache")),
        "{err:?}"
    );

    // Pinning the datacenter refuses the same service elsewhere.
    let dc2 = {
        let (csr, key) =
            generate_csr(&SpiffeId::service(TD, "default", "dc2", "db").unwrap()).unwrap();
        (ca.sign(&csr, TTL, SystemTime::now()).unwrap(), key)
    };
    let pinned = expect_db().in_datacenter("dc1");
    let (result, _) = connect(
        &leaf(&ca, "web"),
        roots.clone(),
        pinned.clone(),
        &dc2,
        roots.clone(),
    );
    assert!(ca_error_of(&cert_error(result, Side::Client)).is_untrusted());
    let (result, _) = connect(
        &leaf(&ca, "web"),
        roots.clone(),
        pinned,
        &leaf(&ca, "db"),
        roots,
    );
    result.unwrap();
}

#[test]
fn rotation_keeps_old_and_new_leaves_working() {
    let old = ca();
    let (new_root, new_key) = old.rotate(SystemTime::now()).unwrap();
    assert_eq!(new_root.intermediate_certs.len(), 1);
    assert_ne!(new_root.id, old.active_root().unwrap().id);
    let new = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
        .unwrap()
        .with_active_root(new_root.clone(), &new_key)
        .unwrap();

    // Leaves of the new root carry the cross-signed certificate.
    let new_db = leaf(&new, "db");
    let new_web = leaf(&new, "web");
    assert_eq!(parse_certs(&new_db.0.cert_pem).unwrap().len(), 2);

    // Peers that know only the old root accept them.
    let old_only = roots_of(&[&old]);
    let (result, server) = connect(
        &new_web,
        old_only.clone(),
        expect_db(),
        &new_db,
        old_only.clone(),
    );
    result.unwrap();
    assert_eq!(
        peer_spiffe_id(server.peer_certificates().unwrap()).unwrap(),
        service_id(&new, "web")
    );

    // Without the cross-signed certificate they would not: the test can fail.
    let bare_leaf: String = {
        let chain = parse_certs(&new_db.0.cert_pem).unwrap();
        test_util::pem("CERTIFICATE", chain[0].as_ref())
    };
    let bare = (
        IssuedCert {
            cert_pem: bare_leaf,
            ..new_db.0.clone()
        },
        new_db.1.clone(),
    );
    let (result, _) = connect(&new_web, old_only.clone(), expect_db(), &bare, old_only);
    assert_eq!(
        cert_error(result, Side::Client),
        CertificateError::UnknownIssuer
    );

    // Peers that trust both roots accept leaves of the old root.
    let both = roots_of(&[&old, &new]);
    let (result, _) = connect(
        &leaf(&old, "web"),
        both.clone(),
        expect_db(),
        &leaf(&old, "db"),
        both.clone(),
    );
    result.unwrap();
    // ... and of the new one, with or without the intermediate.
    let (result, _) = connect(&new_web, both.clone(), expect_db(), &bare, both);
    result.unwrap();

    // Peers that already trust only the new root accept new leaves.
    let new_only = roots_of(&[&new]);
    let (result, _) = connect(&new_web, new_only.clone(), expect_db(), &new_db, new_only);
    result.unwrap();
}

#[test]
fn cross_signed_certificate_has_the_new_roots_identity() {
    let old = ca();
    let (new_root, _) = old.rotate(SystemTime::now()).unwrap();
    let xc_der = parse_cert(&new_root.intermediate_certs[0]).unwrap();
    let xc = x509(&xc_der).unwrap();
    let new_der = parse_cert(&new_root.root_cert).unwrap();
    let new_cert = x509(&new_der).unwrap();
    let old_der = parse_cert(&old.active_root().unwrap().root_cert).unwrap();
    let old_cert = x509(&old_der).unwrap();
    assert!(xc.is_ca());
    assert_eq!(xc.subject().as_raw(), new_cert.subject().as_raw());
    assert_eq!(xc.issuer().as_raw(), old_cert.subject().as_raw());
    assert_eq!(xc.public_key().raw, new_cert.public_key().raw);
    assert_eq!(
        crate::util::subject_key_id(&xc),
        crate::util::subject_key_id(&new_cert)
    );
    assert_eq!(
        crate::util::uri_sans(&xc).unwrap(),
        vec![format!("spiffe://{TD}")]
    );
    xc.verify_signature(Some(old_cert.public_key())).unwrap();
    let life = xc.validity().time_to_expiration().unwrap();
    assert!(life.whole_seconds() <= CROSS_SIGN_TTL.as_secs() as i64);

    // A root of another trust domain is not cross-signed.
    let foreign = ca_for("33333333-0000-0000-0000-000000000000");
    let err = old
        .cross_sign(foreign.active_root().unwrap(), SystemTime::now())
        .unwrap_err();
    assert!(err.is_trust_domain_mismatch(), "{err}");
}

#[test]
fn roots_swap_live_without_rebuilding_configs() {
    let ca = ca();
    let next = ca_for(CLUSTER);
    let roots = roots_of(&[&ca]);
    let db = leaf(&ca, "db");
    let web_next = leaf(&next, "web");
    let server = Arc::new(server_config(&db.0.cert_pem, &db.1, roots.clone(), TD).unwrap());
    let client = Arc::new(
        client_config(
            &web_next.0.cert_pem,
            &web_next.1,
            roots.clone(),
            expect_db(),
        )
        .unwrap(),
    );
    let attempt = || {
        let name = ServerName::try_from("db").unwrap();
        let mut c = ClientConnection::new(client.clone(), name).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        handshake(&mut c, &mut s)
    };
    assert_eq!(
        cert_error(attempt(), Side::Server),
        CertificateError::UnknownIssuer
    );
    let both = [
        ca.active_root().unwrap().clone(),
        next.active_root().unwrap().clone(),
    ];
    roots.store(TrustedRoots::from_ca_roots(&both).unwrap());
    attempt().unwrap();
    roots.store(TrustedRoots::empty());
    assert!(attempt().is_err());
}

#[test]
fn peer_spiffe_id_refuses_odd_chains() {
    assert!(matches!(peer_spiffe_id(&[]), Err(CaError::MissingSpiffeId)));
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        peer_spiffe_id(&[junk]),
        Err(CaError::InvalidCertificate(_))
    ));
    // A root carries a signing ID, not a service identity.
    let root = parse_cert(&ca().active_root().unwrap().root_cert).unwrap();
    assert!(peer_spiffe_id(&[root]).unwrap_err().is_invalid_spiffe_id());
}

#[test]
fn configs_refuse_bad_material() {
    let ca = ca();
    let roots = roots_of(&[&ca]);
    let (issued, key) = leaf(&ca, "web");
    let (_, other_key) = leaf(&ca, "db");
    assert!(matches!(
        server_config("nope", &key, roots.clone(), TD),
        Err(CaError::InvalidPem(_))
    ));
    assert!(matches!(
        client_config(&issued.cert_pem, "nope", roots.clone(), expect_db()),
        Err(CaError::InvalidKey(_))
    ));
    assert!(matches!(
        server_config(&issued.cert_pem, &other_key, roots, TD),
        Err(CaError::Tls(_))
    ));
    assert!(TrustedRoots::from_pem("garbage").is_err());
}

// === provided roots ===

/// The configuration of [`CLUSTER`] with `RootCert` and `PrivateKey` set to
/// whichever of `cert` and `key` is given.
fn provided_config(cert: Option<&str>, key: Option<&str>) -> CaConfiguration {
    let mut config = CaConfiguration::new(CLUSTER);
    for (name, value) in [("RootCert", cert), ("PrivateKey", key)] {
        if let Some(value) = value {
            config.config.insert(name.to_owned(), value.into());
        }
    }
    config
}

/// A root and its key generated for `cluster`, as an operator would bring.
fn own_root(cluster: &str) -> (CaRoot, CaRootKey) {
    ConsulProvider::new(&CaConfiguration::new(cluster))
        .unwrap()
        .generate_root(SystemTime::now())
        .unwrap()
}

#[test]
fn provided_root_signs_leaves_that_verify() {
    let (root, key) = own_root(CLUSTER);
    let config = provided_config(Some(&root.root_cert), Some(&key.private_key_pem));
    let provided = config.consul_config().unwrap().provided_root.unwrap();
    assert_eq!(provided.root.id, root.id);
    assert_eq!(provided.key.root_id, root.id);

    // A CA with no root yet starts from the provided one, uncross-signed.
    let bootstrap = ConsulProvider::new(&config).unwrap();
    let now = SystemTime::now();
    let (first, first_key) = bootstrap.configured_root(now).unwrap();
    assert_eq!(first, root);
    assert!(first.active && first.intermediate_certs.is_empty());
    let ca = bootstrap.with_active_root(first, &first_key).unwrap();
    let (issued, _) = leaf(&ca, "web");

    // rustls's stock verifier accepts the leaf under the provided root.
    let mut store = RootCertStore::empty();
    store.add(parse_cert(&root.root_cert).unwrap()).unwrap();
    let stock = WebPkiClientVerifier::builder_with_provider(Arc::new(store), crypto_provider())
        .build()
        .unwrap();
    let chain = parse_certs(&issued.cert_pem).unwrap();
    stock
        .verify_client_cert(&chain[0], &[], UnixTime::now())
        .unwrap();
    let roots = TrustedRoots::from_ca_roots(std::slice::from_ref(&root)).unwrap();
    assert_eq!(
        verify_leaf(&roots, &issued.cert_pem, now).unwrap(),
        service_id(&ca, "web")
    );
}

#[test]
fn rotating_to_a_provided_root_cross_signs_it() {
    let (active, active_key) = own_root(CLUSTER);
    let (root, key) = own_root(CLUSTER);
    let config = provided_config(Some(&root.root_cert), Some(&key.private_key_pem));
    let current = ConsulProvider::new(&config)
        .unwrap()
        .with_active_root(active.clone(), &active_key)
        .unwrap();
    let (new_root, new_key) = current.rotate(SystemTime::now()).unwrap();
    assert_eq!(
        new_root.id, root.id,
        "the provided root, not a generated one"
    );
    assert_eq!(new_key, key);
    assert_eq!(new_root.intermediate_certs.len(), 1);

    // Leaves of the provided root reach peers that trust only the old root.
    let new = ConsulProvider::new(&config)
        .unwrap()
        .with_active_root(new_root.clone(), &new_key)
        .unwrap();
    let old_only = SharedRoots::new(TrustedRoots::from_ca_roots(&[active]).unwrap());
    let (result, _) = connect(
        &leaf(&new, "web"),
        old_only.clone(),
        expect_db(),
        &leaf(&new, "db"),
        old_only,
    );
    result.unwrap();

    // The provided root cannot rotate to itself.
    let err = new.rotate(SystemTime::now()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::InvalidConfig {
                field: "RootCert",
                ..
            }
        ),
        "{err}"
    );
}

/// The field an error names, if it is `InvalidConfig`.
fn config_field(err: &CaError) -> Option<&'static str> {
    match err {
        CaError::InvalidConfig { field, .. } => Some(field),
        _ => None,
    }
}

#[test]
fn provided_root_is_refused_with_the_field_at_fault() {
    let (root, key) = own_root(CLUSTER);
    let (other_root, other_key) = own_root(CLUSTER);
    let (foreign_root, foreign_key) = own_root("22222222-0000-0000-0000-000000000000");
    let (web, web_key) = leaf(&ca(), "web");
    let two_certs = format!("{}{}", root.root_cert, other_root.root_cert);
    let with_key = format!("{}{}", root.root_cert, key.private_key_pem);
    let sec1_label = key.private_key_pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
    // The first line of base64 of each key: no message may carry it.
    let secrets: Vec<&str> = [&key, &other_key, &foreign_key]
        .map(|k| k.private_key_pem.as_str())
        .into_iter()
        .chain([web_key.as_str()])
        .map(|pem| pem.lines().nth(1).unwrap())
        .collect();
    let cert = root.root_cert.as_str();
    let pk = key.private_key_pem.as_str();
    let cases: [(&str, Option<&str>, Option<&str>, &str); 11] = [
        (
            "mismatched key",
            Some(cert),
            Some(&other_key.private_key_pem),
            "PrivateKey",
        ),
        (
            "leaf, not a CA",
            Some(&web.cert_pem),
            Some(&web_key),
            "RootCert",
        ),
        (
            "other trust domain",
            Some(&foreign_root.root_cert),
            Some(&foreign_key.private_key_pem),
            "RootCert",
        ),
        (
            "garbage certificate",
            Some("-----BEGIN CERTIFICATE-----\nnope\n"),
            Some(pk),
            "RootCert",
        ),
        ("garbage key", Some(cert), Some("garbage"), "PrivateKey"),
        ("SEC1 key", Some(cert), Some(&sec1_label), "PrivateKey"),
        (
            "two keys",
            Some(cert),
            Some(&format!("{pk}{pk}")),
            "PrivateKey",
        ),
        ("two certificates", Some(&two_certs), Some(pk), "RootCert"),
        ("certificate and key", Some(&with_key), Some(pk), "RootCert"),
        ("certificate alone", Some(cert), None, "PrivateKey"),
        ("key alone", None, Some(pk), "RootCert"),
    ];
    for (what, cert, key, field) in cases {
        let config = provided_config(cert, key);
        let err = config.consul_config().unwrap_err();
        assert_eq!(config_field(&err), Some(field), "{what}: {err}");
        assert!(err.is_invalid_input(), "{what}: {err}");
        assert!(
            !secrets.iter().any(|s| err.to_string().contains(s)),
            "{what}: the key is echoed: {err}"
        );
        let err = ConsulProvider::new(&config).unwrap_err();
        assert_eq!(config_field(&err), Some(field), "{what}: {err}");
    }
    // Blank values mean "not given".
    let blank = provided_config(Some(""), Some("  \n"));
    assert_eq!(blank.consul_config().unwrap().provided_root, None);
}

#[test]
fn an_expired_provided_root_is_not_used() {
    let long_ago = SystemTime::now() - 90_000 * HOUR;
    let (root, key) = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
        .unwrap()
        .generate_root(long_ago)
        .unwrap();
    let config = provided_config(Some(&root.root_cert), Some(&key.private_key_pem));
    let provider = ConsulProvider::new(&config).unwrap();
    let err = provider.configured_root(SystemTime::now()).unwrap_err();
    assert_eq!(config_field(&err), Some("RootCert"), "{err}");
}

#[test]
fn the_provided_key_is_never_shown() {
    let (root, key) = own_root(CLUSTER);
    let config = provided_config(Some(&root.root_cert), Some(&key.private_key_pem));
    let shown = config.redacted();
    assert_eq!(shown.config["PrivateKey"], REDACTED_PRIVATE_KEY);
    assert_eq!(shown.config["RootCert"], root.root_cert.as_str());
    assert_eq!(config.config["PrivateKey"], key.private_key_pem.as_str());
    let parsed = config.consul_config().unwrap();
    for debug in [format!("{config:?}"), format!("{parsed:?}")] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
    // Nothing to hide: nothing changes.
    let plain = CaConfiguration::new(CLUSTER);
    assert_eq!(plain.redacted(), plain);
}

#[test]
fn a_root_made_elsewhere_with_a_long_serial_is_accepted() {
    use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose, SerialNumber};
    // As `openssl req -x509` makes them: a 20-byte serial, its own name.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "my own root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![uri(&format!("spiffe://{TD}"))];
    params.serial_number = Some(SerialNumber::from(vec![0x12; 20]));
    let cert = params.self_signed(&key).unwrap();

    let config = provided_config(Some(&cert.pem()), Some(&key.serialize_pem()));
    let provider = ConsulProvider::new(&config).unwrap();
    let (root, root_key) = provider.configured_root(SystemTime::now()).unwrap();
    assert_eq!(root.serial_number, 0x1212_1212_1212_1212, "the low 64 bits");
    let ca = provider.with_active_root(root.clone(), &root_key).unwrap();
    let (issued, _) = leaf(&ca, "web");
    let roots = TrustedRoots::from_ca_roots(&[root]).unwrap();
    assert_eq!(
        verify_leaf(&roots, &issued.cert_pem, SystemTime::now()).unwrap(),
        service_id(&ca, "web")
    );
}

/// auto_encrypt: a client agent's CSR names a placeholder trust domain; the
/// leaf names the agent in the CA's, verifies as an agent for client auth,
/// and a service's leaf or an agent CSR sent down the service path is
/// refused.
#[test]
fn agent_csrs_are_signed_into_the_trust_domain_and_kept_apart_from_services() {
    let ca = ca();
    let placeholder = SpiffeId::agent("dummy.trustdomain", "dc1", "client-1").unwrap();
    let (csr, key) = generate_csr(&placeholder).unwrap();
    let cert = ca.sign_agent(&csr, TTL, SystemTime::now()).unwrap();
    let wanted = SpiffeId::agent(ca.trust_domain(), "dc1", "client-1").unwrap();
    assert_eq!(cert.agent_uri, wanted.uri());
    assert_eq!(
        (cert.agent.as_str(), cert.service.as_str()),
        ("client-1", "")
    );
    assert!(!key.is_empty());

    let roots = TrustedRoots::from_ca_roots(&[ca.active_root().unwrap().clone()]).unwrap();
    let chain = parse_certs(&cert.cert_pem).unwrap();
    let now = UnixTime::now();
    assert_eq!(
        verify_agent(&roots, &chain[0], &chain[1..], now).unwrap(),
        wanted
    );

    let (service, _) = leaf(&ca, "web");
    let service_chain = parse_certs(&service.cert_pem).unwrap();
    let err = verify_agent(&roots, &service_chain[0], &service_chain[1..], now).unwrap_err();
    assert!(err.is_invalid_spiffe_id(), "{err}");
    let other = ca_for("99999999-0000-0000-0000-000000000000");
    let foreign = other.sign_agent(&csr, TTL, SystemTime::now()).unwrap();
    let foreign_chain = parse_certs(&foreign.cert_pem).unwrap();
    assert!(verify_agent(&roots, &foreign_chain[0], &foreign_chain[1..], now).is_err());

    let err = ca.sign(&csr, TTL, SystemTime::now()).unwrap_err();
    assert!(err.is_invalid_spiffe_id(), "{err}");
    let (service_csr, _) = generate_csr(&service_id(&ca, "web")).unwrap();
    let err = ca
        .sign_agent(&service_csr, TTL, SystemTime::now())
        .unwrap_err();
    assert!(err.is_invalid_spiffe_id(), "{err}");
}
