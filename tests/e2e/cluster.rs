//! Multi-process clusters on loopback: three servers that find each other
//! through gossip, elect a leader, replicate, survive losing the leader
//! under load without losing an acknowledged write, and catch a restarted
//! server up.

use crate::support::{
    client_agent, echo_server, eventually, instance, parked_queries, round_trip, Agent,
    MeshProcess, PROXY_WAIT,
};
use hickory_proto::rr::RecordType;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const FORM: Duration = Duration::from_secs(45);

/// A server's flags: `-server -bootstrap-expect=3`, its own data dir, and
/// whatever else the test adds (joins, pinned ports).
pub(crate) fn start_server(name: &str, dir: &TempDir, extra: &[String]) -> Agent {
    let mut args = vec![
        "-server".to_string(),
        "-bootstrap-expect=3".into(),
        format!("-node={name}"),
        format!("-data-dir={}", dir.path().display()),
    ];
    args.extend(extra.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&refs)
}

/// Starts three servers with `extra` flags; the second and third
/// retry-join the first.
fn three_servers(dirs: &[TempDir], extra: &[String]) -> Vec<Agent> {
    let s1 = start_server("s1", &dirs[0], extra);
    let mut joining = extra.to_vec();
    joining.push(format!("-retry-join=127.0.0.1:{}", s1.serf_lan));
    joining.push("-retry-interval=200ms".into());
    let s2 = start_server("s2", &dirs[1], &joining);
    let s3 = start_server("s3", &dirs[2], &joining);
    vec![s1, s2, s3]
}

async fn leader_of(a: &Agent) -> Option<String> {
    let r = a.get("/v1/status/leader").await;
    let leader = r.json().as_str()?.to_string();
    (r.status == 200 && !leader.is_empty()).then_some(leader)
}

/// Waits until every agent names the same leader and `voters` voters;
/// returns the leader's RPC address.
pub(crate) async fn agreed_leader(agents: &[&Agent], voters: usize) -> String {
    eventually(FORM, "servers agree on a leader", || async {
        let mut leaders = Vec::new();
        for a in agents {
            leaders.push(leader_of(a).await?);
            let peers = a.get("/v1/status/peers").await.json();
            if peers.as_array()?.len() != voters {
                return None;
            }
        }
        leaders.dedup();
        (leaders.len() == 1).then(|| leaders.remove(0))
    })
    .await
}

async fn index_of_leader(agents: &[Agent], leader: &str) -> usize {
    for (i, a) in agents.iter().enumerate() {
        if leader.ends_with(&format!(":{}", a.server_port().await)) {
            return i;
        }
    }
    panic!("no agent serves the leader {leader}");
}

/// Status of `node`'s serfHealth check as `a` reports it.
async fn serf_health(a: &Agent, node: &str) -> Option<String> {
    let checks = a.get(&format!("/v1/health/node/{node}?stale")).await.json();
    checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == "serfHealth")
        .and_then(|c| c["Status"].as_str().map(str::to_string))
}

/// Waits until `a` reports `node`'s serfHealth as `want`.
async fn until_serf_health(a: &Agent, node: &str, want: &str) {
    let what = format!("{node}'s serfHealth {want}");
    eventually(FORM, &what, || async {
        (serf_health(a, node).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// How many servers `a` lists as passing instances of the `consul` service.
async fn passing_servers(a: &Agent) -> usize {
    let consul = a.get("/v1/health/service/consul?passing").await.json();
    consul.as_array().map_or(0, Vec::len)
}

/// Writes `load/<n>` through the servers in turn until stopped, keeping the
/// writes that were acknowledged.
fn start_load(
    bases: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<u64, String>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut acked = BTreeMap::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let base = &bases[n as usize % bases.len()];
            let value = format!("v{n}");
            let resp = client
                .put(format!("{base}/v1/kv/load/{n:06}"))
                .body(value.clone())
                .send()
                .await;
            if let Ok(r) = resp {
                if r.status() == 200 && r.text().await.unwrap_or_default().trim() == "true" {
                    acked.insert(n, value);
                }
            }
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_elect_replicate_and_survive_losing_the_leader() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = three_servers(&dirs, &[]);
    let all: Vec<&Agent> = servers.iter().collect();
    let leader = agreed_leader(&all, 3).await;

    // Gossip: every server sees three alive servers.
    for s in &servers {
        eventually(FORM, "three alive members", || async {
            let members = s.get("/v1/agent/members").await.json();
            let alive = members
                .as_array()?
                .iter()
                .filter(|m| m["Status"] == 1 && m["Tags"]["role"] == "consul")
                .count();
            (alive == 3).then_some(())
        })
        .await;
    }
    let members = servers[0].cli_ok(&["members"]);
    for name in ["s1", "s2", "s3"] {
        assert!(
            members
                .lines()
                .any(|l| l.starts_with(name) && l.contains("alive") && l.contains("server")),
            "{members}"
        );
    }
    let peers = servers[1].cli_ok(&["operator", "raft", "list-peers"]);
    assert_eq!(peers.lines().count(), 4, "{peers}");
    assert_eq!(
        peers.lines().filter(|l| l.contains("leader")).count(),
        1,
        "{peers}"
    );
    let config = servers[2]
        .get("/v1/operator/raft/configuration")
        .await
        .json();
    assert_eq!(config["Servers"].as_array().unwrap().len(), 3, "{config}");

    // The leader reflects membership into the catalog.
    for name in ["s1", "s2", "s3"] {
        until_serf_health(&servers[0], name, "passing").await;
    }
    assert_eq!(passing_servers(&servers[0]).await, 3);

    // Writes through any server; consistent reads from any other.
    for (i, s) in servers.iter().enumerate() {
        s.put_ok(&format!("/v1/kv/via/{i}"), &format!("from-{i}"))
            .await;
        let other = &servers[(i + 1) % 3];
        let r = other.get(&format!("/v1/kv/via/{i}?consistent&raw")).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (200, format!("from-{i}").as_str())
        );
    }
    // A client agent joins through gossip. It holds only its own services
    // and checks; writes and reads go to the servers.
    let client_dir = tempfile::tempdir().unwrap();
    let mut client = client_agent("c1", client_dir.path(), &servers[1]).await;
    client
        .put_ok(
            "/v1/agent/service/register",
            r#"{"Name": "web", "ID": "web-c1", "Port": 8080}"#,
        )
        .await;
    client.put_ok("/v1/kv/from-client", "hello").await;
    let r = servers[2].get("/v1/kv/from-client?consistent&raw").await;
    assert_eq!(r.text, "hello");
    let r = client.get("/v1/kv/via/1?raw").await;
    assert_eq!((r.status, r.text.as_str()), (200, "from-1"));
    assert_eq!(r.headers["X-Consul-KnownLeader"], "true");
    let web = client.get("/v1/health/service/web?passing").await.json();
    assert_eq!(web[0]["Node"]["Node"], "c1", "{web}");
    // DNS on the client answers from the servers' catalog.
    let srv = crate::dns::query(client.dns, "web.service.consul.", RecordType::SRV).await;
    assert_eq!(crate::dns::srv_ports(&srv), [8080], "{srv:?}");
    let members = client.cli_ok(&["members"]);
    assert!(
        members
            .lines()
            .any(|l| l.starts_with("c1") && l.contains("alive") && l.contains("client")),
        "{members}"
    );
    // A blocking query through the client wakes on a write elsewhere.
    let index = client.get("/v1/kv/from-client").await.index;
    let watched = format!("/v1/kv/from-client?index={index}&wait=30s&raw");
    let watch = client.get(&watched);
    let write = async {
        eventually(FORM, "the forwarded query parked on a server", || async {
            for s in &servers {
                if parked_queries(s).await >= 1.0 {
                    return Some(());
                }
            }
            None
        })
        .await;
        servers[0].put_ok("/v1/kv/from-client", "changed").await;
    };
    let (woken, _) = tokio::join!(watch, write);
    assert_eq!(woken.text, "changed");
    assert!(woken.index > index);
    // A stale read on a follower says how fresh it is.
    let li = index_of_leader(&servers, &leader).await;
    let follower = &servers[(li + 1) % 3];
    let r = follower.get("/v1/kv/via/0?stale").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["X-Consul-KnownLeader"], "true");
    let contact: u64 = r.headers["X-Consul-LastContact"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(contact < 10_000, "last contact {contact}ms");

    // A follower takes a consistent snapshot (through the leader's read
    // index) that holds every write so far.
    let snap_dir = tempfile::tempdir().unwrap();
    let snap = snap_dir.path().join("cluster.snap").display().to_string();
    let saved = follower.cli_ok(&["snapshot", "save", &snap]);
    assert!(saved.contains("Saved and verified snapshot"), "{saved}");
    let inspected = follower.cli_ok(&["snapshot", "inspect", &snap]);
    assert!(inspected.contains("Index"), "{inspected}");

    // kill -9 the leader under a steady write load.
    let stop = Arc::new(AtomicBool::new(false));
    // The client agent takes a share of the load: it fails over to
    // another server when the one it sent to dies.
    let mut bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    bases.push(client.base.clone());
    let load = start_load(bases, stop.clone());
    let keys_before_kill = eventually(FORM, "load running", || async {
        let r = servers[li].get("/v1/kv/load/?keys&stale").await;
        if r.status != 200 {
            return None;
        }
        let keys = r.json().as_array()?.len();
        (keys >= 20).then_some(keys)
    })
    .await;
    let old_server_port = servers[li].server_port().await;
    let old_serf_port = servers[li].serf_lan;
    servers[li].kill9();
    let killed_at = Instant::now();
    let survivors: Vec<&Agent> = (0..3).filter(|i| *i != li).map(|i| &servers[i]).collect();
    let new_leader = eventually(FORM, "a new leader", || async {
        let mut leaders = Vec::new();
        for a in &survivors {
            leaders.push(leader_of(a).await?);
        }
        leaders.dedup();
        (leaders.len() == 1 && leaders[0] != leader).then(|| leaders.remove(0))
    })
    .await;
    let before = Arc::new(Mutex::new(0usize));
    eventually(FORM, "writes after the fail-over", || async {
        let r = survivors[0].get("/v1/kv/load/?keys&stale").await;
        let n = r.json().as_array().map_or(0, Vec::len);
        let mut b = before.lock().unwrap();
        if *b == 0 {
            *b = n;
        }
        (n >= *b + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    eprintln!(
        "{} writes acknowledged; new leader {new_leader} within {:?}",
        acked.len(),
        killed_at.elapsed()
    );
    // Writes were acknowledged after the kill too: more than the store held
    // when the leader died.
    assert!(
        acked.len() > keys_before_kill,
        "{} writes acknowledged, {keys_before_kill} stored before the kill",
        acked.len()
    );
    // Every acknowledged write is there, on both survivors.
    for s in &survivors {
        let all = s.get("/v1/kv/load/?recurse&consistent").await.json();
        let stored: BTreeMap<String, String> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let v = e["Value"].as_str().unwrap_or_default();
                let bytes = base64_decode(v);
                (
                    e["Key"].as_str().unwrap().to_string(),
                    String::from_utf8(bytes).unwrap(),
                )
            })
            .collect();
        for (n, value) in &acked {
            assert_eq!(
                stored.get(&format!("load/{n:06}")),
                Some(value),
                "acknowledged write {n} lost"
            );
        }
    }

    // Killed, the client's node fails: its service leaves ?passing.
    client.kill9();
    eventually(FORM, "the killed client's service critical", || async {
        let web = survivors[0]
            .get("/v1/health/service/web?passing")
            .await
            .json();
        let critical = serf_health(survivors[0], "c1").await.as_deref() == Some("critical");
        (web.as_array()?.is_empty() && critical).then_some(())
    })
    .await;

    // The dead server's node turns critical: its services leave ?passing.
    let dead = ["s1", "s2", "s3"][li];
    until_serf_health(survivors[0], dead, "critical").await;
    assert_eq!(passing_servers(survivors[1]).await, 2);

    // It restarts with its data dir, rejoins the members it knew (no join
    // flag: they are kept in the data dir) and catches up.
    servers[li] = start_server(
        dead,
        &dirs[li],
        &[
            format!("-server-port={old_server_port}"),
            format!("-serf-lan-port={old_serf_port}"),
        ],
    );
    let last = *acked.keys().last().unwrap();
    eventually(FORM, "the restarted server caught up", || async {
        let r = servers[li]
            .get(&format!("/v1/kv/load/{last:06}?stale&raw"))
            .await;
        (r.status == 200).then_some(())
    })
    .await;
    until_serf_health(&servers[li], dead, "passing").await;
    let all: Vec<&Agent> = servers.iter().collect();
    agreed_leader(&all, 3).await;
    let health = eventually(FORM, "autopilot healthy", || async {
        let h = servers[0].get("/v1/operator/autopilot/health").await.json();
        (h["Healthy"] == true).then_some(h)
    })
    .await;
    assert_eq!(health["FailureTolerance"], 1, "{health}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

fn mesh(args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::mesh_bin())
        .args(args)
        .output()
        .expect("run mesh")
}

/// Opens an RPC connection to `port` as a server holding `keys`.
async fn rpc_open(port: u16, keys: &[&str]) -> Result<(), mesh_control::rpc::wire::WireError> {
    use mesh_control::rpc::handshake::{open, Role, RpcAuth, RpcKeys};
    let keys = keys.iter().map(|k| mesh_gossip::parse_key(k).unwrap());
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    open(
        stream,
        Role::Server,
        &RpcAuth::from(RpcKeys::new(keys.collect())),
    )
    .await
    .map(drop)
}

async fn member_status(a: &Agent, name: &str) -> Option<u64> {
    let members = a.get("/v1/agent/members").await.json();
    members
        .as_array()?
        .iter()
        .find(|m| m["Name"] == name)
        .and_then(|m| m["Status"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_gossip_keyring_replacement_force_leave_and_graceful_leave() {
    let keygen = mesh(&["keygen"]);
    let key = String::from_utf8(keygen.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 44, "a base64 32-byte key: {key:?}");
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = three_servers(&dirs, &[format!("-encrypt={key}")]);
    let all: Vec<&Agent> = servers.iter().collect();
    agreed_leader(&all, 3).await;

    // A node with another key, or none, cannot join, and says why.
    let other = String::from_utf8(mesh(&["keygen"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    let join = format!("-join=127.0.0.1:{}", servers[0].serf_lan);
    for encrypt in [format!("-encrypt={other}"), String::new()] {
        let mut args = vec![
            "agent",
            "-dev",
            "-node=intruder",
            "-http-port=0",
            "-dns-port=0",
        ];
        args.extend(["-server-port=0", "-serf-lan-port=0", &join]);
        if !encrypt.is_empty() {
            args.push(&encrypt);
        }
        let out = mesh(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "an agent with the wrong key started");
        assert!(err.contains("-encrypt"), "{err}");
    }
    assert_eq!(member_status(&servers[0], "intruder").await, None);
    // The gossip key keys RPC too: without it no server's RPC port opens.
    let rpc_port = servers[1].server_port().await;
    for keys in [vec![], vec![other.as_str()]] {
        let err = rpc_open(rpc_port, &keys).await.err().unwrap();
        assert!(err.to_string().contains("refused"), "{err}");
    }
    assert!(rpc_open(rpc_port, &[key.as_str()]).await.is_ok());

    // Rotate the key across the pool.
    let new = String::from_utf8(mesh(&["keygen"]).stdout)
        .unwrap()
        .trim()
        .to_string();
    servers[1].cli_ok(&["keyring", "-install", &new]);
    servers[2].cli_ok(&["keyring", "-use", &new]);
    servers[0].cli_ok(&["keyring", "-remove", &key]);
    let list = servers[0].cli_ok(&["keyring", "-list"]);
    assert!(list.contains(&format!("{new} [3/3]")), "{list}");
    assert!(!list.contains(&key), "{list}");
    // RPC follows the keyring: the removed key no longer opens it.
    eventually(FORM, "RPC refuses the removed key", || async {
        rpc_open(rpc_port, &[key.as_str()])
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(rpc_open(rpc_port, &[new.as_str()]).await.is_ok());
    // s2 ran only the install: the use and remove it took from the others
    // are saved in its data dir too, for its next start.
    let saved = dirs[1].path().join("serf/local.keyring");
    eventually(
        FORM,
        "s2's saved keyring holds only the new key",
        || async {
            let text = std::fs::read_to_string(&saved).ok()?;
            (text.trim() == format!("[\"{new}\"]")).then_some(())
        },
    )
    .await;

    // A killed server is failed; once a new server replaces it, autopilot's
    // dead-server cleanup takes it out of the voters.
    let dead_rpc = format!("127.0.0.1:{}", servers[2].server_port().await);
    servers[2].kill9();
    eventually(FORM, "s3 failed", || async {
        (member_status(&servers[0], "s3").await == Some(4)).then_some(())
    })
    .await;
    let s4_dir = tempfile::tempdir().unwrap();
    let s4 = start_server(
        "s4",
        &s4_dir,
        &[
            format!("-encrypt={new}"),
            format!("-retry-join=127.0.0.1:{}", servers[0].serf_lan),
            "-retry-interval=200ms".into(),
        ],
    );
    let s4_rpc = format!("127.0.0.1:{}", s4.server_port().await);
    eventually(FORM, "s4 replaces s3 among the voters", || async {
        let peers = servers[0].get("/v1/status/peers").await.json();
        let peers: Vec<&str> = peers.as_array()?.iter().filter_map(Value::as_str).collect();
        (peers.len() == 3
            && peers.contains(&s4_rpc.as_str())
            && !peers.contains(&dead_rpc.as_str()))
        .then_some(())
    })
    .await;

    // Forced out, the failed node leaves the pool and the catalog.
    let forced = servers[0].cli(&["force-leave", "nobody"]);
    assert!(!forced.status.success());
    let removed = servers[0].cli(&["operator", "raft", "remove-peer", "-address=127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&removed.stderr);
    assert!(
        !removed.status.success() && err.contains("not found in the Raft configuration"),
        "{err}"
    );
    servers[0].cli_ok(&["force-leave", "s3"]);
    eventually(FORM, "s3 left and out of the catalog", || async {
        let left = member_status(&servers[1], "s3").await == Some(3);
        let node = servers[1].get("/v1/catalog/node/s3").await;
        (left && node.json().is_null()).then_some(())
    })
    .await;

    // s2 leaves gracefully: out of the pool, then out of Raft, so s1 and s4
    // still commit.
    servers[1].cli_ok(&["leave"]);
    assert!(
        servers[1].wait_exit(FORM).is_some(),
        "s2 did not exit after leave"
    );
    eventually(FORM, "s2 left, two voters", || async {
        let left = member_status(&servers[0], "s2").await == Some(3);
        let peers = servers[0].get("/v1/status/peers").await.json();
        (left && peers.as_array()?.len() == 2).then_some(())
    })
    .await;
    s4.put_ok("/v1/kv/after-leave", "still-writable").await;
    let r = servers[0].get("/v1/kv/after-leave?raw").await;
    assert_eq!(r.text, "still-writable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ttls_run_on_the_leader_and_renewals_through_followers_reach_it() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = three_servers(&dirs, &[]);
    let all: Vec<&Agent> = servers.iter().collect();
    let leader = agreed_leader(&all, 3).await;
    let li = index_of_leader(&servers, &leader).await;
    let (creator, renewer) = (&servers[(li + 1) % 3], &servers[(li + 2) % 3]);
    // A session needs its node's serfHealth, which the leader registers a
    // moment after it wins.
    until_serf_health(creator, &format!("s{}", (li + 1) % 3 + 1), "passing").await;

    let created = creator
        .put_ok("/v1/session/create", r#"{"TTL":"10s","LockDelay":"0s"}"#)
        .await
        .json();
    let id = created["ID"].as_str().unwrap().to_string();
    let info = format!("/v1/session/info/{id}?consistent");

    // Renewed every 4 s through the other follower for longer than the
    // 2 x TTL after which the leader destroys a session it has not seen
    // renewed: the renewals must reach the leader's timer.
    let mut every = tokio::time::interval(Duration::from_secs(4));
    let renew_until = Instant::now() + Duration::from_secs(28);
    while Instant::now() < renew_until {
        every.tick().await;
        let r = renewer.put(&format!("/v1/session/renew/{id}"), "").await;
        assert_eq!(r.status, 200, "renew: {}", r.text);
    }
    let alive = creator.get(&info).await.json();
    assert_eq!(
        alive[0]["ID"],
        id.as_str(),
        "destroyed while renewed: {alive}"
    );

    // Left alone, it expires: the leader's timer destroys it.
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(45),
        "the session's TTL expiry",
        || async { (renewer.get(&info).await.text.trim() == "[]").then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(12),
        "expired before 2 x TTL after the last renewal: {:?}",
        stopped.elapsed()
    );
}

/// A client agent's sidecar and client proxy keep following the servers
/// while each server in turn is killed and restarted: the client's long
/// polls and CSR signing move to a live server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_agent_proxies_follow_the_servers_through_server_failures() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = three_servers(&dirs, &[]);
    agreed_leader(&servers.iter().collect::<Vec<_>>(), 3).await;
    let client_dir = tempfile::tempdir().unwrap();
    let client = client_agent("c1", client_dir.path(), &servers[0]).await;
    let (sidecar, _) = instance(&client, "socat", "socat-1", echo_server().await).await;
    let web = MeshProcess::spawn(
        &client,
        &["proxy", "-service", "web", "-upstream", "socat:0"],
    );
    let upstream = web.wait_line("Upstream socat:", PROXY_WAIT);
    eventually(
        PROXY_WAIT,
        "an echo through the client's proxies",
        || async { round_trip(&upstream, b"up").await },
    )
    .await;

    for (i, name) in ["s1", "s2", "s3"].into_iter().enumerate() {
        let (rpc, serf) = (servers[i].server_port().await, servers[i].serf_lan);
        servers[i].kill9();
        let live = &servers[(i + 1) % 3];
        let leaf = client
            .get(&format!("/v1/agent/connect/ca/leaf/new-{i}"))
            .await;
        assert_eq!(
            leaf.status, 200,
            "a new leaf with {name} down: {}",
            leaf.text
        );
        live.cli_ok(&["intention", "create", "-deny", "web", "socat"]);
        let what = format!("the deny to reach the client's proxies with {name} down");
        eventually(PROXY_WAIT, &what, || async {
            round_trip(&upstream, b"x").await.is_none().then_some(())
        })
        .await;
        live.cli_ok(&["intention", "delete", "web", "socat"]);
        let what = format!("the allow to return with {name} down");
        eventually(PROXY_WAIT, &what, || async {
            round_trip(&upstream, b"back").await
        })
        .await;
        servers[i] = start_server(
            name,
            &dirs[i],
            &[
                format!("-server-port={rpc}"),
                format!("-serf-lan-port={serf}"),
            ],
        );
        agreed_leader(&servers.iter().collect::<Vec<_>>(), 3).await;
    }
    drop((web, sidecar));
}
