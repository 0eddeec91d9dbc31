use mesh_gossip::{generate_key, parse_key, GossipConfig, MemberStatus};

use crate::{cfg, cluster, start, wait_status};

fn count(keys: &[(String, usize)], key: &str) -> usize {
    keys.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn install_use_remove_across_three_nodes() {
    let k1 = generate_key();
    let k2 = generate_key();
    let key1 = parse_key(&k1).unwrap();
    let nodes = cluster(&["a", "b", "c"], |c: &mut GossipConfig| {
        c.keys = vec![key1.clone()]
    })
    .await;
    let a = &nodes[0];

    let list = a.keyring_list().await.unwrap();
    assert_eq!((list.num_nodes, list.num_resp), (3, 3));
    assert_eq!(list.keys, vec![(k1.clone(), 3)]);

    let err = a.keyring_remove(&k1).await.unwrap_err().to_string();
    assert!(err.contains("primary"), "{err}");
    let err = a.keyring_use(&k2).await.unwrap_err().to_string();
    assert!(err.contains("not installed"), "{err}");

    a.keyring_install(&k2).await.unwrap();
    let list = a.keyring_list().await.unwrap();
    assert_eq!((count(&list.keys, &k1), count(&list.keys, &k2)), (3, 3));
    assert_eq!(list.primary_keys, vec![(k1.clone(), 3)]);

    // Ask another member to switch: the change is cluster-wide either way.
    nodes[1].keyring_use(&k2).await.unwrap();
    let list = a.keyring_list().await.unwrap();
    assert_eq!(list.primary_keys, vec![(k2.clone(), 3)]);
    for n in &nodes {
        assert_eq!(n.local_keys()[0], k2);
    }

    a.keyring_remove(&k1).await.unwrap();
    let list = a.keyring_list().await.unwrap();
    assert_eq!(list.keys, vec![(k2.clone(), 3)]);
    assert!(list.errors.is_empty());

    // Only the new key gets in now.
    let mut old = cfg("old");
    old.keys = vec![key1];
    let old = start(old).await;
    let err = old.join(&[a.local_addr().to_string()]).await.unwrap_err();
    assert!(err.is_encryption(), "{err}");
    let mut new = cfg("new");
    new.keys = vec![parse_key(&k2).unwrap()];
    let new = start(new).await;
    new.join(&[a.local_addr().to_string()]).await.unwrap();
    wait_status(&nodes[2], "new", MemberStatus::Alive).await;

    // Gossip still flows between the original members under the new key.
    wait_status(&nodes[2], "a", MemberStatus::Alive).await;
    for n in nodes.iter().chain([&old, &new]) {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn keyring_needs_encryption() {
    let a = start(cfg("a")).await;
    let err = a.keyring_list().await.unwrap_err().to_string();
    assert!(err.contains("encryption is not enabled"), "{err}");
    a.shutdown().await;
}
