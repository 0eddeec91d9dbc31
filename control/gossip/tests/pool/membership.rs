use std::collections::BTreeMap;
use std::time::Duration;

use mesh_gossip::{Gossip, MemberEventKind, MemberStatus};

use crate::{cfg, cluster, eventually, holds, start, status, wait_status};

#[tokio::test]
async fn three_nodes_join_through_each_other_and_see_tags() {
    let a = start(cfg("a")).await;
    let mut events = a.subscribe();
    let mut changes = a.changes();
    let b = start(cfg("b")).await;
    let c = start(cfg("c")).await;
    b.join(&[a.local_addr().to_string()]).await.unwrap();
    // c only knows b; it must learn about a (and a about c) through b.
    c.join(&[b.local_addr().to_string()]).await.unwrap();
    for node in [&a, &b, &c] {
        eventually("3 alive members with tags", || {
            let ms = node.members();
            ms.len() == 3
                && ms.iter().all(|m| {
                    m.status == MemberStatus::Alive
                        && m.tags.get("id") == Some(&format!("id-{}", m.name))
                        && m.tags.get("role").map(String::as_str) == Some("node")
                })
        })
        .await;
    }
    let addr_of_c = a
        .members()
        .into_iter()
        .find(|m| m.name == "c")
        .unwrap()
        .addr;
    assert_eq!(addr_of_c, c.local_addr());
    assert_eq!(MemberStatus::Alive.code(), 1);

    let mut joined = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.kind == MemberEventKind::Join {
            joined.push(e.member.name);
        }
    }
    joined.sort();
    assert_eq!(joined, vec!["b", "c"]);
    assert!(changes.has_changed().unwrap());
    let _ = changes.borrow_and_update();
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn graceful_leave_is_left_and_others_keep_going() {
    let nodes = cluster(&["a", "b", "c"], |_| {}).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    c.leave().await.unwrap();
    wait_status(a, "c", MemberStatus::Left).await;
    wait_status(b, "c", MemberStatus::Left).await;
    assert_eq!(status(c, "c"), Some(MemberStatus::Left));
    assert!(c
        .join(&[a.local_addr().to_string()])
        .await
        .unwrap_err()
        .is_shutdown());
    // The left node stays Left (never mistaken for a failure) while a and b
    // keep probing each other.
    holds("c Left, a and b alive", Duration::from_secs(1), || {
        status(a, "c") == Some(MemberStatus::Left)
            && status(a, "b") == Some(MemberStatus::Alive)
            && status(b, "a") == Some(MemberStatus::Alive)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_failed_then_reaped() {
    let nodes = cluster(&["a", "b", "c"], |c| c.reap_after = Duration::from_secs(2)).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    c.shutdown().await;
    wait_status(a, "c", MemberStatus::Failed).await;
    wait_status(b, "c", MemberStatus::Failed).await;
    eventually("c reaped on a and b", || {
        status(a, "c").is_none() && status(b, "c").is_none()
    })
    .await;
    assert_eq!(a.members().len(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn restarted_node_rejoins_alive() {
    let nodes = cluster(&["a", "b"], |_| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let old_addr = b.local_addr();
    b.shutdown().await;
    wait_status(a, "b", MemberStatus::Failed).await;

    // Same name, new port, new process life.
    let b2 = start(cfg("b")).await;
    assert_ne!(b2.local_addr(), old_addr);
    b2.join(&[a.local_addr().to_string()]).await.unwrap();
    eventually("a sees the new b alive at its new address", || {
        a.members()
            .iter()
            .any(|m| m.name == "b" && m.status == MemberStatus::Alive && m.addr == b2.local_addr())
    })
    .await;
    wait_status(&b2, "a", MemberStatus::Alive).await;
    // The old life going down later must not make the new one Failed.
    holds("b alive on a", Duration::from_millis(1500), || {
        status(a, "b") == Some(MemberStatus::Alive)
    })
    .await;

    // And a restart on the very same address works too.
    let addr = b2.local_addr();
    b2.shutdown().await;
    let mut c = cfg("b");
    c.bind = addr;
    let b3 = start(c).await;
    b3.join(&[a.local_addr().to_string()]).await.unwrap();
    eventually("a sees b alive again at the same address", || {
        a.members().iter().any(|m| {
            m.name == "b" && m.status == MemberStatus::Alive && m.generation > 0 && m.addr == addr
        })
    })
    .await;
    wait_status(&b3, "a", MemberStatus::Alive).await;
    a.shutdown().await;
    b3.shutdown().await;
}

#[tokio::test]
async fn force_leave_turns_failed_into_left_everywhere() {
    let nodes = cluster(&["a", "b", "c"], |_| {}).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let err = a.force_leave("nope").await.unwrap_err();
    assert!(err.is_unknown_member(), "{err}");
    c.shutdown().await;
    wait_status(a, "c", MemberStatus::Failed).await;
    wait_status(b, "c", MemberStatus::Failed).await;
    a.force_leave("c").await.unwrap();
    wait_status(a, "c", MemberStatus::Left).await;
    wait_status(b, "c", MemberStatus::Left).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn set_tags_propagates() {
    let nodes = cluster(&["a", "b", "c"], |_| {}).await;
    let tags = BTreeMap::from([
        ("role".to_string(), "consul".to_string()),
        ("dc".to_string(), "dc1".to_string()),
    ]);
    nodes[1].set_tags(tags.clone()).await.unwrap();
    for n in &nodes {
        eventually("new tags of b", || {
            n.members().iter().any(|m| m.name == "b" && m.tags == tags)
        })
        .await;
    }
    let huge = BTreeMap::from([("x".to_string(), "y".repeat(600))]);
    assert!(nodes[0].set_tags(huge).await.is_err());
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn join_reports_every_failure() {
    let a: Gossip = start(cfg("a")).await;
    // A port nobody listens on: bind and drop a listener to find one.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = a
        .join(&[free.to_string(), "no-such-host.invalid".to_string()])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&free.to_string()) && err.contains("no-such-host.invalid"),
        "{err}"
    );
    a.shutdown().await;
}
