//! Key normalization. Consul decodes request bodies with Go's encoding/json,
//! which matches field names case-insensitively, and accepts snake_case in
//! config files (`enable_tag_override`, `sidecar_service`); clients such as
//! py-consul send `{"name": ..., "lockdelay": ...}`. We turn every key into the
//! canonical PascalCase before decoding. User data (`Meta`, `Header`, proxy
//! `Config`) keeps its keys.

use serde_json::{Map, Value};

/// Canonical names matched case-insensitively (ignoring `_` and `-`): every
/// field of the request bodies the API decodes, so that `lockdelay` finds
/// `LockDelay` as Go's decoder would.
const KNOWN: &[&str] = &[
    "Address",
    "Args",
    "Behavior",
    "Body",
    "Check",
    "Checks",
    "Connect",
    "Datacenter",
    "DeregisterCriticalServiceAfter",
    "DisableRedirects",
    "EnableTagOverride",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "Flags",
    "Index",
    "Interval",
    "Key",
    "Kind",
    "LockDelay",
    "Locality",
    "Meta",
    "Method",
    "Name",
    "Namespace",
    "Node",
    "NodeChecks",
    "NodeMeta",
    "Notes",
    "Output",
    "OutputMaxSize",
    "Port",
    "Proxy",
    "Service",
    "ServiceChecks",
    "ServiceName",
    "ServiceTags",
    "Session",
    "SidecarService",
    "SkipNodeUpdate",
    "SocketPath",
    "Status",
    "SuccessBeforePassing",
    "TaggedAddresses",
    "Tags",
    "Timeout",
    "Token",
    "Type",
    "Value",
    "Verb",
    "Weights",
    "Passing",
    "Warning",
    "KV",
    "ID",
    "CheckID",
    "ServiceID",
    "TTL",
    "HTTP",
    "TCP",
    "UDP",
    "GRPC",
    "GRPCUseTLS",
    "TLSSkipVerify",
    "TLSServerName",
    "H2PING",
    "H2PingUseTLS",
    "DockerContainerID",
    "DestinationServiceID",
    "OSService",
    "AliasService",
    "AliasNode",
    "SourceIP",
];

/// Keys whose values, when they are objects, are user maps: their keys are
/// kept verbatim (header names in a check's `Header` and in the `Add`/`Set`
/// of header changes, metadata, opaque proxy `Config`). A router's `Header`
/// is a list of conditions and is normalized like any other value.
const OPAQUE: &[&str] = &[
    "Meta",
    "NodeMeta",
    "Header",
    "Config",
    "ServiceMeta",
    "LegacyMeta",
    "Add",
    "Set",
];

/// Keys whose values are maps from user names (an address kind, a subset
/// name, `*`) to records: the names are kept, the records normalized.
const KEYED: &[&str] = &["TaggedAddresses", "Subsets", "Failover"];

/// The canonical name of a key.
pub fn canonical(key: &str) -> String {
    let squashed: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if let Some(s) = KNOWN.iter().find(|s| s.to_ascii_lowercase() == squashed) {
        return s.to_string();
    }
    if key.contains('_') || key.contains('-') || key.chars().next().is_some_and(char::is_lowercase)
    {
        key.split(['_', '-'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    } else {
        key.to_string()
    }
}

/// Rewrites every object key of `value` to its canonical form, leaving the
/// keys of user maps alone. Script arguments are merged: `ScriptArgs` → `Args`.
pub fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let mut key = canonical(&k);
                if key == "ScriptArgs" {
                    key = "Args".into();
                }
                if key == "Name" && out.contains_key("Name") {
                    continue;
                }
                let v = match v {
                    v @ Value::Object(_) if OPAQUE.contains(&key.as_str()) => v,
                    Value::Object(m) if KEYED.contains(&key.as_str()) => {
                        Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect())
                    }
                    other => normalize(other),
                };
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_and_lower_become_pascal() {
        assert_eq!(canonical("enable_tag_override"), "EnableTagOverride");
        assert_eq!(canonical("id"), "ID");
        assert_eq!(canonical("check_id"), "CheckID");
        assert_eq!(canonical("tls_skip_verify"), "TLSSkipVerify");
        assert_eq!(canonical("Port"), "Port");
        assert_eq!(canonical("sidecar_service"), "SidecarService");
        assert_eq!(canonical("ttl"), "TTL");
    }

    #[test]
    fn user_maps_keep_their_keys() {
        let v = normalize(json!({"service": {"name": "web", "meta": {"my_key": "v"},
            "check": {"args": ["x"], "header": {"x-foo": ["1"]}}}}));
        assert_eq!(v["Service"]["Meta"]["my_key"], "v");
        assert_eq!(v["Service"]["Check"]["Header"]["x-foo"][0], "1");
        assert_eq!(v["Service"]["Name"], "web");
    }

    #[test]
    fn config_entry_user_names_are_kept() {
        let v = normalize(json!({"kind": "service-resolver", "default_subset": "v1",
            "subsets": {"v1": {"filter": "Service.Meta.version == v1", "only_passing": true}},
            "failover": {"*": {"service_subset": "v1"}},
            "load_balancer": {"hash_policies": [{"source_ip": true}]}}));
        assert_eq!(v["Subsets"]["v1"]["Filter"], "Service.Meta.version == v1");
        assert_eq!(v["Subsets"]["v1"]["OnlyPassing"], true);
        assert_eq!(v["Failover"]["*"]["ServiceSubset"], "v1");
        assert_eq!(v["LoadBalancer"]["HashPolicies"][0]["SourceIP"], true);

        let v = normalize(json!({"routes": [{"match": {"http": {
            "header": [{"name": "x-debug", "exact": "1"}]}},
            "destination": {"request_headers": {"set": {"x-Version": "2"}, "remove": ["x_y"]}}}]}));
        let route = &v["Routes"][0];
        assert_eq!(route["Match"]["HTTP"]["Header"][0]["Name"], "x-debug");
        assert_eq!(
            route["Destination"]["RequestHeaders"]["Set"]["x-Version"],
            "2"
        );
        assert_eq!(route["Destination"]["RequestHeaders"]["Remove"][0], "x_y");
    }
}
