//! The server RPC port (8300) as a stranger on the network, a client agent
//! and a server find it, on an agent started with `-encrypt`: the gossip
//! key keys RPC too.

use crate::support::{eventually, write_file, Agent};
use mesh_control::raft::Command;
use mesh_control::rpc::handshake::{self, Role, RpcAuth, RpcKeys};
use mesh_control::rpc::wire::{Conn, WireError};
use mesh_control::rpc::{HttpExchange, Request, Response};
use mesh_control::state::{StateData, TxnKvOp, TxnOp};
use mesh_control::structs::{DirEntry, KvOp};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const OTHER_KEY: &str = "Wb0ZGQxUmUVV3CIXnpEDSSJM3bIzl6JEuUU+/LH0ejs=";

fn keys(key: &str) -> RpcAuth {
    RpcKeys::new(vec![mesh_gossip::parse_key(key).unwrap()]).into()
}

async fn open(port: u16, role: Role, keys: &RpcAuth) -> Result<Conn, WireError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    handshake::open(stream, role, keys).await
}

async fn ask(conn: &mut Conn, req: &Request) -> Response {
    conn.send(req).await.unwrap();
    conn.recv().await.unwrap()
}

fn refused(resp: Response) -> String {
    match resp {
        Response::Failed(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn kv_set(key: &str, len: usize) -> Request {
    Request::Apply(Command::Kv {
        op: KvOp::Set,
        entry: DirEntry {
            key: key.into(),
            value: Some(vec![b'x'; len]),
            ..DirEntry::default()
        },
        now_ms: 0,
    })
}

fn http_get(uri: &str) -> Request {
    Request::Http(HttpExchange {
        head: "GET".into(),
        uri: uri.into(),
        ..HttpExchange::default()
    })
}

/// Reads until the peer closes; what it sent. Fails after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .expect("the server closed the connection in time")
        .ok();
    got
}

#[tokio::test]
async fn strangers_are_refused_before_a_frame_and_clients_say_only_what_clients_need() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "limits.hcl",
        "limits {\n  rpc_handshake_timeout = \"1s\"\n  rpc_max_conns_per_client = 6\n}\n",
    );
    let config_dir = format!("-config-dir={}", dir.path().display());
    let a = Agent::start(&["-encrypt", KEY, &config_dir]);
    a.put_ok("/v1/kv/keep", "kept").await;
    let roots = a.get("/v1/connect/ca/roots").await.json();
    let port = a.server_port().await;

    // The old, unauthenticated protocol: the marker, then a frame that
    // would replace every table. The server refuses before parsing it.
    let wipe = serde_json::to_vec(&Request::Apply(Command::Restore {
        data: Box::new(StateData::default()),
    }))
    .unwrap();
    let mut stranger = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stranger.write_all(&[0x6d]).await.unwrap();
    stranger
        .write_all(&(wipe.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stranger.write_all(&wipe).await.unwrap();
    let answer = read_until_closed(&mut stranger, Duration::from_secs(10)).await;
    assert_eq!(answer.first(), Some(&1), "refused: {answer:?}");

    // No key, or another key: refused with the reason.
    let err = open(port, Role::Server, &RpcAuth::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("-encrypt"), "{err}");
    let err = open(port, Role::Server, &keys(OTHER_KEY))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("keyring"), "{err}");

    // A stranger that connects and says nothing is closed by the
    // handshake timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    read_until_closed(&mut silent, Duration::from_secs(15)).await;

    // A client agent holding the key: what a client forwards works...
    let mut client = open(port, Role::Client, &keys(KEY)).await.unwrap();
    let Response::Http(kv) = ask(&mut client, &http_get("/v1/kv/keep?raw")).await else {
        panic!("a forwarded read is answered");
    };
    assert_eq!(
        (kv.head.as_str(), kv.body.as_slice()),
        ("200", &b"kept"[..])
    );
    // ...and what only servers say is refused, changing nothing.
    let wipe = Request::Apply(Command::Restore {
        data: Box::new(StateData::default()),
    });
    for forged in [
        wipe,
        kv_set("forged", 3),
        Request::ReadIndex,
        Request::RemovePeer { id: 1 },
        http_get("/v1/agent/connect/ca/leaf/db"),
        http_get("/v1/%61gent/self"),
    ] {
        let why = refused(ask(&mut client, &forged).await);
        assert!(why.contains("client agent may not"), "{why}");
    }

    // A server holding the key may propose, but not what the API refuses.
    let mut server = open(port, Role::Server, &keys(KEY)).await.unwrap();
    let why = refused(ask(&mut server, &kv_set("big", 10 * 1024 * 1024)).await);
    assert!(why.contains("exceeds"), "{why}");
    let op = |i: usize| TxnOp {
        kv: TxnKvOp {
            verb: KvOp::Set,
            key: format!("txn/{i}"),
            value: Some(b"v".to_vec()),
            flags: 0,
            index: 0,
            session: String::new(),
        },
    };
    let txn = Request::Apply(Command::Txn {
        ops: (0..1000).map(op).collect(),
        now_ms: 0,
    });
    let why = refused(ask(&mut server, &txn).await);
    assert!(why.contains("too many operations"), "{why}");
    assert!(matches!(
        ask(&mut server, &kv_set("small", 5)).await,
        Response::Applied { .. }
    ));

    assert_eq!(a.get("/v1/kv/keep?raw").await.text, "kept");
    assert_eq!(a.get("/v1/kv/small?raw").await.text, "xxxxx");
    for absent in ["forged", "big", "txn/0"] {
        assert_eq!(a.get(&format!("/v1/kv/{absent}")).await.status, 404);
    }
    assert_eq!(a.get("/v1/connect/ca/roots").await.json(), roots);

    // Connections per client: six in all; the client above and five
    // more, and the seventh is refused until one closes.
    let mut held = vec![client];
    // Refused connections above free their slots as the server closes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 6 {
        match open(port, Role::Client, &keys(KEY)).await {
            Ok(c) => held.push(c),
            Err(e) => assert!(std::time::Instant::now() < deadline, "no room: {e}"),
        }
    }
    assert!(
        open(port, Role::Client, &keys(KEY)).await.is_err(),
        "a seventh connection from this address is refused"
    );
    held.pop();
    eventually(Duration::from_secs(10), "a slot frees up", || async {
        open(port, Role::Client, &keys(KEY)).await.ok()
    })
    .await;
    assert!(
        a.log_text().contains("rpc_max_conns_per_client"),
        "the refusal is logged"
    );
}

/// An open-mode hello (no key), written by hand as a stranger would.
async fn open_hello(port: u16, role: u8) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut hello = vec![0x6d, 2, role, 0];
    hello.extend([0u8; 8 + 32]);
    s.write_all(&hello).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), 0, "accepted");
    s
}

#[tokio::test]
async fn an_open_server_port_warns_and_still_bounds_what_it_reads() {
    let a = Agent::start(&[]);
    let log = eventually(Duration::from_secs(10), "the warning", || async {
        let log = a.log_text();
        log.contains("server RPC port is OPEN").then_some(log)
    })
    .await;
    assert!(log.contains("-encrypt"), "{log}");
    let port = a.server_port().await;

    // Headers declaring 512 MiB, then silence: memory follows the bytes
    // that arrive, not the header; nothing is even reserved for it.
    a.put_ok("/v1/kv/warm", "up").await;
    let (before, _) = a.rss_kib();
    let reserved = a.status_kib("VmSize:");
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = open_hello(port, 1).await;
        s.write_all(&(512u32 * 1024 * 1024).to_be_bytes())
            .await
            .unwrap();
        s.write_all(b"{\"Apply\"").await.unwrap();
        stalled.push(s);
    }
    // The server has read what was sent: a request after it is answered.
    let mut s = open_hello(port, 2).await;
    let req = serde_json::to_vec(&http_get("/v1/status/leader")).unwrap();
    s.write_all(&(req.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&req).await.unwrap();
    let len = s.read_u32().await.unwrap();
    assert!(len < 4096, "an answer of {len} bytes");
    let (after, peak) = a.rss_kib();
    assert!(
        after < before + 64 * 1024 && peak < before + 64 * 1024,
        "RSS went from {before} KiB to {after} KiB (peak {peak} KiB)"
    );
    let now_reserved = a.status_kib("VmSize:");
    assert!(
        now_reserved < reserved + 1024 * 1024,
        "4 headers of 512 MiB reserved {} KiB",
        now_reserved.saturating_sub(reserved)
    );

    // Even open, a client agent is held to what a client says.
    let wipe = serde_json::to_vec(&Request::Apply(Command::Restore {
        data: Box::new(StateData::default()),
    }))
    .unwrap();
    let mut s = open_hello(port, 2).await;
    s.write_all(&(wipe.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&wipe).await.unwrap();
    let len = s.read_u32().await.unwrap() as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let why = refused(serde_json::from_slice(&body).unwrap());
    assert!(
        why.contains("client agent may not propose Restore"),
        "{why}"
    );
    assert_eq!(a.get("/v1/kv/warm?raw").await.text, "up");
    drop(stalled);

    let keyed = Agent::start(&["-encrypt", KEY]);
    assert!(!keyed.log_text().contains("server RPC port is OPEN"));
}
