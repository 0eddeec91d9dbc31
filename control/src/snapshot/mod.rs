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

/// The most bytes any archive may unpack to (a guard against gzip bombs).
pub const MAX_UNPACKED: u64 = 1 << 30;

/// The most an archive may unpack to per compressed byte. Deflate's best
/// is about 1032:1, which bombs approach; real snapshots unpack 16:1 (a
/// catalog with KV) to 47:1 (thousands of keys holding one config blob).
pub const MAX_RATIO: u64 = 256;

/// What any archive may unpack to, however small it is.
pub const MIN_UNPACK_LIMIT: u64 = 64 << 20;

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
    /// The archive unpacks to more than its [`unpack_limit`] (given).
    #[error(
        "archive unpacks to more than {0} bytes ({MAX_RATIO} times its size, \
         at most {MAX_UNPACKED})"
    )]
    TooLarge(u64),
    /// A member's tar header declares more than the archive may hold.
    #[error("member {member} declares {size} bytes, more than the {limit} allowed")]
    MemberTooLarge {
        /// The member.
        member: String,
        /// The size its header declares.
        size: u64,
        /// The most it may hold.
        limit: u64,
    },
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
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
///
/// The archive is read as a stream, never unpacked whole: each member's
/// declared size is checked against [`unpack_limit`] before it is read, the
/// decompressed stream stops at that limit, and `state.json` is parsed (and
/// hashed) as it streams, so a gzip bomb costs little memory whatever it
/// claims to hold.
pub fn read(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(SnapshotError::NotGzip);
    }
    let limit = unpack_limit(bytes.len());
    let mut stream = Capped::new(GzDecoder::new(bytes), limit);
    let unpacked = unpack(&mut stream, limit).and_then(|members| {
        // The rest of the gzip stream (its CRC and length) must hold too.
        std::io::copy(&mut stream, &mut std::io::sink())
            .map_err(|e| SnapshotError::Tar(e.to_string()))?;
        Ok(members)
    });
    // When the stream under the tar reader failed, that is the reason.
    let members = match stream.failure.take() {
        Some(failure) => return Err(failure),
        None => unpacked?,
    };
    let meta_json = members.meta.ok_or(SnapshotError::MissingMember(META))?;
    let state = members.state.ok_or(SnapshotError::MissingMember(STATE))?;
    let sums = members.sums.ok_or(SnapshotError::MissingMember(SUMS))?;
    verify_sums(
        &sums,
        &[(META, sha256_hex(&meta_json)), (STATE, state.sha256)],
    )?;
    let meta = parse_meta(&meta_json)?;
    if meta.size != state.len {
        return Err(SnapshotError::Invalid(format!(
            "{} bytes, but {META} says Size {}",
            state.len, meta.size
        )));
    }
    let mut data = state.data;
    data.validate_restore()
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    data.rebuild_derived();
    Ok(Snapshot { meta, data })
}

/// The most an archive of `compressed` bytes may unpack to: [`MAX_RATIO`]
/// times its size, at least [`MIN_UNPACK_LIMIT`] and at most
/// [`MAX_UNPACKED`].
pub fn unpack_limit(compressed: usize) -> u64 {
    (compressed as u64)
        .saturating_mul(MAX_RATIO)
        .clamp(MIN_UNPACK_LIMIT, MAX_UNPACKED)
}

fn json_error(member: &'static str, path: String, e: &serde_json::Error) -> SnapshotError {
    SnapshotError::Json {
        member,
        path,
        reason: e.to_string(),
    }
}

fn gzip_error(e: &std::io::Error) -> SnapshotError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
        _ => SnapshotError::Gzip(e.to_string()),
    }
}

/// A reader that yields at most `limit` bytes of `inner` and records why
/// it failed, so a gzip error or an archive past the limit is reported as
/// itself rather than as whatever the tar reader made of it.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
    failure: Option<SnapshotError>,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            limit,
            failure: None,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // At the limit, one more byte tells the end of the stream from an
        // archive that is too large.
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let want = want.max(1);
        match self.inner.read(&mut buf[..want]) {
            Ok(n) if n as u64 > self.left => {
                self.left = 0;
                let e = SnapshotError::TooLarge(self.limit);
                let io = std::io::Error::other(e.to_string());
                self.failure = Some(e);
                Err(io)
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.failure.get_or_insert_with(|| gzip_error(&e));
                Err(e)
            }
        }
    }
}

/// The members of an archive as they streamed past.
#[derive(Default)]
struct Members {
    meta: Option<Vec<u8>>,
    state: Option<StateMember>,
    sums: Option<Vec<u8>>,
}

/// `state.json`, parsed as it was read.
struct StateMember {
    len: u64,
    sha256: String,
    data: StateData,
}

/// The most `meta.json` or `SHA256SUMS` may hold.
const MAX_SMALL_MEMBER: u64 = 1 << 20;

/// Reads the tar stream: only regular files with the three known names,
/// each once, whose declared sizes fit `limit` before any is read.
fn unpack(stream: impl Read, limit: u64) -> Result<Members, SnapshotError> {
    let bad = |e: std::io::Error| SnapshotError::Tar(e.to_string());
    let mut archive = tar::Archive::new(stream);
    let mut members = Members::default();
    let mut declared: u64 = 0;
    // Raw entries: GNU long names and pax headers are refused as members
    // rather than read into memory by the tar reader.
    for entry in archive.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let seen = match name.as_str() {
            META => members.meta.is_some(),
            STATE => members.state.is_some(),
            SUMS => members.sums.is_some(),
            _ => true,
        };
        if seen || !entry.header().entry_type().is_file() {
            return Err(SnapshotError::UnexpectedMember(name));
        }
        let size = entry.size();
        declared = declared.saturating_add(size);
        let cap = if name == STATE {
            limit
        } else {
            MAX_SMALL_MEMBER
        };
        if size > cap || declared > limit {
            return Err(SnapshotError::MemberTooLarge {
                member: name,
                size,
                limit: cap.min(limit),
            });
        }
        match name.as_str() {
            STATE => members.state = Some(read_state(&mut entry)?),
            _ => {
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(bad)?;
                if name == META {
                    members.meta = Some(bytes);
                } else {
                    members.sums = Some(bytes);
                }
            }
        }
    }
    Ok(members)
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Parses `state.json` straight from the stream, hashing every byte of
/// it. A member that is not JSON is refused at once, not read to its end.
fn read_state(entry: impl Read) -> Result<StateMember, SnapshotError> {
    let hashing = Hashing {
        inner: entry,
        hasher: Sha256::new(),
        len: 0,
    };
    let mut buffered = std::io::BufReader::with_capacity(64 * 1024, hashing);
    let mut de = serde_json::Deserializer::from_reader(&mut buffered);
    let data: StateData = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| json_error(STATE, e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| json_error(STATE, ".".into(), &e))?;
    let hashing = buffered.into_inner();
    Ok(StateMember {
        len: hashing.len,
        sha256: hex(&hashing.hasher.finalize()),
        data,
    })
}

/// Checks each member's SHA-256 (hex) against the one `sums` lists.
fn verify_sums(sums: &[u8], members: &[(&'static str, String)]) -> Result<(), SnapshotError> {
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
    for (name, got) in members {
        let Some((_, want)) = listed.iter().find(|(n, _)| n == name) else {
            return Err(SnapshotError::Sums(format!("no checksum for {name}")));
        };
        if !want.eq_ignore_ascii_case(got) {
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
