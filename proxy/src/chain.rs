//! The L7 part of a proxy config: an upstream's compiled discovery chain
//! (routes → weighted splits → targets with endpoints) and the HTTP
//! conditions routes and L7 intentions match on.
//!
//! The agent compiles Consul's `service-router`, `service-splitter` and
//! `service-resolver` entries into a [`Chain`]; the proxy only follows it.
//! Field names are PascalCase like the rest of [`crate::ProxyConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The protocol a listener speaks (Consul's `Protocol` of
/// `service-defaults`/`proxy-defaults`). `tcp` stays L4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque bytes: no routing, no L7 intentions, no request metrics.
    #[default]
    Tcp,
    /// HTTP/1.1 from the app.
    Http,
    /// HTTP/2 from the app (h2c, prior knowledge).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
}

impl Protocol {
    /// True for every protocol the proxy parses requests of.
    pub fn is_l7(self) -> bool {
        self != Protocol::Tcp
    }
}

/// How requests to one upstream pick where to go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Chain {
    /// Routes in order: the first whose `Match` fits the request decides.
    /// The last route matches everything.
    pub routes: Vec<Route>,
    /// Every target a route or a failover names, by target ID
    /// (`<subset>.<service>.default.<dc>`, or `<service>.default.<dc>`
    /// without a subset, as Consul names chain targets).
    pub targets: BTreeMap<String, Target>,
    /// When an endpoint is ejected for failing (Consul's
    /// `PassiveHealthCheck`); none: 5 failures in a row, 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// Passive health checking of an upstream's endpoints: an endpoint that
/// answers `MaxFailures` 5xx responses (or refused connections) in a row is
/// ejected for `BaseEjectionTime` times the number of times it was ejected
/// (up to 10x).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint (at least 1).
    pub max_failures: u32,
    /// The first ejection's length.
    #[serde(with = "crate::config::go_duration")]
    pub base_ejection_time: Duration,
}

impl Default for OutlierDetection {
    /// Envoy's defaults, which Consul keeps when `PassiveHealthCheck` is
    /// unset: 5 failures, 30 s.
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_ejection_time: Duration::from_secs(30),
        }
    }
}

/// One route: a match, and what a matching request does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Route {
    /// Which requests take this route; empty matches every request.
    #[serde(default)]
    pub r#match: HttpMatch,
    /// Where matching requests go: one target per request, picked by weight
    /// (weights sum to 10000; a single split has weight 10000).
    pub splits: Vec<Split>,
    /// Replaces the matched path prefix (`PathPrefix`/`PathExact`) before
    /// forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// How long one request (all tries included) may take; none: no limit
    /// beyond the target's `RequestTimeout`.
    #[serde(
        default,
        with = "crate::config::go_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// How many times a failed request is tried again, on another endpoint
    /// when there is one.
    #[serde(default)]
    pub num_retries: u32,
    /// Retry when the connection to an endpoint fails.
    #[serde(default)]
    pub retry_on_connect_failure: bool,
    /// Retry on these response status codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_status_codes: Vec<u16>,
    /// Header changes for the request (the router destination's).
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub request_headers: HeaderChanges,
    /// Header changes for the response.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub response_headers: HeaderChanges,
}

/// The HTTP conditions of a route or an L7 permission; every condition
/// given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpMatch {
    /// The path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    /// The path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The whole path matches this regular expression (RE2 syntax, as the
    /// `regex` crate reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Every header condition holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderMatch>,
    /// Every query parameter condition holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_param: Vec<QueryParamMatch>,
    /// The method is one of these (upper case); empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

impl HttpMatch {
    /// True when the match has no condition at all.
    pub fn is_empty(&self) -> bool {
        *self == HttpMatch::default()
    }
}

/// One header condition. Exactly one of `Present`, `Exact`, `Prefix`,
/// `Suffix`, `Regex` is set; `Invert` negates the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header name (case-insensitive).
    pub name: String,
    /// The header is present, whatever its value.
    #[serde(default)]
    pub present: bool,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value ends with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// The value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Negate the condition.
    #[serde(default)]
    pub invert: bool,
}

/// One query parameter condition: exactly one of `Present`, `Exact`,
/// `Regex` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueryParamMatch {
    /// The parameter name (case-sensitive).
    pub name: String,
    /// The parameter is present.
    #[serde(default)]
    pub present: bool,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One weighted leg of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Split {
    /// The share of requests in hundredths of a percent: 1 (0.01%) to
    /// 10000 (all). Consul's `Weight = 12.5` is 1250.
    pub weight: u32,
    /// The target ID (a key of [`Chain::targets`]).
    pub target: String,
    /// Header changes for requests that take this leg.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub request_headers: HeaderChanges,
    /// Header changes for their responses.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub response_headers: HeaderChanges,
}

/// Consul's `RequestHeaders`/`ResponseHeaders`: add (append), set
/// (replace), remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HeaderChanges {
    /// Headers appended to any existing values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers replacing any existing values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderChanges {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// One place requests can go: a service (or one subset of it) and its
/// healthy sidecars.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Target {
    /// The service; its sidecars must present this service's SPIFFE ID.
    pub service: String,
    /// The subset name, empty for the whole service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// The public listeners of the target's healthy sidecars.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// How long one connect may take (the resolver's `ConnectTimeout`).
    #[serde(
        default,
        with = "crate::config::go_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
    /// How long one request may take (the resolver's `RequestTimeout`).
    #[serde(
        default,
        with = "crate::config::go_duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// How an endpoint is picked.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Target IDs tried in order when this target has no healthy endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
}

/// The resolver's `LoadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// The policy.
    #[serde(default)]
    pub policy: LbPolicy,
    /// For `ring_hash` and `maglev`: what a request's hash is made of, in
    /// order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_policies: Vec<HashPolicy>,
}

/// A load-balancing policy, in Consul's spelling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with fewer requests in flight of two picked at random.
    LeastRequest,
    /// Any endpoint.
    Random,
    /// Consistent hashing on a ring.
    RingHash,
    /// Consistent hashing with Maglev's table.
    Maglev,
}

/// One input of a request's hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HashPolicy {
    /// `header`, `cookie` or `query_parameter`; empty with `SourceIP`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// The header, cookie or parameter name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_value: String,
    /// Hash the client's IP address.
    #[serde(default, rename = "SourceIP")]
    pub source_ip: bool,
    /// Stop at this policy when it produced a hash.
    #[serde(default)]
    pub terminal: bool,
}

/// An L7 permission of an intention: when `Http` matches a request,
/// `Allow` decides it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Permission {
    /// Allow (`true`) or deny (`false`) matching requests.
    pub allow: bool,
    /// The request conditions (`PathExact`, `PathPrefix`, `PathRegex`,
    /// `Header`, `Methods`).
    #[serde(default)]
    pub http: HttpMatch,
}
