//! Fixtures: a CA, leaves, an echo app, proxy configs and TCP clients.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use mesh_ca::{generate_csr, CaConfiguration, CaRoot, ConsulProvider, Provider, SpiffeId};
use mesh_proxy::{IntentionRule, Protocol, ProxyConfig, PublicListener, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The cluster of the test CAs.
pub const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";
/// How long any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A CA with its active root.
pub struct Ca {
    pub provider: ConsulProvider,
}

/// A leaf chain and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A fresh CA for [`CLUSTER`]: same trust domain, its own root.
    pub fn new() -> Self {
        let provider = ConsulProvider::new(&CaConfiguration::new(CLUSTER)).unwrap();
        let (root, key) = provider.generate_root(SystemTime::now()).unwrap();
        Self {
            provider: provider.with_active_root(root, &key).unwrap(),
        }
    }

    /// Starts a rotation: the next CA, whose root is cross-signed by this one.
    pub fn rotate(&self) -> Self {
        let (root, key) = self.provider.rotate(SystemTime::now()).unwrap();
        let provider = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
            .unwrap()
            .with_active_root(root, &key)
            .unwrap();
        Self { provider }
    }

    pub fn trust_domain(&self) -> String {
        self.provider.trust_domain().to_owned()
    }

    pub fn root(&self) -> &CaRoot {
        self.provider.active_root().unwrap()
    }

    pub fn root_pem(&self) -> String {
        self.root().root_cert.clone()
    }

    /// A 72h leaf for `service`, issued now.
    pub fn leaf(&self, service: &str) -> Leaf {
        self.leaf_at(service, Duration::from_secs(72 * 3600), SystemTime::now())
    }

    /// A leaf for `service` issued at `now` for `ttl`.
    pub fn leaf_at(&self, service: &str, ttl: Duration, now: SystemTime) -> Leaf {
        let id =
            SpiffeId::service(self.provider.trust_domain(), "default", "dc1", service).unwrap();
        let (csr, key_pem) = generate_csr(&id).unwrap();
        let issued = self.provider.sign(&csr, ttl, now).unwrap();
        Leaf {
            cert_pem: issued.cert_pem,
            key_pem,
        }
    }
}

/// A config for `service` with `leaf`, trusting `roots`, no listeners,
/// default allow.
pub fn config(ca: &Ca, service: &str, leaf: &Leaf, roots: Vec<String>) -> ProxyConfig {
    ProxyConfig {
        version: 1,
        service: service.into(),
        trust_domain: ca.trust_domain(),
        datacenter: "dc1".into(),
        leaf_cert_pem: leaf.cert_pem.clone(),
        leaf_key_pem: leaf.key_pem.clone(),
        roots_pem: roots,
        default_allow: true,
        ..ProxyConfig::default()
    }
}

/// A sidecar config: public listener on an ephemeral port → `app`.
pub fn sidecar(ca: &Ca, service: &str, app: SocketAddr) -> ProxyConfig {
    ProxyConfig {
        public_listener: Some(PublicListener {
            bind: any_port(),
            local_app: app,
            protocol: Protocol::Tcp,
        }),
        ..config(ca, service, &ca.leaf(service), vec![ca.root_pem()])
    }
}

/// A client-side config: one upstream to `destination` on an ephemeral port.
pub fn client(
    ca: &Ca,
    service: &str,
    destination: &str,
    endpoints: Vec<SocketAddr>,
) -> ProxyConfig {
    ProxyConfig {
        upstreams: vec![Upstream::tcp(destination, any_port(), endpoints)],
        ..config(ca, service, &ca.leaf(service), vec![ca.root_pem()])
    }
}

pub fn rule(source: &str, allow: bool, precedence: i32) -> IntentionRule {
    IntentionRule {
        source: source.into(),
        allow,
        precedence,
        permissions: Vec::new(),
    }
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An address nobody listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).await.unwrap();
    listener.local_addr().unwrap()
}

/// An echo app: every connection gets its bytes back; on EOF it closes its
/// write half after echoing everything.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    addr
}

/// An open connection to an echo app, through whatever is in between.
pub struct EchoConn {
    stream: TcpStream,
}

impl EchoConn {
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = step(TcpStream::connect(addr)).await??;
        Ok(Self { stream })
    }

    /// Sends `msg` and reads as many bytes back; an error if the
    /// connection closes first.
    pub async fn echo(&mut self, msg: &[u8]) -> io::Result<()> {
        self.stream.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        step(self.stream.read_exact(&mut buf)).await??;
        if buf != msg {
            return Err(io::Error::other("echo returned other bytes"));
        }
        Ok(())
    }

    /// Closes the write half and reads what is left until EOF.
    pub async fn finish(mut self) -> io::Result<Vec<u8>> {
        self.stream.shutdown().await?;
        let mut rest = Vec::new();
        step(self.stream.read_to_end(&mut rest)).await??;
        Ok(rest)
    }

    /// Waits until the other side closes, returning what came before.
    pub async fn closed_by_peer(mut self) -> io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        match step(self.stream.read_to_end(&mut rest)).await? {
            Ok(_) => Ok(rest),
            // A reset is a close too.
            Err(_) => Ok(rest),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// One round trip on a fresh connection.
pub async fn echo_once(addr: SocketAddr, msg: &[u8]) -> io::Result<()> {
    let mut conn = EchoConn::open(addr).await?;
    conn.echo(msg).await?;
    let rest = conn.finish().await?;
    if !rest.is_empty() {
        return Err(io::Error::other("extra bytes after the echo"));
    }
    Ok(())
}

/// Asserts that a fresh connection through `addr` is refused somewhere
/// along the way: the proxy accepts the local connection, then closes it
/// without echoing.
pub async fn assert_refused(addr: SocketAddr) {
    let result = echo_once(addr, b"should not pass").await;
    assert!(result.is_err(), "the connection went through");
}

/// Bounds a step of a test.
pub async fn step<F: Future>(future: F) -> io::Result<F::Output> {
    tokio::time::timeout(STEP, future)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "test step timed out"))
}

/// Polls `cond` until it holds, failing the test after [`STEP`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
