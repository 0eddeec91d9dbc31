//! `service-resolver`: which instances serve a service — named subsets
//! chosen by a filter over the instance, a default subset, a redirect to
//! another service or datacenter, failover targets, timeouts and the load
//! balancing policy.

use super::{check_default_scope, FieldError, KindSpec};
use crate::structs::ConsulDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One named subset of a service's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Subset {
    /// A filter expression over the instance (`Service.Meta.version ==
    /// v1`); empty selects every instance.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Only instances whose checks all pass (else warning ones count too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_passing: bool,
}

/// Where a redirect or a failover target points: each field set replaces
/// the requested one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TargetRef {
    /// Another service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// A subset of that service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
    /// Another datacenter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    /// A cluster peer (not supported).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
}

impl TargetRef {
    fn is_empty(&self) -> bool {
        *self == TargetRef::default()
    }

    /// Checks the fields mesh cannot honour and a subset of this service.
    fn check(&self, field: &str, resolver: &ServiceResolver, name: &str) -> Result<(), FieldError> {
        if !self.peer.is_empty() {
            return Err(FieldError::new(
                format!("{field}.Peer"),
                "cluster peering is not supported",
            ));
        }
        check_default_scope(
            field,
            [
                ("Namespace", &self.namespace),
                ("Partition", &self.partition),
            ],
        )?;
        if !self.service_subset.is_empty()
            && (self.service.is_empty() || self.service == name)
            && !resolver.subsets.contains_key(&self.service_subset)
        {
            return Err(FieldError::new(
                format!("{field}.ServiceSubset"),
                format!(
                    "{:?} is not a valid subset of {name:?}",
                    self.service_subset
                ),
            ));
        }
        Ok(())
    }
}

/// How failover picks among its targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FailoverPolicy {
    /// `""`, `default` or `order-by-locality`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// Where requests go when a subset has no healthy instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Failover {
    /// Another service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// A subset to fail over to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Datacenters to try in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    /// Explicit targets to try in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRef>,
    /// How targets are ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<FailoverPolicy>,
}

impl Failover {
    /// The failover as a target reference (for the `Service`,
    /// `ServiceSubset`, `Namespace` form).
    pub fn as_target(&self) -> TargetRef {
        TargetRef {
            service: self.service.clone(),
            service_subset: self.service_subset.clone(),
            namespace: self.namespace.clone(),
            ..TargetRef::default()
        }
    }

    fn check(&self, field: &str, resolver: &ServiceResolver, name: &str) -> Result<(), FieldError> {
        if self.service.is_empty()
            && self.service_subset.is_empty()
            && self.namespace.is_empty()
            && self.datacenters.is_empty()
            && self.targets.is_empty()
        {
            return Err(FieldError::new(
                field,
                "one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required",
            ));
        }
        if let Some(p) = &self.policy {
            if !matches!(p.mode.as_str(), "" | "default" | "order-by-locality") {
                return Err(FieldError::new(
                    format!("{field}.Policy.Mode"),
                    "must be one of '', 'default', or 'order-by-locality'",
                ));
            }
        }
        if !self.targets.is_empty() {
            for (set, other) in [
                (!self.datacenters.is_empty(), "Datacenters"),
                (!self.service_subset.is_empty(), "ServiceSubset"),
                (!self.service.is_empty(), "Service"),
            ] {
                if set {
                    return Err(FieldError::new(
                        format!("{field}.Targets"),
                        format!("cannot be set with {other}"),
                    ));
                }
            }
        }
        self.as_target().check(field, resolver, name)?;
        for (i, t) in self.targets.iter().enumerate() {
            let tf = format!("{field}.Targets[{i}]");
            if !t.partition.is_empty() && !t.datacenter.is_empty() {
                return Err(FieldError::new(
                    tf,
                    "Partition cannot be set with Datacenter",
                ));
            }
            t.check(&tf, resolver, name)?;
        }
        if self.datacenters.iter().any(String::is_empty) {
            return Err(FieldError::new(
                format!("{field}.Datacenters"),
                "found empty datacenter",
            ));
        }
        Ok(())
    }
}

/// Ring-hash table sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RingHashConfig {
    /// Minimum ring entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
    /// Maximum ring entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_ring_size: Option<u64>,
}

/// Least-request settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LeastRequestConfig {
    /// How many random endpoints are compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice_count: Option<u32>,
}

/// A cookie hash policy's cookie.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CookieConfig {
    /// A session cookie (no expiry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,
    /// The generated cookie's lifetime.
    #[serde(
        default,
        rename = "TTL",
        skip_serializing_if = "ConsulDuration::is_zero"
    )]
    pub ttl: ConsulDuration,
    /// The cookie's path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// One input of a hash-based policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HashPolicyConfig {
    /// `header`, `cookie` or `query_parameter`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// The header, cookie or parameter name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field_value: String,
    /// The cookie to generate (cookie field only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
    /// Hash the source IP.
    #[serde(
        default,
        rename = "SourceIP",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub source_ip: bool,
    /// Stop at this policy when it produced a hash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminal: bool,
}

/// `LoadBalancer`: the policy and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// `round_robin` (default), `least_request`, `random`, `ring_hash` or
    /// `maglev`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    /// Ring-hash settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash_config: Option<RingHashConfig>,
    /// Least-request settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub least_request_config: Option<LeastRequestConfig>,
    /// What a hash-based policy hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_policies: Vec<HashPolicyConfig>,
}

impl LoadBalancerConfig {
    fn is_hash_based(&self) -> bool {
        matches!(self.policy.as_str(), "ring_hash" | "maglev")
    }

    /// The proxy's form of this load balancer.
    pub fn to_proxy(&self) -> mesh_proxy::LoadBalancer {
        use mesh_proxy::LbPolicy;
        let policy = match self.policy.as_str() {
            "least_request" => LbPolicy::LeastRequest,
            "random" => LbPolicy::Random,
            "ring_hash" => LbPolicy::RingHash,
            "maglev" => LbPolicy::Maglev,
            _ => LbPolicy::RoundRobin,
        };
        mesh_proxy::LoadBalancer {
            policy,
            hash_policies: self
                .hash_policies
                .iter()
                .map(|h| mesh_proxy::HashPolicy {
                    field: h.field.clone(),
                    field_value: h.field_value.clone(),
                    source_ip: h.source_ip,
                    terminal: h.terminal,
                })
                .collect(),
        }
    }

    fn check(&self) -> Result<(), FieldError> {
        let field = "LoadBalancer";
        if !matches!(
            self.policy.as_str(),
            "" | "round_robin" | "least_request" | "random" | "ring_hash" | "maglev"
        ) {
            return Err(FieldError::new(
                format!("{field}.Policy"),
                format!("{:?} is not supported", self.policy),
            ));
        }
        if self.ring_hash_config.is_some() && self.policy != "ring_hash" {
            return Err(FieldError::new(
                format!("{field}.RingHashConfig"),
                format!(
                    "specified for incompatible load balancing policy {:?}",
                    self.policy
                ),
            ));
        }
        if self.least_request_config.is_some() && self.policy != "least_request" {
            return Err(FieldError::new(
                format!("{field}.LeastRequestConfig"),
                format!(
                    "specified for incompatible load balancing policy {:?}",
                    self.policy
                ),
            ));
        }
        if !self.is_hash_based() && !self.hash_policies.is_empty() {
            return Err(FieldError::new(
                format!("{field}.HashPolicies"),
                format!("specified for non-hash-based Policy: {:?}", self.policy),
            ));
        }
        for (i, h) in self.hash_policies.iter().enumerate() {
            let bad = |reason: &str| {
                Err(FieldError::new(
                    format!("{field}.HashPolicies[{i}]"),
                    reason,
                ))
            };
            if !matches!(
                h.field.as_str(),
                "" | "header" | "cookie" | "query_parameter"
            ) {
                return bad(&format!("{:?} is not a supported field", h.field));
            }
            if h.source_ip && !h.field.is_empty() {
                return bad("a single hash policy cannot hash both a source address and a field");
            }
            if h.source_ip && !h.field_value.is_empty() {
                return bad("a FieldValue cannot be specified when hashing SourceIP");
            }
            if !h.field.is_empty() && h.field_value.is_empty() {
                return bad(&format!(
                    "Field {:?} was specified without a FieldValue",
                    h.field
                ));
            }
            if !h.field_value.is_empty() && h.field.is_empty() {
                return bad("FieldValue requires a Field to apply to");
            }
            if let Some(c) = &h.cookie_config {
                if h.field != "cookie" {
                    return bad(&format!("CookieConfig provided for {:?}", h.field));
                }
                if c.session && !c.ttl.is_zero() {
                    return bad("a session cookie cannot have an associated TTL");
                }
            }
        }
        Ok(())
    }
}

/// A `service-resolver` entry (without the shared envelope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceResolver {
    /// The subset used when a request names none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_subset: String,
    /// The named subsets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, Subset>,
    /// Resolve another service (or datacenter) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<TargetRef>,
    /// Failover by subset name, `*` for any subset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failover: BTreeMap<String, Failover>,
    /// How long a connect may take (default 5s).
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub connect_timeout: ConsulDuration,
    /// How long a request may take.
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub request_timeout: ConsulDuration,
    /// How an instance is picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerConfig>,
}

impl ServiceResolver {
    /// True when the resolver changes nothing (Consul's `IsDefault`).
    pub fn is_default(&self) -> bool {
        *self == ServiceResolver::default()
    }

    /// True when `subset` is empty or defined.
    pub fn has_subset(&self, subset: &str) -> bool {
        subset.is_empty() || self.subsets.contains_key(subset)
    }
}

/// True for a subset name usable in a DNS label (and so in an SNI).
fn is_subset_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

impl KindSpec for ServiceResolver {
    const KIND: &'static str = super::kind::SERVICE_RESOLVER;

    fn validate(&self, name: &str) -> Result<(), FieldError> {
        for (subset, def) in &self.subsets {
            let field = format!("Subsets[{subset:?}]");
            if !is_subset_name(subset) {
                return Err(FieldError::new(
                    field,
                    "a subset name must be a lowercase DNS label (a-z, 0-9, '-')",
                ));
            }
            if !def.filter.is_empty() {
                mesh_filter::Filter::parse(&def.filter).map_err(|e| {
                    FieldError::new(
                        format!("{field}.Filter"),
                        format!("{:?} is not a valid expression: {e}", def.filter),
                    )
                })?;
            }
        }
        if !self.has_subset(&self.default_subset) {
            return Err(FieldError::new(
                "DefaultSubset",
                format!("{:?} is not a valid subset", self.default_subset),
            ));
        }
        if let Some(r) = &self.redirect {
            if !self.failover.is_empty() {
                return Err(FieldError::new(
                    "Redirect",
                    "Redirect and Failover cannot both be set",
                ));
            }
            if r.is_empty() {
                return Err(FieldError::new("Redirect", "is empty"));
            }
            if r.service.is_empty() && !r.service_subset.is_empty() {
                return Err(FieldError::new(
                    "Redirect.ServiceSubset",
                    "defined without Redirect.Service",
                ));
            }
            r.check("Redirect", self, name)?;
        }
        for (subset, f) in &self.failover {
            let field = format!("Failover[{subset:?}]");
            if subset != "*" && !self.subsets.contains_key(subset) {
                return Err(FieldError::new(field, "not a valid subset"));
            }
            f.check(&field, self, name)?;
        }
        match &self.load_balancer {
            Some(lb) => lb.check(),
            None => Ok(()),
        }
    }
}
