//! Snapshot archives: the file `mesh snapshot save` writes and
//! `PUT /v1/snapshot` restores.
//!
//! As Consul's, an archive is a gzipped tar holding the snapshot's metadata
//! (`meta.json`), the state (`state.json`: every table, as the Raft state
//! machine's own snapshots hold it) and a `SHA256SUMS` file covering both, in
//! the format `sha256sum -c` reads. [`read`] verifies everything before it
//! returns anything, so a corrupt, truncated or tampered archive is refused
//! with the reason ([`SnapshotError`]) and nothing is restored.
//!
//! ```text
//! snapshot.tgz ── gzip ── tar ─┬─ meta.json    {"ID","Size","Index","Term","Version","Time","MeshVersion"}
//!                              ├─ state.json   StateData
//!                              └─ SHA256SUMS   "<hex>  meta.json\n<hex>  state.json\n"
//! ```

use crate::state::StateData;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(test)]
mod tests;

/// The archive format this mesh writes and the only one it reads.
pub const FORMAT_VERSION: u64 = 1;

/// The metadata member.
pub const META: &str = "meta.json";
/// The state member.
pub const STATE: &str = "state.json";
/// The checksum member.
pub const SUMS: &str = "SHA256SUMS";

/// The most bytes an archive may unpack to (a guard against gzip bombs).
pub const MAX_UNPACKED: u64 = 1 << 30;

/// What `meta.json` says about a snapshot (`mesh snapshot inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SnapshotMeta {
    /// A unique ID, `<term>-<index>-<unix ms>` as Consul's.
    #[serde(rename = "ID")]
    pub id: String,
    /// The size of the state member, in bytes.
    pub size: u64,
    /// The Raft index of the last write the snapshot holds.
    pub index: u64,
    /// The Raft term when the snapshot was taken (0 if unknown).
    pub term: u64,
    /// The archive format ([`FORMAT_VERSION`]).
    pub version: u64,
    /// When the snapshot was taken, RFC 3339.
    pub time: String,
    /// The mesh version that wrote it.
    pub mesh_version: String,
}

/// A verified archive: its metadata and tables.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The metadata.
    pub meta: SnapshotMeta,
    /// Every table.
    pub data: StateData,
}

/// Why an archive was refused (or could not be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes do not start like a gzip stream.
    #[error("not a gzip archive (the file does not start with gzip's magic bytes)")]
    NotGzip,
    /// The gzip stream is damaged (bad header, bad deflate data, CRC mismatch).
    #[error("bad gzip stream: {0}")]
    Gzip(String),
    /// The gzip stream ends before it is complete.
    #[error("truncated archive: the gzip stream ends early")]
    Truncated,
    /// The archive unpacks to more than [`MAX_UNPACKED`] bytes.
    #[error("archive unpacks to more than {MAX_UNPACKED} bytes")]
    TooLarge,
    /// The unpacked stream is not a valid tar archive.
    #[error("bad tar archive: {0}")]
    Tar(String),
    /// A required member is absent.
    #[error("missing member {0}")]
    MissingMember(&'static str),
    /// A member this format does not have, or one present twice.
    #[error("unexpected member {0:?}")]
    UnexpectedMember(String),
    /// `SHA256SUMS` is malformed or does not cover a member.
    #[error("SHA256SUMS: {0}")]
    Sums(String),
    /// A member's SHA-256 differs from the one `SHA256SUMS` records.
    #[error("checksum mismatch for {0}: the archive was modified or damaged")]
    ChecksumMismatch(&'static str),
    /// `meta.json` names a format version this mesh does not read.
    #[error("unsupported snapshot version {0} (this mesh reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u64),
    /// A member is not the JSON it should be.
    #[error("{member}: bad JSON at {path}: {reason}")]
    Json {
        /// The member.
        member: &'static str,
        /// Where in the document (`.` for the top).
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// The tables decode but do not hang together.
    #[error("{STATE}: {0}")]
    Invalid(String),
    /// The archive could not be built.
    #[error("writing the archive: {0}")]
    Write(String),
}

impl SnapshotError {
    /// True when the archive itself is at fault (HTTP 400); false when
    /// writing one failed.
    pub fn is_bad_archive(&self) -> bool {
        !matches!(self, SnapshotError::Write(_))
    }
}

// === writing ===

/// Serializes the tables as the state member. Call it under the store's
/// read guard so the snapshot is one point in time.
pub fn state_json(data: &StateData) -> Result<Vec<u8>, SnapshotError> {
    serde_json::to_vec(data).map_err(|e| SnapshotError::Write(e.to_string()))
}

/// Builds an archive around a state member taken at Raft `index` in `term`.
pub fn pack(
    state: &[u8],
    index: u64,
    term: u64,
    now: SystemTime,
) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    let unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let meta = SnapshotMeta {
        id: format!("{term}-{index}-{unix_ms}"),
        size: state.len() as u64,
        index,
        term,
        version: FORMAT_VERSION,
        time: humantime::format_rfc3339_millis(now).to_string(),
        mesh_version: crate::VERSION.to_string(),
    };
    let meta_json =
        serde_json::to_vec_pretty(&meta).map_err(|e| SnapshotError::Write(e.to_string()))?;
    let sums = sums_file(&[(META, &meta_json), (STATE, state)]);
    let bytes = pack_members(
        &[(META, &meta_json), (STATE, state), (SUMS, sums.as_bytes())],
        now,
    )?;
    Ok((meta, bytes))
}

/// Serializes `data` and builds its archive: [`state_json`] then [`pack`].
pub fn write(
    data: &StateData,
    index: u64,
    term: u64,
    now: SystemTime,
) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    pack(&state_json(data)?, index, term, now)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `sha256sum`'s output for `members`.
fn sums_file(members: &[(&str, &[u8])]) -> String {
    members
        .iter()
        .map(|(name, bytes)| format!("{}  {name}\n", sha256_hex(bytes)))
        .collect()
}

/// Tars and gzips `members`, in order, as regular files stamped `now`.
fn pack_members(members: &[(&str, &[u8])], now: SystemTime) -> Result<Vec<u8>, SnapshotError> {
    let err = |e: std::io::Error| SnapshotError::Write(e.to_string());
    let mtime = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, *bytes).map_err(err)?;
    }
    let gz = tar.into_inner().map_err(err)?;
    let mut bytes = gz.finish().map_err(err)?;
    bytes.flush().map_err(err)?;
    Ok(bytes)
}

// === reading ===

/// Unpacks and verifies an archive: gzip, tar, the three members, their
/// checksums, the format version, the JSON of both documents and the
/// consistency of the tables. Nothing is returned unless all hold.
pub fn read(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let tarball = gunzip(bytes)?;
    let members = untar(&tarball)?;
    let member = |name: &'static str| {
        members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or(SnapshotError::MissingMember(name))
    };
    let (meta_json, state, sums) = (member(META)?, member(STATE)?, member(SUMS)?);
    verify_sums(sums, &[(META, meta_json), (STATE, state)])?;
    let meta = parse_meta(meta_json)?;
    if meta.size != state.len() as u64 {
        return Err(SnapshotError::Invalid(format!(
            "{} bytes, but {META} says Size {}",
            state.len(),
            meta.size
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(state);
    let mut data: StateData = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_error(STATE, e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| json_error(STATE, ".".into(), &e))?;
    data.validate_restore()
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    data.rebuild_derived();
    Ok(Snapshot { meta, data })
}

fn json_error(member: &'static str, path: String, e: &serde_json::Error) -> SnapshotError {
    SnapshotError::Json {
        member,
        path,
        reason: e.to_string(),
    }
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, SnapshotError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(SnapshotError::NotGzip);
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Gzip(e.to_string()),
        })?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(SnapshotError::TooLarge);
    }
    Ok(out)
}

/// The regular-file members of a tar archive, by name. Refuses unknown
/// names, duplicates and anything but regular files.
fn untar(tarball: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SnapshotError> {
    let bad = |e: std::io::Error| SnapshotError::Tar(e.to_string());
    let mut archive = tar::Archive::new(tarball);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let known = [META, STATE, SUMS].contains(&name.as_str());
        if !known
            || !entry.header().entry_type().is_file()
            || members.iter().any(|(n, _)| *n == name)
        {
            return Err(SnapshotError::UnexpectedMember(name));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        members.push((name, bytes));
    }
    Ok(members)
}

fn verify_sums(sums: &[u8], members: &[(&'static str, &[u8])]) -> Result<(), SnapshotError> {
    let text =
        std::str::from_utf8(sums).map_err(|_| SnapshotError::Sums("not UTF-8 text".into()))?;
    let mut listed: Vec<(&str, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed =
            || SnapshotError::Sums(format!("line {} is not \"<sha256>  <name>\"", n + 1));
        let (hash, name) = line.split_once(char::is_whitespace).ok_or_else(malformed)?;
        let name = name.trim_start().trim_start_matches('*');
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        listed.push((name, hash));
    }
    for (name, bytes) in members {
        let Some((_, want)) = listed.iter().find(|(n, _)| n == name) else {
            return Err(SnapshotError::Sums(format!("no checksum for {name}")));
        };
        if !want.eq_ignore_ascii_case(&sha256_hex(bytes)) {
            return Err(SnapshotError::ChecksumMismatch(name));
        }
    }
    Ok(())
}

/// Reads the version first, so a future format with other fields is
/// refused for its version rather than for its fields.
fn parse_meta(bytes: &[u8]) -> Result<SnapshotMeta, SnapshotError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| json_error(META, ".".into(), &e))?;
    let version = value.get("Version").ok_or_else(|| SnapshotError::Json {
        member: META,
        path: "Version".into(),
        reason: "missing field".into(),
    })?;
    match version.as_u64() {
        Some(FORMAT_VERSION) => {}
        Some(v) => return Err(SnapshotError::UnsupportedVersion(v)),
        None => {
            return Err(SnapshotError::Json {
                member: META,
                path: "Version".into(),
                reason: format!("expected an unsigned integer, found {version}"),
            })
        }
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| json_error(META, e.path().to_string(), e.inner()))
}
