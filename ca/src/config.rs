//! `CaConfiguration`: the CA configuration as Consul stores and serves it
//! (`/v1/connect/ca/configuration`), and its typed, validated view.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::root::ProvidedRoot;
use crate::spiffe::trust_domain;
use crate::CaError;

/// The name of the built-in provider, as Consul calls it.
pub const PROVIDER_CONSUL: &str = "consul";
/// Default leaf certificate lifetime (Consul `structs.DefaultLeafCertTTL`).
pub const DEFAULT_LEAF_CERT_TTL: &str = "72h";
/// Default intermediate certificate lifetime (Consul
/// `structs.DefaultIntermediateCertTTL`).
pub const DEFAULT_INTERMEDIATE_CERT_TTL: &str = "8760h";
/// Default root certificate lifetime: ten years, as Consul.
pub const DEFAULT_ROOT_CERT_TTL: &str = "87600h";
/// The only private key type the built-in provider generates.
pub const DEFAULT_PRIVATE_KEY_TYPE: &str = "ec";
/// The only private key size the built-in provider generates (NIST P-256).
pub const DEFAULT_PRIVATE_KEY_BITS: u32 = 256;
/// What the API shows instead of a configured `PrivateKey`, as Consul does.
pub const REDACTED_PRIVATE_KEY: &str = "hidden";

const HOUR: Duration = Duration::from_secs(3600);
/// Consul's `structs.MinLeafCertTTL`.
const MIN_LEAF_CERT_TTL: Duration = HOUR;
/// Consul's `structs.MaxLeafCertTTL`.
const MAX_LEAF_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The CA configuration: which provider, and its settings.
///
/// `Config` is a free-form map as in Consul; [`CaConfiguration::consul_config`]
/// reads and validates it. Unknown keys are kept, so a configuration written
/// by a newer version survives a round trip. `Debug` shows the configuration
/// [`redacted`](CaConfiguration::redacted).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CaConfiguration {
    /// The unique ID of the cluster; the trust domain is `<ClusterID>.consul`.
    #[serde(
        rename = "ClusterID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_id: String,
    /// The provider name; only `consul` (the built-in CA) is supported.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Provider settings: `LeafCertTTL`, `IntermediateCertTTL`, `RootCertTTL`,
    /// `PrivateKeyType`, `PrivateKeyBits`, and the operator's own root as
    /// `RootCert` and `PrivateKey` (PEM).
    #[serde(default)]
    pub config: BTreeMap<String, Value>,
    /// Rotate even when the old CA cannot cross-sign the new root.
    #[serde(default)]
    pub force_without_cross_signing: bool,
}

fn default_provider() -> String {
    PROVIDER_CONSUL.to_owned()
}

/// The built-in provider's settings, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulCaConfig {
    /// Lifetime of issued leaf certificates (default 72h).
    pub leaf_cert_ttl: Duration,
    /// Lifetime of intermediate certificates (default 8760h).
    pub intermediate_cert_ttl: Duration,
    /// Lifetime of generated root certificates (default 87600h).
    pub root_cert_ttl: Duration,
    /// Private key type; always `ec`.
    pub private_key_type: String,
    /// Private key size; always 256.
    pub private_key_bits: u32,
    /// The root to sign with instead of a generated one, from `RootCert` and
    /// `PrivateKey`; `None` when neither is set.
    pub provided_root: Option<ProvidedRoot>,
}

// === impl CaConfiguration ===

impl CaConfiguration {
    /// The default configuration for a cluster: the built-in provider with
    /// Consul's default settings written out.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        let config = BTreeMap::from([
            ("LeafCertTTL".to_owned(), Value::from(DEFAULT_LEAF_CERT_TTL)),
            (
                "IntermediateCertTTL".to_owned(),
                Value::from(DEFAULT_INTERMEDIATE_CERT_TTL),
            ),
            ("RootCertTTL".to_owned(), Value::from(DEFAULT_ROOT_CERT_TTL)),
            (
                "PrivateKeyType".to_owned(),
                Value::from(DEFAULT_PRIVATE_KEY_TYPE),
            ),
            (
                "PrivateKeyBits".to_owned(),
                Value::from(DEFAULT_PRIVATE_KEY_BITS),
            ),
        ]);
        Self {
            cluster_id: cluster_id.into(),
            provider: default_provider(),
            config,
            force_without_cross_signing: false,
        }
    }

    /// The trust domain of this cluster, `<ClusterID>.consul`.
    pub fn trust_domain(&self) -> String {
        trust_domain(&self.cluster_id)
    }

    /// Reads and validates the built-in provider's settings. Missing keys
    /// take Consul's defaults; keys match without regard to case or `_`, as
    /// Consul accepts both `LeafCertTTL` and `leaf_cert_ttl`. Durations are Go
    /// duration strings (`"72h"`, `"1h30m"`) or integers in nanoseconds.
    /// `RootCert` and `PrivateKey` come together or not at all, and must make
    /// a CA of this cluster's trust domain (see [`ProvidedRoot`]).
    pub fn consul_config(&self) -> Result<ConsulCaConfig, CaError> {
        if self.provider != PROVIDER_CONSUL {
            return Err(CaError::InvalidConfig {
                field: "Provider",
                reason: format!(
                    "provider {:?} is not supported; only {PROVIDER_CONSUL:?} is",
                    self.provider
                ),
            });
        }
        let config = ConsulCaConfig {
            leaf_cert_ttl: self.duration("LeafCertTTL", DEFAULT_LEAF_CERT_TTL)?,
            intermediate_cert_ttl: self
                .duration("IntermediateCertTTL", DEFAULT_INTERMEDIATE_CERT_TTL)?,
            root_cert_ttl: self.duration("RootCertTTL", DEFAULT_ROOT_CERT_TTL)?,
            private_key_type: match self.get("PrivateKeyType") {
                None | Some(Value::Null) => DEFAULT_PRIVATE_KEY_TYPE.to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(CaError::InvalidConfig {
                        field: "PrivateKeyType",
                        reason: format!("expected a string, got {other}"),
                    })
                }
            },
            private_key_bits: match self.get("PrivateKeyBits") {
                None | Some(Value::Null) => DEFAULT_PRIVATE_KEY_BITS,
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|bits| u32::try_from(bits).ok())
                    .ok_or_else(|| CaError::InvalidConfig {
                        field: "PrivateKeyBits",
                        reason: format!("expected a number of bits, got {value}"),
                    })?,
            },
            provided_root: self.provided_root()?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Takes `newer`'s settings over these: each key of `newer.config`
    /// replaces this configuration's value under any spelling of that key
    /// (`root_cert` replaces `RootCert`), and keys `newer` does not name are
    /// kept. The provider (unless `newer`'s is empty) and
    /// `ForceWithoutCrossSigning` are `newer`'s; the cluster ID stays.
    pub fn merge(&mut self, newer: &CaConfiguration) {
        for (key, value) in &newer.config {
            let want = normalise_key(key);
            self.config.retain(|old, _| normalise_key(old) != want);
            self.config.insert(key.clone(), value.clone());
        }
        if !newer.provider.is_empty() {
            self.provider = newer.provider.clone();
        }
        self.force_without_cross_signing = newer.force_without_cross_signing;
    }

    /// The configuration as the API shows it: a non-empty `PrivateKey` of
    /// the built-in provider reads [`REDACTED_PRIVATE_KEY`], as Consul's
    /// `GET /v1/connect/ca/configuration` answers.
    pub fn redacted(&self) -> CaConfiguration {
        let mut shown = self.clone();
        if shown.provider == PROVIDER_CONSUL {
            let want = normalise_key("PrivateKey");
            for (key, value) in shown.config.iter_mut() {
                if normalise_key(key) == want && !matches!(value.as_str(), Some("") | None) {
                    *value = Value::from(REDACTED_PRIVATE_KEY);
                }
            }
        }
        shown
    }

    /// `RootCert` and `PrivateKey`, checked; `None` when neither is set.
    fn provided_root(&self) -> Result<Option<ProvidedRoot>, CaError> {
        let cert = self.pem("RootCert")?;
        let key = self.pem("PrivateKey")?;
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => ProvidedRoot::parse(cert, key, &self.cluster_id).map(Some),
            (Some(_), None) => Err(CaError::InvalidConfig {
                field: "PrivateKey",
                reason: "must be given with RootCert: the built-in CA needs the root's key".into(),
            }),
            (None, Some(_)) => Err(CaError::InvalidConfig {
                field: "RootCert",
                reason: "must be given with PrivateKey: the built-in CA does not make a root for a given key".into(),
            }),
        }
    }

    /// A PEM setting: `None` when absent, null or blank.
    fn pem(&self, field: &'static str) -> Result<Option<&str>, CaError> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(CaError::InvalidConfig {
                field,
                reason: format!("expected a PEM string, got {}", value_kind(other)),
            }),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        let want = normalise_key(name);
        self.config
            .iter()
            .find(|(key, _)| normalise_key(key) == want)
            .map(|(_, value)| value)
    }

    fn duration(&self, field: &'static str, default: &str) -> Result<Duration, CaError> {
        let bad = |reason: String| CaError::InvalidConfig { field, reason };
        match self.get(field) {
            None | Some(Value::Null) => {
                parse_go_duration(default).ok_or_else(|| bad("bad default".into()))
            }
            Some(Value::String(s)) => {
                parse_go_duration(s).ok_or_else(|| bad(format!("{s:?} is not a duration")))
            }
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Duration::from_nanos)
                .ok_or_else(|| bad(format!("{n} is not a duration in nanoseconds"))),
            Some(other) => Err(bad(format!("expected a duration string, got {other}"))),
        }
    }
}

impl fmt::Debug for CaConfiguration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.redacted();
        f.debug_struct("CaConfiguration")
            .field("cluster_id", &shown.cluster_id)
            .field("provider", &shown.provider)
            .field("config", &shown.config)
            .field(
                "force_without_cross_signing",
                &shown.force_without_cross_signing,
            )
            .finish()
    }
}

impl Default for CaConfiguration {
    fn default() -> Self {
        Self::new("")
    }
}

/// The JSON type of `value`, for messages that must not echo it (a key).
fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn normalise_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

// === impl ConsulCaConfig ===

impl ConsulCaConfig {
    /// Checks the settings as Consul's `CommonCAProviderConfig.Validate`
    /// does, naming the field at fault.
    pub fn validate(&self) -> Result<(), CaError> {
        let bad = |field, reason: &str| {
            Err(CaError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.leaf_cert_ttl < MIN_LEAF_CERT_TTL {
            return bad("LeafCertTTL", "must be at least 1h");
        }
        if self.leaf_cert_ttl > MAX_LEAF_CERT_TTL {
            return bad("LeafCertTTL", "must be at most 8760h");
        }
        if self.intermediate_cert_ttl < 3 * HOUR {
            return bad("IntermediateCertTTL", "must be at least 3h");
        }
        if self.intermediate_cert_ttl < 3 * self.leaf_cert_ttl {
            return bad(
                "IntermediateCertTTL",
                "must be at least 3 times LeafCertTTL",
            );
        }
        if self.root_cert_ttl < HOUR {
            return bad("RootCertTTL", "must be at least 1h");
        }
        if self.private_key_type != DEFAULT_PRIVATE_KEY_TYPE {
            return bad(
                "PrivateKeyType",
                "only \"ec\" is supported by the built-in CA",
            );
        }
        if self.private_key_bits != DEFAULT_PRIVATE_KEY_BITS {
            return bad(
                "PrivateKeyBits",
                "only 256 (NIST P-256) is supported by the built-in CA",
            );
        }
        Ok(())
    }
}

impl Default for ConsulCaConfig {
    fn default() -> Self {
        Self {
            leaf_cert_ttl: 72 * HOUR,
            intermediate_cert_ttl: 8760 * HOUR,
            root_cert_ttl: 87600 * HOUR,
            private_key_type: DEFAULT_PRIVATE_KEY_TYPE.to_owned(),
            private_key_bits: DEFAULT_PRIVATE_KEY_BITS,
            provided_root: None,
        }
    }
}

/// Parses a Go duration string (`"72h"`, `"1h30m"`, `"1.5h"`, `"300ms"`,
/// `"0"`). Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. Negative or
/// malformed input gives `None`.
pub fn parse_go_duration(input: &str) -> Option<Duration> {
    let s = input.strip_prefix('+').unwrap_or(input);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let mut whole: u128 = 0;
        let mut digits = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            whole = whole
                .checked_mul(10)?
                .checked_add(u128::from(bytes[i] - b'0'))?;
            i += 1;
            digits += 1;
        }
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                if scale < 1_000_000_000_000_000_000 {
                    frac = frac * 10 + u128::from(bytes[i] - b'0');
                    scale *= 10;
                }
                i += 1;
                digits += 1;
            }
        }
        if digits == 0 {
            return None;
        }
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit: u128 = match s.get(unit_start..i)? {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        total = total
            .checked_add(whole.checked_mul(unit)?)?
            .checked_add(frac * unit / scale)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_consul() {
        let config = CaConfiguration::new("abc");
        let parsed = config.consul_config().unwrap();
        assert_eq!(parsed, ConsulCaConfig::default());
        assert_eq!(parsed.leaf_cert_ttl, Duration::from_secs(72 * 3600));
        assert_eq!(config.trust_domain(), "abc.consul");
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["Provider"], "consul");
        assert_eq!(json["ClusterID"], "abc");
        assert_eq!(json["Config"]["LeafCertTTL"], "72h");
        assert_eq!(json["Config"]["PrivateKeyType"], "ec");
        assert_eq!(json["Config"]["PrivateKeyBits"], 256);
        assert_eq!(json["Config"]["RootCertTTL"], "87600h");
        assert_eq!(json["ForceWithoutCrossSigning"], false);
    }

    #[test]
    fn reads_consul_json_and_snake_case() {
        let config: CaConfiguration = serde_json::from_str(
            r#"{"Provider":"consul","Config":{"leaf_cert_ttl":"24h","IntermediateCertTTL":"8760h"}}"#,
        )
        .unwrap();
        let parsed = config.consul_config().unwrap();
        assert_eq!(parsed.leaf_cert_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(parsed.root_cert_ttl, Duration::from_secs(87600 * 3600));
        let empty: CaConfiguration = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.provider, "consul");
        assert!(empty.consul_config().is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            ("LeafCertTTL", Value::from("30m"), "LeafCertTTL"),
            ("LeafCertTTL", Value::from("9000h"), "LeafCertTTL"),
            ("LeafCertTTL", Value::from("soon"), "LeafCertTTL"),
            ("LeafCertTTL", Value::from(true), "LeafCertTTL"),
            (
                "IntermediateCertTTL",
                Value::from("100h"),
                "IntermediateCertTTL",
            ),
            ("RootCertTTL", Value::from("10m"), "RootCertTTL"),
            ("PrivateKeyType", Value::from("rsa"), "PrivateKeyType"),
            ("PrivateKeyBits", Value::from(384), "PrivateKeyBits"),
            ("PrivateKeyBits", Value::from("many"), "PrivateKeyBits"),
            // A key alone: the certificate is what is missing.
            ("PrivateKey", Value::from("-----BEGIN"), "RootCert"),
            ("RootCert", Value::from("-----BEGIN"), "PrivateKey"),
            ("RootCert", Value::from(7), "RootCert"),
        ];
        for (key, value, field) in cases {
            let mut config = CaConfiguration::new("abc");
            config.config.insert(key.to_owned(), value);
            let err = config.consul_config().unwrap_err();
            assert!(err.is_invalid_config(), "{key}: {err}");
            assert!(
                matches!(err, CaError::InvalidConfig { field: f, .. } if f == field),
                "{key}: {err}"
            );
        }
        let mut other = CaConfiguration::new("abc");
        other.provider = "vault".into();
        assert!(other.consul_config().unwrap_err().is_invalid_config());
    }

    #[test]
    fn merge_replaces_every_spelling_of_a_key() {
        let mut config = CaConfiguration::new("abc");
        config.config.insert("RootCert".into(), Value::from("old"));
        let newer: CaConfiguration = serde_json::from_str(
            r#"{"Provider":"","Config":{"root_cert":"new","leaf_cert_ttl":"24h"},"ForceWithoutCrossSigning":true}"#,
        )
        .unwrap();
        config.merge(&newer);
        assert_eq!(config.get("RootCert"), Some(&Value::from("new")));
        assert!(!config.config.contains_key("RootCert"));
        assert!(!config.config.contains_key("LeafCertTTL"));
        assert_eq!(config.config["leaf_cert_ttl"], "24h");
        assert_eq!(config.config["RootCertTTL"], DEFAULT_ROOT_CERT_TTL);
        assert_eq!(config.provider, PROVIDER_CONSUL);
        assert_eq!(config.cluster_id, "abc");
        assert!(config.force_without_cross_signing);
    }

    #[test]
    fn go_durations() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_go_duration("72h"), Some(h(72)));
        assert_eq!(parse_go_duration("87600h"), Some(h(87600)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("+5s"), Some(Duration::from_secs(5)));
        for bad in [
            "",
            "h",
            "5",
            "-5s",
            "5d",
            "1.h.",
            ".h",
            "5s5",
            "9999999999999999999999999999999h",
            "5 s",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}
