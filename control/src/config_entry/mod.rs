//! Config entries: typed, validated documents stored by (Kind, Name).
//!
//! Kinds: `proxy-defaults`, `service-defaults` (protocols and upstream
//! defaults), `service-resolver`, `service-splitter`, `service-router` (the
//! discovery chain, compiled by [`crate::discovery_chain`]) and
//! `service-intentions` (who may call whom, with L7 permissions). One module
//! per kind holds its serde structs and the checks Consul makes on a single
//! entry; the checks across entries (a splitter on a tcp service, a subset
//! the resolver does not define) are the discovery chain compiler's.
//!
//! An entry is kept as canonical JSON (PascalCase keys, Consul's spelling)
//! after its kind's validation, so the API returns what Consul would.

pub mod http;
pub mod intentions;
pub mod proxy_defaults;
pub mod service_defaults;
pub mod service_resolver;
pub mod service_router;
pub mod service_splitter;

use crate::structs::{keys::normalize, RaftIndex};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The kinds mesh accepts.
pub mod kind {
    /// Global proxy settings (`proxy-defaults`, always named `global`).
    pub const PROXY_DEFAULTS: &str = "proxy-defaults";
    /// Per-service settings such as the protocol (`service-defaults`).
    pub const SERVICE_DEFAULTS: &str = "service-defaults";
    /// Which instances serve a service (`service-resolver`).
    pub const SERVICE_RESOLVER: &str = "service-resolver";
    /// Weighted traffic splits (`service-splitter`).
    pub const SERVICE_SPLITTER: &str = "service-splitter";
    /// L7 routes (`service-router`).
    pub const SERVICE_ROUTER: &str = "service-router";
    /// Who may call whom (`service-intentions`).
    pub const SERVICE_INTENTIONS: &str = "service-intentions";

    /// Every kind, in the order Consul lists them.
    pub const ALL: &[&str] = &[
        SERVICE_DEFAULTS,
        PROXY_DEFAULTS,
        SERVICE_ROUTER,
        SERVICE_SPLITTER,
        SERVICE_RESOLVER,
        SERVICE_INTENTIONS,
    ];

    /// The kinds that shape a discovery chain.
    pub const CHAIN: &[&str] = &[
        PROXY_DEFAULTS,
        SERVICE_DEFAULTS,
        SERVICE_RESOLVER,
        SERVICE_SPLITTER,
        SERVICE_ROUTER,
    ];
}

/// The protocols a service may speak (`Protocol` of `service-defaults`,
/// `Config.protocol` of `proxy-defaults`).
pub const PROTOCOLS: &[&str] = &["tcp", "http", "http2", "grpc"];

/// True for the protocols routers and splitters may be used with.
pub fn is_http_like(protocol: &str) -> bool {
    matches!(protocol, "http" | "http2" | "grpc")
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

/// Why an entry was refused. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The body is not a JSON object.
    #[error("config entry must be an object")]
    NotAnObject,
    /// `Kind` or `Name` is missing or empty.
    #[error("config entry is missing {0}")]
    Missing(&'static str),
    /// The kind is not one mesh knows.
    #[error("invalid config entry kind: {0}")]
    UnknownKind(String),
    /// A field is malformed or has a bad value.
    #[error("{kind} {name:?}: {}", .error)]
    Invalid {
        /// The entry's kind.
        kind: String,
        /// The entry's name.
        name: String,
        /// The field and the reason.
        error: FieldError,
    },
}

impl EntryError {
    /// The bad field, for an [`EntryError::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            EntryError::Invalid { error, .. } => Some(&error.field),
            _ => None,
        }
    }
}

/// One bad field of an entry: its path (`Splits[1].Weight`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if .field.is_empty() { String::new() } else { format!("{}: ", .field) })]
pub struct FieldError {
    /// The field's path within the entry; empty for the whole entry.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A bad `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from the parent `prefix` (`Routes[0]` +
    /// `Match.HTTP.PathExact`).
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        FieldError { field, ..self }
    }
}

/// A kind whose body (without the envelope of `Kind`, `Name`, `Meta`,
/// `Namespace`, `Partition`) decodes into `Self`.
pub trait KindSpec: Serialize + DeserializeOwned {
    /// The kind's name, e.g. `service-splitter`.
    const KIND: &'static str;

    /// Puts the entry in canonical form (upper-case methods, rounded
    /// weights) before it is validated and stored.
    fn normalize(&mut self) {}

    /// Checks the entry named `name`, naming the bad field.
    fn validate(&self, name: &str) -> Result<(), FieldError>;
}

/// The fields every kind shares.
const ENVELOPE: &[&str] = &["Kind", "Name", "Meta", "Namespace", "Partition"];

/// Decodes a stored (or proposed) entry of kind `K`.
pub fn decode<K: KindSpec>(entry: &ConfigEntry) -> Result<K, EntryError> {
    let invalid = |error| EntryError::Invalid {
        kind: entry.kind.clone(),
        name: entry.name.clone(),
        error,
    };
    let Value::Object(map) = &entry.body else {
        return Err(EntryError::NotAnObject);
    };
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    decode_value(Value::Object(rest)).map_err(invalid)
}

/// Decodes `value`, naming the field serde stopped at.
pub(crate) fn decode_value<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(field, e.inner().to_string())
    })
}

/// Refuses a namespace or partition other than the default one: `scope`
/// lists `(field, value)` pairs under `prefix`.
pub(crate) fn check_default_scope(
    prefix: &str,
    scope: [(&str, &str); 2],
) -> Result<(), FieldError> {
    match scope
        .into_iter()
        .find(|(_, v)| !v.is_empty() && *v != "default")
    {
        Some((field, _)) => Err(FieldError::new(
            http::join(prefix, field),
            "only \"default\" is supported",
        )),
        None => Ok(()),
    }
}

/// Checks the envelope every kind shares: `Meta` is a string map and
/// `Namespace`/`Partition` name the default one.
fn check_envelope(map: &Map<String, Value>) -> Result<(), FieldError> {
    if let Some(meta) = map.get("Meta").filter(|m| !m.is_null()) {
        let Value::Object(meta) = meta else {
            return Err(FieldError::new("Meta", "must be a map of strings"));
        };
        if let Some((k, _)) = meta.iter().find(|(_, v)| !v.is_string()) {
            return Err(FieldError::new(format!("Meta[{k:?}]"), "must be a string"));
        }
    }
    for field in ["Namespace", "Partition"] {
        match map.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() || s == "default" => {}
            Some(other) => {
                return Err(FieldError::new(
                    field,
                    format!("only \"default\" is supported, not {other}"),
                ))
            }
        }
    }
    Ok(())
}

/// Decodes, normalizes and validates a `K`, returning the canonical body.
fn check_kind<K: KindSpec>(name: &str, body: Value) -> Result<Value, FieldError> {
    let Value::Object(mut map) = body else {
        return Err(FieldError::new("", "config entry must be an object"));
    };
    check_envelope(&map)?;
    let envelope: Vec<(String, Value)> = ENVELOPE
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
        .filter(|(_, v)| !v.is_null() && *v != Value::String(String::new()))
        .collect();
    let mut entry: K = decode_value(Value::Object(map))?;
    entry.normalize();
    entry.validate(name)?;
    let Value::Object(fields) =
        serde_json::to_value(&entry).map_err(|e| FieldError::new("", e.to_string()))?
    else {
        return Err(FieldError::new("", "config entry must be an object"));
    };
    let mut out: Map<String, Value> = envelope.into_iter().collect();
    out.extend(fields);
    Ok(Value::Object(out))
}

/// Decodes and validates an entry from any of Consul's spellings (JSON or
/// HCL-decoded, PascalCase or snake_case). The error names the bad field.
pub fn parse(value: Value) -> Result<ConfigEntry, EntryError> {
    let mut body = normalize(value);
    let Value::Object(m) = &mut body else {
        return Err(EntryError::NotAnObject);
    };
    m.remove("CreateIndex");
    m.remove("ModifyIndex");
    let kind = m
        .get("Kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or(EntryError::Missing("Kind"))?
        .to_string();
    let name = m
        .get("Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or(EntryError::Missing("Name"))?
        .to_string();
    let checked = match kind.as_str() {
        kind::SERVICE_INTENTIONS => intentions::validate(body),
        kind::PROXY_DEFAULTS => check_kind::<proxy_defaults::ProxyDefaults>(&name, body),
        kind::SERVICE_DEFAULTS => check_kind::<service_defaults::ServiceDefaults>(&name, body),
        kind::SERVICE_RESOLVER => check_kind::<service_resolver::ServiceResolver>(&name, body),
        kind::SERVICE_SPLITTER => check_kind::<service_splitter::ServiceSplitter>(&name, body),
        kind::SERVICE_ROUTER => check_kind::<service_router::ServiceRouter>(&name, body),
        other => return Err(EntryError::UnknownKind(other.to_string())),
    };
    let body = checked.map_err(|error| EntryError::Invalid {
        kind: kind.clone(),
        name: name.clone(),
        error,
    })?;
    Ok(ConfigEntry {
        kind,
        name,
        body,
        raft: RaftIndex::default(),
    })
}

/// True for a kind mesh knows.
pub fn is_known_kind(kind: &str) -> bool {
    kind::ALL.contains(&kind)
}

#[cfg(test)]
mod tests;
