//! `-data-dir`: acknowledged writes survive kill -9; snapshots compact the log.

use crate::support::{write_file, Agent};

#[tokio::test]
async fn kill_9_and_restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tempfile::tempdir().unwrap();
    // A low snapshot threshold so the run crosses several snapshots (the
    // concurrent writes share entries; the sequential ones take one each).
    write_file(cfg.path(), "raft.json", r#"{"raft_snapshot_threshold": 8}"#);
    let data_dir = format!("-data-dir={}", dir.path().display());
    let config_dir = format!("-config-dir={}", cfg.path().display());
    let args = [
        "-server",
        "-bootstrap",
        data_dir.as_str(),
        config_dir.as_str(),
        "-node=durable",
    ];

    let mut a = Agent::start(&args);
    let mut acked = Vec::new();
    // 300 writes, 100 in flight at once: within the agent's 200
    // connections per client (Consul's http_max_conns_per_client).
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let writes: Vec<_> = (0..300)
        .map(|i| {
            let client = a.client.clone();
            let url = format!("{}/v1/kv/durable/{i:04}", a.base);
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let _slot = in_flight.acquire_owned().await.ok()?;
                let r = client
                    .put(url)
                    .body(format!("value-{i}"))
                    .send()
                    .await
                    .ok()?;
                (r.status() == 200).then_some(i)
            })
        })
        .collect();
    for w in writes {
        if let Some(i) = w.await.unwrap() {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 300);
    for i in 300..340 {
        a.put_ok(&format!("/v1/kv/durable/{i:04}"), &format!("value-{i}"))
            .await;
        acked.push(i);
    }
    a.put_ok("/v1/agent/service/register", r#"{"Name":"kept","Port":1}"#)
        .await;
    let before = a.get("/v1/kv/durable?recurse").await;
    let id_before = a.get("/v1/agent/self").await.json()["Config"]["NodeID"].clone();
    a.kill9();
    assert!(
        dir.path().join("raft/snapshot.json").exists(),
        "a snapshot was taken"
    );

    let b = Agent::start(&args);
    let after = b.get("/v1/kv/durable?recurse").await;
    let id_after = b.get("/v1/agent/self").await.json()["Config"]["NodeID"].clone();
    assert_eq!(id_before, id_after, "the node ID is kept in the data dir");
    assert_eq!(after.status, 200);
    let entries = after.json();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 340);
    for i in acked {
        let e = entries
            .iter()
            .find(|e| e["Key"] == format!("durable/{i:04}"))
            .unwrap();
        assert_eq!(e["Value"].as_str().unwrap(), base64(&format!("value-{i}")));
    }
    assert_eq!(
        before.json(),
        after.json(),
        "indexes and values are identical"
    );
    assert!(after.index >= before.index);
    let kept = b.get("/v1/catalog/service/kept").await.json();
    assert_eq!(kept.as_array().unwrap().len(), 1);
    let local = b.get("/v1/agent/services").await.json();
    assert_eq!(
        local["kept"]["Port"], 1,
        "API registrations are restored locally"
    );
    b.put_ok("/v1/kv/after-restart", "ok").await;
    assert!(b.get("/v1/kv/after-restart").await.index > before.index);
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &x| acc << 8 | x as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
