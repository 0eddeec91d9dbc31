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
];

/// Keys whose values are user maps: their keys are kept verbatim.
const OPAQUE: &[&str] = &[
    "Meta",
    "NodeMeta",
    "Header",
    "Config",
    "ServiceMeta",
    "LegacyMeta",
];

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
                let v = if OPAQUE.contains(&key.as_str()) {
                    v
                } else if key == "TaggedAddresses" {
                    match v {
                        Value::Object(m) => {
                            Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect())
                        }
                        other => other,
                    }
                } else {
                    normalize(v)
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
}
