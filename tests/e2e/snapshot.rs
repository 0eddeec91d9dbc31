//! `mesh snapshot save|restore|inspect` and `/v1/snapshot`: the whole state
//! comes back, parked queries wake, indexes only go forward, a restore
//! survives a restart, and a damaged archive is refused and changes nothing.

use crate::support::{eventually, parked_queries, Agent};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// `base64(text)`, as the KV API returns values.
fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The value of `key`, or `None` when it is absent.
async fn kv(a: &Agent, key: &str) -> Option<Value> {
    let r = a.get(&format!("/v1/kv/{key}")).await;
    match r.status {
        200 => Some(r.json()[0].clone()),
        404 => None,
        s => panic!("GET /v1/kv/{key}: {s} {}", r.text),
    }
}

/// Every index the responses and records so far have shown.
#[derive(Default)]
struct Seen(u64);

impl Seen {
    fn index(&mut self, i: u64) {
        self.0 = self.0.max(i);
    }

    fn entry(&mut self, e: &Value) {
        for f in ["CreateIndex", "ModifyIndex"] {
            self.index(e[f].as_u64().unwrap_or(0));
        }
    }
}

/// Checks that the state saved in the first test is what `a` serves.
async fn check_restored(a: &Agent) {
    let keep = kv(a, "app/keep").await.expect("app/keep");
    assert_eq!(keep["Value"], b64("v1"));
    assert!(kv(a, "app/deleted-later").await.is_some());
    assert!(kv(a, "app/new").await.is_none(), "written after the save");
    let db = a.get("/v1/catalog/service/db").await.json();
    assert_eq!(db.as_array().unwrap().len(), 1, "{db}");
    assert_eq!(db[0]["Node"], "ext-1");
    assert_eq!(db[0]["ServicePort"], 5432);
    let entry = a.get("/v1/config/service-defaults/db").await;
    assert_eq!(entry.status, 200, "{}", entry.text);
    assert_eq!(entry.json()["Protocol"], "http");
}

/// Parks `GET path?index=N&wait=60s` and returns its handle.
fn park(a: &Agent, path: &str, index: u64) -> tokio::task::JoinHandle<(u16, u64, String)> {
    let url = format!("{}{path}?index={index}&wait=60s", a.base);
    let client = a.client.clone();
    tokio::spawn(async move {
        let r = client.get(url).send().await.expect("blocking GET");
        let status = r.status().as_u16();
        let index = r
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (status, index, r.text().await.unwrap_or_default())
    })
}

#[tokio::test]
async fn restore_brings_the_saved_state_back_wakes_watchers_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data_dir = format!("-data-dir={}", dir.path().display());
    let args = ["-server", "-bootstrap", data_dir.as_str(), "-node=snap"];
    let mut a = Agent::start(&args);
    let mut seen = Seen::default();

    // The state to save: KV, a catalog node and service, a config entry.
    a.put_ok("/v1/kv/app/keep", "v1").await;
    a.put_ok("/v1/kv/app/deleted-later", "x").await;
    a.put_ok(
        "/v1/catalog/register",
        r#"{"Node":"ext-1","Address":"10.0.0.1","Service":{"ID":"db-1","Service":"db","Port":5432}}"#,
    )
    .await;
    a.put_ok(
        "/v1/config",
        r#"{"Kind":"service-defaults","Name":"db","Protocol":"http"}"#,
    )
    .await;
    let keep = kv(&a, "app/keep").await.unwrap();
    seen.entry(&keep);
    let before_save = a.get("/v1/catalog/service/db").await;
    seen.index(before_save.index);

    let file = work.path().join("backup.snap");
    let file_arg = file.display().to_string();
    let out = a.cli_ok(&["snapshot", "save", &file_arg]);
    let saved_at: u64 = out
        .trim()
        .strip_prefix("Saved and verified snapshot to index ")
        .unwrap_or_else(|| panic!("save said {out:?}"))
        .parse()
        .unwrap();
    assert!(
        saved_at >= before_save.index,
        "{saved_at} < {}",
        before_save.index
    );
    assert!(!work.path().join("backup.snap.part").exists());
    let inspect = a.cli_ok(&["snapshot", "inspect", &file_arg]);
    assert!(
        inspect.contains(&format!("Index    {saved_at}\n")),
        "{inspect}"
    );
    assert!(inspect.contains("Version  1\n"), "{inspect}");
    assert!(inspect.lines().any(|l| l.starts_with("ID ")), "{inspect}");

    // Change and delete things after the save.
    a.put_ok("/v1/kv/app/keep", "v2").await;
    assert_eq!(
        a.req("DELETE", "/v1/kv/app/deleted-later", None)
            .await
            .status,
        200
    );
    a.put_ok("/v1/kv/app/new", "n").await;
    a.put_ok("/v1/catalog/deregister", r#"{"Node":"ext-1"}"#)
        .await;
    let r = a
        .req("DELETE", "/v1/config/service-defaults/db", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keep = kv(&a, "app/keep").await.unwrap();
    seen.entry(&keep);
    seen.entry(&kv(&a, "app/new").await.unwrap());
    let db = a.get("/v1/catalog/service/db").await;
    assert_eq!(db.text, "[]");
    seen.index(db.index);

    // Watchers parked on what the restore will change.
    let on_key = park(&a, "/v1/kv/app/keep", keep["ModifyIndex"].as_u64().unwrap());
    let on_service = park(&a, "/v1/catalog/service/db", db.index);
    eventually(Duration::from_secs(10), "both queries parked", || async {
        (parked_queries(&a).await >= 2.0).then_some(())
    })
    .await;
    assert!(!on_key.is_finished() && !on_service.is_finished());

    let out = a.cli_ok(&["snapshot", "restore", &file_arg]);
    assert_eq!(out.trim(), "Restored snapshot");

    // Both wake, with the restored data and an index past every one seen.
    let (status, index, body) = tokio::time::timeout(Duration::from_secs(5), on_key)
        .await
        .expect("the KV watcher woke")
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&b64("v1")), "{body}");
    assert!(
        index > seen.0,
        "KV index {index} after restore, {} seen",
        seen.0
    );
    let (status, index, body) = tokio::time::timeout(Duration::from_secs(5), on_service)
        .await
        .expect("the catalog watcher woke")
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("db-1"), "{body}");
    assert!(
        index > seen.0,
        "catalog index {index} after restore, {} seen",
        seen.0
    );
    let restored_at = index;

    // The saved state is back, through the HTTP API.
    check_restored(&a).await;
    let keep = kv(&a, "app/keep").await.unwrap();
    assert!(keep["ModifyIndex"].as_u64().unwrap() > seen.0);
    seen.entry(&keep);
    seen.index(restored_at);

    // A later write is newer than everything seen, before or at the restore.
    a.put_ok("/v1/kv/app/after", "a").await;
    let after = kv(&a, "app/after").await.unwrap();
    assert!(
        after["ModifyIndex"].as_u64().unwrap() > seen.0,
        "{after} vs {}",
        seen.0
    );
    seen.entry(&after);

    // The restore is in the log: it survives kill -9 and a restart.
    a.kill9();
    let b = Agent::start(&args);
    eventually(
        Duration::from_secs(30),
        "the restarted agent serves KV",
        || async { (b.get("/v1/kv/app/after").await.status == 200).then_some(()) },
    )
    .await;
    check_restored(&b).await;
    let after_restart = b.get("/v1/kv/app/after").await;
    assert!(after_restart.index >= seen.0);
}

/// Rebuilds `archive` with `edit` applied to its `member`, leaving the
/// other members (and so `SHA256SUMS`) as they were.
fn tamper(archive: &[u8], member: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut tarball = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut tarball)
        .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(tarball.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == member {
            bytes = edit(bytes);
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        out.append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&out.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn damaged_snapshots_are_refused_with_the_reason_and_change_nothing() {
    let a = Agent::start(&[]);
    let work = tempfile::tempdir().unwrap();
    a.put_ok("/v1/kv/guarded", "1").await;

    // The HTTP endpoint, as Consul's: a gzip body with the index.
    let r = a
        .client
        .get(format!("{}/v1/snapshot?stale", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-gzip");
    let index: u64 = r.headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index >= a.get("/v1/kv/guarded").await.index);
    let good = r.bytes().await.unwrap().to_vec();

    a.put_ok("/v1/kv/guarded", "2").await;
    let before = a.get("/v1/kv/guarded").await;
    let before_index = before.index;

    let flipped = tamper(&good, "state.json", |s| {
        String::from_utf8(s)
            .unwrap()
            .replace(&b64("1"), &b64("9"))
            .into_bytes()
    });
    let meta_edited = tamper(&good, "meta.json", |m| {
        String::from_utf8(m)
            .unwrap()
            .replace("\"Version\": 1", "\"Version\": 7")
            .into_bytes()
    });
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("tampered.snap", flipped, "checksum mismatch for state.json"),
        (
            "truncated.snap",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "plain.snap",
            b"not a snapshot".to_vec(),
            "not a gzip archive",
        ),
        ("meta.snap", meta_edited, "checksum mismatch for meta.json"),
        ("empty.snap", Vec::new(), "not a gzip archive"),
    ];
    for (name, bytes, reason) in cases {
        let file = write(work.path(), name, &bytes);
        let out = a.cli(&["snapshot", "restore", &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was restored");
        assert!(
            stderr.contains("Error restoring snapshot") && stderr.contains("400"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(reason), "{name}: {stderr}");
        let out = a.cli(&["snapshot", "inspect", &file]);
        assert!(!out.status.success(), "{name} inspected");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{name}"
        );
    }

    // Bodies past axum's default 2 MB limit reach the archive checks.
    let mut big = vec![0x1f, 0x8b];
    big.resize(3 * 1024 * 1024, 0);
    let r = a
        .client
        .put(format!("{}/v1/snapshot", a.base))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("Invalid snapshot: bad gzip stream"));

    // Nothing changed: same value, same index.
    let after = a.get("/v1/kv/guarded").await;
    assert_eq!(after.text, before.text);
    assert_eq!(after.index, before_index);
    assert_eq!(a.get("/v1/kv/?recurse").await.index, before_index);

    // The untouched archive still restores.
    let file = write(work.path(), "good.snap", &good);
    assert_eq!(
        a.cli_ok(&["snapshot", "restore", &file]).trim(),
        "Restored snapshot"
    );
    assert_eq!(kv(&a, "guarded").await.unwrap()["Value"], b64("1"));
}

/// Raw deflate of `bytes` from a fresh encoder, ending on a byte boundary
/// and referring to nothing before it, so such segments can be laid end to
/// end.
fn deflate_segment(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.flush().unwrap();
    std::mem::take(e.get_mut())
}

/// A gzip bomb of about 1 MB: a snapshot whose `state.json` is 1 GiB of
/// zeros (as its tar header says), made of one compressed MiB repeated,
/// with the right CRC and length.
fn gzip_bomb() -> Vec<u8> {
    const MIB: u64 = 1024;
    let meta = br#"{"ID":"1-5-1","Size":1073741824,"Index":5,"Term":1,"Version":1,"Time":"2023-11-14T22:13:20Z","MeshVersion":"0.1.0"}"#;
    let mut prefix = Vec::new();
    for (name, size) in [("meta.json", meta.len() as u64), ("state.json", MIB << 20)] {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(size);
        h.set_mode(0o600);
        h.set_cksum();
        prefix.extend(h.as_bytes());
        if name == "meta.json" {
            prefix.extend(meta);
            prefix.resize(prefix.len().next_multiple_of(512), 0);
        }
    }
    let zeros = vec![0u8; 1 << 20];
    let one = deflate_segment(&zeros);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_segment(&prefix));
    let mut crc = flate2::Crc::new();
    crc.update(&prefix);
    let mut zeros_crc = flate2::Crc::new();
    zeros_crc.update(&zeros);
    for _ in 0..MIB {
        out.extend_from_slice(&one);
        crc.combine(&zeros_crc);
    }
    // The tar's end, and the last deflate block.
    out.extend(deflate_segment(&[0; 1024]));
    crc.update(&[0; 1024]);
    out.extend(
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best())
            .finish()
            .unwrap(),
    );
    out.extend(crc.sum().to_le_bytes());
    out.extend(crc.amount().to_le_bytes());
    out
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_before_it_is_unpacked_and_a_real_archive_still_restores() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/kv/guarded", "1").await;
    let r = a
        .client
        .get(format!("{}/v1/snapshot", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let good = r.bytes().await.unwrap().to_vec();
    a.put_ok("/v1/kv/guarded", "2").await;
    let before = a.get("/v1/kv/guarded").await;

    // Four bombs at once, each 1 GiB unpacked: refused by the size their
    // headers declare, before any of it is unpacked.
    let bomb = gzip_bomb();
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let started_kib = a.rss_kib().1;
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let put = a
                .client
                .put(format!("{}/v1/snapshot", a.base))
                .body(bomb.clone());
            tokio::spawn(async move {
                let r = put.send().await.expect("PUT /v1/snapshot");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            })
        })
        .collect();
    for upload in uploads {
        let (status, text) = upload.await.unwrap();
        assert_eq!(status, 400, "{text}");
        assert!(
            text.starts_with("Invalid snapshot: member state.json declares 1073741824 bytes"),
            "{text}"
        );
    }
    // Unfixed, each upload buffered 1 GiB: a peak over 4 GB.
    let peak_kib = a.rss_kib().1;
    eprintln!("agent peak RSS: {started_kib} KiB before the bombs, {peak_kib} KiB after");
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");

    // Nothing changed, and the real archive restores.
    let after = a.get("/v1/kv/guarded").await;
    assert_eq!((after.text, after.index), (before.text, before.index));
    let r = a
        .client
        .put(format!("{}/v1/snapshot", a.base))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(kv(&a, "guarded").await.unwrap()["Value"], b64("1"));
}
