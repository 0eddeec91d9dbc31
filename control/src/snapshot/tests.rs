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

/// The tar stream inside `bytes`, with no checks.
fn tarball(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// The members of `bytes`, unpacked with no checks.
fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let tarball = tarball(bytes);
    let mut archive = tar::Archive::new(tarball.as_slice());
    let entries = archive.entries().unwrap();
    entries
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// A tar header for a regular file `name` declaring `size` bytes.
fn header(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Raw deflate of `bytes` from a fresh encoder, ending on a byte boundary
/// (a sync flush) and referring to nothing before it, so such segments can
/// be laid end to end.
fn deflate_segment(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.flush().unwrap();
    std::mem::take(e.get_mut())
}

/// A gzip bomb: `prefix`, then `mib` MiB of zero bytes, then `suffix`,
/// built from one compressed MiB repeated, in about a thousandth of the
/// unpacked size and without compressing it all. The CRC and length are
/// right, so only its size can be held against it.
fn bomb(prefix: &[u8], mib: u64, suffix: &[u8]) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let one = deflate_segment(&zeros);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_segment(prefix));
    let mut crc = flate2::Crc::new();
    crc.update(prefix);
    let mut zeros_crc = flate2::Crc::new();
    zeros_crc.update(&zeros);
    for _ in 0..mib {
        out.extend_from_slice(&one);
        crc.combine(&zeros_crc);
    }
    out.extend(deflate_segment(suffix));
    out.extend(
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best())
            .finish()
            .unwrap(),
    );
    crc.update(suffix);
    out.extend(crc.sum().to_le_bytes());
    out.extend(crc.amount().to_le_bytes());
    out
}

/// A tar's end: two zero blocks.
const TAR_END: [u8; 1024] = [0; 1024];

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

    // state.json streams and is parsed first; with it sound, meta.json's
    // error shows.
    let state = state_json(&self::state()).unwrap();
    let err = read(&signed(b"{\"ID\": ", &state)).unwrap_err();
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
    let tarball = tarball(&bytes);
    for at in (0..tarball.len()).step_by(7) {
        let mut damaged = tarball.clone();
        damaged[at] ^= 0x55;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&damaged).unwrap();
        let _ = read(&gz.finish().unwrap());
    }
}

#[test]
fn the_bomb_helper_makes_a_sound_gzip_stream() {
    let bytes = bomb(b"head", 3, b"tail");
    let out = tarball(&bytes);
    assert_eq!(out.len(), 8 + (3 << 20));
    assert!(out.starts_with(b"head") && out.ends_with(b"tail"));
    assert!(out[4..out.len() - 4].iter().all(|b| *b == 0));
}

#[test]
fn a_gzip_bomb_is_refused_by_its_declared_size_before_it_is_unpacked() {
    // 1 GiB of zeros in about 1 MB: state.json's header says so, and the
    // archive is refused on it, not after unpacking.
    let meta = meta_json(1, 1 << 30);
    let mut prefix = header(META, meta.len() as u64);
    prefix.extend(&meta);
    prefix.resize(prefix.len().next_multiple_of(512), 0);
    prefix.extend(header(STATE, 1 << 30));
    let bytes = bomb(&prefix, 1024, &TAR_END);
    assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
    let started = std::time::Instant::now();
    let err = read(&bytes).unwrap_err();
    let limit = bytes.len() as u64 * MAX_RATIO;
    assert_eq!(
        err,
        SnapshotError::MemberTooLarge {
            member: STATE.into(),
            size: 1 << 30,
            limit,
        }
    );
    assert_eq!(
        err.to_string(),
        format!("member state.json declares 1073741824 bytes, more than the {limit} allowed")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it was unpacked"
    );
}

#[test]
fn a_tar_header_declaring_a_huge_size_is_refused_before_reading_the_member() {
    // The header promises a terabyte and nothing follows: refused for the
    // size it declares, not as a truncated archive read until it ends.
    let bytes = archive_of_raw(&header(STATE, 1 << 40));
    assert_eq!(
        read(&bytes).unwrap_err(),
        SnapshotError::MemberTooLarge {
            member: STATE.into(),
            size: 1 << 40,
            limit: MIN_UNPACK_LIMIT,
        }
    );
    // The small members have a small limit of their own.
    let bytes = archive_of_raw(&header(SUMS, 2 << 20));
    assert_eq!(
        read(&bytes).unwrap_err(),
        SnapshotError::MemberTooLarge {
            member: SUMS.into(),
            size: 2 << 20,
            limit: 1 << 20,
        }
    );
    // And so do all members together.
    let mut raw = header(META, 16);
    raw.extend([b' '; 512]);
    raw.extend(header(STATE, MIN_UNPACK_LIMIT - 8));
    let err = read(&archive_of_raw(&raw)).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::MemberTooLarge { member, .. } if member == STATE),
        "{err}"
    );
}

/// `raw` tar bytes, gzipped as they are.
fn archive_of_raw(raw: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(raw).unwrap();
    gz.finish().unwrap()
}

#[test]
fn the_unpacked_stream_is_capped_whatever_the_headers_say() {
    // A sound archive followed by 100 MiB of zeros: every header is honest
    // and small, but the stream goes on past the limit.
    let (_, good) = write(&state(), 5, 3, now()).unwrap();
    let bytes = bomb(&tarball(&good), 100, b"");
    assert_eq!(unpack_limit(bytes.len()), MIN_UNPACK_LIMIT);
    assert_eq!(
        read(&bytes).unwrap_err(),
        SnapshotError::TooLarge(MIN_UNPACK_LIMIT)
    );
    // The same archive with a few zeros after it is fine.
    assert!(read(&bomb(&tarball(&good), 1, b"")).is_ok());
}

#[test]
fn unpack_limit_is_a_ratio_of_the_archive_between_two_bounds() {
    assert_eq!(unpack_limit(0), MIN_UNPACK_LIMIT);
    assert_eq!(unpack_limit(1 << 20), 256 << 20);
    assert_eq!(unpack_limit(64 << 20), MAX_UNPACKED);
    assert_eq!(unpack_limit(usize::MAX), MAX_UNPACKED);
}

#[test]
fn a_highly_redundant_real_archive_still_restores() {
    // Thousands of keys holding one config blob compress far better than
    // most snapshots, and still well inside the ratio.
    let mut data = state();
    let mut c = Changes::default();
    let flags: std::collections::BTreeMap<String, bool> =
        (0..80).map(|i| (format!("flag_{i}"), i % 3 == 0)).collect();
    let blob = serde_json::json!({ "flags": flags }).to_string();
    for i in 0..4_000u64 {
        let entry = DirEntry {
            key: format!("blobs/svc-{i}"),
            value: Some(blob.clone().into_bytes()),
            ..DirEntry::default()
        };
        data.kv_apply(100 + i, 0, KvOp::Set, &entry, &mut c)
            .unwrap();
    }
    let (meta, bytes) = write(&data, 4_100, 3, now()).unwrap();
    let ratio = tarball(&bytes).len() as u64 / bytes.len() as u64;
    assert!((20..MAX_RATIO / 2).contains(&ratio), "unpacks {ratio}:1");
    let snap = read(&bytes).unwrap();
    assert_eq!(snap.meta, meta);
    assert_eq!(snap.data, data);
}
