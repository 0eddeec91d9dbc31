//! Three Raft servers in one process, talking over real TCP on loopback:
//! election, forwarding from followers, read-index, fail-over, and
//! membership changes.

use mesh_control::dns::{DnsConfig, DnsServer, StoreCatalog};
use mesh_control::raft::{Command, CommandResult, RaftConfig, RaftNode, ServerNode};
use mesh_control::rpc::handshake::{RpcAuth, RpcKeys};
use mesh_control::rpc::server::{serve, RpcHandlers, RpcLimits};
use mesh_control::server::ca::{CaManager, CSR_MAX_PER_SECOND};
use mesh_control::state::Store;
use mesh_control::structs::{DirEntry, KvOp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

struct Server {
    node: RaftNode,
    server: ServerNode,
    rpc: JoinHandle<()>,
}

/// The servers here speak keyed RPC, as a cluster with `-encrypt` does.
fn cluster_keys() -> RpcAuth {
    RpcKeys::new(vec![vec![7u8; 32]]).into()
}

impl Server {
    async fn start(name: &str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ServerNode {
            addr: listener.local_addr().unwrap().to_string(),
            name: name.into(),
            node_id: uuid::Uuid::new_v4().to_string(),
        };
        let store = Arc::new(Store::default());
        let node = RaftNode::start(
            RaftConfig {
                server: server.clone(),
                data_dir: None,
                snapshot_threshold: 1000,
                bootstrap_alone: false,
                auth: cluster_keys(),
            },
            store.clone(),
        )
        .await
        .unwrap();
        let handlers = RpcHandlers {
            node: node.clone(),
            http: axum::Router::new(),
            dns: Arc::new(DnsServer::new(
                DnsConfig::default(),
                Arc::new(StoreCatalog::new(store, "dc1".into())),
            )),
            ca: Arc::new(CaManager::new(node.clone(), CSR_MAX_PER_SECOND, "dc1")),
            auth: cluster_keys(),
            limits: RpcLimits::default(),
        };
        let rpc = tokio::spawn(serve(listener, handlers));
        Server { node, server, rpc }
    }

    /// What a kill does: the node stops answering and forgets nothing.
    async fn kill(self) {
        self.rpc.abort();
        self.node.shutdown().await;
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Kv {
        op: KvOp::Set,
        entry: DirEntry {
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            ..Default::default()
        },
        now_ms: 0,
    }
}

fn value(node: &RaftNode, key: &str) -> Option<String> {
    let data = node.store().read();
    let (_, entry) = data.kv_get(key);
    entry
        .and_then(|e| e.value)
        .map(|v| String::from_utf8(v).unwrap())
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cluster(n: usize) -> Vec<Server> {
    let mut servers = Vec::new();
    for i in 0..n {
        servers.push(Server::start(&format!("s{i}")).await);
    }
    let members: BTreeMap<u64, ServerNode> = servers
        .iter()
        .map(|s| (s.node.id(), s.server.clone()))
        .collect();
    for s in &servers {
        s.node.bootstrap(members.clone()).await.unwrap();
    }
    servers
}

fn leader_of(servers: &[Server]) -> Option<usize> {
    let leaders: Vec<usize> = (0..servers.len())
        .filter(|i| servers[*i].node.is_leader())
        .collect();
    (leaders.len() == 1).then(|| leaders[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_elect_forward_and_fail_over() {
    let mut servers = cluster(3).await;
    let leader = until("one leader", || leader_of(&servers)).await;
    let follower = (leader + 1) % 3;
    until("followers know the leader", || {
        servers
            .iter()
            .all(|s| s.node.leader().as_deref() == Some(&servers[leader].server.addr))
            .then_some(())
    })
    .await;

    // A write through a follower is forwarded and committed everywhere.
    let (index, _) = servers[follower].node.write(put("a", "1")).await.unwrap();
    assert!(index > 0);
    for s in &servers {
        until("replicated", || {
            (value(&s.node, "a").as_deref() == Some("1")).then_some(())
        })
        .await;
    }
    // A read-index on a follower waits for what the leader committed.
    servers[leader].node.write(put("b", "2")).await.unwrap();
    servers[follower].node.barrier().await.unwrap();
    assert_eq!(value(&servers[follower].node, "b").as_deref(), Some("2"));
    assert_eq!(servers[follower].node.peers().len(), 3);

    // The leader dies: the other two elect a new one, which serves writes,
    // and every acknowledged write is still there.
    let dead = servers.remove(leader);
    let dead_server = dead.server.clone();
    dead.kill().await;
    let new_leader = until("a new leader", || leader_of(&servers)).await;
    let other = 1 - new_leader;
    servers[other].node.write(put("c", "3")).await.unwrap();
    servers[new_leader].node.barrier().await.unwrap();
    for key in ["a", "b", "c"] {
        assert!(
            value(&servers[new_leader].node, key).is_some(),
            "{key} lost"
        );
    }

    // A replacement joins as a voter and catches up; the dead one is removed.
    let fresh = Server::start("s3").await;
    servers[other]
        .node
        .add_voter(fresh.node.id(), fresh.server.clone())
        .await
        .unwrap();
    until("the new server catches up", || value(&fresh.node, "c")).await;
    let dead_id = servers[new_leader]
        .node
        .configuration()
        .into_iter()
        .find(|s| s.node.name == dead_server.name)
        .map(|s| s.id)
        .expect("dead server still in the configuration");
    servers[other].node.remove_peer(dead_id).await.unwrap();
    until("three voters without the dead one", || {
        let peers = servers[new_leader].node.peers();
        (peers.len() == 3 && !peers.contains(&dead_server.addr)).then_some(())
    })
    .await;
    fresh.node.write(put("d", "4")).await.unwrap();
    servers.push(fresh);
    for s in &servers {
        until("d everywhere", || value(&s.node, "d")).await;
    }
}

/// Writes that arrive together, through the leader and a follower, are
/// committed in shared log entries (group commit), each with its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries() {
    let servers = cluster(3).await;
    let leader = until("one leader", || leader_of(&servers)).await;
    let follower = (leader + 1) % 3;
    until("the follower knows the leader", || {
        servers[follower].node.leader().map(|_| ())
    })
    .await;
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let node = servers[if i % 2 == 0 { leader } else { follower }]
                .node
                .clone();
            tokio::spawn(async move { node.write(put(&format!("k{i}"), &format!("v{i}"))).await })
        })
        .collect();
    let mut indexes = BTreeSet::new();
    for w in writes {
        let (index, result) = w.await.unwrap().unwrap();
        assert_eq!(result, CommandResult::Bool(true));
        indexes.insert(index);
    }
    assert!(
        indexes.len() < 200,
        "200 concurrent writes took {} entries",
        indexes.len()
    );
    servers[follower].node.barrier().await.unwrap();
    for i in 0..200 {
        let want = format!("v{i}");
        assert_eq!(
            value(&servers[follower].node, &format!("k{i}")).as_deref(),
            Some(want.as_str())
        );
    }
}

#[tokio::test]
async fn a_lone_uninitialized_server_has_no_leader() {
    let s = Server::start("alone").await;
    assert!(!s.node.is_initialized().await);
    assert!(s.node.leader().is_none());
}
