use std::time::Duration;

use mesh_gossip::{generate_key, parse_key, Gossip, GossipConfig, MemberStatus};
use tokio::io::AsyncWriteExt;

use crate::{cfg, start, wait_status};

fn keyed(name: &str, key: &str) -> GossipConfig {
    let mut c = cfg(name);
    c.keys = vec![parse_key(key).unwrap()];
    c
}

async fn join_err(joiner: &Gossip, target: &Gossip) -> String {
    let err = joiner
        .join(&[target.local_addr().to_string()])
        .await
        .unwrap_err();
    assert!(err.is_encryption(), "not reported as a key problem: {err}");
    err.to_string()
}

#[tokio::test]
async fn mismatched_keys_fail_to_join_with_a_clear_error() {
    let k1 = generate_key();
    let a = start(keyed("a", &k1)).await;

    let wrong = start(keyed("wrong", &generate_key())).await;
    let err = join_err(&wrong, &a).await;
    assert!(err.contains("no installed key could decrypt"), "{err}");
    assert!(err.contains("-encrypt"), "{err}");

    let plain = start(cfg("plain")).await;
    let err = join_err(&plain, &a).await;
    assert!(
        err.contains("not encrypted") && err.contains("-encrypt"),
        "{err}"
    );

    // The keyed side joining an unencrypted node fails just as clearly.
    let keyed_b = start(keyed("b", &k1)).await;
    let err = join_err(&keyed_b, &plain).await;
    assert!(
        err.contains("encryption is not configured") && err.contains("key"),
        "{err}"
    );

    // With the right key it works, and the strangers never show up.
    keyed_b.join(&[a.local_addr().to_string()]).await.unwrap();
    wait_status(&a, "b", MemberStatus::Alive).await;
    wait_status(&keyed_b, "a", MemberStatus::Alive).await;
    assert!(a
        .members()
        .iter()
        .all(|m| m.name != "wrong" && m.name != "plain"));
    for n in [a, wrong, plain, keyed_b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn garbage_udp_and_tcp_is_ignored() {
    let key = generate_key();
    let a = start(keyed("a", &key)).await;
    let p = start(cfg("p")).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![0, 0, 1, 2, 3],
        vec![1; 40],
        vec![0xFF; 1500],
        (0..=255).collect(),
        vec![0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    ];
    for target in [a.local_addr(), p.local_addr()] {
        for g in &garbage {
            let _ = udp.send_to(g, target).await;
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = s.write_all(g).await;
            drop(s);
            // A length prefix promising far more than a frame may hold.
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            let _ = s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2]).await;
        }
        // A well-framed request that is not a request.
        let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
        let _ = s.write_all(&[0, 0, 0, 3, 0, 0xEE, 0xEE]).await;
    }

    // Both nodes still work: a keyed peer joins a, a plain peer joins p.
    let b = start(keyed("b", &key)).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        b.join(&[a.local_addr().to_string()]),
    )
    .await
    .unwrap()
    .unwrap();
    wait_status(&a, "b", MemberStatus::Alive).await;
    let q = start(cfg("q")).await;
    q.join(&[p.local_addr().to_string()]).await.unwrap();
    wait_status(&p, "q", MemberStatus::Alive).await;
    for n in [a, b, p, q] {
        n.shutdown().await;
    }
}
