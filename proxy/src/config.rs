//! The versioned configuration the local agent pushes to a proxy.
//!
//! Plain serde data in Consul's PascalCase: the agent computes one
//! [`ProxyConfig`] per proxy and streams each new version;
//! [`crate::Proxy::update`] swaps it in without a restart.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authz::Authorizer;
use crate::balance::EndpointTable;
use crate::chain::{Chain, Permission, Protocol};
use crate::router::Router;
use crate::ProxyError;

/// How long a forwarded connection may carry no byte either way before it is
/// closed, unless the config says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a TLS handshake may take, unless the config says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one TCP connect (to an upstream endpoint or the local app) may
/// take, unless the config says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a proxy needs to serve one service: its identity and
/// certificates, its listeners, where its upstreams live and whom it lets in.
///
/// `Debug` does not print the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Increases with every config the agent computes; an update older than
    /// the running one is refused.
    pub version: u64,
    /// The service this proxy speaks for: the service name of its SPIFFE
    /// identity, e.g. `web`.
    pub service: String,
    /// The mesh's trust domain, `<cluster-id>.consul`.
    pub trust_domain: String,
    /// The datacenter the proxy runs in, e.g. `dc1`.
    pub datacenter: String,
    /// The proxy's leaf certificate followed by its intermediates, PEM.
    #[serde(rename = "LeafCertPEM")]
    pub leaf_cert_pem: String,
    /// The leaf's private key, PEM (PKCS#8).
    #[serde(rename = "LeafKeyPEM")]
    pub leaf_key_pem: String,
    /// Every trusted root certificate, PEM: the active root and any being
    /// rotated out.
    #[serde(rename = "RootsPEM")]
    pub roots_pem: Vec<String>,
    /// The inbound listener (mTLS in, plain TCP to the local app), if the
    /// service accepts mesh traffic.
    #[serde(default)]
    pub public_listener: Option<PublicListener>,
    /// The outbound listeners (plain TCP in, mTLS out), one per destination.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// Which sources the public listener lets in.
    #[serde(default)]
    pub intentions: Vec<IntentionRule>,
    /// Whether a source no intention matches is let in.
    pub default_allow: bool,
    /// How long a forwarded connection may stay silent both ways before it
    /// is closed (Go duration string, default `1h`).
    #[serde(default = "default_idle_timeout", with = "go_duration")]
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take (default `10s`).
    #[serde(default = "default_handshake_timeout", with = "go_duration")]
    pub handshake_timeout: Duration,
    /// How long one TCP connect may take before the next endpoint is tried
    /// (default `5s`).
    #[serde(default = "default_connect_timeout", with = "go_duration")]
    pub connect_timeout: Duration,
    /// Where the proxy serves Prometheus metrics (`/metrics`), if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<SocketAddr>,
}

/// The inbound listener of a sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PublicListener {
    /// Where mesh peers connect (mTLS). Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The local application the proxy forwards authorised traffic to.
    pub local_app: SocketAddr,
    /// What the local application speaks; an L7 protocol turns on
    /// per-request intentions and metrics.
    #[serde(default)]
    pub protocol: Protocol,
}

/// One outbound listener: the local app connects to `bind` in plain TCP and
/// the proxy carries the connection over mTLS to a `destination` sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Upstream {
    /// The destination service; its sidecars must present this service's
    /// SPIFFE identity. Unique within a config.
    pub destination: String,
    /// Where the local app connects. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The public listeners of the destination's healthy sidecars (the
    /// whole path for `tcp`).
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// What the destination speaks.
    #[serde(default)]
    pub protocol: Protocol,
    /// For an L7 protocol: the compiled discovery chain requests follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Chain>,
}

/// One intention as the proxy sees it: whether `source` may connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IntentionRule {
    /// The source service name, or `*` for every service.
    pub source: String,
    /// Allow (`true`) or deny (`false`).
    pub allow: bool,
    /// Higher wins when several rules match a source.
    #[serde(default)]
    pub precedence: i32,
    /// L7 permissions, in order: for an HTTP service, the first whose
    /// match fits a request from `source` decides it (and `Allow` is
    /// ignored); none fitting falls to the default policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<Permission>,
}

// === impl Upstream ===

impl Upstream {
    /// The chain requests follow, when the upstream is served at L7: an
    /// L7 protocol and a chain. Otherwise connections are forwarded as
    /// bytes (L4).
    pub fn l7_chain(&self) -> Option<&Chain> {
        self.chain.as_ref().filter(|_| self.protocol.is_l7())
    }

    /// An L4 upstream: connections to `bind` go to one of `endpoints`.
    pub fn tcp(
        destination: impl Into<String>,
        bind: SocketAddr,
        endpoints: Vec<SocketAddr>,
    ) -> Self {
        Self {
            destination: destination.into(),
            bind,
            endpoints,
            protocol: Protocol::Tcp,
            chain: None,
        }
    }
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

// === impl ProxyConfig ===

impl Default for ProxyConfig {
    /// An empty config with the default timeouts; it does not validate until
    /// identity and certificates are filled in.
    fn default() -> Self {
        Self {
            version: 0,
            service: String::new(),
            trust_domain: String::new(),
            datacenter: String::new(),
            leaf_cert_pem: String::new(),
            leaf_key_pem: String::new(),
            roots_pem: Vec::new(),
            public_listener: None,
            upstreams: Vec::new(),
            intentions: Vec::new(),
            default_allow: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            metrics_bind: None,
        }
    }
}

impl ProxyConfig {
    /// Checks what can be checked without parsing certificates, naming the
    /// first bad field. Certificates are checked when the TLS configs are
    /// built ([`crate::Proxy::start`], [`crate::Proxy::update`]).
    pub fn validate(&self) -> Result<(), ProxyError> {
        let bad = |field: &str, reason: &str| {
            Err(ProxyError::InvalidConfig {
                field: field.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.service.is_empty() {
            return bad("Service", "must not be empty");
        }
        if self.trust_domain.is_empty() {
            return bad("TrustDomain", "must not be empty");
        }
        if self.datacenter.is_empty() {
            return bad("Datacenter", "must not be empty");
        }
        if self.leaf_cert_pem.trim().is_empty() {
            return bad("LeafCertPEM", "must not be empty");
        }
        if self.leaf_key_pem.trim().is_empty() {
            return bad("LeafKeyPEM", "must not be empty");
        }
        if self.roots_pem.iter().all(|pem| pem.trim().is_empty()) {
            return bad("RootsPEM", "at least one root is required");
        }
        for (field, value) in [
            ("IdleTimeout", self.idle_timeout),
            ("HandshakeTimeout", self.handshake_timeout),
            ("ConnectTimeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "must be positive");
            }
        }

        let mut destinations = HashSet::new();
        let mut binds = HashSet::new();
        if let Some(public) = &self.public_listener {
            binds.insert(public.bind);
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if upstream.destination.is_empty() {
                return bad(&format!("Upstreams[{i}].Destination"), "must not be empty");
            }
            if !destinations.insert(upstream.destination.as_str()) {
                return bad(
                    &format!("Upstreams[{i}].Destination"),
                    &format!("{:?} is listed twice", upstream.destination),
                );
            }
            // Two listeners on one explicit port could never both bind.
            if upstream.bind.port() != 0 && !binds.insert(upstream.bind) {
                return bad(
                    &format!("Upstreams[{i}].Bind"),
                    &format!("{} is used by another listener", upstream.bind),
                );
            }
        }
        if let Some(metrics) = self.metrics_bind {
            if metrics.port() != 0 && !binds.insert(metrics) {
                return bad(
                    "MetricsBind",
                    &format!("{metrics} is used by another listener"),
                );
            }
        }
        for (i, rule) in self.intentions.iter().enumerate() {
            if rule.source.is_empty() {
                return bad(&format!("Intentions[{i}].Source"), "must not be empty");
            }
        }
        // The L7 parts compile exactly as a running proxy compiles them.
        let table = EndpointTable::default();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if let Some(chain) = upstream.l7_chain() {
                Router::compile(chain, &format!("Upstreams[{i}].Chain"), &table)?;
            }
        }
        Authorizer::new(&self.intentions, self.default_allow)?;
        Ok(())
    }

    /// The upstream for `destination`, if configured.
    pub fn upstream(&self, destination: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.destination == destination)
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("version", &self.version)
            .field("service", &self.service)
            .field("trust_domain", &self.trust_domain)
            .field("datacenter", &self.datacenter)
            .field(
                "leaf_cert_pem",
                &format_args!("{} bytes", self.leaf_cert_pem.len()),
            )
            .field("leaf_key_pem", &format_args!("<redacted>"))
            .field("roots_pem", &format_args!("{} roots", self.roots_pem.len()))
            .field("public_listener", &self.public_listener)
            .field("upstreams", &self.upstreams)
            .field("intentions", &self.intentions)
            .field("default_allow", &self.default_allow)
            .field("idle_timeout", &self.idle_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("metrics_bind", &self.metrics_bind)
            .finish()
    }
}

/// Durations as Go duration strings (`"1h"`, `"10s"`, `"250ms"`), as
/// Consul writes them.
pub(crate) mod go_duration {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        mesh_ca::parse_go_duration(&text).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Str(&text), &"a duration such as \"10s\"")
        })
    }

    /// The shortest exact form in one unit.
    pub(super) fn format(d: Duration) -> String {
        let nanos = d.as_nanos();
        for (unit, size) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if nanos >= size && nanos.is_multiple_of(size) {
                return format!("{}{unit}", nanos / size);
            }
        }
        format!("{nanos}ns")
    }
}

/// Optional durations as Go duration strings.
pub(crate) mod go_duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::go_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::go_duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "Version": 3,
            "Service": "web",
            "TrustDomain": "11111111-2222-3333-4444-555555555555.consul",
            "Datacenter": "dc1",
            "LeafCertPEM": "cert",
            "LeafKeyPEM": "key",
            "RootsPEM": ["root"],
            "DefaultAllow": true,
        })
    }

    #[test]
    fn defaults_fill_timeouts_and_listeners() {
        let config: ProxyConfig = serde_json::from_value(minimal()).unwrap();
        assert_eq!(config.version, 3);
        assert_eq!(config.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(config.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(config.public_listener.is_none());
        assert!(config.upstreams.is_empty());
        config.validate().unwrap();
    }

    #[test]
    fn round_trips_in_pascal_case_with_go_durations() {
        let mut value = minimal();
        value["IdleTimeout"] = "90s".into();
        value["PublicListener"] =
            serde_json::json!({"Bind": "127.0.0.1:21000", "LocalApp": "127.0.0.1:8080"});
        value["Upstreams"] = serde_json::json!([
            {"Destination": "db", "Bind": "127.0.0.1:9191", "Endpoints": ["10.0.0.1:21000"]}
        ]);
        value["Intentions"] = serde_json::json!([{"Source": "*", "Allow": false}]);
        let config: ProxyConfig = serde_json::from_value(value).unwrap();
        assert_eq!(config.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.upstream("db").unwrap().endpoints.len(), 1);
        assert_eq!(config.intentions[0].precedence, 0);

        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["IdleTimeout"], "90s");
        assert_eq!(json["HandshakeTimeout"], "10s");
        assert_eq!(json["LeafCertPEM"], "cert");
        let back: ProxyConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        let mut value = minimal();
        value["Listner"] = true.into();
        let err = serde_json::from_value::<ProxyConfig>(value).unwrap_err();
        assert!(err.to_string().contains("Listner"), "{err}");

        let mut value = minimal();
        value["IdleTimeout"] = "soon".into();
        let err = serde_json::from_value::<ProxyConfig>(value).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let base: ProxyConfig = serde_json::from_value(minimal()).unwrap();
        let field_of = |config: ProxyConfig| match config.validate() {
            Err(ProxyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };

        let config = ProxyConfig {
            service: String::new(),
            ..base.clone()
        };
        assert_eq!(field_of(config), "Service");

        let config = ProxyConfig {
            roots_pem: vec![],
            ..base.clone()
        };
        assert_eq!(field_of(config), "RootsPEM");

        let config = ProxyConfig {
            idle_timeout: Duration::ZERO,
            ..base.clone()
        };
        assert_eq!(field_of(config), "IdleTimeout");

        let bind: SocketAddr = "127.0.0.1:9191".parse().unwrap();
        let upstream = |name: &str| Upstream::tcp(name, bind, vec![]);
        let config = ProxyConfig {
            upstreams: vec![upstream("db"), upstream("db")],
            ..base.clone()
        };
        assert_eq!(field_of(config), "Upstreams[1].Destination");
        let config = ProxyConfig {
            upstreams: vec![upstream("db"), upstream("cache")],
            ..base
        };
        assert_eq!(field_of(config), "Upstreams[1].Bind");
    }

    #[test]
    fn validate_checks_the_l7_parts() {
        use crate::chain::{HttpMatch, Route, Split, Target};
        let base: ProxyConfig = serde_json::from_value(minimal()).unwrap();
        let field_of = |config: ProxyConfig| match config.validate() {
            Err(ProxyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        let bind: SocketAddr = "127.0.0.1:9191".parse().unwrap();
        let chain = |path_regex: &str, target: &str| Chain {
            routes: vec![Route {
                r#match: HttpMatch {
                    path_regex: Some(path_regex.into()),
                    ..HttpMatch::default()
                },
                splits: vec![Split {
                    weight: 10_000,
                    target: target.into(),
                    ..Split::default()
                }],
                ..Route::default()
            }],
            targets: [(
                "api.default.dc1".to_string(),
                Target {
                    service: "api".into(),
                    ..Target::default()
                },
            )]
            .into(),
            ..Chain::default()
        };
        let upstream = |protocol, chain| Upstream {
            protocol,
            chain: Some(chain),
            ..Upstream::tcp("api", bind, vec![])
        };
        let config = |upstream| ProxyConfig {
            upstreams: vec![upstream],
            ..base.clone()
        };
        config(upstream(Protocol::Http, chain("/a.*", "api.default.dc1")))
            .validate()
            .unwrap();
        assert_eq!(
            field_of(config(upstream(
                Protocol::Http,
                chain("(", "api.default.dc1")
            ))),
            "Upstreams[0].Chain.Routes[0].Match.PathRegex"
        );
        assert_eq!(
            field_of(config(upstream(Protocol::Grpc, chain("/", "nowhere")))),
            "Upstreams[0].Chain.Routes[0].Splits[0].Target"
        );
        // A tcp upstream ignores its chain.
        config(upstream(Protocol::Tcp, chain("(", "nowhere")))
            .validate()
            .unwrap();

        let config = ProxyConfig {
            upstreams: vec![Upstream::tcp("api", bind, vec![])],
            metrics_bind: Some(bind),
            ..base
        };
        assert_eq!(field_of(config), "MetricsBind");
    }

    #[test]
    fn debug_hides_the_private_key() {
        let config = ProxyConfig {
            leaf_key_pem: "-----BEGIN PRIVATE KEY-----secret".into(),
            ..ProxyConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit() {
        assert_eq!(go_duration::format(Duration::from_secs(3600)), "1h");
        assert_eq!(go_duration::format(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration::format(Duration::from_secs(120)), "2m");
        assert_eq!(go_duration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration::format(Duration::ZERO), "0ns");
        assert_eq!(
            mesh_ca::parse_go_duration(&go_duration::format(Duration::from_nanos(7))),
            Some(Duration::from_nanos(7))
        );
    }
}
