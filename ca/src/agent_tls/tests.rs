//! Agent TLS certificates, read back with x509-parser and verified with
//! webpki (not this module's code).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::test_util::pem;
use crate::util::{parse_cert, x509};

fn now() -> SystemTime {
    SystemTime::now()
}

fn new_ca() -> AgentTlsPair {
    generate_agent_ca(&AgentCaOptions::default(), now()).unwrap()
}

fn cert(kind: AgentCertKind, ca: &AgentTlsPair) -> AgentTlsPair {
    generate_agent_cert(
        &AgentCertOptions::new(kind),
        &ca.cert_pem,
        &ca.key_pem,
        now(),
    )
    .unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    parse_cert(pem).unwrap()
}

fn dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    sans(cert)
        .into_iter()
        .filter_map(|n| match n {
            San::Dns(d) => Some(d),
            San::Ip(_) => None,
        })
        .collect()
}

fn ip_sans(cert: &X509Certificate<'_>) -> Vec<IpAddr> {
    sans(cert)
        .into_iter()
        .filter_map(|n| match n {
            San::Ip(ip) => Some(ip),
            San::Dns(_) => None,
        })
        .collect()
}

enum San {
    Dns(String),
    Ip(IpAddr),
}

fn sans(cert: &X509Certificate<'_>) -> Vec<San> {
    let Some(ext) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(d) => San::Dns((*d).to_owned()),
            GeneralName::IPAddress(b) => San::Ip(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                n => panic!("IP SAN of {n} bytes"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

fn validity_days(cert: &X509Certificate<'_>) -> i64 {
    let v = cert.validity();
    (v.not_after.timestamp() - v.not_before.timestamp()) / 86400
}

fn key_ids(cert: &X509Certificate<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut ski = None;
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                aki = id.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    (ski, aki)
}

fn webpki_verify(
    cert: &AgentTlsPair,
    ca: &AgentTlsPair,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let ca_der = der(&ca.cert_pem);
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    let leaf = der(&cert.cert_pem);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn valid_for(cert: &AgentTlsPair, name: &str) -> bool {
    let leaf = der(&cert.cert_pem);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

fn has_eku(cert: &X509Certificate<'_>) -> (bool, bool) {
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(!eku.any);
    (eku.server_auth, eku.client_auth)
}

// === the CA ===

#[test]
fn ca_is_a_self_signed_p256_ca_for_five_years() {
    let ca = new_ca();
    assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    let ca_der = der(&ca.cert_pem);
    let cert = x509(&ca_der).unwrap();
    assert!(cert.is_ca());
    assert_eq!(cert.subject(), cert.issuer());
    cert.verify_signature(None).unwrap();
    let cn = common_name(&cert);
    let serial = cn.strip_prefix("Consul Agent CA ").unwrap();
    assert_eq!(serial, cert.serial.to_string());
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    assert!(cert.name_constraints().unwrap().is_none());
    assert!(cert.subject_alternative_name().unwrap().is_none());
    assert_eq!(validity_days(&cert), 1825);
    let (ski, aki) = key_ids(&cert);
    assert_eq!(ski.as_ref().map(Vec::len), Some(32));
    assert_eq!(ski, aki);
    match cert.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::EC(point) => assert_eq!(point.key_size(), 256),
        other => panic!("not EC: {other:?}"),
    }
    webpki::anchor_from_trusted_cert(&ca_der).unwrap();
    // Two CAs never share a serial or a key.
    let other = new_ca();
    assert_ne!(other.cert_pem, ca.cert_pem);
    assert_ne!(other.key_pem, ca.key_pem);
}

#[test]
fn ca_options_name_constraints_common_name_and_cluster_id() {
    let opts = AgentCaOptions {
        days: 30,
        domain: "example.com".into(),
        name_constraint: true,
        additional_name_constraints: vec!["ui.example.org".into(), " ".into()],
        common_name: Some("My Agent CA".into()),
        cluster_id: Some("11111111-2222-3333-4444-555555555555".into()),
    };
    assert_eq!(
        opts.file_names(),
        (
            "example.com-agent-ca.pem".to_owned(),
            "example.com-agent-ca-key.pem".to_owned()
        )
    );
    let ca = generate_agent_ca(&opts, now()).unwrap();
    let ca_der = der(&ca.cert_pem);
    let cert = x509(&ca_der).unwrap();
    assert_eq!(common_name(&cert), "My Agent CA");
    assert_eq!(validity_days(&cert), 30);
    let uris: Vec<_> = crate::util::uri_sans(&cert).unwrap();
    assert_eq!(
        uris,
        vec!["spiffe://11111111-2222-3333-4444-555555555555.example.com"]
    );
    let nc = cert.name_constraints().unwrap().unwrap();
    assert!(nc.critical);
    let permitted: Vec<String> = nc
        .value
        .permitted_subtrees
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| match &s.base {
            GeneralName::DNSName(d) => (*d).to_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(permitted, ["ui.example.org", "example.com", "localhost"]);

    // A certificate inside the constraints verifies; one naming another
    // domain is refused by the check that follows signing.
    let mut inside = AgentCertOptions::new(AgentCertKind::Server);
    inside.domain = "example.com".into();
    inside.additional_dns_names = vec!["consul.ui.example.org".into()];
    let issued = generate_agent_cert(&inside, &ca.cert_pem, &ca.key_pem, now()).unwrap();
    webpki_verify(&issued, &ca, webpki::KeyUsage::server_auth()).unwrap();
    let mut outside = inside.clone();
    outside.additional_dns_names = vec!["evil.example.net".into()];
    let err = generate_agent_cert(&outside, &ca.cert_pem, &ca.key_pem, now()).unwrap_err();
    assert!(matches!(err, CaError::Untrusted(_)), "{err}");
}

#[test]
fn ca_refuses_bad_options() {
    for days in [0, -1] {
        let opts = AgentCaOptions {
            days,
            ..AgentCaOptions::default()
        };
        let err = generate_agent_ca(&opts, now()).unwrap_err();
        assert!(err.is_invalid_input());
        assert!(err.to_string().starts_with("invalid -days:"), "{err}");
    }
    let opts = AgentCaOptions {
        days: 10_000_000,
        ..AgentCaOptions::default()
    };
    let err = generate_agent_ca(&opts, now()).unwrap_err();
    assert!(err.to_string().starts_with("invalid -days:"), "{err}");
    let opts = AgentCaOptions {
        domain: "bad domain".into(),
        ..AgentCaOptions::default()
    };
    let err = generate_agent_ca(&opts, now()).unwrap_err();
    assert!(err.to_string().starts_with("invalid -domain:"), "{err}");
    let opts = AgentCaOptions {
        name_constraint: true,
        additional_name_constraints: vec!["not a name".into()],
        ..AgentCaOptions::default()
    };
    let err = generate_agent_ca(&opts, now()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid -additional-name-constraint:"),
        "{err}"
    );
}

// === certificates ===

#[test]
fn server_cert_has_consuls_names_and_usages_and_chains_to_the_ca() {
    let ca = new_ca();
    let issued = cert(AgentCertKind::Server, &ca);
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let leaf_der = der(&issued.cert_pem);
    let leaf = x509(&leaf_der).unwrap();
    assert_eq!(common_name(&leaf), "server.dc1.consul");
    assert_eq!(dns_sans(&leaf), ["server.dc1.consul", "localhost"]);
    assert_eq!(ip_sans(&leaf), [IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(has_eku(&leaf), (true, true));
    assert!(!leaf.is_ca());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment());
    assert!(!usage.key_cert_sign());
    assert_eq!(validity_days(&leaf), 365);

    // Issued by the CA: names, key identifiers and signature.
    let ca_der = der(&ca.cert_pem);
    let ca_cert = x509(&ca_der).unwrap();
    assert_eq!(leaf.issuer(), ca_cert.subject());
    assert_eq!(key_ids(&leaf).1, key_ids(&ca_cert).0);
    assert_ne!(key_ids(&leaf).0, key_ids(&ca_cert).0);
    leaf.verify_signature(Some(ca_cert.public_key())).unwrap();

    webpki_verify(&issued, &ca, webpki::KeyUsage::server_auth()).unwrap();
    webpki_verify(&issued, &ca, webpki::KeyUsage::client_auth()).unwrap();
    assert!(valid_for(&issued, "server.dc1.consul"));
    assert!(valid_for(&issued, "localhost"));
    assert!(valid_for(&issued, "127.0.0.1"));
    assert!(!valid_for(&issued, "client.dc1.consul"));

    // Another CA does not vouch for it.
    let other = new_ca();
    assert!(webpki_verify(&issued, &other, webpki::KeyUsage::server_auth()).is_err());
}

#[test]
fn server_cert_with_node_and_additional_names_lists_them_as_consul_does() {
    let ca = new_ca();
    let opts = AgentCertOptions {
        datacenter: "east".into(),
        domain: "mesh.internal.".into(),
        days: 10,
        node: Some("node-1".into()),
        additional_dns_names: vec![" extra.example.com ".into(), "".into()],
        additional_ip_addresses: vec!["10.0.0.7".parse().unwrap(), "::1".parse().unwrap()],
        ..AgentCertOptions::new(AgentCertKind::Server)
    };
    assert_eq!(opts.file_prefix(), "east-server-mesh.internal");
    assert_eq!(
        opts.file_names(3),
        (
            "east-server-mesh.internal-3.pem".to_owned(),
            "east-server-mesh.internal-3-key.pem".to_owned()
        )
    );
    let issued = generate_agent_cert(&opts, &ca.cert_pem, &ca.key_pem, now()).unwrap();
    let leaf_der = der(&issued.cert_pem);
    let leaf = x509(&leaf_der).unwrap();
    assert_eq!(common_name(&leaf), "server.east.mesh.internal");
    assert_eq!(
        dns_sans(&leaf),
        [
            "extra.example.com",
            "node-1.server.east.mesh.internal",
            "server.east.mesh.internal",
            "localhost"
        ]
    );
    assert_eq!(
        ip_sans(&leaf),
        [
            "10.0.0.7".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap(),
            "127.0.0.1".parse().unwrap()
        ]
    );
    assert_eq!(validity_days(&leaf), 10);
    assert!(valid_for(&issued, "node-1.server.east.mesh.internal"));
    assert!(valid_for(&issued, "10.0.0.7"));
}

#[test]
fn client_cert_serves_and_authenticates() {
    let ca = new_ca();
    let issued = cert(AgentCertKind::Client, &ca);
    let leaf_der = der(&issued.cert_pem);
    let leaf = x509(&leaf_der).unwrap();
    assert_eq!(common_name(&leaf), "client.dc1.consul");
    assert_eq!(dns_sans(&leaf), ["client.dc1.consul", "localhost"]);
    assert_eq!(ip_sans(&leaf), [IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(has_eku(&leaf), (true, true));
    assert_eq!(
        AgentCertOptions::new(AgentCertKind::Client).file_names(0).0,
        "dc1-client-consul-0.pem"
    );
    webpki_verify(&issued, &ca, webpki::KeyUsage::server_auth()).unwrap();
    webpki_verify(&issued, &ca, webpki::KeyUsage::client_auth()).unwrap();
}

#[test]
fn cli_cert_only_authenticates_a_client() {
    let ca = new_ca();
    let issued = cert(AgentCertKind::Cli, &ca);
    let leaf_der = der(&issued.cert_pem);
    let leaf = x509(&leaf_der).unwrap();
    assert_eq!(common_name(&leaf), "cli.dc1.consul");
    assert_eq!(dns_sans(&leaf), ["cli.dc1.consul", "localhost"]);
    assert!(ip_sans(&leaf).is_empty());
    assert_eq!(has_eku(&leaf), (false, true));
    assert_eq!(
        AgentCertOptions::new(AgentCertKind::Cli).file_names(0).1,
        "dc1-cli-consul-0-key.pem"
    );
    webpki_verify(&issued, &ca, webpki::KeyUsage::client_auth()).unwrap();
    assert!(webpki_verify(&issued, &ca, webpki::KeyUsage::server_auth()).is_err());
}

#[test]
fn a_consul_sec1_ca_key_signs_too() {
    let ca = new_ca();
    // The SEC1 ECPrivateKey inside the PKCS#8 document, as Consul writes it
    // ("EC PRIVATE KEY").
    let pkcs8 = crate::util::parse_private_key(&ca.key_pem).unwrap();
    let (_, info) = x509_parser::der_parser::parse_der(pkcs8.secret_der()).unwrap();
    let fields = info.as_sequence().unwrap();
    let sec1 = fields[2].as_slice().unwrap();
    let sec1_pem = pem("EC PRIVATE KEY", sec1);
    let issued = generate_agent_cert(
        &AgentCertOptions::new(AgentCertKind::Server),
        &ca.cert_pem,
        &sec1_pem,
        now(),
    )
    .unwrap();
    webpki_verify(&issued, &ca, webpki::KeyUsage::server_auth()).unwrap();
    // Long lengths are encoded in the long form.
    let mut out = Vec::new();
    der_length(&mut out, 300);
    assert_eq!(out, [0x82, 0x01, 0x2c]);
}

#[test]
fn cert_refuses_bad_input_naming_it() {
    let ca = new_ca();
    let gen = |opts: &AgentCertOptions| {
        generate_agent_cert(opts, &ca.cert_pem, &ca.key_pem, now()).unwrap_err()
    };
    let starts = |err: CaError, prefix: &str| {
        assert!(err.is_invalid_input(), "{err}");
        assert!(err.to_string().starts_with(prefix), "{err}");
    };
    let server = AgentCertOptions::new(AgentCertKind::Server);
    starts(
        gen(&AgentCertOptions {
            days: 0,
            ..server.clone()
        }),
        "invalid -days:",
    );
    starts(
        gen(&AgentCertOptions {
            days: -3,
            ..server.clone()
        }),
        "invalid -days:",
    );
    starts(
        gen(&AgentCertOptions {
            datacenter: "dc.1".into(),
            ..server.clone()
        }),
        "invalid -dc:",
    );
    starts(
        gen(&AgentCertOptions {
            domain: "".into(),
            ..server.clone()
        }),
        "invalid -domain:",
    );
    starts(
        gen(&AgentCertOptions {
            node: Some("n1".into()),
            ..AgentCertOptions::new(AgentCertKind::Client)
        }),
        "invalid -node: requires -server",
    );
    starts(
        gen(&AgentCertOptions {
            additional_dns_names: vec!["exa mple.com".into()],
            ..server.clone()
        }),
        "invalid -additional-dnsname:",
    );

    // The CA files.
    let err = generate_agent_cert(&server, "not pem", &ca.key_pem, now()).unwrap_err();
    assert!(matches!(err, CaError::InvalidPem(_)), "{err}");
    let err = generate_agent_cert(&server, &ca.cert_pem, "not pem", now()).unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err}");
    let other = new_ca();
    let err = generate_agent_cert(&server, &ca.cert_pem, &other.key_pem, now()).unwrap_err();
    assert!(matches!(err, CaError::InvalidKey(_)), "{err}");
    assert!(err.to_string().contains("does not belong"), "{err}");
    // A leaf is no CA.
    let leaf = cert(AgentCertKind::Server, &ca);
    let err = generate_agent_cert(&server, &leaf.cert_pem, &leaf.key_pem, now()).unwrap_err();
    assert!(matches!(err, CaError::InvalidCertificate(_)), "{err}");
    assert!(err.to_string().contains("not hold a CA"), "{err}");
}

#[test]
fn validity_starts_now() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let ca = generate_agent_ca(&AgentCaOptions::default(), at).unwrap();
    let ca_der = der(&ca.cert_pem);
    let cert = x509(&ca_der).unwrap();
    assert_eq!(cert.validity().not_before.timestamp(), 1_900_000_000);
    let leaf = generate_agent_cert(
        &AgentCertOptions::new(AgentCertKind::Client),
        &ca.cert_pem,
        &ca.key_pem,
        at,
    )
    .unwrap();
    let leaf_der = der(&leaf.cert_pem);
    let leaf = x509(&leaf_der).unwrap();
    assert_eq!(leaf.validity().not_before.timestamp(), 1_900_000_000);
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        1_900_000_000 + 365 * 86400
    );
}
