//! A three-server cluster and client agents with TLS on the server RPC
//! port as Consul configures it (`verify_incoming`, `verify_outgoing`,
//! `verify_server_hostname`, `auto_encrypt`), certificates made with
//! `mesh tls`.

use crate::cluster::{agreed_leader, start_server};
use crate::support::{client_agent_with, mesh_bin, write_file, Agent};
use mesh_control::raft::Command as RaftCommand;
use mesh_control::rpc::handshake::{open, Role, RpcAuth};
use mesh_control::rpc::wire::Conn;
use mesh_control::rpc::{Request, Response};
use mesh_control::structs::{DirEntry, KvOp};
use mesh_control::tls::{AutoEncrypt, RpcTls, TlsConfig};
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

/// A config file for an agent presenting `cert` (a file prefix in `dir`),
/// with `extra` JSON members (e.g. an `auto_encrypt` block).
fn tls_config(dir: &Path, cert: &str, extra: &str) -> PathBuf {
    let path = |f: &str| dir.join(f).display().to_string();
    let text = format!(
        r#"{{"tls": {{
  "defaults": {{"ca_file": "{ca}", "cert_file": "{cert}", "key_file": "{key}",
                "verify_incoming": true, "verify_outgoing": true}},
  "internal_rpc": {{"verify_server_hostname": true}}
}}{extra}}}"#,
        ca = path("consul-agent-ca.pem"),
        cert = path(&format!("{cert}.pem")),
        key = path(&format!("{cert}-key.pem")),
    );
    write_file(dir, &format!("{cert}.json"), &text)
}

/// A client agent's config with only the CA and `auto_encrypt.tls`: its
/// RPC certificate comes from the servers.
fn auto_encrypt_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"{{"tls": {{"defaults": {{"ca_file": "{}", "verify_incoming": true}},
           "internal_rpc": {{"verify_server_hostname": true}}}},
  "auto_encrypt": {{"tls": true}}}}"#,
        dir.join("consul-agent-ca.pem").display()
    );
    write_file(dir, "auto-encrypt-client.json", &text)
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
    let tls = RpcTls::build(&cfg, AutoEncrypt::default(), "dc1", "consul")
        .unwrap()
        .map(Arc::new);
    RpcAuth {
        tls,
        ..RpcAuth::default()
    }
}

async fn connect(port: u16, role: Role, auth: &RpcAuth) -> Result<Conn, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    open(stream, role, auth).await.map_err(|e| e.to_string())
}

async fn dial(port: u16, role: Role, auth: &RpcAuth) -> Result<(), String> {
    connect(port, role, auth).await.map(drop)
}

async fn ask(conn: &mut Conn, req: &Request) -> Response {
    conn.send(req).await.unwrap();
    conn.recv().await.unwrap()
}

fn kv_write() -> Request {
    Request::Apply(RaftCommand::Kv {
        op: KvOp::Set,
        entry: DirEntry {
            key: "tls/forged".into(),
            value: Some(b"x".to_vec()),
            ..DirEntry::default()
        },
        now_ms: 0,
    })
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
        let allow = r#", "auto_encrypt": {"allow_tls": true}"#;
        let file = tls_config(pki.path(), &format!("dc1-server-consul-{i}"), allow);
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
    let client_cfg = tls_config(pki.path(), "dc1-client-consul-0", "");
    let client_cfg = format!("-config-file={}", client_cfg.display());
    let client = client_agent_with("c1", client_dir.path(), &s1, &[&client_cfg]).await;
    client.put_ok("/v1/kv/tls/client", "c").await;
    assert_eq!(
        s1.get("/v1/kv/tls/client?consistent&raw").await.text,
        "c",
        "the client's write went through a server"
    );

    // A client agent with only the CA and auto_encrypt gets its RPC
    // certificate from the servers, then joins and writes.
    let auto_dir = tempfile::tempdir().unwrap();
    let auto_cfg = format!("-config-file={}", auto_encrypt_config(pki.path()).display());
    let auto = client_agent_with("c2", auto_dir.path(), &s1, &[&auto_cfg]).await;
    auto.put_ok("/v1/kv/tls/auto", "a").await;
    assert_eq!(s1.get("/v1/kv/tls/auto?consistent&raw").await.text, "a");
    assert!(
        auto.log_text().contains("/agent/client/dc/dc1/id/c2"),
        "the client agent dials with its agent identity"
    );

    // Plaintext RPC, another CA's certificate, and a client's certificate
    // claiming to be a server are all refused.
    let port = s1.server_port().await;
    let plain = dial(port, Role::Client, &RpcAuth::default()).await;
    assert!(plain.unwrap_err().contains("only TLS"));

    // Without a certificate a caller may only enroll: a write is refused,
    // and nothing is written; its CSR is signed (the control).
    let mut enrolling = connect(port, Role::Client, &dialer(pki.path(), None))
        .await
        .unwrap();
    match ask(&mut enrolling, &kv_write()).await {
        Response::Failed(why) => assert!(why.contains("only AutoEncryptSign"), "{why}"),
        other => panic!("a write from an enrolling caller: {other:?}"),
    }
    assert_eq!(s1.get("/v1/kv/tls/forged").await.status, 404);
    let as_server = dial(port, Role::Server, &dialer(pki.path(), None)).await;
    assert!(as_server.unwrap_err().contains("verify_incoming"));
    let id = mesh_ca::SpiffeId::agent("dummy.trustdomain", "dc1", "probe").unwrap();
    let (csr, key) = mesh_ca::generate_csr(&id).unwrap();
    let sign = Request::AutoEncryptSign {
        csr,
        node: "probe".into(),
        datacenter: "dc1".into(),
    };
    let Response::Signed(Ok(issued)) = ask(&mut enrolling, &sign).await else {
        panic!("the servers sign an enrolling agent's CSR");
    };
    assert!(issued.agent_uri.ends_with("/agent/client/dc/dc1/id/probe"));

    // The issued certificate makes a client agent, never a server; a
    // service's leaf from the same Connect CA is no agent certificate.
    let files = tempfile::tempdir().unwrap();
    write_file(files.path(), "probe.pem", &issued.cert_pem);
    write_file(files.path(), "probe-key.pem", &key);
    std::fs::copy(
        pki.path().join("consul-agent-ca.pem"),
        files.path().join("consul-agent-ca.pem"),
    )
    .unwrap();
    let probe = dialer(files.path(), Some("probe"));
    let mut as_client = connect(port, Role::Client, &probe).await.unwrap();
    match ask(&mut as_client, &kv_write()).await {
        Response::Failed(why) => assert!(why.contains("client agent may not"), "{why}"),
        other => panic!("a client agent's KV write: {other:?}"),
    }
    let err = dial(port, Role::Server, &probe).await.unwrap_err();
    assert!(err.contains("client agent's"), "{err}");
    let leaf: serde_json::Value = s1.get("/v1/agent/connect/ca/leaf/web").await.json();
    write_file(files.path(), "web.pem", leaf["CertPEM"].as_str().unwrap());
    write_file(
        files.path(),
        "web-key.pem",
        leaf["PrivateKeyPEM"].as_str().unwrap(),
    );
    let service_leaf = dial(port, Role::Client, &dialer(files.path(), Some("web"))).await;
    assert!(service_leaf.is_err(), "a service's leaf is not an agent's");
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
