//! Config entries: typed, validated documents stored by (Kind, Name) —
//! `service-intentions` now; routers, splitters, resolvers and defaults with
//! the L7 issue.
//!
//! An entry is kept as canonical JSON (PascalCase keys, Consul's spelling)
//! after its kind's validation, so the API returns what Consul would.

pub mod intentions;

use crate::structs::{keys::normalize, RaftIndex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds mesh accepts.
pub mod kind {
    /// Who may call whom (`service-intentions`).
    pub const SERVICE_INTENTIONS: &str = "service-intentions";
}

/// A stored config entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The kind, e.g. `service-intentions`.
    pub kind: String,
    /// The name (for intentions: the destination service, or `*`).
    pub name: String,
    /// The whole entry as canonical JSON, including `Kind` and `Name`.
    pub body: Value,
    /// Raft bookkeeping.
    pub raft: RaftIndex,
}

impl ConfigEntry {
    /// The entry as the API returns it: the body with its indexes.
    pub fn to_json(&self) -> Value {
        let mut v = self.body.clone();
        if let Value::Object(m) = &mut v {
            m.insert("CreateIndex".into(), self.raft.create_index.into());
            m.insert("ModifyIndex".into(), self.raft.modify_index.into());
        }
        v
    }
}

/// Decodes and validates an entry from any of Consul's spellings (JSON or
/// HCL-decoded, PascalCase or snake_case). The error names the bad field.
pub fn parse(value: Value) -> Result<ConfigEntry, String> {
    let mut body = normalize(value);
    let Value::Object(m) = &mut body else {
        return Err("config entry must be an object".into());
    };
    m.remove("CreateIndex");
    m.remove("ModifyIndex");
    let kind = m
        .get("Kind")
        .and_then(Value::as_str)
        .ok_or("config entry is missing Kind")?
        .to_string();
    let name = m
        .get("Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("config entry is missing Name")?
        .to_string();
    let body = match kind.as_str() {
        kind::SERVICE_INTENTIONS => intentions::validate(body)?,
        other => return Err(format!("invalid config entry kind: {other}")),
    };
    Ok(ConfigEntry {
        kind,
        name,
        body,
        raft: RaftIndex::default(),
    })
}

/// True for a kind mesh knows.
pub fn is_known_kind(kind: &str) -> bool {
    kind == kind::SERVICE_INTENTIONS
}
