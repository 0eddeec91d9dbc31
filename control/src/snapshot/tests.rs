use super::*;
use crate::state::Changes;
use crate::structs::{DirEntry, KvOp, NodeService, RegisterRequest, Session};
use std::time::Duration;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn state() -> StateData {
    let mut d = StateData::default();
    let mut c = Changes::default();
    for (i, key) in ["app/a", "app/b", "other"].iter().enumerate() {
        let entry = DirEntry {
            key: key.to_string(),
            value: Some(format!("value of {key}").into_bytes()),
            ..DirEntry::default()
        };
        d.kv_apply(i as u64 + 1, 0, KvOp::Set, &entry, &mut c)
            .unwrap();
    }
    let gone = DirEntry {
        key: "app/b".into(),
        ..DirEntry::default()
    };
    d.kv_apply(4, 0, KvOp::Delete, &gone, &mut c).unwrap();
    let reg = RegisterRequest {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        service: Some(NodeService {
            id: "web-1".into(),
            service: "web".into(),
            port: 80,
            ..NodeService::default()
        }),
        ..RegisterRequest::default()
    };
    d.ensure_registration(5, 0, &reg, &mut c).unwrap();
    let session = Session {
        node: "n1".into(),
        id: "s1".into(),
        name: "lock".into(),
        behavior: "release".into(),
        ..Session::default()
    };
    d.create_session(6, &session, &mut c).unwrap();
    d
}

/// An archive of `members` as given, checksums and all.
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    pack_members(members, now()).unwrap()
}

/// A well-formed archive around a `meta.json` and `state.json` of our
/// choosing, with correct checksums.
fn signed(meta: &[u8], state: &[u8]) -> Vec<u8> {
    let sums = sums_file(&[(META, meta), (STATE, state)]);
    archive(&[(META, meta), (STATE, state), (SUMS, sums.as_bytes())])
}

fn meta_json(version: u64, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ID": "1-5-1", "Size": size, "Index": 5, "Term": 1, "Version": version,
        "Time": "2023-11-14T22:13:20Z", "MeshVersion": "0.1.0",
    }))
    .unwrap()
}

/// The members of `bytes`, unpacked with no checks.
fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    untar(&gunzip(bytes).unwrap()).unwrap()
}

#[test]
fn round_trip_keeps_every_table_and_the_meta() {
    let data = state();
    let (meta, bytes) = write(&data, 5, 3, now()).unwrap();
    assert_eq!(meta.id, "3-5-1700000000000");
    assert_eq!((meta.index, meta.term, meta.version), (5, 3, 1));
    assert_eq!(meta.time, "2023-11-14T22:13:20.000Z");
    let names: Vec<String> = members(&bytes).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [META, STATE, SUMS]);

    let snap = read(&bytes).unwrap();
    assert_eq!(snap.meta, meta);
    assert_eq!(snap.data, data, "every table, tombstones and indexes too");
    assert_eq!(snap.data.tombstones.get("app/b"), Some(&4));
    assert!(snap.data.sessions.contains_key("s1"));
    assert_eq!(snap.data.service_nodes("web", &[], false).len(), 1);
}

#[test]
fn sums_are_in_sha256sum_format() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    let m = members(&bytes);
    let sums = String::from_utf8(m[2].1.clone()).unwrap();
    let lines: Vec<&str> = sums.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], format!("{}  meta.json", sha256_hex(&m[0].1)));
    assert!(lines[1].ends_with("  state.json"));
    // The SHA-256 of "abc", from FIPS 180-2.
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn not_gzip_is_refused() {
    assert_eq!(read(b"").unwrap_err(), SnapshotError::NotGzip);
    assert_eq!(
        read(b"{\"not\": \"an archive\"}").unwrap_err(),
        SnapshotError::NotGzip
    );
}

#[test]
fn corrupt_gzip_is_refused() {
    let (_, mut bytes) = write(&state(), 5, 3, now()).unwrap();
    // The CRC-32 in the trailer.
    let at = bytes.len() - 6;
    bytes[at] ^= 0xff;
    let err = read(&bytes).unwrap_err();
    assert!(matches!(err, SnapshotError::Gzip(_)), "{err}");
    assert!(err.to_string().starts_with("bad gzip stream"), "{err}");
}

#[test]
fn truncated_archives_are_refused() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    for len in [bytes.len() / 2, bytes.len() - 4, 12] {
        let err = read(&bytes[..len]).unwrap_err();
        assert_eq!(err, SnapshotError::Truncated, "cut at {len}");
    }
    assert!(SnapshotError::Truncated.to_string().contains("truncated"));
}

#[test]
fn tampered_state_is_refused_by_its_checksum() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    let m = members(&bytes);
    let state = String::from_utf8(m[1].1.clone())
        .unwrap()
        .replace("s1", "s2");
    let tampered = archive(&[(META, &m[0].1), (STATE, state.as_bytes()), (SUMS, &m[2].1)]);
    let err = read(&tampered).unwrap_err();
    assert_eq!(err, SnapshotError::ChecksumMismatch(STATE));
    assert!(err.to_string().contains("checksum mismatch for state.json"));
}

#[test]
fn tampered_or_incomplete_sums_are_refused() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    let m = members(&bytes);
    let only_meta = format!("{}  meta.json\n", sha256_hex(&m[0].1));
    let err = read(&archive(&[
        (META, &m[0].1),
        (STATE, &m[1].1),
        (SUMS, only_meta.as_bytes()),
    ]))
    .unwrap_err();
    assert_eq!(
        err,
        SnapshotError::Sums("no checksum for state.json".into())
    );

    let garbage = archive(&[(META, &m[0].1), (STATE, &m[1].1), (SUMS, b"nope\n")]);
    let err = read(&garbage).unwrap_err().to_string();
    assert!(err.starts_with("SHA256SUMS: line 1"), "{err}");
}

#[test]
fn missing_and_unexpected_members_are_refused() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    let m = members(&bytes);
    let err = read(&archive(&[(META, &m[0].1), (SUMS, &m[2].1)])).unwrap_err();
    assert_eq!(err, SnapshotError::MissingMember(STATE));
    assert_eq!(err.to_string(), "missing member state.json");

    let err = read(&archive(&[(STATE, &m[1].1), (SUMS, &m[2].1)])).unwrap_err();
    assert_eq!(err, SnapshotError::MissingMember(META));

    let extra = archive(&[
        (META, &m[0].1),
        (STATE, &m[1].1),
        (SUMS, &m[2].1),
        ("evil.sh", b"rm -rf /"),
    ]);
    assert_eq!(
        read(&extra).unwrap_err(),
        SnapshotError::UnexpectedMember("evil.sh".into())
    );
    let twice = archive(&[(META, &m[0].1), (META, &m[0].1)]);
    assert_eq!(
        read(&twice).unwrap_err(),
        SnapshotError::UnexpectedMember(META.into())
    );
}

#[test]
fn other_versions_are_refused() {
    let state = state_json(&state()).unwrap();
    let err = read(&signed(&meta_json(2, state.len()), &state)).unwrap_err();
    assert_eq!(err, SnapshotError::UnsupportedVersion(2));
    assert_eq!(
        err.to_string(),
        "unsupported snapshot version 2 (this mesh reads version 1)"
    );
    assert!(read(&signed(&meta_json(1, state.len()), &state)).is_ok());

    let err = read(&signed(br#"{"Index": 5}"#, &state)).unwrap_err();
    assert!(
        err.to_string().contains("meta.json: bad JSON at Version"),
        "{err}"
    );
}

#[test]
fn bad_json_is_refused_with_its_path() {
    let state = br#"{"nodes": {}, "tombstones": {"app/x": "yesterday"}}"#;
    let err = read(&signed(&meta_json(1, state.len()), state)).unwrap_err();
    let SnapshotError::Json { member, path, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!((*member, path.as_str()), (STATE, "tombstones.app/x"));
    assert!(
        err.to_string()
            .starts_with("state.json: bad JSON at tombstones.app/x: invalid type"),
        "{err}"
    );

    let err = read(&signed(b"{\"ID\": ", state)).unwrap_err();
    assert!(
        err.to_string().starts_with("meta.json: bad JSON at ."),
        "{err}"
    );
}

#[test]
fn inconsistent_tables_are_refused() {
    let mut data = state();
    let mut e = data.kvs.remove("app/a").unwrap();
    e.key = "elsewhere".into();
    data.kvs.insert("app/a".into(), e);
    let state = state_json(&data).unwrap();
    let err = read(&signed(&meta_json(1, state.len()), &state)).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("kvs.app/a"), "{err}");

    let err = read(&signed(&meta_json(1, 3), &state)).unwrap_err();
    assert!(err.to_string().contains("Size 3"), "{err}");
}

#[test]
fn no_damage_panics() {
    let (_, bytes) = write(&state(), 5, 3, now()).unwrap();
    for len in 0..bytes.len() {
        assert!(read(&bytes[..len]).is_err(), "cut at {len}");
    }
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x55;
        // Some header bytes (mtime, OS) do not matter; none may panic.
        let _ = read(&damaged);
    }
    let tarball = gunzip(&bytes).unwrap();
    for at in (0..tarball.len()).step_by(7) {
        let mut damaged = tarball.clone();
        damaged[at] ^= 0x55;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&damaged).unwrap();
        let _ = read(&gz.finish().unwrap());
    }
}
