//! mTLS refusals through the real binary: a sidecar's public listener turns
//! away client certificates the cluster must not trust, and an upstream
//! listener turns away a server that is not the service it dialled. Each
//! refusal is paired with a control that succeeds in the same setup, so no
//! test passes merely because nothing works.

use crate::support::{
    echo, echo_server, eventually, instance, round_trip, Agent, MeshProcess, PROXY_WAIT,
};
use mesh_ca::rustls::pki_types::ServerName;
use mesh_ca::{
    client_config, generate_csr, server_config, CaConfiguration, CaRoot, CaRootKey, ConsulProvider,
    ExpectedService, Provider, SharedRoots, SpiffeId, TrustedRoots,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LEAF_TTL: Duration = Duration::from_secs(72 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The cluster's CA as a client sees it.
struct Cluster {
    id: String,
    trust_domain: String,
    roots: SharedRoots,
}

/// A certificate chain and its private key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

async fn cluster(a: &Agent) -> Cluster {
    let config = a.get("/v1/connect/ca/configuration").await.json();
    let roots = a.get("/v1/agent/connect/ca/roots").await.json();
    let pems = roots["Roots"]
        .as_array()
        .expect("Roots")
        .iter()
        .map(|r| r["RootCert"].as_str().expect("RootCert"));
    Cluster {
        id: config["ClusterID"].as_str().expect("ClusterID").to_string(),
        trust_domain: roots["TrustDomain"]
            .as_str()
            .expect("TrustDomain")
            .to_string(),
        roots: SharedRoots::new(TrustedRoots::from_pems(pems).expect("cluster roots")),
    }
}

/// The agent's leaf for `service`.
async fn agent_leaf(a: &Agent, service: &str) -> Leaf {
    let v = a
        .get(&format!("/v1/agent/connect/ca/leaf/{service}"))
        .await
        .json();
    Leaf {
        cert: v["CertPEM"].as_str().expect("CertPEM").to_string(),
        key: v["PrivateKeyPEM"]
            .as_str()
            .expect("PrivateKeyPEM")
            .to_string(),
    }
}

/// A CA of `cluster_id`'s trust domain made here, valid from `since`: its
/// signer, and its root and key as an operator would bring them.
fn own_ca(cluster_id: &str, since: SystemTime) -> (ConsulProvider, CaRoot, CaRootKey) {
    let provider = ConsulProvider::new(&CaConfiguration::new(cluster_id)).unwrap();
    let (root, key) = provider.generate_root(since).unwrap();
    let ca = provider.with_active_root(root.clone(), &key).unwrap();
    (ca, root, key)
}

/// A leaf for `service` signed by `ca` as of `now`.
fn signed_leaf(ca: &ConsulProvider, service: &str, now: SystemTime) -> Leaf {
    let id = SpiffeId::service(ca.trust_domain(), "default", "dc1", service).unwrap();
    let (csr, key) = generate_csr(&id).unwrap();
    Leaf {
        cert: ca.sign(&csr, LEAF_TTL, now).unwrap().cert_pem,
        key,
    }
}

/// Echoes `msg` through socat's sidecar at `public`, presenting `leaf` and
/// expecting socat's identity; `None` if any side refused.
async fn via_sidecar(public: &str, cluster: &Cluster, leaf: &Leaf, msg: &[u8]) -> Option<Vec<u8>> {
    let expected = ExpectedService::new(&cluster.trust_domain, "socat");
    let config = client_config(&leaf.cert, &leaf.key, cluster.roots.clone(), expected).unwrap();
    let tcp = TcpStream::connect(public).await.ok()?;
    let name = ServerName::try_from("socat").unwrap();
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .ok()?
    .ok()?;
    echo(&mut tls, msg).await
}

/// An echo service behind its sidecar: the running sidecar and its public
/// listener.
async fn socat(a: &Agent) -> (MeshProcess, String) {
    instance(a, "socat", "socat-1", echo_server().await).await
}

#[tokio::test]
async fn the_sidecar_refuses_a_client_of_another_ca_with_the_same_trust_domain() {
    let a = Agent::start(&[]);
    let (_sidecar, public) = socat(&a).await;
    let c = cluster(&a).await;

    let web = agent_leaf(&a, "web").await;
    let got = eventually(PROXY_WAIT, "an echo with the cluster's leaf", || {
        via_sidecar(&public, &c, &web, b"trusted")
    })
    .await;
    assert_eq!(got, b"trusted");

    let (rogue, _, _) = own_ca(&c.id, SystemTime::now());
    assert_eq!(rogue.trust_domain(), c.trust_domain);
    let forged = signed_leaf(&rogue, "web", SystemTime::now());
    assert_eq!(
        via_sidecar(&public, &c, &forged, b"forged").await,
        None,
        "a leaf for web from a CA the cluster does not know is refused"
    );
}

#[tokio::test]
async fn the_sidecar_refuses_an_expired_leaf_of_a_provided_root() {
    let a = Agent::start(&[]);
    let (_sidecar, public) = socat(&a).await;
    let cluster_id = cluster(&a).await.id;

    // The provided root predates the expired leaf, so expiry is all that is
    // wrong with it.
    let now = SystemTime::now();
    let (own, root, key) = own_ca(&cluster_id, now - 30 * DAY);
    let config = serde_json::json!({"Provider": "consul",
        "Config": {"RootCert": root.root_cert, "PrivateKey": key.private_key_pem}});
    a.set_ca_config(&config.to_string());
    let roots = a.get("/v1/connect/ca/roots").await.json();
    assert_eq!(
        roots["ActiveRootID"],
        root.id.as_str(),
        "the provided root signs"
    );
    let c = cluster(&a).await;

    let fresh = signed_leaf(&own, "web", now);
    let got = eventually(PROXY_WAIT, "the sidecar to trust the provided root", || {
        via_sidecar(&public, &c, &fresh, b"fresh")
    })
    .await;
    assert_eq!(got, b"fresh");

    let expired = signed_leaf(&own, "web", now - 10 * DAY);
    assert_eq!(
        via_sidecar(&public, &c, &expired, b"expired").await,
        None,
        "a leaf of the trusted root that expired days ago is refused"
    );
}

/// A TLS server in the test standing in for socat's sidecar: presents its
/// leaf, requires a client certificate of the cluster, echoes, and counts
/// failed handshakes and the application bytes it received.
struct FakeSidecar {
    port: u16,
    failed: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeSidecar {
    async fn start(leaf: &Leaf, cluster: &Cluster) -> FakeSidecar {
        let config = server_config(
            &leaf.cert,
            &leaf.key,
            cluster.roots.clone(),
            &cluster.trust_domain,
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let failed = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let (f, r) = (failed.clone(), received.clone());
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (acceptor, failed, received) = (acceptor.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = tls.read(&mut buf).await {
                        received.fetch_add(n, Ordering::SeqCst);
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeSidecar {
            port,
            failed,
            received,
            accept,
        }
    }

    /// Registers this server in the catalog as a sidecar proxy of socat.
    async fn register(&self, a: &Agent, id: &str) {
        let reg = serde_json::json!({"Kind": "connect-proxy", "ID": id,
            "Name": "socat-sidecar-proxy", "Address": "127.0.0.1", "Port": self.port,
            "Proxy": {"DestinationServiceName": "socat"}});
        a.put_ok("/v1/agent/service/register", &reg.to_string())
            .await;
    }
}

impl Drop for FakeSidecar {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn an_upstream_refuses_a_server_that_is_not_the_service_it_dialled() {
    let a = Agent::start(&[]);
    let c = cluster(&a).await;

    // Control: a stand-in presenting socat's own leaf carries the bytes.
    let genuine = FakeSidecar::start(&agent_leaf(&a, "socat").await, &c).await;
    genuine.register(&a, "socat-sidecar-genuine").await;
    let web = MeshProcess::spawn(&a, &["proxy", "-service", "web", "-upstream", "socat:0"]);
    let upstream = web.wait_line("Upstream socat:", PROXY_WAIT);
    let got = eventually(PROXY_WAIT, "an echo from the genuine socat", || {
        round_trip(&upstream, b"genuine")
    })
    .await;
    assert_eq!(got, b"genuine");
    assert!(genuine.received.load(Ordering::SeqCst) > 0);

    // The same stand-in with a valid leaf of another service.
    a.put_ok("/v1/agent/service/deregister/socat-sidecar-genuine", "")
        .await;
    drop(genuine);
    let evil = FakeSidecar::start(&agent_leaf(&a, "evil").await, &c).await;
    evil.register(&a, "socat-sidecar-evil").await;
    let first = eventually(PROXY_WAIT, "the upstream to dial the impostor", || async {
        let got = round_trip(&upstream, b"secret").await;
        let reached = evil.failed.load(Ordering::SeqCst) + evil.received.load(Ordering::SeqCst);
        (reached > 0).then_some(got)
    })
    .await;
    assert_eq!(first, None, "no echo from a server that is not socat");
    assert_eq!(round_trip(&upstream, b"secret").await, None);
    assert!(
        evil.failed.load(Ordering::SeqCst) > 0,
        "the impostor saw its handshakes fail"
    );
    assert_eq!(
        evil.received.load(Ordering::SeqCst),
        0,
        "no application bytes reached the impostor"
    );
}
