//! The state store as the DNS interface sees it.

use crate::rpc::link::ServerLink;
use crate::state::Store;
use crate::structs::status;
use mesh_dns::{Catalog, NodeRecord, ServiceInstance};
use std::sync::Arc;

pub use mesh_dns::{DnsConfig, DnsServer};

/// Answers DNS's questions from the local state store.
pub struct StoreCatalog {
    store: Arc<Store>,
    datacenter: String,
}

impl StoreCatalog {
    /// A catalog view of `store` for datacenter `datacenter`.
    pub fn new(store: Arc<Store>, datacenter: String) -> Self {
        StoreCatalog { store, datacenter }
    }
}

fn instance(e: crate::structs::CheckServiceNode) -> ServiceInstance {
    ServiceInstance {
        node: e.node.node,
        node_address: e.node.address,
        service_address: e.service.address,
        port: e.service.port,
        node_meta: e.node.meta,
    }
}

impl Catalog for StoreCatalog {
    fn datacenters(&self) -> Vec<String> {
        vec![self.datacenter.clone()]
    }

    fn service_instances(&self, dc: &str, name: &str, tag: Option<&str>) -> Vec<ServiceInstance> {
        if !dc.eq_ignore_ascii_case(&self.datacenter) {
            return Vec::new();
        }
        let data = self.store.read();
        data.check_service_nodes_ci(name)
            .into_iter()
            .filter(|e| {
                tag.is_none_or(|t| e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
            })
            .filter(|e| e.aggregate_status() != status::CRITICAL)
            .map(instance)
            .collect()
    }

    fn connect_instances(&self, dc: &str, name: &str) -> Vec<ServiceInstance> {
        if !dc.eq_ignore_ascii_case(&self.datacenter) {
            return Vec::new();
        }
        let data = self.store.read();
        data.check_service_nodes(name, &[], true)
            .into_iter()
            .filter(|e| e.aggregate_status() != status::CRITICAL)
            .map(instance)
            .collect()
    }

    fn node(&self, dc: &str, name: &str) -> Option<NodeRecord> {
        if !dc.eq_ignore_ascii_case(&self.datacenter) {
            return None;
        }
        let data = self.store.read();
        let node = data.nodes.get(name).or_else(|| {
            data.nodes
                .values()
                .find(|n| n.node.eq_ignore_ascii_case(name))
        })?;
        Some(NodeRecord {
            name: node.node.clone(),
            address: node.address.clone(),
            meta: node.meta.clone(),
        })
    }
}

/// A client agent's DNS: every query is answered by a server's DNS over RPC
/// (SERVFAIL when no server answers).
pub struct ForwardedDns {
    link: ServerLink,
}

impl ForwardedDns {
    /// Forwards through a client agent's `link` to the servers.
    pub fn new(link: ServerLink) -> Self {
        ForwardedDns { link }
    }
}

impl mesh_dns::transport::Answer for ForwardedDns {
    fn answer(&self, query: Vec<u8>, max_size: usize) -> mesh_dns::transport::AnswerFuture<'_> {
        Box::pin(async move {
            match self.link.forward_dns(query.clone(), max_size).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding a DNS query failed");
                    mesh_dns::server_failure(&query)
                }
            }
        })
    }
}
