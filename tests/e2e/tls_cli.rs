//! `mesh tls ca create` and `mesh tls cert create` in a scratch directory:
//! Consul's file names and messages, certificates openssl accepts, and no
//! file ever overwritten.

use crate::support::mesh_bin;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use x509_parser::extensions::GeneralName;

fn mesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(mesh_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running mesh")
}

fn mesh_ok(dir: &Path, args: &[&str]) -> String {
    let out = mesh(dir, args);
    assert!(
        out.status.success(),
        "mesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a failing command and returns its stderr, checking the exit code.
fn mesh_fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = mesh(dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "mesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The names in a PEM certificate's SAN extension, and its extended key
/// usages as (server auth, client auth).
fn sans(path: &Path) -> (Vec<String>, Vec<IpAddr>, (bool, bool)) {
    let pem = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    (dns, ips, (eku.server_auth, eku.client_auth))
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl")
}

#[test]
fn tls_ca_and_cert_create_write_consuls_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The CA.
    assert_eq!(
        mesh_ok(dir, &["tls", "ca", "create"]),
        "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n"
    );
    let ca_pem = std::fs::read(dir.join("consul-agent-ca.pem")).unwrap();
    let ca_key = std::fs::read(dir.join("consul-agent-ca-key.pem")).unwrap();
    assert!(String::from_utf8_lossy(&ca_key).contains("PRIVATE KEY"));

    // A second CA would overwrite it: refused, nothing touched.
    let err = mesh_fails(dir, &["tls", "ca", "create"], 1);
    assert!(err.contains("consul-agent-ca.pem already exists."), "{err}");
    assert_eq!(
        std::fs::read(dir.join("consul-agent-ca.pem")).unwrap(),
        ca_pem
    );
    assert_eq!(
        std::fs::read(dir.join("consul-agent-ca-key.pem")).unwrap(),
        ca_key
    );

    // Two server certificates, numbered 0 and 1, and a client and a CLI one.
    let out = mesh_ok(dir, &["tls", "cert", "create", "-server"]);
    assert!(out.starts_with("==> WARNING: Server Certificates"), "{out}");
    assert!(
        out.ends_with(
            "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n\
             ==> Saved dc1-server-consul-0.pem\n\
             ==> Saved dc1-server-consul-0-key.pem\n"
        ),
        "{out}"
    );
    let out = mesh_ok(
        dir,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-node=node1",
            "-days=30",
        ],
    );
    assert!(out.contains("==> Saved dc1-server-consul-1.pem\n"), "{out}");
    assert!(
        out.contains("==> Saved dc1-server-consul-1-key.pem\n"),
        "{out}"
    );
    assert_eq!(
        mesh_ok(
            dir,
            &[
                "tls",
                "cert",
                "create",
                "-client",
                "-additional-dnsname=agent.example.com",
                "-additional-ipaddress=10.1.2.3",
            ]
        ),
        "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n\
         ==> Saved dc1-client-consul-0.pem\n\
         ==> Saved dc1-client-consul-0-key.pem\n"
    );
    let out = mesh_ok(dir, &["tls", "cert", "create", "-cli"]);
    assert!(out.contains("==> Saved dc1-cli-consul-0.pem\n"), "{out}");
    for name in [
        "dc1-server-consul-0.pem",
        "dc1-server-consul-0-key.pem",
        "dc1-server-consul-1.pem",
        "dc1-server-consul-1-key.pem",
        "dc1-client-consul-0.pem",
        "dc1-client-consul-0-key.pem",
        "dc1-cli-consul-0.pem",
        "dc1-cli-consul-0-key.pem",
    ] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["consul-agent-ca-key.pem", "dc1-server-consul-0-key.pem"] {
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    // The names and usages, read with x509-parser.
    let localhost = IpAddr::from([127, 0, 0, 1]);
    assert_eq!(
        sans(&dir.join("dc1-server-consul-0.pem")),
        (
            vec!["server.dc1.consul".to_owned(), "localhost".to_owned()],
            vec![localhost],
            (true, true)
        )
    );
    assert_eq!(
        sans(&dir.join("dc1-server-consul-1.pem")).0,
        ["node1.server.dc1.consul", "server.dc1.consul", "localhost"]
    );
    assert_eq!(
        sans(&dir.join("dc1-client-consul-0.pem")),
        (
            vec![
                "agent.example.com".to_owned(),
                "client.dc1.consul".to_owned(),
                "localhost".to_owned()
            ],
            vec![IpAddr::from([10, 1, 2, 3]), localhost],
            (true, true)
        )
    );
    assert_eq!(
        sans(&dir.join("dc1-cli-consul-0.pem")),
        (
            vec!["cli.dc1.consul".to_owned(), "localhost".to_owned()],
            vec![],
            (false, true)
        )
    );

    // openssl, an independent verifier, accepts the chain and the purposes.
    if !openssl_available() {
        println!("skipping the openssl checks: `openssl` is not on PATH");
        return;
    }
    for (cert, purpose) in [
        ("dc1-server-consul-0.pem", "sslserver"),
        ("dc1-server-consul-1.pem", "sslclient"),
        ("dc1-client-consul-0.pem", "sslserver"),
        ("dc1-cli-consul-0.pem", "sslclient"),
    ] {
        let out = openssl(
            dir,
            &[
                "verify",
                "-CAfile",
                "consul-agent-ca.pem",
                "-purpose",
                purpose,
                cert,
            ],
        );
        assert!(
            out.status.success(),
            "openssl verify {cert}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{cert}: OK\n")
        );
    }
    let out = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "consul-agent-ca.pem",
            "-purpose",
            "sslserver",
            "dc1-cli-consul-0.pem",
        ],
    );
    assert!(!out.status.success(), "a CLI certificate must not serve");
    let text = openssl(
        dir,
        &["x509", "-noout", "-text", "-in", "dc1-server-consul-0.pem"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:server.dc1.consul, DNS:localhost, IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("Subject: CN = server.dc1.consul"), "{text}");
    assert!(text.contains("NIST CURVE: P-256"), "{text}");
    // The key is the certificate's: openssl derives the same public key.
    let from_cert = openssl(
        dir,
        &[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            "dc1-server-consul-0.pem",
        ],
    );
    let from_key = openssl(
        dir,
        &["pkey", "-pubout", "-in", "dc1-server-consul-0-key.pem"],
    );
    assert!(from_key.status.success());
    assert_eq!(from_cert.stdout, from_key.stdout);
}

#[test]
fn tls_cert_create_names_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // No CA yet.
    let err = mesh_fails(dir, &["tls", "cert", "create", "-server"], 1);
    assert!(
        err.contains("Error reading CA consul-agent-ca.pem"),
        "{err}"
    );
    let err = mesh_fails(
        dir,
        &["tls", "cert", "create", "-client", "-ca=missing.pem"],
        1,
    );
    assert!(err.contains("Error reading CA missing.pem"), "{err}");

    mesh_ok(dir, &["tls", "ca", "create", "-days=10"]);
    let err = mesh_fails(dir, &["tls", "cert", "create"], 1);
    assert!(
        err.contains("Please provide either -server, -client, or -cli"),
        "{err}"
    );
    let err = mesh_fails(dir, &["tls", "cert", "create", "-server", "-client"], 1);
    assert!(
        err.contains("Please provide either -server, -client, or -cli"),
        "{err}"
    );
    let err = mesh_fails(dir, &["tls", "cert", "create", "-client", "-node=n1"], 1);
    assert!(err.contains("invalid -node: requires -server"), "{err}");
    for days in ["-days=0", "-days=-5"] {
        let err = mesh_fails(dir, &["tls", "cert", "create", "-server", days], 1);
        assert!(err.contains("invalid -days"), "{err}");
    }
    let err = mesh_fails(dir, &["tls", "cert", "create", "-server", "-days=abc"], 64);
    assert!(err.contains("abc"), "{err}");
    let err = mesh_fails(
        dir,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-additional-ipaddress=10.0.0",
        ],
        64,
    );
    assert!(err.contains("10.0.0"), "{err}");
    let err = mesh_fails(dir, &["tls", "ca", "create", "-domain=x", "-days=0"], 1);
    assert!(err.contains("invalid -days"), "{err}");
    // The CA key swapped for a certificate's key.
    mesh_ok(dir, &["tls", "cert", "create", "-cli"]);
    let err = mesh_fails(
        dir,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-key=dc1-cli-consul-0-key.pem",
        ],
        1,
    );
    assert!(
        err.contains("does not belong to the CA certificate"),
        "{err}"
    );
    // Nothing was written by the failures.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "consul-agent-ca-key.pem",
            "consul-agent-ca.pem",
            "dc1-cli-consul-0-key.pem",
            "dc1-cli-consul-0.pem"
        ]
    );
}
