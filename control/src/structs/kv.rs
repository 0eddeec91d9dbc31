//! Key/value entries and the operations on them.

use super::RaftIndex;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A key/value entry (Consul's `DirEntry`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DirEntry {
    /// How many times the key's lock has been acquired.
    pub lock_index: u64,
    /// The key.
    pub key: String,
    /// Opaque client flags.
    pub flags: u64,
    /// The value; base64 in JSON, `null` when absent.
    #[serde(with = "base64_value")]
    pub value: Option<Vec<u8>>,
    /// The session holding the key's lock, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Raft bookkeeping.
    #[serde(flatten)]
    pub raft: RaftIndex,
}

/// The verbs of a KV write, as in Consul's `api.KVOp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvOp {
    /// Write unconditionally.
    Set,
    /// Write if `ModifyIndex` matches (0: only if absent).
    Cas,
    /// Write and take the lock for `Session`.
    Lock,
    /// Write and release the lock held by `Session`.
    Unlock,
    /// Read (transactions only).
    Get,
    /// Read a subtree (transactions only).
    GetTree,
    /// Fail unless the index matches (transactions only).
    CheckIndex,
    /// Fail unless the session holds the lock (transactions only).
    CheckSession,
    /// Fail if the key exists (transactions only).
    CheckNotExists,
    /// Delete one key.
    Delete,
    /// Delete if `ModifyIndex` matches.
    DeleteCas,
    /// Delete a whole prefix.
    DeleteTree,
}

/// (De)serializes bytes as base64 text, `null` for none.
pub mod base64_value {
    use super::*;

    /// Writes base64 or null.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => s.serialize_none(),
        }
    }

    /// Reads base64 or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(t) => base64::engine::general_purpose::STANDARD
                .decode(t.as_bytes())
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("Value is not valid base64: {e}"))),
        }
    }
}
