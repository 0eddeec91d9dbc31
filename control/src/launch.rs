//! Starting an agent: bind its listeners, start Raft, the agent, the HTTP API
//! and DNS, in that order, so a taken port fails fast and nothing serves
//! before the state it serves exists.

use crate::agent::leaf::{roots_from_servers, roots_from_store, LeafCache, Signer};
use crate::agent::proxy_view::Views;
use crate::agent::proxycfg::ProxyConfigs;
use crate::agent::{Agent, AgentConfig};
use crate::cluster::Cluster;
use crate::dns::{DnsConfig, DnsServer, ForwardedDns, StoreCatalog};
use crate::http::serve::{serve, HttpLimits};
use crate::http::{client_router, router, ApiState, ServerApi};
use crate::lan::{starting_keyring, Identity, Lan, LanConfig};
use crate::raft::{RaftConfig, RaftNode};
use crate::rpc::handshake::{RpcAuth, RpcKeys};
use crate::rpc::link::ServerLink;
use crate::rpc::server::{RpcHandlers, RpcLimits};
use crate::server::ca::{CaManager, CSR_MAX_PER_SECOND};
use crate::server::leader::LeaderDuties;
use crate::server::membership::{ClusterMember, MemberStatus};
use crate::server::SessionTimers;
use crate::state::Store;
use crate::tls::{AutoEncrypt, HttpsTls, RpcTls, TlsConfig};
use mesh_dns::transport::TcpLimits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything an agent needs to start.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The agent's identity and settings (ports are filled in once bound).
    pub agent: AgentConfig,
    /// The HTTP API address (port 0 picks one; `None`: no plain HTTP).
    pub http_addr: Option<SocketAddr>,
    /// The HTTPS API address (`None`: no HTTPS, Consul's default).
    pub https_addr: Option<SocketAddr>,
    /// The HTTPS API's TLS (`tls.https`).
    pub https_tls: TlsConfig,
    /// Connection and read limits of the HTTP and HTTPS API.
    pub http_limits: HttpLimits,
    /// The DNS address, UDP and TCP (port 0 picks one).
    pub dns_addr: SocketAddr,
    /// DNS settings (domain and datacenter are taken from `agent`).
    pub dns: DnsConfig,
    /// Entries between Raft snapshots.
    pub snapshot_threshold: u64,
    /// The server RPC address (port 0 picks one).
    pub rpc_addr: SocketAddr,
    /// How this server's cluster starts.
    pub bootstrap: Bootstrap,
    /// How the agent joins its LAN gossip pool.
    pub lan: LanConfig,
    /// Time and connection limits of the server RPC port.
    pub rpc_limits: RpcLimits,
    /// The agent's TLS on the server RPC port.
    pub tls: TlsConfig,
    /// Consul's `auto_encrypt`: client agents' RPC certificates from the
    /// servers.
    pub auto_encrypt: AutoEncrypt,
}

/// How a server's Raft cluster comes to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// A one-server datacenter (`-dev`, `-bootstrap`, `-bootstrap-expect=1`).
    Alone,
    /// Wait for this many servers, then start the cluster with them.
    Expect(u32),
    /// Join a cluster a leader adds this server to.
    Join,
}

impl Bootstrap {
    /// The `-bootstrap-expect` count gossip advertises (0: none).
    pub fn expect(self) -> u32 {
        match self {
            Bootstrap::Expect(n) => n,
            _ => 0,
        }
    }
}

/// A running agent.
pub struct Running {
    /// The bound HTTP address, if plain HTTP is on.
    pub http_addr: Option<SocketAddr>,
    /// The bound HTTPS address, if HTTPS is on.
    pub https_addr: Option<SocketAddr>,
    /// The bound DNS address.
    pub dns_addr: SocketAddr,
    /// The agent.
    pub agent: Arc<Agent>,
    /// A server's Raft node, or a client agent's link to the servers.
    pub cluster: Cluster,
    /// The LAN gossip pool.
    pub lan: Lan,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Leaves gracefully (`mesh leave`): the agent leaves the LAN pool, so
    /// no leader adds it back, then a server takes itself out of the Raft
    /// configuration while the others can still commit that, and shuts down.
    pub async fn leave(self) {
        self.lan.leave().await;
        if let Some(node) = self.cluster.server() {
            let others = node
                .configuration()
                .iter()
                .any(|s| s.voter && s.id != node.id());
            if others {
                match node.remove_peer(node.id()).await {
                    Ok(()) => tracing::info!("left the Raft configuration"),
                    Err(e) => tracing::warn!(error = %e, "could not leave the Raft configuration"),
                }
            }
        }
        self.shutdown().await;
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(node) = self.cluster.server() {
            node.shutdown().await;
        }
    }
}

/// Binds DNS on UDP and TCP at the same port. With port 0 the UDP socket
/// picks the port, and TCP may find it taken by another process: try again.
async fn bind_dns(
    addr: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), String> {
    let attempts = if addr.port() == 0 { 32 } else { 1 };
    let mut last = String::new();
    for _ in 0..attempts {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| format!("DNS UDP listener on {addr}: {e}"))?;
        let bound = udp.local_addr().map_err(|e| e.to_string())?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = format!("DNS TCP listener on {bound}: {e}"),
        }
    }
    Err(last)
}

/// An API listener: HTTP, or HTTPS with its acceptor.
struct ApiListener {
    listener: TcpListener,
    tls: Option<Arc<HttpsTls>>,
}

/// The listeners every agent serves on, bound before anything starts.
struct Bound {
    api: Vec<ApiListener>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    https_tls: Option<Arc<HttpsTls>>,
    dns_udp: tokio::net::UdpSocket,
    dns_tcp: TcpListener,
    dns_addr: SocketAddr,
}

/// Binds, starts and serves: a server, or a client agent. Errors name what
/// failed.
pub async fn launch(mut cfg: LaunchConfig) -> Result<Running, String> {
    let mut api = Vec::new();
    let mut http_addr = None;
    if let Some(addr) = cfg.http_addr {
        let listener = bind_api("HTTP", addr).await?;
        http_addr = Some(listener.local_addr().map_err(|e| e.to_string())?);
        api.push(ApiListener {
            listener,
            tls: None,
        });
    }
    let (mut https_addr, mut https_tls) = (None, None);
    if let Some(addr) = cfg.https_addr {
        let tls = Arc::new(HttpsTls::build(&cfg.https_tls)?);
        let listener = bind_api("HTTPS", addr).await?;
        https_addr = Some(listener.local_addr().map_err(|e| e.to_string())?);
        https_tls = Some(tls.clone());
        api.push(ApiListener {
            listener,
            tls: Some(tls),
        });
    }
    if api.is_empty() {
        return Err("neither HTTP nor HTTPS is enabled: set ports.http or ports.https".into());
    }
    cfg.agent.ports.http = http_addr.map(|a| a.port());
    cfg.agent.ports.https = https_addr.map(|a| a.port());
    let (dns_udp, dns_tcp) = bind_dns(cfg.dns_addr).await?;
    let dns_addr = dns_udp.local_addr().map_err(|e| e.to_string())?;
    cfg.agent.ports.dns = dns_addr.port();
    let bound = Bound {
        api,
        http_addr,
        https_addr,
        https_tls,
        dns_udp,
        dns_tcp,
        dns_addr,
    };
    let auth = RpcAuth {
        keys: RpcKeys::new(starting_keyring(&cfg.lan, cfg.agent.data_dir.as_deref())?),
        tls: RpcTls::build(
            &cfg.tls,
            cfg.auto_encrypt,
            &cfg.agent.datacenter,
            &cfg.agent.domain,
        )?
        .map(Arc::new),
    };
    if cfg.agent.server {
        launch_server(cfg, bound, auth).await
    } else {
        launch_client(cfg, bound, auth).await
    }
}

/// A server: Raft on the RPC port, gossip, the leader loop, the whole API
/// and DNS.
async fn launch_server(
    mut cfg: LaunchConfig,
    bound: Bound,
    auth: RpcAuth,
) -> Result<Running, String> {
    let auth_tls = auth.tls.clone();
    let rpc = TcpListener::bind(cfg.rpc_addr)
        .await
        .map_err(|e| format!("server RPC listener on {}: {e}", cfg.rpc_addr))?;
    let rpc_addr = rpc.local_addr().map_err(|e| e.to_string())?;
    cfg.agent.ports.server = rpc_addr.port();
    if !auth.is_closed() {
        tracing::warn!(
            addr = %rpc_addr,
            "the server RPC port is OPEN: anyone who reaches it can write to the cluster \
             and have leaves signed; set -encrypt (the gossip key also keys RPC) or TLS with verify_incoming to close it"
        );
    }

    let store = Arc::new(Store::default());
    let node = RaftNode::start(
        RaftConfig {
            server: crate::raft::ServerNode {
                addr: format!("{}:{}", cfg.agent.advertise_addr, cfg.agent.ports.server),
                name: cfg.agent.node_name.clone(),
                node_id: cfg.agent.node_id.clone(),
            },
            data_dir: cfg.agent.data_dir.clone(),
            snapshot_threshold: cfg.snapshot_threshold,
            bootstrap_alone: cfg.bootstrap == Bootstrap::Alone,
            auth: auth.clone(),
        },
        store.clone(),
    )
    .await
    .map_err(|e| format!("starting Raft: {e}"))?;
    let server_port = cfg.agent.ports.server;
    let lan = start_lan(&mut cfg, Some(server_port), &auth.keys).await?;
    let ca = Arc::new(CaManager::new(
        node.clone(),
        CSR_MAX_PER_SECOND,
        &cfg.agent.datacenter,
    ));
    let sessions = Arc::new(SessionTimers::new(node.clone()));
    let duties = ServerApi {
        sessions: sessions.clone(),
        ca: ca.clone(),
    };
    let state = api_state(&cfg, Role::Server(node.clone(), duties), lan.clone());
    let weak = Arc::downgrade(&sessions);
    node.on_session_renew(Box::new(move |id, ttl| {
        if let Some(s) = weak.upgrade() {
            s.reset_here(id, ttl);
        }
    }));
    let agent = state.agent.clone();
    read_certificates_on_reload(&agent, auth_tls.clone(), bound.https_tls.clone());
    let app = router(state);
    let dns = Arc::new(DnsServer::new(
        dns_config(&cfg)?,
        Arc::new(StoreCatalog::new(store, cfg.agent.datacenter.clone())),
    ));
    let handlers = RpcHandlers {
        node: node.clone(),
        http: app.clone(),
        dns: dns.clone(),
        ca: ca.clone(),
        auth,
        limits: cfg.rpc_limits,
    };
    let mut tasks = vec![
        tokio::spawn(crate::rpc::server::serve(rpc, handlers)),
        tokio::spawn(
            LeaderDuties {
                node: node.clone(),
                ca: ca.clone(),
                sessions,
                members: lan.members(),
                datacenter: cfg.agent.datacenter.clone(),
                bootstrap_expect: cfg.bootstrap.expect(),
                node_id: cfg.agent.node_id.clone(),
            }
            .run(),
        ),
    ];
    if cfg.bootstrap == Bootstrap::Alone {
        node.wait_for_leader(Duration::from_secs(30))
            .await
            .map_err(|e| format!("waiting for a Raft leader: {e}"))?;
        ca.initialize()
            .await
            .map_err(|e| format!("initializing the CA: {e}"))?;
        agent.begin().await?;
        // Ready once the leader has put this node's serfHealth in the
        // catalog: a session created right after start needs it.
        let me = cfg.agent.node_name.clone();
        let mut health = node.store().clone().follow(move |data| {
            let has = data
                .checks
                .get(&me)
                .is_some_and(|c| c.contains_key(crate::structs::SERF_HEALTH_CHECK));
            (
                has,
                vec![crate::state::Topic::Exact(crate::state::table::node(&me))],
            )
        });
        tokio::time::timeout(Duration::from_secs(30), health.wait_for(|has| *has))
            .await
            .map_err(|_| "the leader did not register this node's serfHealth within 30s")?
            .map_err(|e| e.to_string())?;
    } else {
        // Serve at once, as Consul does, and join the catalog once the
        // cluster has a leader.
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            begin_when_servers_answer(&agent).await
        }));
    }

    if let Some(tls) = auth_tls.clone().filter(|t| t.auto_encrypt().allow_tls) {
        tasks.push(tokio::spawn(trust_connect_roots(node.clone(), tls)));
    }
    tasks.push(tokio::spawn(ca.run()));
    tasks.push(tokio::spawn(crate::server::tombstone_gc::run(node.clone())));
    tasks.extend(serve_api(bound.api, app, &cfg.http_limits));
    tasks.push(spawn_serving(
        "DNS",
        dns.serve(bound.dns_udp, bound.dns_tcp),
    ));
    Ok(Running {
        http_addr: bound.http_addr,
        https_addr: bound.https_addr,
        dns_addr: bound.dns_addr,
        agent,
        cluster: Cluster::Server(node),
        lan,
        tasks,
    })
}

/// A client agent: no Raft state and no RPC listener. Its own services and
/// checks live here; writes and every API request it cannot answer itself
/// go to the servers gossip finds.
async fn launch_client(
    mut cfg: LaunchConfig,
    bound: Bound,
    auth: RpcAuth,
) -> Result<Running, String> {
    let auth_tls = auth.tls.clone();
    let lan = start_lan(&mut cfg, None, &auth.keys).await?;
    let link = ServerLink::new(server_addresses(&lan), auth);
    let mut renewal = None;
    if let Some(tls) = auth_tls.clone().filter(|t| t.auto_encrypt().tls) {
        // Consul's agents, too, get their certificate before they serve.
        let enrollment = crate::auto_encrypt::Enrollment {
            link: link.clone(),
            tls,
            node: cfg.agent.node_name.clone(),
            datacenter: cfg.agent.datacenter.clone(),
        };
        let valid_before = enrollment.enroll().await;
        renewal = Some(tokio::spawn(enrollment.keep_renewed(valid_before)));
    }
    let state = api_state(&cfg, Role::Client(link.clone()), lan.clone());
    let agent = state.agent.clone();
    read_certificates_on_reload(&agent, auth_tls.clone(), bound.https_tls.clone());
    let app = client_router(state);
    let limits = TcpLimits::from(&dns_config(&cfg)?);
    let forwarded = Arc::new(ForwardedDns::new(link.clone()));
    let begin = {
        let agent = agent.clone();
        tokio::spawn(async move { begin_when_servers_answer(&agent).await })
    };
    let dns = spawn_serving(
        "DNS",
        mesh_dns::transport::serve(forwarded, limits, bound.dns_udp, bound.dns_tcp),
    );
    let mut tasks = vec![begin, dns];
    tasks.extend(renewal);
    tasks.extend(serve_api(bound.api, app, &cfg.http_limits));
    Ok(Running {
        http_addr: bound.http_addr,
        https_addr: bound.https_addr,
        dns_addr: bound.dns_addr,
        agent,
        cluster: Cluster::Client(link),
        lan,
        tasks,
    })
}

/// Joins the LAN pool, advertising `server_port` when a server, and notes
/// the bound gossip port.
async fn start_lan(
    cfg: &mut LaunchConfig,
    server_port: Option<u16>,
    keys: &RpcKeys,
) -> Result<Lan, String> {
    let lan = Lan::start(
        cfg.lan.clone(),
        Identity {
            node_name: cfg.agent.node_name.clone(),
            node_id: cfg.agent.node_id.clone(),
            datacenter: cfg.agent.datacenter.clone(),
            server_port,
            expect: cfg.bootstrap.expect(),
            data_dir: cfg.agent.data_dir.clone(),
        },
        keys,
    )
    .await?;
    cfg.agent.ports.serf_lan = lan.port();
    Ok(lan)
}

/// The RPC addresses of the alive servers of this datacenter, as gossip
/// changes them.
fn server_addresses(lan: &Lan) -> watch::Receiver<Vec<String>> {
    let mut members = lan.members();
    let servers = |m: &[ClusterMember]| -> Vec<String> {
        m.iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .filter_map(|m| m.server.as_ref().map(|s| s.rpc_addr.clone()))
            .collect()
    };
    let (tx, rx) = watch::channel(servers(&members.borrow()));
    tokio::spawn(async move {
        while members.changed().await.is_ok() {
            let now = servers(&members.borrow());
            tx.send_if_modified(|old| {
                let changed = *old != now;
                *old = now.clone();
                changed
            });
        }
    });
    rx
}

/// Keeps a server with `auto_encrypt.allow_tls` trusting the client agent
/// certificates of the Connect CA's roots as they rotate (a retired root
/// stays trusted until it is pruned, as its leaves stay valid).
async fn trust_connect_roots(node: RaftNode, tls: Arc<RpcTls>) {
    let mut roots = node.store().clone().follow(|data| {
        (
            data.ca.roots.clone(),
            vec![crate::state::Topic::Exact(crate::state::ca::CA.into())],
        )
    });
    loop {
        let current = roots.borrow_and_update().clone();
        match mesh_ca::TrustedRoots::from_ca_roots(&current) {
            Ok(trusted) => tls.trust_connect_roots(trusted),
            Err(e) => tracing::warn!(error = %e, "auto_encrypt: unusable Connect CA roots"),
        }
        if roots.changed().await.is_err() {
            return;
        }
    }
}

/// Puts the agent in the catalog, trying again while the servers cannot be
/// reached or have no leader. (The config files were read before the start,
/// so what fails here is the cluster, not the agent.)
async fn begin_when_servers_answer(agent: &Arc<Agent>) {
    const RETRY: Duration = Duration::from_secs(2);
    while let Err(e) = agent.begin().await {
        tracing::info!(error = %e, retry_in = ?RETRY, "could not join the catalog yet");
        tokio::time::sleep(RETRY).await;
    }
}

/// What an agent's API is built on.
enum Role {
    /// A server: its Raft node and leader duties.
    Server(RaftNode, ServerApi),
    /// A client agent: its link to the servers.
    Client(ServerLink),
}

/// The state every agent's API shares. A server signs leaves and computes
/// proxy views from what it holds; a client agent asks the servers for both.
fn api_state(cfg: &LaunchConfig, role: Role, lan: Lan) -> ApiState {
    let (cluster, server, signer, roots, views) = match role {
        Role::Server(node, duties) => (
            Cluster::Server(node.clone()),
            Some(duties.clone()),
            Signer::Ca(duties.ca),
            roots_from_store(node.store().clone()),
            Views::Store(node.store().clone()),
        ),
        Role::Client(link) => (
            Cluster::Client(link.clone()),
            None,
            Signer::Servers(link.clone()),
            roots_from_servers(link.clone()),
            Views::Servers(link),
        ),
    };
    let leaves = LeafCache::start(signer, roots, cfg.agent.datacenter.clone());
    let agent = Agent::new(cfg.agent.clone(), cluster.clone());
    ApiState {
        cluster,
        server,
        proxies: ProxyConfigs::new(agent.clone(), leaves.clone(), views),
        agent,
        leaves,
        lan,
    }
}

fn dns_config(cfg: &LaunchConfig) -> Result<DnsConfig, String> {
    let mut dns_config = cfg.dns.clone();
    dns_config.domain = cfg.agent.domain.clone();
    dns_config.datacenter = cfg.agent.datacenter.clone();
    dns_config.node_name = cfg.agent.node_name.clone();
    if let Ok(ip) = cfg.agent.advertise_addr.parse() {
        dns_config.server_address = ip;
    }
    dns_config
        .validate()
        .map_err(|e| format!("DNS config: {e}"))?;
    Ok(dns_config)
}

/// Has the agent's reloads (`mesh reload`, SIGHUP) read the RPC and HTTPS
/// certificates again.
fn read_certificates_on_reload(
    agent: &Agent,
    rpc: Option<Arc<RpcTls>>,
    https: Option<Arc<HttpsTls>>,
) {
    if rpc.is_none() && https.is_none() {
        return;
    }
    agent.on_reload(Box::new(move || {
        if let Some(rpc) = &rpc {
            rpc.reload()
                .map_err(|e| format!("reloading RPC TLS: {e}"))?;
        }
        if let Some(https) = &https {
            https
                .reload()
                .map_err(|e| format!("reloading HTTPS TLS: {e}"))?;
        }
        tracing::info!("TLS certificates read again");
        Ok(())
    }));
}

/// Binds an API listener, naming it in the error.
async fn bind_api(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what} listener on {addr}: {e}"))
}

/// Serves the API on each of its listeners.
fn serve_api(
    listeners: Vec<ApiListener>,
    app: axum::Router,
    limits: &HttpLimits,
) -> Vec<tokio::task::JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|l| {
            let what = if l.tls.is_some() { "HTTPS" } else { "HTTP" };
            spawn_serving(what, serve(l.listener, app.clone(), limits.clone(), l.tls))
        })
        .collect()
}

/// Runs a listener's serving loop, logging why it stopped if it does.
fn spawn_serving<E: std::fmt::Display>(
    what: &'static str,
    serving: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "{what} server stopped");
        }
    })
}
