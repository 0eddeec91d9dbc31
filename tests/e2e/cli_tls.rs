//! The CLI over HTTPS, as Consul's reaches an agent with `verify_incoming`:
//! `-ca-file`/`-client-cert`/`-client-key`/`-tls-server-name` and their
//! `CONSUL_*` environment variables, `https://` addresses, a wrong CA
//! refused, and `mesh proxy` streaming its config over HTTPS.

use crate::cluster_tls::mesh_tls;
use crate::support::{
    echo_server, eventually, free_port, mesh_bin, round_trip, write_file, Agent, MeshProcess,
    PROXY_WAIT,
};
use std::path::Path;
use std::process::{Command, Output};

/// The environment variables a test run must not inherit.
const CLEARED: &[&str] = &[
    "MESH_HTTP_ADDR",
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
];

/// Runs `mesh args...` with only `env` of the CLI's variables set.
fn mesh(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(mesh_bin());
    cmd.args(args);
    for name in CLEARED {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mesh")
}

/// Runs `mesh args...`, requiring success, and returns stdout.
fn mesh_ok(args: &[&str], env: &[(&str, String)]) -> String {
    let out = mesh(args, env);
    assert!(
        out.status.success(),
        "mesh {args:?}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA with server and CLI certificates in `dir`, and an HTTPS-only agent
/// requiring client certificates; `extra` are more agent flags.
fn https_agent(dir: &Path, extra: &[&str]) -> Agent {
    mesh_tls(dir, &["ca", "create"]);
    mesh_tls(dir, &["cert", "create", "-server", "-dc=dc1"]);
    mesh_tls(dir, &["cert", "create", "-cli", "-dc=dc1"]);
    let path = |f: &str| dir.join(f).display().to_string();
    let cfg = write_file(
        dir,
        "tls.hcl",
        &format!(
            "tls {{\n  defaults {{\n    ca_file = \"{}\"\n    cert_file = \"{}\"\n    key_file = \"{}\"\n  }}\n  https {{\n    verify_incoming = true\n  }}\n}}\n",
            path("consul-agent-ca.pem"),
            path("dc1-server-consul-0.pem"),
            path("dc1-server-consul-0-key.pem"),
        ),
    );
    let cfg = format!("-config-file={}", cfg.display());
    let mut args = vec!["-http-port=-1", "-https-port=0", cfg.as_str()];
    args.extend_from_slice(extra);
    let a = Agent::start(&args);
    assert!(a.base.starts_with("https://"), "{}", a.base);
    a
}

/// The CLI's TLS flags for the certificates in `dir`.
fn tls_flags(dir: &Path) -> Vec<String> {
    let path = |f: &str| dir.join(f).display().to_string();
    vec![
        format!("-ca-file={}", path("consul-agent-ca.pem")),
        format!("-client-cert={}", path("dc1-cli-consul-0.pem")),
        format!("-client-key={}", path("dc1-cli-consul-0-key.pem")),
    ]
}

#[test]
fn cli_over_https_with_flags_env_and_server_name() {
    let pki = tempfile::tempdir().unwrap();
    let a = https_agent(pki.path(), &[]);
    let path = |f: &str| pki.path().join(f).display().to_string();
    let https = format!("https://{}", a.http);
    let addr = format!("-http-addr={https}");

    // Flags: -http-addr=https://... with -ca-file, -client-cert, -client-key.
    let flags = tls_flags(pki.path());
    let with = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.push(addr.clone());
        v.extend(flags.iter().cloned());
        v
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mesh_ok(&args, &[])
    };
    assert!(run(with(&["kv", "put", "tls/flag", "by-flag"])).contains("Success"));
    // kv get takes its key last: flags first.
    let mut get = vec!["kv".to_string(), "get".into(), addr.clone()];
    get.extend(flags.iter().cloned());
    get.push("tls/flag".into());
    assert_eq!(run(get).trim(), "by-flag");
    assert!(run(with(&["members"])).contains("test-node"));

    // The environment: CONSUL_HTTP_SSL with a bare address, and the files.
    let env = vec![
        ("CONSUL_HTTP_ADDR", a.http.to_string()),
        ("CONSUL_HTTP_SSL", "true".to_string()),
        ("CONSUL_CACERT", path("consul-agent-ca.pem")),
        ("CONSUL_CLIENT_CERT", path("dc1-cli-consul-0.pem")),
        ("CONSUL_CLIENT_KEY", path("dc1-cli-consul-0-key.pem")),
    ];
    assert!(mesh_ok(&["kv", "put", "tls/env", "by-env"], &env).contains("Success"));
    assert_eq!(mesh_ok(&["kv", "get", "tls/flag"], &env).trim(), "by-flag");
    assert!(mesh_ok(&["members"], &env).contains("test-node"));
    // An https:// CONSUL_HTTP_ADDR needs no CONSUL_HTTP_SSL, and a CA path
    // (a directory of PEM files) serves as well as a CA file.
    let ca_dir = tempfile::tempdir().unwrap();
    std::fs::copy(path("consul-agent-ca.pem"), ca_dir.path().join("ca.pem")).unwrap();
    let env_path = vec![
        ("CONSUL_HTTP_ADDR", https.clone()),
        ("CONSUL_CAPATH", ca_dir.path().display().to_string()),
        ("CONSUL_CLIENT_CERT", path("dc1-cli-consul-0.pem")),
        ("CONSUL_CLIENT_KEY", path("dc1-cli-consul-0-key.pem")),
    ];
    assert_eq!(
        mesh_ok(&["kv", "get", "tls/env"], &env_path).trim(),
        "by-env"
    );

    // -tls-server-name: the certificate is checked for that name, not the
    // dialed 127.0.0.1 — a name it does not carry is refused, localhost
    // (which it carries) passes.
    let mut v = with(&["kv", "get", "-tls-server-name=wrong.example"]);
    v.push("tls/flag".into());
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    let out = mesh(&v, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a name the certificate lacks passed");
    assert!(
        err.contains("wrong.example") || err.contains("NotValidForName"),
        "{err}"
    );
    let mut v = with(&["kv", "get", "-tls-server-name=localhost"]);
    v.push("tls/env".into());
    assert_eq!(run(v).trim(), "by-env");
    // And from the environment.
    let mut named = env.clone();
    named.push(("CONSUL_TLS_SERVER_NAME", "localhost".into()));
    assert_eq!(mesh_ok(&["kv", "get", "tls/env"], &named).trim(), "by-env");
}

#[test]
fn cli_over_https_refuses_bad_setups_with_clear_messages() {
    let pki = tempfile::tempdir().unwrap();
    let a = https_agent(pki.path(), &[]);
    let path = |f: &str| pki.path().join(f).display().to_string();
    let https = format!("https://{}", a.http);

    // A wrong CA: the agent's certificate is not trusted, and the message
    // names the CA file.
    let other = tempfile::tempdir().unwrap();
    mesh_tls(other.path(), &["ca", "create"]);
    let wrong = other
        .path()
        .join("consul-agent-ca.pem")
        .display()
        .to_string();
    let env = vec![
        ("CONSUL_HTTP_ADDR", https.clone()),
        ("CONSUL_CACERT", wrong.clone()),
        ("CONSUL_CLIENT_CERT", path("dc1-cli-consul-0.pem")),
        ("CONSUL_CLIENT_KEY", path("dc1-cli-consul-0-key.pem")),
    ];
    let out = mesh(&["kv", "get", "tls/x"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong CA was accepted");
    assert!(err.contains("not trusted") && err.contains(&wrong), "{err}");

    // CONSUL_HTTP_SSL_VERIFY=false skips the check.
    let mut skip = env.clone();
    skip.push(("CONSUL_HTTP_SSL_VERIFY", "false".into()));
    let out = mesh(&["kv", "get", "tls/x"], &skip);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No key exists"), "{err}");
    assert!(!err.contains("not trusted"), "{err}");

    // No client certificate: verify_incoming refuses the handshake.
    let env = vec![
        ("CONSUL_HTTP_ADDR", https.clone()),
        ("CONSUL_CACERT", path("consul-agent-ca.pem")),
    ];
    let out = mesh(&["members"], &env);
    assert!(!out.status.success(), "no client certificate was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error connecting"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Files that are missing or not PEM are named.
    let missing = pki.path().join("nope.pem").display().to_string();
    let out = mesh(&["members", &format!("-ca-file={missing}")], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&missing), "{err}");
    let not_pem = write_file(pki.path(), "junk.pem", "junk\n")
        .display()
        .to_string();
    let out = mesh(
        &[
            "members",
            &format!("-client-cert={}", path("dc1-cli-consul-0.pem")),
            &format!("-client-key={not_pem}"),
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&not_pem), "{err}");
}

#[tokio::test]
async fn proxies_get_their_config_over_https() {
    let pki = tempfile::tempdir().unwrap();
    let echo_addr = echo_server().await;
    let sidecar_port = free_port();
    let svc = tempfile::tempdir().unwrap();
    write_file(
        svc.path(),
        "socat.json",
        &format!(
            r#"{{"service":{{"name":"socat","port":{},"connect":{{"sidecar_service":{{"port":{sidecar_port}}}}}}}}}"#,
            echo_addr.port()
        ),
    );
    let config_dir = format!("-config-dir={}", svc.path().display());
    let a = https_agent(pki.path(), &[config_dir.as_str()]);
    let addr = format!("-http-addr=https://{}", a.http);
    let flags = tls_flags(pki.path());
    let args = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.push(addr.clone());
        v.extend(flags.iter().cloned());
        v
    };

    let sidecar_args = args(&[
        "proxy",
        "-sidecar-for",
        "socat",
        "-bind-address",
        "127.0.0.1",
    ]);
    let sidecar_args: Vec<&str> = sidecar_args.iter().map(String::as_str).collect();
    let sidecar = MeshProcess::spawn(&a, &sidecar_args);
    assert_eq!(
        sidecar.wait_line("Public listener:", PROXY_WAIT),
        format!("127.0.0.1:{sidecar_port}")
    );
    let web_args = args(&["proxy", "-service", "web", "-upstream", "socat:0"]);
    let web_args: Vec<&str> = web_args.iter().map(String::as_str).collect();
    let web = MeshProcess::spawn(&a, &web_args);
    let upstream = web.wait_line("Upstream socat:", PROXY_WAIT);
    let got = eventually(PROXY_WAIT, "an echo through the mesh", || async {
        round_trip(&upstream, b"over https\n").await
    })
    .await;
    assert_eq!(got, b"over https\n");
}

/// `-tls-server-name` is sent as SNI, as Consul's Go client sets
/// `ServerName`, even when the address dialed is an IP (for which no SNI
/// would be sent otherwise). A bare TLS listener records what it receives.
#[tokio::test]
async fn tls_server_name_is_sent_as_sni() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = tempfile::tempdir().unwrap();
    mesh_tls(pki.path(), &["ca", "create"]);
    mesh_tls(pki.path(), &["cert", "create", "-server", "-dc=dc1"]);
    let path = |f: &str| pki.path().join(f).display().to_string();
    let certs = CertificateDer::pem_file_iter(path("dc1-server-consul-0.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(path("dc1-server-consul-0-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("https://{}", listener.local_addr().unwrap());
    let seen = tokio::spawn(async move {
        let mut names = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            names.push(tls.get_ref().1.server_name().map(str::to_string));
        }
        names
    });
    let ca = format!("-ca-file={}", path("consul-agent-ca.pem"));
    let http_addr = format!("-http-addr={addr}");
    let cli = |extra: &'static [&'static str]| {
        let mut args = vec!["kv", "get", http_addr.as_str(), ca.as_str()];
        args.extend_from_slice(extra);
        args.push("sni/key");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            mesh(&args, &[])
        })
    };
    // The listener answers no HTTP: only the handshakes matter.
    let _ = cli(&[]).await.unwrap();
    let _ = cli(&["-tls-server-name=localhost"]).await.unwrap();
    let names = tokio::time::timeout(std::time::Duration::from_secs(30), seen)
        .await
        .expect("two handshakes")
        .unwrap();
    assert_eq!(names, [None, Some("localhost".to_string())]);
}
