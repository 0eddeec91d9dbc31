//! The discovery chain: how requests for a service are routed (router),
//! split (splitter) and resolved to instances (resolver), compiled from the
//! config entries into Consul's `CompiledDiscoveryChain` — a graph of
//! router, splitter and resolver nodes over a set of targets.
//!
//! [`compile`] builds it (served at `/v1/discovery-chain/:service`);
//! [`validate_write`] compiles every chain a config entry write touches
//! before the write is made, so a write that would break one is refused;
//! [`proxy::to_proxy_chain`] turns a chain into the routes, weighted
//! splits and targets a proxy follows.

mod compile;
pub mod entries;
pub mod proxy;
mod validate;

pub use compile::{compile, CompileRequest};
pub use entries::{ChainEntries, Change};
pub use validate::validate_write;

use crate::config_entry::service_defaults::MeshGatewayConfig;
use crate::config_entry::service_resolver::{LoadBalancerConfig, Subset};
use crate::config_entry::service_router::Route;
use crate::config_entry::service_splitter::{serialize_weight, Split};
use crate::structs::ConsulDuration;
use serde::Serialize;
use std::collections::BTreeMap;

/// The connect timeout of a resolver that sets none.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a chain cannot be compiled — and so why a write that would produce
/// it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A router or splitter on a service whose protocol is not HTTP-like.
    #[error("discovery chain {chain:?} uses a protocol {protocol:?} that does not permit advanced routing or splitting behavior")]
    AdvancedRoutingNotPermitted {
        /// The chain's service.
        chain: String,
        /// Its protocol.
        protocol: String,
    },
    /// The services of one chain speak different protocols.
    #[error("discovery chain {chain:?} uses inconsistent protocols; service {service:?} has {protocol:?} which is not {expected:?}")]
    InconsistentProtocols {
        /// The chain's service.
        chain: String,
        /// The service that differs.
        service: String,
        /// Its protocol.
        protocol: String,
        /// The chain's protocol so far.
        expected: String,
    },
    /// A split, route, redirect or failover names a subset the service's
    /// resolver does not define.
    #[error("service {service:?} does not have a subset named {subset:?}")]
    UnknownSubset {
        /// The service.
        service: String,
        /// The subset.
        subset: String,
    },
    /// Resolver redirects form a loop.
    #[error("detected circular resolver redirect: [{}]", .0.join(" -> "))]
    RedirectLoop(Vec<String>),
    /// Splitters (or a router and splitters) refer to each other in a loop.
    #[error("detected circular reference: [{}]", .0.join(" -> "))]
    CircularReference(Vec<String>),
    /// An intention with L7 permissions names a service that is not HTTP.
    #[error("service {service:?} has protocol {protocol:?}, which is incompatible with L7 intentions permissions")]
    L7IntentionsNeedHttp {
        /// The destination service.
        service: String,
        /// Its protocol.
        protocol: String,
    },
    /// The proposed entry itself does not decode.
    #[error("{0}")]
    Entry(#[from] crate::config_entry::EntryError),
}

/// Consul's `CompiledDiscoveryChain`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompiledChain {
    /// The service the chain is for.
    pub service_name: String,
    /// Always `default`.
    pub namespace: String,
    /// The datacenter it was compiled in.
    pub datacenter: String,
    /// Set when overrides changed the compilation.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub customization_hash: String,
    /// True when no router, splitter or resolver shapes the chain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// The protocol every service in the chain speaks.
    pub protocol: String,
    /// The `Meta` of the service's `service-defaults`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub service_meta: BTreeMap<String, String>,
    /// The key of the first node.
    pub start_node: String,
    /// The nodes, by key (`router:web`, `splitter:web`,
    /// `resolver:v1.web.default.dc1`).
    pub nodes: BTreeMap<String, Node>,
    /// The targets, by ID.
    pub targets: BTreeMap<String, Target>,
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Matches requests to routes.
    Router,
    /// Picks a leg by weight.
    Splitter,
    /// Resolves a target.
    Resolver,
}

impl NodeType {
    /// The word used in node keys.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Router => "router",
            NodeType::Splitter => "splitter",
            NodeType::Resolver => "resolver",
        }
    }
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The kind of node.
    pub r#type: NodeType,
    /// Its name: the service for routers and splitters, the target ID for
    /// resolvers.
    pub name: String,
    /// A router's routes, the catch-all last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteNode>,
    /// A splitter's legs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitNode>,
    /// A resolver's settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<ResolverNode>,
    /// The load balancer (resolvers, and splitters over hash-based ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerConfig>,
}

impl Node {
    /// An empty node of type `t` named `name`.
    pub fn new(t: NodeType, name: &str) -> Self {
        Node {
            r#type: t,
            name: name.to_string(),
            routes: Vec::new(),
            splits: Vec::new(),
            resolver: None,
            load_balancer: None,
        }
    }

    /// The node's key in [`CompiledChain::nodes`].
    pub fn key(&self) -> String {
        node_key(self.r#type, &self.name)
    }
}

/// `type:name`.
pub fn node_key(t: NodeType, name: &str) -> String {
    format!("{}:{name}", t.as_str())
}

/// A compiled route.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouteNode {
    /// The route as written (the catch-all: `PathPrefix = "/"` to the
    /// service).
    pub definition: Route,
    /// The node requests taking it go to.
    pub next_node: String,
}

/// A compiled split.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SplitNode {
    /// The split as written (header changes merged when splitters were
    /// flattened).
    pub definition: Split,
    /// The effective weight in percent.
    #[serde(serialize_with = "serialize_weight")]
    pub weight: f64,
    /// The resolver node it goes to.
    pub next_node: String,
}

/// A compiled resolver.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResolverNode {
    /// True when no `service-resolver` entry shaped it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// How long a connect may take.
    pub connect_timeout: ConsulDuration,
    /// How long a request may take.
    #[serde(skip_serializing_if = "ConsulDuration::is_zero")]
    pub request_timeout: ConsulDuration,
    /// The target it resolves.
    pub target: String,
    /// Where to go when the target has no healthy instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverNode>,
}

/// A compiled failover.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailoverNode {
    /// Target IDs, tried in order.
    pub targets: Vec<String>,
}

/// One set of instances: a service (or a subset of it) in a datacenter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Target {
    /// `<subset>.<service>.default.<dc>`, or `<service>.default.<dc>`.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service.
    pub service: String,
    /// The subset, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// Always `default`.
    pub namespace: String,
    /// The datacenter.
    pub datacenter: String,
    /// Mesh gateway use.
    pub mesh_gateway: MeshGatewayConfig,
    /// The subset's filter and health setting.
    pub subset: Subset,
    /// How long a connect may take.
    pub connect_timeout: ConsulDuration,
    /// The SNI name its sidecars answer to.
    #[serde(rename = "SNI")]
    pub sni: String,
    /// Its unique name (as the SNI).
    pub name: String,
    /// How long a request may take (from its resolver).
    #[serde(skip)]
    pub request_timeout: ConsulDuration,
    /// Its resolver's load balancer.
    #[serde(skip)]
    pub load_balancer: Option<LoadBalancerConfig>,
}

#[cfg(test)]
mod tests;
