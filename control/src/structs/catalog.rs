//! Nodes, services and health checks: the catalog's records.

use super::RaftIndex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A check status: `passing`, `warning` or `critical`.
pub mod status {
    /// The check is healthy.
    pub const PASSING: &str = "passing";
    /// The check is degraded but the instance still serves.
    pub const WARNING: &str = "warning";
    /// The check failed: the instance is excluded from healthy results.
    pub const CRITICAL: &str = "critical";
    /// The pseudo-status that matches any status in `/v1/health/state/any`.
    pub const ANY: &str = "any";

    /// True when `s` is one of the three real statuses.
    pub fn is_valid(s: &str) -> bool {
        matches!(s, PASSING | WARNING | CRITICAL)
    }
}

/// Service kinds.
pub mod kind {
    /// A sidecar proxy of the service mesh.
    pub const CONNECT_PROXY: &str = "connect-proxy";
}

/// The ID of the node health check every agent keeps for itself.
pub const SERF_HEALTH_CHECK: &str = "serfHealth";

/// A node in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    /// The node's UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The node's name, unique in its datacenter.
    pub node: String,
    /// The address other nodes and clients reach it on.
    pub address: String,
    /// The datacenter it belongs to.
    pub datacenter: String,
    /// Extra addresses by name (`lan`, `wan`, ...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// Raft bookkeeping.
    #[serde(flatten)]
    pub raft: RaftIndex,
}

/// An address and port of a service under a tag such as `lan` or `wan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceAddress {
    /// The address.
    pub address: String,
    /// The port.
    pub port: u16,
}

/// How much traffic an instance takes in DNS SRV answers by health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while all checks pass.
    pub passing: i32,
    /// Weight while some check warns.
    pub warning: i32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service instance registered on a node (Consul's `NodeService`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeService {
    /// The kind: empty for a typical service, `connect-proxy`, `mesh-gateway`, ...
    pub kind: String,
    /// The instance ID, unique on its node.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name.
    pub service: String,
    /// Tags for filtering.
    pub tags: Vec<String>,
    /// The address, empty to use the node's.
    pub address: String,
    /// Addresses under tags such as `lan_ipv4`.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// The port.
    pub port: u16,
    /// DNS SRV weights.
    pub weights: Weights,
    /// Whether the catalog's tags win over the agent's during anti-entropy.
    pub enable_tag_override: bool,
    /// Proxy configuration for `connect-proxy` kinds (kept verbatim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    /// Connect settings (kept verbatim; `SidecarService` is expanded by the agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<serde_json::Value>,
    /// The datacenter it runs in.
    pub datacenter: String,
    /// Raft bookkeeping.
    #[serde(flatten)]
    pub raft: RaftIndex,
}

/// The definition a check was registered with, echoed in `Definition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheckDefinition {
    /// URL of an HTTP check.
    #[serde(rename = "HTTP", skip_serializing_if = "String::is_empty")]
    pub http: String,
    /// Address of a TCP check.
    #[serde(rename = "TCP", skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    /// Target of a gRPC check.
    #[serde(rename = "GRPC", skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    /// Interval between runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<super::ConsulDuration>,
    /// Timeout of one run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<super::ConsulDuration>,
    /// Deregister the service after it has been critical this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<super::ConsulDuration>,
}

/// A health check in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    /// The node it runs on.
    pub node: String,
    /// The check ID, unique on its node.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// A human name.
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// Operator notes.
    pub notes: String,
    /// The output of the last run.
    pub output: String,
    /// The service instance it belongs to, empty for a node check.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// The name of that service.
    pub service_name: String,
    /// The tags of that service.
    pub service_tags: Vec<String>,
    /// The check type: `http`, `tcp`, `ttl`, `script`, `grpc`, `serf`, ...
    #[serde(rename = "Type")]
    pub check_type: String,
    /// How the check runs.
    pub definition: HealthCheckDefinition,
    /// Raft bookkeeping.
    #[serde(flatten)]
    pub raft: RaftIndex,
}

/// `PUT /v1/catalog/register`: a node, optionally a service and checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterRequest {
    /// The target datacenter.
    pub datacenter: String,
    /// The node's UUID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The node name.
    pub node: String,
    /// The node address.
    pub address: String,
    /// The node's tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// The node's metadata.
    pub node_meta: BTreeMap<String, String>,
    /// A service to register on the node.
    pub service: Option<NodeService>,
    /// A single check to register.
    pub check: Option<HealthCheck>,
    /// Several checks to register.
    pub checks: Vec<HealthCheck>,
    /// Leave the node record as it is.
    pub skip_node_update: bool,
}

/// `PUT /v1/catalog/deregister`: a node, or one service or check on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeregisterRequest {
    /// The target datacenter.
    pub datacenter: String,
    /// The node.
    pub node: String,
    /// A service instance to remove, if set.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// A check to remove, if set.
    #[serde(rename = "CheckID")]
    pub check_id: String,
}

/// One entry of `/v1/catalog/service/:name`: a service instance flattened with
/// its node (Consul's `ServiceNode`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ServiceNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    pub service_proxy: serde_json::Value,
    pub service_connect: serde_json::Value,
    pub create_index: u64,
    pub modify_index: u64,
}

impl ServiceNode {
    /// Flattens an instance with its node.
    pub fn new(node: &Node, svc: &NodeService) -> Self {
        ServiceNode {
            id: node.id.clone(),
            node: node.node.clone(),
            address: node.address.clone(),
            datacenter: node.datacenter.clone(),
            tagged_addresses: node.tagged_addresses.clone(),
            node_meta: node.meta.clone(),
            service_kind: svc.kind.clone(),
            service_id: svc.id.clone(),
            service_name: svc.service.clone(),
            service_tags: svc.tags.clone(),
            service_address: svc.address.clone(),
            service_tagged_addresses: svc.tagged_addresses.clone(),
            service_weights: svc.weights,
            service_meta: svc.meta.clone(),
            service_port: svc.port,
            service_enable_tag_override: svc.enable_tag_override,
            service_proxy: svc.proxy.clone().unwrap_or(serde_json::json!({})),
            service_connect: svc.connect.clone().unwrap_or(serde_json::json!({})),
            create_index: svc.raft.create_index,
            modify_index: svc.raft.modify_index,
        }
    }
}

/// One entry of `/v1/health/service/:name`: node, instance and its checks
/// (Consul's `CheckServiceNode`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckServiceNode {
    /// The node.
    pub node: Node,
    /// The instance.
    pub service: NodeService,
    /// Node checks and the instance's checks.
    pub checks: Vec<HealthCheck>,
}

impl CheckServiceNode {
    /// The worst status among the checks: `critical` beats `warning` beats `passing`.
    pub fn aggregate_status(&self) -> &'static str {
        aggregate_status(self.checks.iter().map(|c| c.status.as_str()))
    }

    /// Where the instance is reached: its own address, else its node's.
    pub fn address(&self) -> &str {
        Some(self.service.address.as_str())
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.node.address)
    }
}

/// The worst of several statuses; `passing` when there are none.
pub fn aggregate_status<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let mut worst = status::PASSING;
    for s in statuses {
        match s {
            status::CRITICAL => return status::CRITICAL,
            status::WARNING => worst = status::WARNING,
            _ => {}
        }
    }
    worst
}
