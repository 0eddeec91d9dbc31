//! The HTTPS API (`ports.https`, `tls.https`), with plain HTTP turned off
//! (`ports.http = -1`), as curl, py-consul and the Go client reach it.

use crate::cluster_tls::mesh_tls;
use crate::support::{write_file, Agent};
use std::path::Path;

fn client(pki: &Path, cert: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(pki.join("consul-agent-ca.pem")).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(cert) = cert {
        let mut pem = std::fs::read(pki.join(format!("{cert}.pem"))).unwrap();
        pem.extend(std::fs::read(pki.join(format!("{cert}-key.pem"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn https_with_client_certificates_and_plain_http_off() {
    let pki = tempfile::tempdir().unwrap();
    mesh_tls(pki.path(), &["ca", "create"]);
    mesh_tls(pki.path(), &["cert", "create", "-server", "-dc=dc1"]);
    mesh_tls(pki.path(), &["cert", "create", "-client", "-dc=dc1"]);
    let path = |f: &str| pki.path().join(f).display().to_string();
    let cfg = write_file(
        pki.path(),
        "https.hcl",
        &format!(
            "ports {{\n  http = -1\n}}\ntls {{\n  defaults {{\n    ca_file = \"{}\"\n    cert_file = \"{}\"\n    key_file = \"{}\"\n  }}\n  https {{\n    verify_incoming = true\n  }}\n}}\n",
            path("consul-agent-ca.pem"),
            path("dc1-server-consul-0.pem"),
            path("dc1-server-consul-0-key.pem"),
        ),
    );
    let mut a = Agent::start(&[
        "-http-port=-1",
        "-https-port=0",
        &format!("-config-file={}", cfg.display()),
    ]);
    assert!(a.base.starts_with("https://"), "{}", a.base);
    // The server's certificate names localhost and 127.0.0.1.
    let base = a.base.replace("127.0.0.1", "localhost");
    a.client = client(pki.path(), Some("dc1-client-consul-0"));
    a.put_ok("/v1/kv/secure", "yes").await;
    let got = a
        .client
        .get(format!("{base}/v1/kv/secure?raw"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "yes");
    let me = a.get("/v1/agent/self").await.json();
    assert_eq!(me["DebugConfig"]["HTTPPort"], -1);
    assert_eq!(
        me["DebugConfig"]["HTTPSPort"].as_u64(),
        Some(u64::from(a.http.port()))
    );

    // verify_incoming: a client without a certificate is refused.
    let anonymous = client(pki.path(), None)
        .get(format!("{}/v1/kv/secure?raw", a.base))
        .send()
        .await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    // Nor does the port speak plain HTTP.
    let plain = reqwest::get(format!(
        "http://127.0.0.1:{}/v1/status/leader",
        a.http.port()
    ))
    .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP on the HTTPS port"
    );
}

#[tokio::test]
async fn a_reload_reads_new_certificates_and_keeps_open_connections() {
    let (old, new, live) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for pki in [&old, &new] {
        mesh_tls(pki.path(), &["ca", "create"]);
        mesh_tls(pki.path(), &["cert", "create", "-server", "-dc=dc1"]);
    }
    let install = |from: &Path| {
        for f in ["dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem"] {
            std::fs::copy(from.join(f), live.path().join(f)).unwrap();
        }
    };
    install(old.path());
    let path = |f: &str| live.path().join(f).display().to_string();
    let cfg = write_file(
        live.path(),
        "https.json",
        &format!(
            r#"{{"tls": {{"https": {{"cert_file": "{}", "key_file": "{}"}}}}}}"#,
            path("dc1-server-consul-0.pem"),
            path("dc1-server-consul-0-key.pem"),
        ),
    );
    let a = Agent::start(&[
        "-http-port=-1",
        "-https-port=0",
        &format!("-config-file={}", cfg.display()),
    ]);
    let leader = format!("{}/v1/status/leader", a.base);
    let trusting_old = client(old.path(), None);
    let ok = |r: reqwest::Result<reqwest::Response>| r.is_ok_and(|r| r.status().is_success());
    assert!(
        ok(trusting_old.get(&leader).send().await),
        "the old certificate"
    );

    install(new.path());
    a.signal("HUP");
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "the new certificate served",
        || async { ok(client(new.path(), None).get(&leader).send().await).then_some(()) },
    )
    .await;
    assert!(
        !ok(client(old.path(), None).get(&leader).send().await),
        "a new connection no longer gets the old certificate"
    );
    assert!(
        ok(trusting_old.get(&leader).send().await),
        "the connection opened before the reload still works"
    );
}

/// Whether a TLS handshake with `addr` succeeds for a client offering only
/// `versions` and (TLS 1.2) `suites`, trusting the CA in `pki`.
async fn handshake(
    pki: &Path,
    addr: std::net::SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<&[rustls::CipherSuite]>,
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(wanted) = suites {
        provider
            .cipher_suites
            .retain(|s| wanted.contains(&s.suite()));
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.join("consul-agent-ca.pem")).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `tls_min_version` and `tls_cipher_suites`, in Consul's spelling, decide
/// what the HTTPS port negotiates.
#[tokio::test]
async fn tls_min_version_and_cipher_suites_are_applied() {
    use rustls::version::{TLS12, TLS13};
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 as AES128,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 as AES256,
    };
    let pki = tempfile::tempdir().unwrap();
    mesh_tls(pki.path(), &["ca", "create"]);
    mesh_tls(pki.path(), &["cert", "create", "-server", "-dc=dc1"]);
    let start = |tls: &str| {
        let path = |f: &str| pki.path().join(f).display().to_string();
        let cfg = write_file(
            pki.path(),
            "versions.json",
            &format!(
                r#"{{"ca_file": "{}", "cert_file": "{}", "key_file": "{}", {tls}}}"#,
                path("consul-agent-ca.pem"),
                path("dc1-server-consul-0.pem"),
                path("dc1-server-consul-0-key.pem"),
            ),
        );
        Agent::start(&[
            "-https-port=0",
            "-http-port=-1",
            &format!("-config-file={}", cfg.display()),
        ])
    };

    let only13 = start(r#""tls": {"https": {"tls_min_version": "TLSv1_3"}}"#);
    let err = handshake(pki.path(), only13.http, &[&TLS12], None).await;
    assert!(err.is_err(), "TLS 1.2 against tls_min_version TLSv1_3");
    handshake(pki.path(), only13.http, &[&TLS13], None)
        .await
        .unwrap();
    drop(only13);

    let aes256 = start(r#""tls_cipher_suites": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384""#);
    let err = handshake(pki.path(), aes256.http, &[&TLS12], Some(&[AES128])).await;
    assert!(err.is_err(), "a suite outside tls_cipher_suites");
    handshake(pki.path(), aes256.http, &[&TLS12], Some(&[AES256]))
        .await
        .unwrap();
    // TLS 1.3 is not restricted by the list, as in Consul.
    handshake(pki.path(), aes256.http, &[&TLS13], None)
        .await
        .unwrap();
}
