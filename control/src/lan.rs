//! The agent's place in its datacenter's LAN gossip pool ([`mesh_gossip`]):
//! the tags it advertises, joining at start (`-join`, `-retry-join`,
//! rejoining the members known before a restart), and the membership feed
//! the leader reconciles ([`crate::server::membership`]).

use crate::rpc::handshake::RpcKeys;
use crate::server::membership::{ClusterMember, MemberStatus, ServerInfo};
use mesh_gossip::{Gossip, GossipConfig, Member};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Serf protocol version advertised (Consul's `vsn` tags).
const PROTOCOL: &str = "2";

/// Where the members known before a restart are kept, under `-data-dir`.
const SNAPSHOT: &str = "serf/local.snapshot";

/// Where the gossip keyring is kept, under `-data-dir` (Consul's file: a
/// JSON array of base64 keys, primary first).
const KEYRING: &str = "serf/local.keyring";

/// How often the keyring is compared with the saved one.
const KEYRING_CHECK: Duration = Duration::from_secs(2);

/// How this agent joins its LAN pool.
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// Where gossip listens (UDP and TCP; port 0 picks one).
    pub bind: SocketAddr,
    /// The address others reach this agent's gossip on.
    pub advertise: std::net::IpAddr,
    /// The gossip keyring (`-encrypt`), primary first; empty: no encryption.
    pub keys: Vec<Vec<u8>>,
    /// Agents to join at start; the start fails if none answers.
    pub join: Vec<String>,
    /// Agents to join in the background, retried until one answers.
    pub retry_join: Vec<String>,
    /// Time between `retry_join` attempts.
    pub retry_interval: Duration,
    /// Rejoin the members known before a restart even after a graceful leave.
    pub rejoin_after_leave: bool,
    /// How long failed and left members are remembered (`reconnect_timeout`).
    pub reap_after: Duration,
}

/// What the agent tells the pool about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Node name.
    pub node_name: String,
    /// Node ID.
    pub node_id: String,
    /// Datacenter.
    pub datacenter: String,
    /// Server RPC port when this agent is a server.
    pub server_port: Option<u16>,
    /// `-bootstrap-expect` (0: none).
    pub expect: u32,
    /// Where to remember members across restarts.
    pub data_dir: Option<PathBuf>,
}

/// A running LAN pool member.
#[derive(Clone)]
pub struct Lan {
    gossip: Gossip,
    members: watch::Receiver<Vec<ClusterMember>>,
    data_dir: Option<PathBuf>,
    /// Set by a graceful leave: the members are no longer remembered, so
    /// the leave mark stays for the next start.
    left: Arc<AtomicBool>,
}

impl Lan {
    /// Starts gossip with the keyring `keys` holds ([`starting_keyring`]),
    /// joins `-join` (failing if none answers), and starts the background
    /// rejoin and `-retry-join`. `keys`, which RPC authenticates with,
    /// follows the pool's keyring from then on.
    pub async fn start(cfg: LanConfig, me: Identity, keys: &RpcKeys) -> Result<Lan, String> {
        let mut gossip_cfg = GossipConfig::new(me.node_name.clone(), cfg.bind);
        gossip_cfg.advertise = Some(SocketAddr::new(cfg.advertise, cfg.bind.port()));
        gossip_cfg.tags = tags(&me);
        gossip_cfg.keys = keys.current();
        gossip_cfg.reap_after = cfg.reap_after;
        let gossip = Gossip::start(gossip_cfg)
            .await
            .map_err(|e| format!("LAN gossip on {}: {e}", cfg.bind))?;
        let live = gossip.clone();
        keys.follow(move || live.keys());
        let (tx, members) = watch::channel(cluster_members(&gossip.members(), &me.datacenter));
        let left = Arc::new(AtomicBool::new(false));
        tokio::spawn(feed(gossip.clone(), tx, me.clone(), left.clone()));
        if !cfg.join.is_empty() {
            let n = gossip
                .join(&cfg.join)
                .await
                .map_err(|e| format!("joining {:?}: {e}", cfg.join))?;
            tracing::info!(joined = n, "joined the LAN pool");
        }
        if let Some(dir) = &me.data_dir {
            rejoin(&gossip, dir, cfg.rejoin_after_leave).await;
        }
        if !cfg.retry_join.is_empty() {
            tokio::spawn(retry_join(
                gossip.clone(),
                cfg.retry_join,
                cfg.retry_interval,
            ));
        }
        let lan = Lan {
            gossip,
            members,
            data_dir: me.data_dir.clone(),
            left,
        };
        lan.save_keyring();
        if lan.data_dir.is_some() {
            tokio::spawn(keep_keyring_saved(lan.clone()));
        }
        Ok(lan)
    }

    /// Writes this agent's keyring to the data dir, so that a restart keeps
    /// keys installed with `mesh keyring`.
    pub fn save_keyring(&self) {
        let Some(dir) = &self.data_dir else { return };
        let keys = self.gossip.local_keys();
        if keys.is_empty() {
            return;
        }
        let path = dir.join(KEYRING);
        let text = serde_json::to_string(&keys).unwrap_or_default();
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(dir));
        if let Err(e) = std::fs::write(&path, text) {
            tracing::warn!(path = %path.display(), error = %e, "saving the keyring failed");
        }
    }

    /// The gossip pool.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// The bound gossip port.
    pub fn port(&self) -> u16 {
        self.gossip.local_addr().port()
    }

    /// The members as the leader reconciles them; changes with gossip.
    pub fn members(&self) -> watch::Receiver<Vec<ClusterMember>> {
        self.members.clone()
    }

    /// Leaves the pool gracefully and remembers not to rejoin on restart.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::SeqCst);
        if let Err(e) = self.gossip.leave().await {
            tracing::warn!(error = %e, "leaving the LAN pool failed");
        }
        if let Some(dir) = &self.data_dir {
            let path = dir.join(SNAPSHOT);
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(dir));
            let _ = std::fs::write(path, "leave\n");
        }
    }
}

/// The keyring the agent starts with: the one saved in the data dir, or
/// `-encrypt`'s key. Gossip and RPC are keyed with it.
pub fn starting_keyring(cfg: &LanConfig, data_dir: Option<&Path>) -> Result<Vec<Vec<u8>>, String> {
    Ok(match data_dir.map(load_keyring).transpose()? {
        Some(Some(saved)) => {
            if !cfg.keys.is_empty() && saved != cfg.keys {
                tracing::warn!("a saved keyring exists in the data dir; ignoring -encrypt");
            }
            saved
        }
        _ => cfg.keys.clone(),
    })
}

/// The keyring saved in `dir`, if any; an unreadable one is an error that
/// names the file.
fn load_keyring(dir: &Path) -> Result<Option<Vec<Vec<u8>>>, String> {
    let path = dir.join(KEYRING);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let keys: Vec<String> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    keys.iter()
        .map(|k| mesh_gossip::parse_key(k).map_err(|e| format!("{}: {e}", path.display())))
        .collect::<Result<Vec<_>, _>>()
        .map(|keys| (!keys.is_empty()).then_some(keys))
}

/// Consul's serf tags for this agent.
fn tags(me: &Identity) -> BTreeMap<String, String> {
    let mut t = BTreeMap::from([
        ("dc".to_string(), me.datacenter.clone()),
        ("id".to_string(), me.node_id.clone()),
        ("build".to_string(), crate::VERSION.to_string()),
        ("vsn".to_string(), PROTOCOL.to_string()),
        ("vsn_min".to_string(), PROTOCOL.to_string()),
        ("vsn_max".to_string(), "3".to_string()),
        ("segment".to_string(), String::new()),
    ]);
    match me.server_port {
        Some(port) => {
            t.insert("role".into(), "consul".into());
            t.insert("port".into(), port.to_string());
            if me.expect > 0 {
                t.insert("expect".into(), me.expect.to_string());
            }
        }
        None => {
            t.insert("role".into(), "node".into());
        }
    }
    t
}

/// Saves the keyring whenever it changes, including through a `mesh keyring`
/// run on another member, so that a restart comes back with the keys the
/// pool uses.
async fn keep_keyring_saved(lan: Lan) {
    let mut saved = lan.gossip.local_keys();
    loop {
        tokio::time::sleep(KEYRING_CHECK).await;
        let keys = lan.gossip.local_keys();
        if keys != saved {
            lan.save_keyring();
            saved = keys;
        }
    }
}

/// Gossip members as the leader sees them: servers of this datacenter carry
/// their RPC address.
pub fn cluster_members(members: &[Member], datacenter: &str) -> Vec<ClusterMember> {
    members
        .iter()
        .map(|m| {
            let tag = |k: &str| m.tags.get(k).map(String::as_str).unwrap_or("");
            let server = (tag("role") == "consul" && tag("dc") == datacenter)
                .then(|| tag("port").parse::<u16>().ok())
                .flatten()
                .map(|port| ServerInfo {
                    rpc_addr: SocketAddr::new(m.addr.ip(), port).to_string(),
                    expect: tag("expect").parse().unwrap_or(0),
                });
            ClusterMember {
                name: m.name.clone(),
                node_id: tag("id").to_string(),
                address: m.addr.ip().to_string(),
                status: match m.status {
                    mesh_gossip::MemberStatus::Alive | mesh_gossip::MemberStatus::Leaving => {
                        MemberStatus::Alive
                    }
                    mesh_gossip::MemberStatus::Left => MemberStatus::Left,
                    mesh_gossip::MemberStatus::Failed => MemberStatus::Failed,
                },
                server,
            }
        })
        .collect()
}

/// Publishes every membership change, and remembers alive members' gossip
/// addresses for a rejoin after a restart.
async fn feed(
    gossip: Gossip,
    tx: watch::Sender<Vec<ClusterMember>>,
    me: Identity,
    left: Arc<AtomicBool>,
) {
    let mut changes = gossip.changes();
    loop {
        let members = gossip.members();
        if let (Some(dir), false) = (&me.data_dir, left.load(Ordering::SeqCst)) {
            remember(dir, &members, &me.node_name);
        }
        tx.send_replace(cluster_members(&members, &me.datacenter));
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn remember(dir: &Path, members: &[Member], me: &str) {
    let path = dir.join(SNAPSHOT);
    let addrs: Vec<String> = members
        .iter()
        .filter(|m| m.name != me && m.status == mesh_gossip::MemberStatus::Alive)
        .map(|m| m.addr.to_string())
        .collect();
    if addrs.is_empty() {
        return;
    }
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(dir));
    let _ = std::fs::write(&path, addrs.join("\n") + "\n");
}

/// Rejoins the members known before a restart, unless the agent left
/// gracefully (then only with `-rejoin`).
async fn rejoin(gossip: &Gossip, dir: &Path, after_leave: bool) {
    let Ok(text) = std::fs::read_to_string(dir.join(SNAPSHOT)) else {
        return;
    };
    let left = text.lines().any(|l| l == "leave");
    if left && !after_leave {
        tracing::info!("left gracefully before the restart; not rejoining (use -rejoin)");
        return;
    }
    let addrs: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty() && *l != "leave")
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        return;
    }
    match gossip.join(&addrs).await {
        Ok(n) => tracing::info!(joined = n, "rejoined the members known before the restart"),
        Err(e) => {
            tracing::warn!(error = %e, "rejoining the members known before the restart failed")
        }
    }
}

async fn retry_join(gossip: Gossip, addrs: Vec<String>, interval: Duration) {
    loop {
        match gossip.join(&addrs).await {
            Ok(n) => {
                tracing::info!(joined = n, "retry-join succeeded");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?interval, "retry-join failed");
                tokio::time::sleep(interval).await;
            }
        }
    }
}
