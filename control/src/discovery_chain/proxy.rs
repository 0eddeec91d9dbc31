//! A compiled chain as the proxy follows it ([`mesh_proxy::Chain`]):
//! routes in order with the catch-all last, each route's weighted splits
//! (hundredths of a percent, summing to 10000) to target IDs, and the
//! targets with their endpoints, timeouts, load balancer and failover.

use super::{CompiledChain, Node, NodeType, Target};
use crate::config_entry::http::HttpMatch;
use crate::config_entry::service_router::RouteDestination;
use crate::config_entry::service_splitter::scaled;
use mesh_proxy::{Chain, Route as ProxyRoute, Split as ProxySplit, Target as ProxyTarget};
use std::net::SocketAddr;

/// All requests, in hundredths of a percent.
const ALL: u32 = 10_000;

/// The legs of the node at `key`: a splitter's (zero weights dropped, any
/// rounding remainder given to the first leg, as Consul does) or a
/// resolver's single one.
fn splits_of(chain: &CompiledChain, key: &str) -> Vec<ProxySplit> {
    let Some(node) = chain.nodes.get(key) else {
        return Vec::new();
    };
    if let Some(r) = &node.resolver {
        return vec![ProxySplit {
            weight: ALL,
            target: r.target.clone(),
            ..ProxySplit::default()
        }];
    }
    let mut legs: Vec<ProxySplit> = node
        .splits
        .iter()
        .filter_map(|s| {
            let target = chain
                .nodes
                .get(&s.next_node)?
                .resolver
                .as_ref()?
                .target
                .clone();
            let weight = u32::try_from(scaled(s.weight)).ok().filter(|w| *w > 0)?;
            Some(ProxySplit {
                weight,
                target,
                request_headers: s.definition.request_headers.clone(),
                response_headers: s.definition.response_headers.clone(),
            })
        })
        .collect();
    let sum: u32 = legs.iter().map(|l| l.weight).sum();
    if let Some(first) = legs.first_mut() {
        first.weight = (first.weight + ALL).saturating_sub(sum).max(1);
    }
    legs
}

/// A route taking requests that fit `m` to the node at `next`, with the
/// destination's settings.
fn route(
    chain: &CompiledChain,
    m: HttpMatch,
    next: &str,
    dest: Option<&RouteDestination>,
) -> ProxyRoute {
    let dest = dest.cloned().unwrap_or_default();
    ProxyRoute {
        r#match: m,
        splits: splits_of(chain, next),
        prefix_rewrite: Some(dest.prefix_rewrite.clone()).filter(|p| !p.is_empty()),
        request_timeout: Some(dest.request_timeout.0).filter(|t| !t.is_zero()),
        num_retries: dest.num_retries,
        retry_on_connect_failure: dest.retries_connect_failure(),
        retry_on_status_codes: dest.retried_status_codes(),
        request_headers: dest.request_headers,
        response_headers: dest.response_headers,
    }
}

/// The routes of the chain: a router's (its catch-all last, matching
/// everything), else one catch-all route.
fn routes(chain: &CompiledChain, start: &Node) -> Vec<ProxyRoute> {
    if start.r#type != NodeType::Router {
        return vec![route(chain, HttpMatch::default(), &chain.start_node, None)];
    }
    let last = start.routes.len().saturating_sub(1);
    start
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let m = if i == last {
                HttpMatch::default()
            } else {
                r.definition.http_match()
            };
            route(chain, m, &r.next_node, r.definition.destination.as_ref())
        })
        .collect()
}

/// The chain for a proxy; `endpoints` gives each target's healthy sidecars.
pub fn to_proxy_chain(
    chain: &CompiledChain,
    mut endpoints: impl FnMut(&Target) -> Vec<SocketAddr>,
) -> Chain {
    let routes = match chain.nodes.get(&chain.start_node) {
        Some(start) => routes(chain, start),
        None => Vec::new(),
    };
    let targets = chain
        .targets
        .values()
        .map(|t| {
            let resolver = chain
                .nodes
                .values()
                .filter_map(|n| n.resolver.as_ref())
                .find(|r| r.target == t.id);
            let target = ProxyTarget {
                service: t.service.clone(),
                subset: t.service_subset.clone(),
                endpoints: endpoints(t),
                connect_timeout: Some(t.connect_timeout.0).filter(|d| !d.is_zero()),
                request_timeout: Some(t.request_timeout.0).filter(|d| !d.is_zero()),
                load_balancer: t
                    .load_balancer
                    .as_ref()
                    .map(|lb| lb.to_proxy())
                    .unwrap_or_default(),
                failover: resolver
                    .and_then(|r| r.failover.as_ref())
                    .map(|f| f.targets.clone())
                    .unwrap_or_default(),
            };
            (t.id.clone(), target)
        })
        .collect();
    Chain {
        routes,
        targets,
        outlier_detection: None,
    }
}

/// The target the chain's catch-all sends requests to first, and its
/// failover targets in order: where an L4 upstream's connections go.
pub fn default_targets(chain: &Chain) -> Vec<&str> {
    let Some(first) = chain.routes.last().and_then(|r| r.splits.first()) else {
        return Vec::new();
    };
    let failover = chain
        .targets
        .get(&first.target)
        .map(|t| t.failover.as_slice())
        .unwrap_or_default();
    std::iter::once(first.target.as_str())
        .chain(failover.iter().map(String::as_str))
        .collect()
}
