//! Intentions: `service-intentions` entries and the rules that decide whether
//! a source may connect to a destination.
//!
//! Precedence is Consul's: an exact destination beats a wildcard one, then an
//! exact source beats a wildcard one (9, 8, 6, 5 in the default namespace);
//! the highest-precedence match decides, else the default policy.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The wildcard service name.
pub const WILDCARD: &str = "*";

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Connections are allowed.
    Allow,
    /// Connections are refused.
    Deny,
}

impl Action {
    /// The lowercase word.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// One source of a `service-intentions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SourceIntention {
    /// The source service, or `*`.
    pub name: String,
    /// What to do with its connections.
    pub action: Action,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `consul` (the only source type).
    #[serde(default = "consul_type", rename = "Type")]
    pub source_type: String,
    /// Computed precedence (ignored on input).
    #[serde(default)]
    pub precedence: i32,
    /// Legacy ID, kept when given.
    #[serde(default, rename = "LegacyID", skip_serializing_if = "String::is_empty")]
    pub legacy_id: String,
    /// Legacy metadata.
    #[serde(
        default,
        rename = "LegacyMeta",
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_meta: Option<Value>,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
}

/// An intention as the legacy ID-based API writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyIntention {
    /// The source service or `*`.
    pub source: String,
    /// The destination service or `*`.
    pub destination: String,
    /// Allow or deny.
    pub action: Action,
    /// Free text.
    pub description: String,
    /// Free-form string metadata.
    pub meta: Option<Value>,
}

impl LegacyIntention {
    /// The source entry for this intention, carrying `id`.
    pub fn source_of(&self, id: &str) -> SourceIntention {
        SourceIntention {
            name: self.source.clone(),
            action: self.action,
            description: self.description.clone(),
            source_type: consul_type(),
            precedence: precedence(&self.source, &self.destination),
            legacy_id: id.to_string(),
            legacy_meta: self.meta.clone(),
            namespace: String::new(),
            partition: String::new(),
        }
    }
}

/// A legacy ID-based intention write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LegacyIntentionOp {
    /// `POST /v1/connect/intentions`: a new intention with a new ID.
    Create {
        /// The ID the leader chose.
        id: String,
        /// The intention.
        intention: LegacyIntention,
    },
    /// `PUT /v1/connect/intentions/:id`.
    Update {
        /// The intention's ID.
        id: String,
        /// Its new contents.
        intention: LegacyIntention,
    },
    /// `DELETE /v1/connect/intentions/:id`.
    Delete {
        /// The intention's ID.
        id: String,
    },
}

fn consul_type() -> String {
    "consul".into()
}

/// A whole `service-intentions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceIntentions {
    /// Always `service-intentions`.
    pub kind: String,
    /// The destination service, or `*`.
    pub name: String,
    /// Who may (not) connect.
    #[serde(default)]
    pub sources: Vec<SourceIntention>,
    /// Operator metadata.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
}

/// Consul's precedence for a (source, destination) name pair.
pub fn precedence(source: &str, destination: &str) -> i32 {
    let max = if destination == WILDCARD { 6 } else { 9 };
    if source == WILDCARD {
        max - 1
    } else {
        max
    }
}

/// Checks a canonical entry and fills computed fields.
pub fn validate(body: Value) -> Result<Value, String> {
    let mut e: ServiceIntentions =
        serde_json::from_value(body).map_err(|err| format!("service-intentions: {err}"))?;
    if e.name.is_empty() {
        return Err("service-intentions: Name is required".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in e.sources.iter_mut().enumerate() {
        if s.name.is_empty() {
            return Err(format!("service-intentions: Sources[{i}].Name is required"));
        }
        if !seen.insert(s.name.clone()) {
            return Err(format!(
                "service-intentions: Sources[{i}]: duplicate source {:?}",
                s.name
            ));
        }
        if s.source_type != "consul" {
            return Err(format!(
                "service-intentions: Sources[{i}].Type must be \"consul\""
            ));
        }
        s.precedence = precedence(&s.name, &e.name);
    }
    serde_json::to_value(e).map_err(|err| err.to_string())
}

/// One intention as `/v1/connect/intentions` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct Intention {
    #[serde(rename = "ID")]
    pub id: String,
    pub description: String,
    #[serde(rename = "SourceNS")]
    pub source_ns: String,
    pub source_name: String,
    #[serde(rename = "DestinationNS")]
    pub destination_ns: String,
    pub destination_name: String,
    pub source_type: String,
    pub action: Action,
    pub precedence: i32,
    pub meta: Value,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Flattens an entry into intentions.
pub fn from_entry(entry: &super::ConfigEntry) -> Vec<Intention> {
    let Ok(e) = serde_json::from_value::<ServiceIntentions>(entry.body.clone()) else {
        return Vec::new();
    };
    e.sources
        .into_iter()
        .map(|s| Intention {
            id: s.legacy_id,
            description: s.description,
            source_ns: "default".into(),
            source_name: s.name.clone(),
            destination_ns: "default".into(),
            destination_name: e.name.clone(),
            source_type: s.source_type,
            action: s.action,
            precedence: precedence(&s.name, &e.name),
            meta: s.legacy_meta.unwrap_or(Value::Object(Default::default())),
            create_index: entry.raft.create_index,
            modify_index: entry.raft.modify_index,
        })
        .collect()
}

/// Orders intentions as Consul's match does: highest precedence first, then
/// by names for stability.
pub fn sort_by_precedence(list: &mut [Intention]) {
    list.sort_by(|a, b| {
        b.precedence
            .cmp(&a.precedence)
            .then_with(|| a.destination_name.cmp(&b.destination_name))
            .then_with(|| a.source_name.cmp(&b.source_name))
    });
}

/// The decision for `source` → `destination`: the action of the
/// highest-precedence matching intention, or `default` if none matches.
/// Returns the action and the intention that decided, if any.
pub fn decide<'a>(
    all: &'a [Intention],
    source: &str,
    destination: &str,
    default: Action,
) -> (Action, Option<&'a Intention>) {
    let matching = all.iter().filter(|i| {
        (i.destination_name == destination || i.destination_name == WILDCARD)
            && (i.source_name == source || i.source_name == WILDCARD)
    });
    match matching.max_by_key(|i| i.precedence) {
        Some(i) => (i.action, Some(i)),
        None => (default, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ixn(src: &str, dst: &str, action: Action) -> Intention {
        Intention {
            id: String::new(),
            description: String::new(),
            source_ns: "default".into(),
            source_name: src.into(),
            destination_ns: "default".into(),
            destination_name: dst.into(),
            source_type: "consul".into(),
            action,
            precedence: precedence(src, dst),
            meta: json!({}),
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn precedence_follows_consul() {
        assert_eq!(precedence("web", "db"), 9);
        assert_eq!(precedence("*", "db"), 8);
        assert_eq!(precedence("web", "*"), 6);
        assert_eq!(precedence("*", "*"), 5);
    }

    #[test]
    fn the_most_specific_match_decides() {
        let all = vec![
            ixn("*", "*", Action::Deny),
            ixn("*", "db", Action::Allow),
            ixn("web", "db", Action::Deny),
        ];
        assert_eq!(decide(&all, "web", "db", Action::Allow).0, Action::Deny);
        assert_eq!(decide(&all, "api", "db", Action::Deny).0, Action::Allow);
        assert_eq!(decide(&all, "api", "cache", Action::Allow).0, Action::Deny);
        assert_eq!(decide(&[], "a", "b", Action::Allow), (Action::Allow, None));
    }

    #[test]
    fn validation_names_the_field() {
        let ok = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Name": "web", "Action": "deny"}]}))
        .unwrap();
        assert_eq!(ok["Sources"][0]["Precedence"], 9);
        let err = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Name": "web", "Action": "maybe"}]}))
        .unwrap_err();
        assert!(err.contains("maybe"), "{err}");
        let err = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]}))
        .unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
        let err = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Action": "allow"}]}))
        .unwrap_err();
        assert!(err.contains("Name"), "{err}");
    }
}
