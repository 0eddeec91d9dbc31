//! The compiler: from the entries of one service's chain to the graph.
//!
//! Walks the router (if any), then splitters (recursively, through other
//! services' splitters), then resolvers (following redirects and default
//! subsets, adding failover targets); checks that every service in the
//! chain speaks one protocol and that routing and splitting are only used
//! with an HTTP-like one; refuses loops; flattens splitters that lead to
//! splitters; drops what the start node cannot reach.

use super::{
    node_key, ChainEntries, ChainError, CompiledChain, FailoverNode, Node, NodeType, ResolverNode,
    RouteNode, SplitNode, Target, DEFAULT_CONNECT_TIMEOUT,
};
use crate::config_entry::http::{HeaderChanges, HttpMatch};
use crate::config_entry::is_http_like;
use crate::config_entry::service_resolver::{ServiceResolver, TargetRef};
use crate::config_entry::service_router::{Route, RouteDestination, RouteMatch};
use crate::config_entry::service_splitter::{scaled, Split};
use crate::structs::ConsulDuration;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What to compile.
#[derive(Debug, Clone)]
pub struct CompileRequest<'a> {
    /// The service whose chain it is.
    pub service: &'a str,
    /// The datacenter to compile in.
    pub datacenter: &'a str,
    /// The trust domain, for the targets' SNI names.
    pub trust_domain: &'a str,
    /// A protocol replacing the chain's (an upstream's `protocol`); `tcp`
    /// drops routers and splitters.
    pub override_protocol: Option<&'a str>,
    /// A connect timeout replacing every resolver's.
    pub override_connect_timeout: Option<Duration>,
    /// The entries.
    pub entries: &'a ChainEntries,
}

/// A target before it is recorded: service, subset, datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TargetKey {
    service: String,
    subset: String,
    datacenter: String,
}

impl TargetKey {
    fn id(&self) -> String {
        if self.subset.is_empty() {
            format!("{}.default.{}", self.service, self.datacenter)
        } else {
            format!(
                "{}.{}.default.{}",
                self.subset, self.service, self.datacenter
            )
        }
    }

    /// This target with the fields `to` sets replaced; another service
    /// resets the subset.
    fn rewrite(&self, to: &TargetRef) -> TargetKey {
        let mut out = self.clone();
        if !to.service.is_empty() && to.service != self.service {
            out.service = to.service.clone();
            out.subset.clear();
        }
        if !to.service_subset.is_empty() {
            out.subset = to.service_subset.clone();
        }
        if !to.datacenter.is_empty() {
            out.datacenter = to.datacenter.clone();
        }
        out
    }
}

struct Compiler<'a> {
    req: &'a CompileRequest<'a>,
    protocol: Option<String>,
    /// A router or splitter is part of the chain.
    advanced: bool,
    /// The override protocol is not HTTP-like: routers and splitters are
    /// left out.
    no_advanced: bool,
    /// An override changed the result.
    customized: bool,
    nodes: BTreeMap<String, Node>,
    /// Resolver node keys by the target IDs that lead to them.
    resolved: BTreeMap<String, String>,
    targets: BTreeMap<String, Target>,
}

/// Compiles `req.service`'s chain.
pub fn compile(req: &CompileRequest<'_>) -> Result<CompiledChain, ChainError> {
    let mut c = Compiler {
        req,
        protocol: None,
        advanced: false,
        no_advanced: req.override_protocol.is_some_and(|p| !is_http_like(p)),
        customized: false,
        nodes: BTreeMap::new(),
        resolved: BTreeMap::new(),
        targets: BTreeMap::new(),
    };
    let start = c.assemble()?;
    c.detect_loops(&start)?;
    c.flatten_splitters();
    c.remove_unreachable(&start);
    let mut protocol = c.protocol.clone().unwrap_or_else(|| "tcp".into());
    if c.advanced && !is_http_like(&protocol) {
        return Err(ChainError::AdvancedRoutingNotPermitted {
            chain: req.service.to_string(),
            protocol,
        });
    }
    if let Some(p) = req.override_protocol.filter(|p| *p != protocol) {
        protocol = p.to_string();
        c.customized = true;
    }
    let default = c.nodes.get(&start).is_some_and(|n| {
        n.resolver.as_ref().is_some_and(|r| {
            r.default
                && c.targets
                    .get(&r.target)
                    .is_some_and(|t| t.service == req.service)
        })
    });
    let customization_hash = if c.customized {
        customization_hash(req)
    } else {
        String::new()
    };
    Ok(CompiledChain {
        service_name: req.service.to_string(),
        namespace: "default".into(),
        datacenter: req.datacenter.to_string(),
        customization_hash,
        default,
        protocol,
        service_meta: req
            .entries
            .service_meta
            .get(req.service)
            .cloned()
            .unwrap_or_default(),
        start_node: start,
        nodes: c.nodes,
        targets: c.targets,
    })
}

/// A short stable hash of the overrides (FNV-1a), in hex.
fn customization_hash(req: &CompileRequest<'_>) -> String {
    let text = format!(
        "{:?}|{:?}",
        req.override_protocol, req.override_connect_timeout
    );
    let hash = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}

impl Compiler<'_> {
    fn entries(&self) -> &ChainEntries {
        self.req.entries
    }

    fn target(&self, service: &str, subset: &str) -> TargetKey {
        TargetKey {
            service: service.to_string(),
            subset: subset.to_string(),
            datacenter: self.req.datacenter.to_string(),
        }
    }

    fn record_protocol(&mut self, service: &str) -> Result<(), ChainError> {
        let protocol = self.entries().protocol_of(service);
        match &self.protocol {
            None => self.protocol = Some(protocol),
            Some(expected) if *expected != protocol => {
                return Err(ChainError::InconsistentProtocols {
                    chain: self.req.service.to_string(),
                    service: service.to_string(),
                    protocol,
                    expected: expected.clone(),
                })
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Builds the graph from the start; returns the start node's key.
    fn assemble(&mut self) -> Result<String, ChainError> {
        let service = self.req.service;
        let router = match self.entries().routers.get(service) {
            Some(_) if self.no_advanced => {
                self.customized = true;
                None
            }
            other => other.cloned(),
        };
        let Some(router) = router else {
            return self.splitter_or_resolver(&self.target(service, ""));
        };
        self.advanced = true;
        self.record_protocol(service)?;
        let mut routes = Vec::with_capacity(router.routes.len() + 1);
        for route in &router.routes {
            let dest = route.destination.clone().unwrap_or_default();
            let svc = if dest.service.is_empty() {
                service
            } else {
                dest.service.as_str()
            };
            let target = self.target(svc, &dest.service_subset);
            let next = if dest.service_subset.is_empty() {
                self.splitter_or_resolver(&target)?
            } else {
                self.resolver(target, false)?.0
            };
            routes.push(RouteNode {
                definition: route.clone(),
                next_node: next,
            });
        }
        let catch_all = Route {
            r#match: Some(RouteMatch {
                http: Some(HttpMatch {
                    path_prefix: Some("/".into()),
                    ..HttpMatch::default()
                }),
            }),
            destination: Some(RouteDestination {
                service: service.to_string(),
                ..RouteDestination::default()
            }),
        };
        let next = self.splitter_or_resolver(&self.target(service, ""))?;
        routes.push(RouteNode {
            definition: catch_all,
            next_node: next,
        });
        let node = Node {
            routes,
            ..Node::new(NodeType::Router, service)
        };
        let key = node.key();
        self.nodes.insert(key.clone(), node);
        Ok(key)
    }

    fn splitter_or_resolver(&mut self, target: &TargetKey) -> Result<String, ChainError> {
        match self.splitter(&target.service)? {
            Some(key) => Ok(key),
            None => Ok(self.resolver(target.clone(), false)?.0),
        }
    }

    /// The splitter node of `service`, built on first use; `None` when the
    /// service has no splitter.
    fn splitter(&mut self, service: &str) -> Result<Option<String>, ChainError> {
        let key = node_key(NodeType::Splitter, service);
        if self.nodes.contains_key(&key) {
            return Ok(Some(key));
        }
        let splitter = match self.entries().splitters.get(service) {
            Some(_) if self.no_advanced => {
                self.customized = true;
                return Ok(None);
            }
            None => return Ok(None),
            Some(s) => s.clone(),
        };
        // Recorded before recursing, so that a loop ends here and is
        // reported by `detect_loops`.
        self.nodes
            .insert(key.clone(), Node::new(NodeType::Splitter, service));
        let mut splits = Vec::with_capacity(splitter.splits.len());
        let mut hash_lb = None;
        for split in &splitter.splits {
            let svc = split.service_or(service).to_string();
            if svc != service && split.service_subset.is_empty() {
                if let Some(next) = self.splitter(&svc)? {
                    splits.push(SplitNode {
                        definition: split.clone(),
                        weight: split.weight,
                        next_node: next,
                    });
                    continue;
                }
            }
            let (next, target) = self.resolver(self.target(&svc, &split.service_subset), false)?;
            if hash_lb.is_none() {
                hash_lb = self
                    .targets
                    .get(&target)
                    .and_then(|t| t.load_balancer.clone())
                    .filter(|lb| matches!(lb.policy.as_str(), "ring_hash" | "maglev"));
            }
            splits.push(SplitNode {
                definition: split.clone(),
                weight: split.weight,
                next_node: next,
            });
        }
        if let Some(node) = self.nodes.get_mut(&key) {
            node.splits = splits;
            node.load_balancer = hash_lb;
        }
        self.advanced = true;
        Ok(Some(key))
    }

    /// Resolves `target` through redirects and default subsets; returns the
    /// resolver node's key and the final target ID. For a failover target
    /// (`for_failover`) no node is recorded and no failover followed.
    fn resolver(
        &mut self,
        mut target: TargetKey,
        for_failover: bool,
    ) -> Result<(String, String), ChainError> {
        let mut history: Vec<String> = Vec::new();
        let resolver = loop {
            let cached = self.resolved.get(&target.id()).and_then(|key| {
                let r = self.nodes.get(key)?.resolver.as_ref()?;
                Some((key.clone(), r.target.clone()))
            });
            if let Some(hit) = cached {
                return Ok(hit);
            }
            self.record_protocol(&target.service)?;
            let resolver = self
                .entries()
                .resolvers
                .get(&target.service)
                .cloned()
                .unwrap_or_default();
            let id = target.id();
            if history.contains(&id) {
                history.push(id);
                return Err(ChainError::RedirectLoop(history));
            }
            history.push(id.clone());
            if let Some(redirect) = &resolver.redirect {
                let next = target.rewrite(redirect);
                if next.id() != id {
                    target = next;
                    continue;
                }
            }
            if target.subset.is_empty() && !resolver.default_subset.is_empty() {
                target.subset = resolver.default_subset.clone();
                continue;
            }
            if !resolver.has_subset(&target.subset) {
                return Err(ChainError::UnknownSubset {
                    service: target.service.clone(),
                    subset: target.subset.clone(),
                });
            }
            break resolver;
        };
        let id = target.id();
        let mut connect_timeout = if resolver.connect_timeout.is_zero() {
            DEFAULT_CONNECT_TIMEOUT
        } else {
            resolver.connect_timeout.0
        };
        if let Some(t) = self.req.override_connect_timeout.filter(|t| !t.is_zero()) {
            if t != connect_timeout {
                connect_timeout = t;
                self.customized = true;
            }
        }
        self.record_target(&target, &resolver, connect_timeout);
        let mut node = Node {
            resolver: Some(ResolverNode {
                default: resolver.is_default(),
                connect_timeout: ConsulDuration(connect_timeout),
                request_timeout: resolver.request_timeout,
                target: id.clone(),
                failover: None,
            }),
            load_balancer: resolver.load_balancer.clone(),
            ..Node::new(NodeType::Resolver, &id)
        };
        let key = node.key();
        if for_failover {
            return Ok((key, id));
        }
        self.nodes.insert(key.clone(), node.clone());
        self.resolved.insert(id.clone(), key.clone());
        for step in &history {
            self.resolved.insert(step.clone(), key.clone());
        }
        let section = resolver
            .failover
            .get(&target.subset)
            .or_else(|| resolver.failover.get("*"));
        if let Some(f) = section {
            let candidates: Vec<TargetKey> = if !f.datacenters.is_empty() {
                f.datacenters
                    .iter()
                    .map(|dc| {
                        target.rewrite(&TargetRef {
                            datacenter: dc.clone(),
                            ..f.as_target()
                        })
                    })
                    .collect()
            } else if !f.targets.is_empty() {
                f.targets.iter().map(|t| target.rewrite(t)).collect()
            } else {
                vec![target.rewrite(&f.as_target())]
            };
            let mut ids = Vec::new();
            for candidate in candidates.into_iter().filter(|c| c.id() != id) {
                let (_, failover_target) = self.resolver(candidate, true)?;
                ids.push(failover_target);
            }
            if !ids.is_empty() {
                if let Some(r) = node.resolver.as_mut() {
                    r.failover = Some(FailoverNode { targets: ids });
                }
                self.nodes.insert(key.clone(), node);
            }
        }
        Ok((key, id))
    }

    fn record_target(
        &mut self,
        t: &TargetKey,
        resolver: &ServiceResolver,
        connect_timeout: Duration,
    ) {
        let id = t.id();
        let name = format!("{id}.internal.{}", self.req.trust_domain);
        self.targets.entry(id.clone()).or_insert_with(|| Target {
            id,
            service: t.service.clone(),
            service_subset: t.subset.clone(),
            namespace: "default".into(),
            datacenter: t.datacenter.clone(),
            mesh_gateway: Default::default(),
            subset: resolver.subsets.get(&t.subset).cloned().unwrap_or_default(),
            connect_timeout: ConsulDuration(connect_timeout),
            sni: name.clone(),
            name,
            request_timeout: resolver.request_timeout,
            load_balancer: resolver.load_balancer.clone(),
        });
    }

    /// The nodes a node leads to.
    fn next_nodes(&self, key: &str) -> Vec<String> {
        let Some(node) = self.nodes.get(key) else {
            return Vec::new();
        };
        node.routes
            .iter()
            .map(|r| r.next_node.clone())
            .chain(node.splits.iter().map(|s| s.next_node.clone()))
            .collect()
    }

    /// Refuses a router or splitter that leads back to itself.
    fn detect_loops(&self, start: &str) -> Result<(), ChainError> {
        fn visit(c: &Compiler<'_>, key: &str, path: &mut Vec<String>) -> Result<(), ChainError> {
            if path.iter().any(|p| p == key) {
                path.push(key.to_string());
                return Err(ChainError::CircularReference(path.clone()));
            }
            path.push(key.to_string());
            for next in c.next_nodes(key) {
                visit(c, &next, path)?;
            }
            path.pop();
            Ok(())
        }
        visit(self, start, &mut Vec::new())
    }

    /// Replaces every split that leads to another splitter with that
    /// splitter's legs, weights multiplied and header changes merged.
    fn flatten_splitters(&mut self) {
        loop {
            let mut changed = false;
            let keys: Vec<String> = self.nodes.keys().cloned().collect();
            for key in keys {
                let splits = self.nodes[&key].splits.clone();
                if splits.is_empty() {
                    continue;
                }
                let mut flat = Vec::with_capacity(splits.len());
                for outer in splits {
                    let Some(inner) = self
                        .nodes
                        .get(&outer.next_node)
                        .filter(|n| n.r#type == NodeType::Splitter)
                    else {
                        flat.push(outer);
                        continue;
                    };
                    changed = true;
                    for leg in &inner.splits {
                        let weight = scaled(outer.weight * leg.weight / 100.0) as f64 / 100.0;
                        flat.push(SplitNode {
                            definition: merge_parent(&leg.definition, &outer.definition),
                            weight,
                            next_node: leg.next_node.clone(),
                        });
                    }
                }
                if let Some(node) = self.nodes.get_mut(&key) {
                    node.splits = flat;
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Drops the nodes and targets the start cannot reach.
    fn remove_unreachable(&mut self, start: &str) {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(key) = todo.pop() {
            if seen.insert(key.clone()) {
                todo.extend(self.next_nodes(&key));
            }
        }
        self.nodes.retain(|k, _| seen.contains(k));
        let used: BTreeSet<String> = self
            .nodes
            .values()
            .filter_map(|n| n.resolver.as_ref())
            .flat_map(|r| {
                std::iter::once(r.target.clone())
                    .chain(r.failover.iter().flat_map(|f| f.targets.clone()))
            })
            .collect();
        self.targets.retain(|id, _| used.contains(id));
    }
}

/// A split reached through `parent`: requests pass the parent's header
/// changes first, responses the child's first (so the parent's win).
fn merge_parent(child: &Split, parent: &Split) -> Split {
    Split {
        request_headers: merge_headers(&parent.request_headers, &child.request_headers),
        response_headers: merge_headers(&child.response_headers, &parent.response_headers),
        ..child.clone()
    }
}

/// `base` then `over`: `over` wins for the same header.
fn merge_headers(base: &HeaderChanges, over: &HeaderChanges) -> HeaderChanges {
    let mut out = base.clone();
    out.add.extend(over.add.clone());
    out.set.extend(over.set.clone());
    for r in &over.remove {
        if !out.remove.contains(r) {
            out.remove.push(r.clone());
        }
    }
    out
}
