//! Intentions: `service-intentions` entries and the rules that decide whether
//! a source may connect to a destination.
//!
//! Precedence is Consul's: an exact destination beats a wildcard one, then an
//! exact source beats a wildcard one (9, 8, 6, 5 in the default namespace);
//! the highest-precedence match decides, else the default policy.
//!
//! A source may carry L7 `Permissions` instead of an `Action`: HTTP
//! conditions tried in order, the first that fits a request deciding it.
//! Such a source only makes sense for an HTTP destination; that check needs
//! the destination's protocol and is the discovery chain's
//! ([`crate::discovery_chain::validate_write`]).

use super::http::{check_match, normalize_match, HttpMatch};
use super::FieldError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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

/// Reads an optional action, `""` meaning none (as Consul writes an L7
/// intention's action).
fn optional_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Action>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some("allow") => Ok(Some(Action::Allow)),
        Some("deny") => Ok(Some(Action::Deny)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "Action must be set to 'allow' or 'deny', not {other:?}"
        ))),
    }
}

/// Writes an optional action, none as `""` (Consul's shape for L7
/// intentions).
fn action_or_empty<S: Serializer>(action: &Option<Action>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(action.map(Action::as_str).unwrap_or_default())
}

/// One L7 permission of a source: when `HTTP` fits a request, `Action`
/// decides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IntentionPermission {
    /// Allow or deny matching requests.
    #[serde(
        default,
        deserialize_with = "optional_action",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<Action>,
    /// The request conditions: `PathExact`, `PathPrefix`, `PathRegex`,
    /// `Header`, `Methods`.
    #[serde(default, rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
}

impl IntentionPermission {
    /// The proxy's form of this permission.
    pub fn to_proxy(&self) -> mesh_proxy::Permission {
        mesh_proxy::Permission {
            allow: self.action == Some(Action::Allow),
            http: self.http.clone().unwrap_or_default(),
        }
    }

    fn check(&self) -> Result<(), FieldError> {
        if self.action.is_none() {
            return Err(FieldError::new(
                "Action",
                "must be set to 'allow' or 'deny'",
            ));
        }
        let Some(http) = &self.http else {
            return Err(FieldError::new("HTTP", "is required"));
        };
        check_match(http, false).map_err(|e| e.within("HTTP"))?;
        if http.is_empty() {
            return Err(FieldError::new("HTTP", "should not be empty"));
        }
        Ok(())
    }
}

/// One source of a `service-intentions` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SourceIntention {
    /// The source service, or `*`.
    pub name: String,
    /// What to do with its connections (none when `Permissions` decide).
    #[serde(
        default,
        deserialize_with = "optional_action",
        skip_serializing_if = "Option::is_none"
    )]
    pub action: Option<Action>,
    /// L7 permissions, tried in order (instead of `Action`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
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

impl SourceIntention {
    /// The intention from `name` to `destination`: an action, or (for L7)
    /// permissions.
    pub fn new(
        name: &str,
        destination: &str,
        action: Option<Action>,
        permissions: Vec<IntentionPermission>,
        description: &str,
    ) -> Self {
        SourceIntention {
            name: name.to_string(),
            action,
            permissions,
            description: description.to_string(),
            source_type: consul_type(),
            precedence: precedence(name, destination),
            legacy_id: String::new(),
            legacy_meta: None,
            namespace: String::new(),
            partition: String::new(),
        }
    }
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
            legacy_id: id.to_string(),
            legacy_meta: self.meta.clone(),
            ..SourceIntention::new(
                &self.source,
                &self.destination,
                Some(self.action),
                Vec::new(),
                &self.description,
            )
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
pub fn validate(body: Value) -> Result<Value, FieldError> {
    let mut e: ServiceIntentions = super::decode_value(body)?;
    if e.name.is_empty() {
        return Err(FieldError::new("Name", "is required"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in e.sources.iter_mut().enumerate() {
        let field = format!("Sources[{i}]");
        if s.name.is_empty() {
            return Err(FieldError::new(format!("{field}.Name"), "is required"));
        }
        if !seen.insert(s.name.clone()) {
            return Err(FieldError::new(
                field,
                format!("duplicate source {:?}", s.name),
            ));
        }
        if s.source_type != "consul" {
            return Err(FieldError::new(
                format!("{field}.Type"),
                "must be set to 'consul'",
            ));
        }
        match (s.action, s.permissions.is_empty()) {
            (None, true) => {
                return Err(FieldError::new(
                    format!("{field}.Action"),
                    "must be set to 'allow' or 'deny'",
                ))
            }
            (Some(_), false) => {
                return Err(FieldError::new(
                    format!("{field}.Action"),
                    "must be omitted if Permissions are specified",
                ))
            }
            _ => {}
        }
        if !s.permissions.is_empty() && e.name == WILDCARD {
            return Err(FieldError::new(
                format!("{field}.Permissions"),
                "cannot be specified on intentions with wildcarded destinations",
            ));
        }
        for (j, p) in s.permissions.iter_mut().enumerate() {
            if let Some(http) = &mut p.http {
                normalize_match(http);
            }
            p.check()
                .map_err(|err| err.within(&format!("{field}.Permissions[{j}]")))?;
        }
        s.precedence = precedence(&s.name, &e.name);
    }
    serde_json::to_value(e).map_err(|err| FieldError::new("", err.to_string()))
}

/// True when some source of the entry carries L7 permissions.
pub fn has_permissions(entry: &super::ConfigEntry) -> bool {
    entry.body["Sources"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["Permissions"].as_array().is_some_and(|p| !p.is_empty()))
    })
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
    /// The L4 action; `""` for an L7 intention.
    #[serde(serialize_with = "action_or_empty")]
    pub action: Option<Action>,
    /// L7 permissions, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
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
            permissions: s.permissions,
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
/// Returns the action and the intention that decided, if any. An L7
/// intention cannot be decided per connection and denies it, as Consul's
/// L4 checks do.
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
        Some(i) => (i.action.unwrap_or(Action::Deny), Some(i)),
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
            action: Some(action),
            permissions: Vec::new(),
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
        assert_eq!(err.field, "Sources[0].Action");
        assert!(err.reason.contains("maybe"), "{err}");
        let err = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"}]}))
        .unwrap_err();
        assert_eq!(err.field, "Sources[1]");
        assert!(err.reason.contains("duplicate"), "{err}");
        let err = validate(json!({"Kind": "service-intentions", "Name": "db",
            "Sources": [{"Action": "allow"}]}))
        .unwrap_err();
        assert!(err.to_string().contains("Name"), "{err}");
    }

    #[test]
    fn l7_permissions_replace_the_action() {
        let entry = |sources: Value| {
            validate(json!({"Kind": "service-intentions", "Name": "api", "Sources": sources}))
        };
        let ok = entry(json!([{"Name": "web", "Permissions": [
            {"Action": "allow", "HTTP": {"PathPrefix": "/v1", "Methods": ["get", "head"]}},
            {"Action": "deny", "HTTP": {"Header": [{"Name": "x-debug", "Present": true}]}},
        ]}]))
        .unwrap();
        assert_eq!(
            ok["Sources"][0]["Permissions"][0]["HTTP"]["Methods"],
            json!(["GET", "HEAD"])
        );
        assert!(ok["Sources"][0].get("Action").is_none());

        let field = |sources: Value| entry(sources).unwrap_err().field;
        assert_eq!(
            field(json!([{"Name": "web", "Action": "allow",
                "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}])),
            "Sources[0].Action"
        );
        assert_eq!(field(json!([{"Name": "web"}])), "Sources[0].Action");
        assert_eq!(
            field(json!([{"Name": "web", "Permissions": [{"Action": "allow"}]}])),
            "Sources[0].Permissions[0].HTTP"
        );
        assert_eq!(
            field(json!([{"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {}}]}])),
            "Sources[0].Permissions[0].HTTP"
        );
        assert_eq!(
            field(json!([{"Name": "web", "Permissions": [{"HTTP": {"PathExact": "/a"}}]}])),
            "Sources[0].Permissions[0].Action"
        );
        assert_eq!(
            field(json!([{"Name": "web", "Permissions": [
                {"Action": "deny", "HTTP": {"PathRegex": "/(["}}]}])),
            "Sources[0].Permissions[0].HTTP.PathRegex"
        );
        assert_eq!(
            field(json!([{"Name": "web", "Permissions": [
                {"Action": "deny", "HTTP": {"QueryParam": [{"Name": "q", "Present": true}]}}]}])),
            "Sources[0].Permissions[0].HTTP.QueryParam"
        );
        let wildcard = validate(
            json!({"Kind": "service-intentions", "Name": "*", "Sources": [
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(wildcard.field, "Sources[0].Permissions");
    }

    #[test]
    fn an_l7_intention_denies_connections() {
        let mut l7 = ixn("web", "api", Action::Allow);
        l7.action = None;
        l7.permissions = vec![IntentionPermission {
            action: Some(Action::Allow),
            http: Some(HttpMatch {
                path_prefix: Some("/".into()),
                ..HttpMatch::default()
            }),
        }];
        let all = vec![l7];
        assert_eq!(decide(&all, "web", "api", Action::Allow).0, Action::Deny);
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["Action"], "");
        assert_eq!(json["Permissions"][0]["Action"], "allow");
    }
}
