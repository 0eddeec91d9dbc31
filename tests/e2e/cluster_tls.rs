//! A three-server cluster and a client agent with TLS on the server RPC
//! port as Consul configures it (`verify_incoming`, `verify_outgoing`,
//! `verify_server_hostname`), certificates made with `mesh tls`.

use crate::cluster::{agreed_leader, start_server};
use crate::support::{client_agent_with, mesh_bin, write_file, Agent};
use mesh_control::rpc::handshake::{open, Role, RpcAuth};
use mesh_control::tls::{RpcTls, TlsConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Runs `mesh tls ...` in `dir`.
pub(crate) fn mesh_tls(dir: &Path, args: &[&str]) {
    let out = Command::new(mesh_bin())
        .arg("tls")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mesh tls");
    assert!(
        out.status.success(),
        "mesh tls {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config file for an agent presenting `cert` (a file prefix in `dir`).
fn tls_config(dir: &Path, cert: &str) -> PathBuf {
    let path = |f: &str| dir.join(f).display().to_string();
    let text = format!(
        r#"{{"tls": {{
  "defaults": {{"ca_file": "{ca}", "cert_file": "{cert}", "key_file": "{key}",
                "verify_incoming": true, "verify_outgoing": true}},
  "internal_rpc": {{"verify_server_hostname": true}}
}}}}"#,
        ca = path("consul-agent-ca.pem"),
        cert = path(&format!("{cert}.pem")),
        key = path(&format!("{cert}-key.pem")),
    );
    write_file(dir, &format!("{cert}.json"), &text)
}

/// How a test process dials with `cert` from `dir` (`None`: no cert).
fn dialer(dir: &Path, cert: Option<&str>) -> RpcAuth {
    let cfg = TlsConfig {
        ca_file: Some(dir.join("consul-agent-ca.pem")),
        cert_file: cert.map(|c| dir.join(format!("{c}.pem"))),
        key_file: cert.map(|c| dir.join(format!("{c}-key.pem"))),
        verify_outgoing: true,
        verify_server_hostname: true,
        ..TlsConfig::default()
    };
    let tls = RpcTls::build(&cfg, "dc1", "consul").unwrap().map(Arc::new);
    RpcAuth {
        tls,
        ..RpcAuth::default()
    }
}

async fn dial(port: u16, role: Role, auth: &RpcAuth) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    open(stream, role, auth)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_elects_replicates_and_refuses_who_lacks_a_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    mesh_tls(pki.path(), &["ca", "create"]);
    for _ in 0..3 {
        mesh_tls(pki.path(), &["cert", "create", "-server", "-dc=dc1"]);
    }
    mesh_tls(pki.path(), &["cert", "create", "-client", "-dc=dc1"]);
    mesh_tls(other.path(), &["ca", "create"]);
    mesh_tls(other.path(), &["cert", "create", "-server", "-dc=dc1"]);

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |i: usize| {
        let file = tls_config(pki.path(), &format!("dc1-server-consul-{i}"));
        format!("-config-file={}", file.display())
    };
    let s1 = start_server("s1", &dirs[0], &[config(0)]);
    let join = format!("-retry-join=127.0.0.1:{}", s1.serf_lan);
    let rest: Vec<Agent> = (1..3)
        .map(|i| {
            let extra = [config(i), join.clone(), "-retry-interval=200ms".into()];
            start_server(&format!("s{}", i + 1), &dirs[i], &extra)
        })
        .collect();
    let all = [&s1, &rest[0], &rest[1]];
    agreed_leader(&all, 3).await;
    assert!(!s1.log_text().contains("server RPC port is OPEN"));

    // Writes through one server are read through the others (followers
    // forward over TLS).
    rest[0].put_ok("/v1/kv/tls/one", "1").await;
    s1.put_ok("/v1/kv/tls/two", "2").await;
    for s in all {
        assert_eq!(s.get("/v1/kv/tls/one?consistent&raw").await.text, "1");
        assert_eq!(s.get("/v1/kv/tls/two?consistent&raw").await.text, "2");
    }

    // A client agent with a client certificate joins and writes.
    let client_dir = tempfile::tempdir().unwrap();
    let client_cfg = tls_config(pki.path(), "dc1-client-consul-0");
    let client_cfg = format!("-config-file={}", client_cfg.display());
    let client = client_agent_with("c1", client_dir.path(), &s1, &[&client_cfg]).await;
    client.put_ok("/v1/kv/tls/client", "c").await;
    assert_eq!(
        s1.get("/v1/kv/tls/client?consistent&raw").await.text,
        "c",
        "the client's write went through a server"
    );

    // Plaintext RPC, no certificate, another CA's certificate, and a
    // client's certificate claiming to be a server are all refused.
    let port = s1.server_port().await;
    let plain = dial(port, Role::Client, &RpcAuth::default()).await;
    assert!(plain.unwrap_err().contains("only TLS"));
    let no_cert = dial(port, Role::Client, &dialer(pki.path(), None)).await;
    assert!(no_cert.is_err(), "a caller without a certificate");
    let foreign = dial(
        port,
        Role::Server,
        &dialer(other.path(), Some("dc1-server-consul-0")),
    )
    .await;
    assert!(foreign.is_err(), "a server certificate from another CA");
    let client_as_server = dial(
        port,
        Role::Server,
        &dialer(pki.path(), Some("dc1-client-consul-0")),
    )
    .await;
    let err = client_as_server.unwrap_err();
    assert!(err.contains("verify_server_hostname"), "{err}");
    // The controls: the same certificates in their own roles are accepted.
    dial(
        port,
        Role::Client,
        &dialer(pki.path(), Some("dc1-client-consul-0")),
    )
    .await
    .unwrap();
    dial(
        port,
        Role::Server,
        &dialer(pki.path(), Some("dc1-server-consul-1")),
    )
    .await
    .unwrap();
}
