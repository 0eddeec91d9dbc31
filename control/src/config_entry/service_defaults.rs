//! `service-defaults`: settings of one service wherever it runs — above
//! all its `Protocol`, which decides whether routers and splitters apply
//! and whether its sidecar speaks HTTP — and defaults for its upstreams
//! (`UpstreamConfig`).
//!
//! An upstream's `PassiveHealthCheck` (`MaxFailures`, `BaseEjectionTime`)
//! tunes the proxies' outlier detection. The settings mesh's proxies have
//! no use for yet (`Mode`, `TransparentProxy`, `MeshGateway`, upstream
//! `Limits`, `PassiveHealthCheck.Interval` and
//! `EnforcingConsecutive5xx`) are checked and stored, so an entry written
//! for Consul is accepted as it is.

use super::{check_default_scope, FieldError, KindSpec, PROTOCOLS};
use crate::structs::ConsulDuration;
use serde::{Deserialize, Serialize};

/// Whether a protocol field holds one mesh knows (empty: unset).
pub(crate) fn check_protocol(field: &str, protocol: &str) -> Result<(), FieldError> {
    if protocol.is_empty() || PROTOCOLS.contains(&protocol) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{protocol:?} is not one of tcp, http, http2, grpc"),
        ))
    }
}

/// How a proxy reaches services in other datacenters (`MeshGateway`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MeshGatewayConfig {
    /// `""`, `none`, `local` or `remote`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

impl MeshGatewayConfig {
    /// True when nothing is set.
    pub fn is_default(&self) -> bool {
        self.mode.is_empty()
    }

    fn check(&self, field: &str) -> Result<(), FieldError> {
        match self.mode.as_str() {
            "" | "none" | "local" | "remote" => Ok(()),
            other => Err(FieldError::new(
                format!("{field}.Mode"),
                format!("{other:?} is not one of none, local, remote"),
            )),
        }
    }
}

/// Transparent proxy settings (`TransparentProxy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TransparentProxyConfig {
    /// The port of the outbound listener.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outbound_listener_port: u16,
    /// Whether peers dial instances directly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dialed_directly: bool,
}

impl TransparentProxyConfig {
    /// True when nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Checks `Mode` and `MeshGateway.Mode`, shared by `proxy-defaults` and
/// `service-defaults`.
pub(crate) fn check_modes(mode: &str, mesh_gateway: &MeshGatewayConfig) -> Result<(), FieldError> {
    match mode {
        "" | "direct" | "transparent" => mesh_gateway.check("MeshGateway"),
        other => Err(FieldError::new(
            "Mode",
            format!("{other:?} is not one of direct, transparent"),
        )),
    }
}

pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Circuit-breaker limits for an upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpstreamLimits {
    /// Most connections to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Most requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
}

/// Passive health checking (outlier detection) of an upstream's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// How often endpoints are evaluated.
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub interval: ConsulDuration,
    /// Consecutive failures that eject an endpoint.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_failures: u32,
    /// The percentage chance an ejection is enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcing_consecutive_5xx: Option<u32>,
    /// Minimum ejection time.
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub base_ejection_time: ConsulDuration,
}

/// The settings for one upstream (`Overrides[]`) or for all
/// (`Defaults`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The upstream service (overrides only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
    /// The protocol to speak to it, overriding its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// How long a connect to it may take, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connect_timeout_ms: u32,
    /// Circuit-breaker limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<UpstreamLimits>,
    /// Outlier detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
    /// Mesh gateway use.
    #[serde(default, skip_serializing_if = "MeshGatewayConfig::is_default")]
    pub mesh_gateway: MeshGatewayConfig,
    /// `""` or `exact_balance`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub balance_outbound_connections: String,
}

impl UpstreamConfig {
    fn check(&self, field: &str, named: bool) -> Result<(), FieldError> {
        match (named, self.name.as_str()) {
            (true, "") => return Err(FieldError::new(format!("{field}.Name"), "is required")),
            (true, "*") => {
                return Err(FieldError::new(
                    format!("{field}.Name"),
                    "must name a service, not a wildcard",
                ))
            }
            (false, name) if !name.is_empty() => {
                return Err(FieldError::new(
                    format!("{field}.Name"),
                    "must be empty for the defaults of all upstreams",
                ))
            }
            _ => {}
        }
        check_default_scope(
            field,
            [
                ("Namespace", &self.namespace),
                ("Partition", &self.partition),
            ],
        )?;
        check_protocol(&format!("{field}.Protocol"), &self.protocol)?;
        self.mesh_gateway.check(&format!("{field}.MeshGateway"))?;
        match self.balance_outbound_connections.as_str() {
            "" | "exact_balance" => Ok(()),
            other => Err(FieldError::new(
                format!("{field}.BalanceOutboundConnections"),
                format!("{other:?} is not \"exact_balance\""),
            )),
        }
    }
}

/// `UpstreamConfig`: per-upstream overrides and defaults for the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpstreamConfiguration {
    /// Settings for named upstreams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<UpstreamConfig>,
    /// Settings for every other upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<UpstreamConfig>,
}

impl UpstreamConfiguration {
    /// The settings that apply to upstream `name`: its override, else the
    /// defaults.
    pub fn for_upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.overrides
            .iter()
            .find(|o| o.name == name)
            .or(self.defaults.as_ref())
    }
}

/// A `service-defaults` entry (without the shared envelope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceDefaults {
    /// `tcp` (the default), `http`, `http2` or `grpc`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// `""`, `direct` or `transparent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Transparent proxy settings.
    #[serde(default, skip_serializing_if = "TransparentProxyConfig::is_default")]
    pub transparent_proxy: TransparentProxyConfig,
    /// Mesh gateway use.
    #[serde(default, skip_serializing_if = "MeshGatewayConfig::is_default")]
    pub mesh_gateway: MeshGatewayConfig,
    /// Defaults for this service's upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_config: Option<UpstreamConfiguration>,
    /// Most inbound connections at once (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_inbound_connections: u32,
    /// How long the sidecar's connect to the local app may take (ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_connect_timeout_ms: u32,
    /// How long a request to the local app may take (ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_request_timeout_ms: u32,
}

impl KindSpec for ServiceDefaults {
    const KIND: &'static str = super::kind::SERVICE_DEFAULTS;

    fn normalize(&mut self) {
        self.protocol = self.protocol.to_ascii_lowercase();
        if let Some(u) = &mut self.upstream_config {
            for c in u.overrides.iter_mut().chain(u.defaults.as_mut()) {
                c.protocol = c.protocol.to_ascii_lowercase();
            }
        }
    }

    fn validate(&self, name: &str) -> Result<(), FieldError> {
        if name == "*" {
            return Err(FieldError::new(
                "Name",
                "must be the name of a service, not a wildcard",
            ));
        }
        check_protocol("Protocol", &self.protocol)?;
        check_modes(&self.mode, &self.mesh_gateway)?;
        if let Some(u) = &self.upstream_config {
            for (i, o) in u.overrides.iter().enumerate() {
                o.check(&format!("UpstreamConfig.Overrides[{i}]"), true)?;
            }
            if let Some(d) = &u.defaults {
                d.check("UpstreamConfig.Defaults", false)?;
            }
        }
        Ok(())
    }
}
