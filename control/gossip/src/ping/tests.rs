use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::{Gossip, GossipConfig, MemberStatus};

fn id(name: &str, port: u16, generation: u64) -> NodeId {
    NodeId {
        name: name.into(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        generation,
    }
}

#[test]
fn only_the_pinged_node_can_answer() {
    let target = id("b", 2, 5);
    assert!(speaks_for(&target, &target));
    assert!(speaks_for(&target, &id("b", 2, 6)), "a later life");
    assert!(!speaks_for(&target, &id("b", 2, 4)), "an earlier life");
    assert!(!speaks_for(&target, &id("c", 2, 5)), "another node");
    assert!(!speaks_for(&target, &id("b", 3, 5)), "another address");
}

// === pool test (needs the crate-private UDP fault injection) ===

/// suspicion_mult 3: a suspect is declared failed 600ms after a failed probe.
fn cfg(name: &str) -> GossipConfig {
    let mut c = GossipConfig::new(name, "127.0.0.1:0".parse().unwrap());
    c.probe_interval = Duration::from_millis(200);
    c.probe_timeout = Duration::from_millis(100);
    c.suspicion_mult = 3;
    c.gossip_interval = Duration::from_millis(50);
    c.push_pull_interval = Duration::from_secs(2);
    c.tcp_timeout = Duration::from_secs(3);
    c.reap_after = Duration::from_secs(600);
    c
}

fn status(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

/// Every member `g` knows, with its status and generation.
fn view(g: &Gossip) -> Vec<(String, MemberStatus, u64)> {
    g.members()
        .into_iter()
        .map(|m| (m.name, m.status, m.generation))
        .collect()
}

/// Polls `cond` every 20ms until it holds or 20s pass.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `cond` holds throughout `span`.
async fn holds(what: &str, span: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        assert!(cond(), "{what} stopped holding");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tcp_ping_keeps_a_member_with_blocked_udp_alive() {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Gossip::start(cfg(name)).await.unwrap());
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let seed = a.local_addr().to_string();
    b.join(std::slice::from_ref(&seed)).await.unwrap();
    c.join(std::slice::from_ref(&seed)).await.unwrap();
    for n in &nodes {
        eventually("all three alive everywhere", || {
            ["a", "b", "c"]
                .iter()
                .all(|m| status(n, m) == Some(MemberStatus::Alive))
        })
        .await;
    }
    let mut events: Vec<_> = nodes.iter().map(Gossip::subscribe).collect();
    let before: Vec<_> = nodes.iter().map(view).collect();

    // b hears nothing over UDP now: every probe of b fails, and so do b's
    // own probes (their acks are dropped). TCP still works both ways.
    b.shared.drop_inbound_udp.store(true, Ordering::Relaxed);
    let suspicion = cfg("x").suspicion_timeout(3);
    // Every suspicion is refuted in time with a higher incarnation: nobody
    // is declared failed, nobody rejoins as a new generation.
    holds(
        "every member alive, in the same life, everywhere",
        suspicion * 8,
        || nodes.iter().map(view).eq(before.iter().cloned()),
    )
    .await;
    for rx in &mut events {
        assert!(rx.try_recv().is_err(), "no member event at all");
    }
    // b's failing probes raised its health score, which slowed its probing.
    let score = b.health_score();
    assert!(score >= 2, "b's health score is {score}");

    // With UDP back, probes succeed and every score falls back to 0.
    b.shared.drop_inbound_udp.store(false, Ordering::Relaxed);
    eventually("health scores back to 0", || {
        nodes.iter().all(|n| n.health_score() == 0)
    })
    .await;

    // Control: with b really gone the TCP ping fails too, and b fails.
    b.shutdown().await;
    eventually("a and c to see b failed", || {
        status(a, "b") == Some(MemberStatus::Failed) && status(c, "b") == Some(MemberStatus::Failed)
    })
    .await;
    for n in &nodes {
        n.shutdown().await;
    }
}
