//! Gossip pools of real nodes on 127.0.0.1, ephemeral ports, short intervals.

mod encryption;
mod keyring;
mod membership;

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_gossip::{Gossip, GossipConfig, MemberStatus};

/// A fast test configuration for `name`.
pub fn cfg(name: &str) -> GossipConfig {
    let mut c = GossipConfig::new(name, "127.0.0.1:0".parse().unwrap());
    c.probe_interval = Duration::from_millis(200);
    c.probe_timeout = Duration::from_millis(100);
    c.suspicion_mult = 2;
    c.gossip_interval = Duration::from_millis(50);
    c.push_pull_interval = Duration::from_secs(2);
    c.tcp_timeout = Duration::from_secs(3);
    c.reap_after = Duration::from_secs(600);
    c.tags = BTreeMap::from([
        ("role".to_string(), "node".to_string()),
        ("id".to_string(), format!("id-{name}")),
    ]);
    c
}

/// Starts a node.
pub async fn start(c: GossipConfig) -> Gossip {
    Gossip::start(c).await.expect("start")
}

/// Starts `names` and joins each to the first.
pub async fn cluster(names: &[&str], tweak: impl Fn(&mut GossipConfig)) -> Vec<Gossip> {
    let mut nodes = Vec::new();
    for name in names {
        let mut c = cfg(name);
        tweak(&mut c);
        nodes.push(start(c).await);
    }
    let first = nodes[0].local_addr().to_string();
    for n in &nodes[1..] {
        assert_eq!(n.join(std::slice::from_ref(&first)).await.expect("join"), 1);
    }
    for n in &nodes {
        wait_status_all(n, names, MemberStatus::Alive).await;
    }
    nodes
}

/// `name`'s status as `g` sees it.
pub fn status(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

/// Polls `cond` every 20ms until it holds or 15s pass.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `cond` holds throughout `span` (for things that must not
/// happen, which no deadline can show).
pub async fn holds(what: &str, span: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        assert!(cond(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `g` sees `name` with status `want`.
pub async fn wait_status(g: &Gossip, name: &str, want: MemberStatus) {
    eventually(&format!("{} to see {name} {want}", g.name()), || {
        status(g, name) == Some(want)
    })
    .await;
}

/// Waits until `g` sees every one of `names` with status `want`.
pub async fn wait_status_all(g: &Gossip, names: &[&str], want: MemberStatus) {
    for n in names {
        wait_status(g, n, want).await;
    }
}
