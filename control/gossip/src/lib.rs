//! The LAN gossip pool of the mesh agent (Consul's serf + memberlist on port
//! 8301): membership, SWIM failure detection and encryption.
//!
//! The crate knows nothing of Raft, the catalog or HTTP. The agent starts a
//! [`Gossip`] from a [`GossipConfig`], joins it to other agents with
//! [`Gossip::join`], reads [`Gossip::members`] and reacts to
//! [`Gossip::subscribe`] (serf-style [`MemberEvent`]s) or the cheaper
//! [`Gossip::changes`] counter.
//!
//! How it works:
//!
//! * **Failure detection** is [foca]'s SWIM (probe, indirect probe, suspicion,
//!   refutation), driven by one tokio task that owns the UDP socket
//!   (`runtime`). Identities are name + address + generation (start time), so
//!   a restarted node is a new life that wins over its old one.
//! * **Lifeguard**, as memberlist has it: a member whose UDP probe failed is
//!   pinged over TCP, and refutes the suspicion itself if it answers
//!   (`ping`); a local health score slows this node's probing while its own
//!   probes fail or it has to refute suspicion (`awareness`). Suspicion
//!   timeouts stay fixed: foca has no hook to shorten them as independent
//!   confirmations arrive.
//! * **Intents** (tags, leave, force-leave) ride foca's custom broadcasts and
//!   are also sent directly by their origin; they turn a member that went down
//!   into Left instead of Failed, and spread tags (`members`, `wire`).
//! * **Push-pull** over TCP on the same port exchanges full state on join and
//!   periodically, as memberlist does (`tcp`).
//! * **Encryption**: with keys configured every UDP and TCP payload is
//!   `1 | nonce | AES-GCM`, opened with any installed key; the keyring is
//!   managed cluster-wide like `consul keyring` (`crypto`, `keyring`).
//!   Hostile or undecryptable packets are dropped with a debug log.

#![warn(missing_docs)]

mod awareness;
mod broadcast;
mod config;
mod crypto;
mod error;
mod identity;
mod keyring;
mod members;
mod ping;
mod runtime;
mod tcp;
mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{broadcast as tokio_broadcast, oneshot, watch};

pub use config::{GossipConfig, DEFAULT_PORT, MAX_TAGS_BYTES};
pub use crypto::{encode_key, generate_key, parse_key};
pub use error::GossipError;
pub use keyring::KeyringResponse;
pub use members::{Member, MemberEvent, MemberEventKind, MemberStatus};

use runtime::{Command, Shared};
use wire::KeyringOp;

/// A running gossip pool member. Cheap to clone; the pool stops when
/// [`Gossip::shutdown`] or [`Gossip::leave`] is called, or when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Gossip {
    shared: Arc<Shared>,
    _guard: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request_stop();
    }
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("node", &self.shared.cfg.node_name)
            .field("addr", &self.shared.local_addr)
            .finish()
    }
}

impl Gossip {
    /// Binds UDP and TCP on `cfg.bind` and starts gossiping (alone until
    /// [`Gossip::join`]).
    pub async fn start(cfg: GossipConfig) -> Result<Gossip, GossipError> {
        let shared = runtime::start(cfg).await?;
        Ok(Gossip {
            _guard: Arc::new(StopOnDrop(shared.clone())),
            shared,
        })
    }

    /// The bound address (UDP and TCP share the port).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address other members reach this one at.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.table().local_id().addr
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.cfg.node_name
    }

    /// Joins the pool through each of `addrs` (`host:port`, or `host` for port
    /// 8301) by a TCP push-pull state exchange. Returns how many answered;
    /// fails, naming each address and why, if none did.
    pub async fn join(&self, addrs: &[String]) -> Result<usize, GossipError> {
        if self.shared.is_stopped() {
            return Err(GossipError::Shutdown);
        }
        let mut ok = 0;
        let mut failures = Vec::new();
        for addr in addrs {
            let res = match resolve(addr).await {
                Ok(sa) => runtime::push_pull(&self.shared, sa, true).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => ok += 1,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "gossip join failed");
                    failures.push((addr.clone(), e));
                }
            }
        }
        if ok == 0 {
            return Err(GossipError::Join(failures));
        }
        Ok(ok)
    }

    /// Every member known: this node, alive, leaving, left and failed members
    /// until they are reaped.
    pub fn members(&self) -> Vec<Member> {
        self.shared.table().members()
    }

    /// Member events from now on. A receiver that lags sees
    /// `RecvError::Lagged` and should re-read [`Gossip::members`].
    pub fn subscribe(&self) -> tokio_broadcast::Receiver<MemberEvent> {
        self.shared.subscribe()
    }

    /// A counter bumped on every membership change, to await with
    /// `changed()`.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes()
    }

    /// Lifeguard's local health score (memberlist's `GetHealthScore`,
    /// Consul's `memberlist.health.score` metric): 0 while this node's
    /// probes are acknowledged, rising to 7 as they fail or as it has to
    /// refute suspicion of itself. Probing slows by `score + 1`.
    pub fn health_score(&self) -> u32 {
        self.shared.health_score()
    }

    /// Replaces this node's tags and announces them to the pool.
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), GossipError> {
        let size = wire::tags_size(&tags);
        if size > MAX_TAGS_BYTES {
            return Err(GossipError::TagsTooLarge(size));
        }
        let (reply, rx) = oneshot::channel();
        self.shared.send(Command::SetTags { tags, reply }).await?;
        rx.await.map_err(|_| GossipError::Shutdown)
    }

    /// Leaves gracefully: the pool sees this node Left rather than Failed.
    /// Probing stops and the pool is shut down afterwards.
    pub async fn leave(&self) -> Result<(), GossipError> {
        let (reply, rx) = oneshot::channel();
        self.shared.send(Command::Leave { reply }).await?;
        rx.await.map_err(|_| GossipError::Shutdown)?;
        self.shared.shutdown().await;
        Ok(())
    }

    /// Consul's `force-leave`: a Failed member becomes Left on every node.
    /// Fails if `node` is unknown; on a live member it has no lasting effect.
    pub async fn force_leave(&self, node: &str) -> Result<(), GossipError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .send(Command::ForceLeave {
                name: node.to_string(),
                reply,
            })
            .await?;
        rx.await.map_err(|_| GossipError::Shutdown)?
    }

    /// Installs `key` (base64) as a secondary key on every alive member.
    pub async fn keyring_install(&self, key: &str) -> Result<KeyringResponse, GossipError> {
        keyring::run(&self.shared, KeyringOp::Install(parse_key(key)?)).await
    }

    /// Makes an installed `key` (base64) the primary key on every alive member.
    pub async fn keyring_use(&self, key: &str) -> Result<KeyringResponse, GossipError> {
        keyring::run(&self.shared, KeyringOp::Use(parse_key(key)?)).await
    }

    /// Removes `key` (base64) from every alive member; the primary key cannot
    /// be removed.
    pub async fn keyring_remove(&self, key: &str) -> Result<KeyringResponse, GossipError> {
        keyring::run(&self.shared, KeyringOp::Remove(parse_key(key)?)).await
    }

    /// Lists the keys installed across alive members with how many hold each;
    /// unreachable members are listed in [`KeyringResponse::errors`].
    pub async fn keyring_list(&self) -> Result<KeyringResponse, GossipError> {
        keyring::run(&self.shared, KeyringOp::List).await
    }

    /// This node's keys (base64), primary first, e.g. to persist them.
    pub fn local_keys(&self) -> Vec<String> {
        self.shared.keyring().keys().map(encode_key).collect()
    }

    /// This node's keys, primary first, as they stand now.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.shared.keyring().keys().map(<[u8]>::to_vec).collect()
    }

    /// Stops without leaving, as a crash would: the pool will see this node
    /// Failed.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }
}

/// Resolves a join address: `host:port`, `host`, `ip` or `[ipv6]`.
async fn resolve(addr: &str) -> Result<SocketAddr, GossipError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = addr.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let target = if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    };
    let mut found = tokio::net::lookup_host(&target).await.map_err(|e| {
        GossipError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot resolve {target}: {e}"),
        ))
    })?;
    found.next().ok_or_else(|| {
        GossipError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{target} resolves to no address"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolve_forms() {
        assert_eq!(
            resolve("127.0.0.1").await.unwrap(),
            "127.0.0.1:8301".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:9").await.unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]").await.unwrap(),
            "[::1]:8301".parse().unwrap()
        );
        assert_eq!(resolve("localhost:7").await.unwrap().port(), 7);
    }
}
