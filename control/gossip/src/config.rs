//! [`GossipConfig`]: what a gossip pool needs to start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto;
use crate::error::GossipError;

/// Default LAN gossip port, as Consul's `serf_lan`.
pub const DEFAULT_PORT: u16 = 8301;

/// Largest encoded size of a member's tags, as memberlist's meta limit.
pub const MAX_TAGS_BYTES: usize = 512;

/// Configuration of one gossip pool member. Defaults follow memberlist's LAN
/// profile and Consul's agent defaults.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// The node name; unique in the pool (Consul's `-node`).
    pub node_name: String,
    /// Address to bind UDP and TCP on (the same port for both). Port 0 picks a
    /// free port that is free for both protocols.
    pub bind: SocketAddr,
    /// Address other members use to reach this one; the bound address when
    /// `None`, and the bound port when its port is 0. An unspecified IP
    /// (`0.0.0.0`) must be replaced by a real one.
    pub advertise: Option<SocketAddr>,
    /// Serf tags (`role`, `dc`, `port`, `build`, `vsn`, `id`, ...), opaque to
    /// the pool; at most [`MAX_TAGS_BYTES`] once encoded.
    pub tags: BTreeMap<String, String>,
    /// Keyring: AES keys of 16, 24 or 32 bytes, the first one primary (used to
    /// encrypt). Empty means no encryption.
    pub keys: Vec<Vec<u8>>,
    /// How often a random member is probed (memberlist `ProbeInterval`).
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before probing indirectly
    /// (memberlist `ProbeTimeout`). Must be below `probe_interval`.
    pub probe_timeout: Duration,
    /// Suspicion multiplier (memberlist `SuspicionMult`): a suspect member is
    /// declared failed after `suspicion_mult * max(1, log10(n)) *
    /// probe_interval`, `n` the number of live members.
    pub suspicion_mult: u32,
    /// How often full state is exchanged with one random member over TCP
    /// (memberlist `PushPullInterval`), to repair anything gossip missed.
    pub push_pull_interval: Duration,
    /// How often queued updates are gossiped to a few random members
    /// (memberlist `GossipInterval`).
    pub gossip_interval: Duration,
    /// Failed and left members are forgotten this long after they went away
    /// (Consul's `reconnect_timeout`).
    pub reap_after: Duration,
    /// How often one failed member is contacted again (serf's
    /// `ReconnectInterval`), so a healed partition rejoins.
    pub reconnect_interval: Duration,
    /// Deadline for one TCP exchange (connect, request, reply), as
    /// memberlist's `TCPTimeout`.
    pub tcp_timeout: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            node_name: String::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise: None,
            tags: BTreeMap::new(),
            keys: Vec::new(),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspicion_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            gossip_interval: Duration::from_millis(200),
            reap_after: Duration::from_secs(72 * 3600),
            reconnect_interval: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(10),
        }
    }
}

impl GossipConfig {
    /// A default configuration for `node_name` bound to `bind`.
    pub fn new(node_name: impl Into<String>, bind: SocketAddr) -> Self {
        GossipConfig {
            node_name: node_name.into(),
            bind,
            ..GossipConfig::default()
        }
    }

    /// Checks the configuration; the error names the bad field.
    pub fn validate(&self) -> Result<(), GossipError> {
        let bad = |field: &'static str, reason: String| Err(GossipError::Config { field, reason });
        if self.node_name.is_empty() {
            return bad("node_name", "must not be empty".into());
        }
        if self.node_name.len() > 128 {
            return bad("node_name", "must be at most 128 bytes".into());
        }
        for (i, key) in self.keys.iter().enumerate() {
            if let Err(e) = crypto::check_key_len(key) {
                return bad("keys", format!("key {i}: {e}"));
            }
        }
        if self.probe_interval.is_zero() {
            return bad("probe_interval", "must be positive".into());
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return bad(
                "probe_timeout",
                format!(
                    "must be positive and below probe_interval ({:?})",
                    self.probe_interval
                ),
            );
        }
        if self.suspicion_mult == 0 {
            return bad("suspicion_mult", "must be at least 1".into());
        }
        for (field, d) in [
            ("push_pull_interval", self.push_pull_interval),
            ("gossip_interval", self.gossip_interval),
            ("reap_after", self.reap_after),
            ("reconnect_interval", self.reconnect_interval),
            ("tcp_timeout", self.tcp_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be positive".into());
            }
        }
        let size = crate::wire::tags_size(&self.tags);
        if size > MAX_TAGS_BYTES {
            return Err(GossipError::TagsTooLarge(size));
        }
        if let Some(adv) = self.advertise {
            if adv.ip().is_unspecified() {
                return bad(
                    "advertise",
                    format!("{adv} is not an address other members can reach"),
                );
            }
        }
        Ok(())
    }

    /// Suspicion timeout for a pool of `n` live members (memberlist's
    /// `suspicionTimeout`).
    pub(crate) fn suspicion_timeout(&self, n: usize) -> Duration {
        let scale = (n.max(1) as f64).log10().max(1.0);
        self.probe_interval
            .mul_f64(f64::from(self.suspicion_mult) * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field() {
        let mut cfg = GossipConfig::new("a", "127.0.0.1:0".parse().unwrap());
        assert!(cfg.validate().is_ok());
        cfg.probe_timeout = cfg.probe_interval;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("probe_timeout"), "{err}");
        cfg.probe_timeout = Duration::from_millis(10);
        cfg.keys = vec![vec![0; 7]];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("keys") && err.contains("7"), "{err}");
        cfg.keys.clear();
        cfg.node_name.clear();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node_name"));
    }

    #[test]
    fn suspicion_scales_with_pool_size() {
        let cfg = GossipConfig::default();
        assert_eq!(cfg.suspicion_timeout(1), Duration::from_secs(4));
        assert_eq!(cfg.suspicion_timeout(10), Duration::from_secs(4));
        assert_eq!(cfg.suspicion_timeout(100), Duration::from_secs(8));
    }
}
