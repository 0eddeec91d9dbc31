//! Catalog tables: registration, deregistration and the reads behind
//! `/v1/catalog/*` and `/v1/health/*`.

use super::{table, Changes, StateData, StateError};
use crate::structs::{
    status, CheckServiceNode, DeregisterRequest, HealthCheck, Node, NodeService, RegisterRequest,
    ServiceNode,
};
use std::collections::BTreeMap;

// === writes ===

impl StateData {
    /// Applies a catalog registration: node, then service, then checks. The
    /// request is validated whole before anything changes.
    pub fn ensure_registration(
        &mut self,
        index: u64,
        now_ms: u64,
        req: &RegisterRequest,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        self.validate_registration(req)?;
        if !req.skip_node_update || !self.nodes.contains_key(&req.node) {
            self.ensure_node(index, req, changes);
        }
        if let Some(svc) = &req.service {
            self.ensure_service(index, &req.node, svc, changes);
        }
        for check in req.check.iter().chain(req.checks.iter()) {
            self.ensure_check(index, now_ms, &req.node, check, changes);
        }
        Ok(())
    }

    fn validate_registration(&self, req: &RegisterRequest) -> Result<(), StateError> {
        if req.node.is_empty() {
            return Err(StateError::Invalid("Must provide node".into()));
        }
        let node_exists = self.nodes.contains_key(&req.node);
        if req.address.is_empty() && !(req.skip_node_update && node_exists) {
            return Err(StateError::Invalid("Must provide address".into()));
        }
        if let Some(svc) = &req.service {
            if svc.service.is_empty() {
                return Err(StateError::Invalid("Must provide service name".into()));
            }
        }
        let svc_id = req
            .service
            .as_ref()
            .map(|s| if s.id.is_empty() { &s.service } else { &s.id });
        for check in req.check.iter().chain(req.checks.iter()) {
            if check.check_id.is_empty() && check.name.is_empty() {
                return Err(StateError::Invalid("Must provide check ID or name".into()));
            }
            if !check.node.is_empty() && check.node != req.node {
                return Err(StateError::Invalid(format!(
                    "Node '{}' does not match check node '{}'",
                    req.node, check.node
                )));
            }
            if !check.status.is_empty() && !status::is_valid(&check.status) {
                return Err(StateError::Invalid(format!(
                    "Invalid check status: {:?}",
                    check.status
                )));
            }
            if !check.service_id.is_empty()
                && Some(&check.service_id) != svc_id
                && !self
                    .services
                    .get(&req.node)
                    .is_some_and(|s| s.contains_key(&check.service_id))
            {
                return Err(StateError::NotFound(format!(
                    "Missing service registration for check {:?}: service {:?}",
                    check.check_id, check.service_id
                )));
            }
        }
        Ok(())
    }

    fn ensure_node(&mut self, index: u64, req: &RegisterRequest, changes: &mut Changes) {
        let existing = self.nodes.get(&req.node);
        let mut node = Node {
            id: req.id.clone(),
            node: req.node.clone(),
            address: req.address.clone(),
            datacenter: req.datacenter.clone(),
            tagged_addresses: req.tagged_addresses.clone(),
            meta: req.node_meta.clone(),
            raft: crate::structs::RaftIndex::new(index),
        };
        if let Some(old) = existing {
            if node.id.is_empty() {
                node.id = old.id.clone();
            }
            node.raft.create_index = old.raft.create_index;
            let mut same = node.clone();
            same.raft = old.raft;
            if &same == old {
                return;
            }
        }
        self.nodes.insert(req.node.clone(), node);
        self.bump(table::NODES, index, changes);
        changes.touch(table::node(&req.node));
        self.bump_node_services(index, &req.node, changes);
    }

    fn ensure_service(&mut self, index: u64, node: &str, svc: &NodeService, changes: &mut Changes) {
        let mut svc = svc.clone();
        if svc.id.is_empty() {
            svc.id = svc.service.clone();
        }
        svc.raft = crate::structs::RaftIndex::new(index);
        let node_services = self.services.entry(node.to_string()).or_default();
        if let Some(old) = node_services.get(&svc.id) {
            svc.raft.create_index = old.raft.create_index;
            let mut same = svc.clone();
            same.raft = old.raft;
            if &same == old {
                return;
            }
            if old.service != svc.service || connect_destination(old) != connect_destination(&svc) {
                let old = old.clone();
                self.unindex_service(node, &old);
                for topic in instance_topics(&old) {
                    self.bump(&topic, index, changes);
                }
            }
        }
        let id = svc.id.clone();
        self.services
            .entry(node.to_string())
            .or_default()
            .insert(id.clone(), svc.clone());
        self.index_service(node, &svc);
        self.bump(table::SERVICES, index, changes);
        for topic in instance_topics(&svc) {
            self.bump(&topic, index, changes);
        }
        changes.touch(table::node(node));
        // Checks of this instance carry its name and tags.
        if let Some(checks) = self.checks.get_mut(node) {
            let mut touched = false;
            for c in checks.values_mut().filter(|c| c.service_id == id) {
                if c.service_name != svc.service || c.service_tags != svc.tags {
                    c.service_name = svc.service.clone();
                    c.service_tags = svc.tags.clone();
                    c.raft.modify_index = index;
                    touched = true;
                }
            }
            if touched {
                self.bump(table::CHECKS, index, changes);
            }
        }
    }

    fn ensure_check(
        &mut self,
        index: u64,
        now_ms: u64,
        node: &str,
        check: &HealthCheck,
        changes: &mut Changes,
    ) {
        let mut check = check.clone();
        check.node = node.to_string();
        if check.check_id.is_empty() {
            check.check_id = check.name.clone();
        }
        if check.status.is_empty() {
            check.status = status::CRITICAL.to_string();
        }
        if !check.service_id.is_empty() {
            if let Some(svc) = self
                .services
                .get(node)
                .and_then(|s| s.get(&check.service_id))
            {
                check.service_name = svc.service.clone();
                check.service_tags = svc.tags.clone();
            }
        }
        check.raft = crate::structs::RaftIndex::new(index);
        let checks = self.checks.entry(node.to_string()).or_default();
        if let Some(old) = checks.get(&check.check_id) {
            check.raft.create_index = old.raft.create_index;
            let mut same = check.clone();
            same.raft = old.raft;
            if &same == old {
                return;
            }
        }
        let critical = check.status == status::CRITICAL;
        let check_id = check.check_id.clone();
        let service_id = check.service_id.clone();
        checks.insert(check_id.clone(), check);
        self.bump(table::CHECKS, index, changes);
        changes.touch(table::node(node));
        self.bump_check_owner(index, node, &service_id, changes);
        if critical {
            self.invalidate_sessions_for_check(index, now_ms, node, &check_id, changes);
        }
    }

    /// Bumps what a check's change affects: its instance, or every instance
    /// on the node for a node check.
    fn bump_check_owner(
        &mut self,
        index: u64,
        node: &str,
        service_id: &str,
        changes: &mut Changes,
    ) {
        let topics: Vec<String> = self
            .services
            .get(node)
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|s| service_id.is_empty() || s.id == service_id)
            .flat_map(instance_topics)
            .collect();
        for topic in topics {
            self.bump(&topic, index, changes);
        }
    }

    fn bump_node_services(&mut self, index: u64, node: &str, changes: &mut Changes) {
        self.bump_check_owner(index, node, "", changes);
    }

    pub(super) fn index_service(&mut self, node: &str, svc: &NodeService) {
        let key = (node.to_string(), svc.id.clone());
        self.by_service
            .entry(svc.service.clone())
            .or_default()
            .insert(key.clone());
        if let Some(dest) = connect_destination(svc) {
            self.by_connect
                .entry(dest.to_string())
                .or_default()
                .insert(key);
        }
    }

    fn unindex_service(&mut self, node: &str, svc: &NodeService) {
        let key = (node.to_string(), svc.id.clone());
        for (map, name) in [
            (&mut self.by_service, Some(svc.service.as_str())),
            (&mut self.by_connect, connect_destination(svc)),
        ] {
            let Some(name) = name else { continue };
            if let Some(set) = map.get_mut(name) {
                set.remove(&key);
                if set.is_empty() {
                    map.remove(name);
                }
            }
        }
    }

    /// Applies a catalog deregistration of a node, a service or a check.
    pub fn deregister(
        &mut self,
        index: u64,
        now_ms: u64,
        req: &DeregisterRequest,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        if req.node.is_empty() {
            return Err(StateError::Invalid("Must provide node".into()));
        }
        if !req.service_id.is_empty() {
            self.delete_service(index, now_ms, &req.node, &req.service_id, changes);
        }
        if !req.check_id.is_empty() {
            self.delete_check(index, now_ms, &req.node, &req.check_id, changes);
        }
        if req.service_id.is_empty() && req.check_id.is_empty() {
            self.delete_node(index, now_ms, &req.node, changes);
        }
        Ok(())
    }

    fn delete_service(
        &mut self,
        index: u64,
        now_ms: u64,
        node: &str,
        id: &str,
        changes: &mut Changes,
    ) {
        let Some(svc) = self.services.get_mut(node).and_then(|s| s.remove(id)) else {
            return;
        };
        if self.services.get(node).is_some_and(|s| s.is_empty()) {
            self.services.remove(node);
        }
        self.unindex_service(node, &svc);
        self.bump(table::SERVICES, index, changes);
        for topic in instance_topics(&svc) {
            self.bump(&topic, index, changes);
        }
        changes.touch(table::node(node));
        let removed: Vec<String> = self
            .checks
            .get(node)
            .map(|c| {
                c.values()
                    .filter(|c| c.service_id == id)
                    .map(|c| c.check_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(checks) = self.checks.get_mut(node) {
            checks.retain(|_, c| c.service_id != id);
        }
        if !removed.is_empty() {
            self.bump(table::CHECKS, index, changes);
        }
        // Sessions bound to the removed checks go with them, as in Consul.
        for check in removed {
            self.invalidate_sessions_for_check(index, now_ms, node, &check, changes);
        }
    }

    fn delete_check(
        &mut self,
        index: u64,
        now_ms: u64,
        node: &str,
        id: &str,
        changes: &mut Changes,
    ) {
        let Some(check) = self.checks.get_mut(node).and_then(|c| c.remove(id)) else {
            return;
        };
        self.bump(table::CHECKS, index, changes);
        changes.touch(table::node(node));
        self.bump_check_owner(index, node, &check.service_id, changes);
        self.invalidate_sessions_for_check(index, now_ms, node, id, changes);
    }

    fn delete_node(&mut self, index: u64, now_ms: u64, node: &str, changes: &mut Changes) {
        if self.nodes.remove(node).is_none() {
            return;
        }
        self.bump(table::NODES, index, changes);
        changes.touch(table::node(node));
        let ids: Vec<String> = self
            .services
            .get(node)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.delete_service(index, now_ms, node, &id, changes);
        }
        if self.checks.remove(node).is_some() {
            self.bump(table::CHECKS, index, changes);
        }
        let sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == node)
            .map(|s| s.id.clone())
            .collect();
        for id in sessions {
            self.destroy_session(index, now_ms, &id, changes);
        }
    }
}

// === reads ===

impl StateData {
    /// The index that blocking queries on service `name` compare against.
    pub fn service_index(&self, name: &str) -> u64 {
        match self.index(&table::service(name)) {
            0 => self.index(table::SERVICES),
            i => i,
        }
    }

    /// All nodes.
    pub fn all_nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }

    /// Service names with the union of their tags.
    pub fn service_names(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, ids) in &self.by_service {
            let tags = out.entry(name.clone()).or_default();
            for (node, id) in ids {
                if let Some(svc) = self.services.get(node).and_then(|s| s.get(id)) {
                    for t in &svc.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                }
            }
            tags.sort();
        }
        out
    }

    /// Every instance of every service, with its node.
    pub fn all_instances(&self) -> impl Iterator<Item = (&Node, &NodeService)> {
        self.services.iter().flat_map(move |(node, svcs)| {
            self.nodes
                .get(node)
                .into_iter()
                .flat_map(move |n| svcs.values().map(move |s| (n, s)))
        })
    }

    /// The instances of service `name` with their nodes.
    pub fn instances(&self, name: &str) -> Vec<(&Node, &NodeService)> {
        self.lookup(self.by_service.get(name))
    }

    fn lookup(
        &self,
        ids: Option<&std::collections::BTreeSet<(String, String)>>,
    ) -> Vec<(&Node, &NodeService)> {
        let Some(ids) = ids else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|(node, id)| {
                let n = self.nodes.get(node)?;
                let s = self.services.get(node)?.get(id)?;
                Some((n, s))
            })
            .collect()
    }

    /// The index that blocking queries on the proxies of `name` compare against.
    pub fn connect_index(&self, name: &str) -> u64 {
        match self.index(&table::connect(name)) {
            0 => self.index(table::SERVICES),
            i => i,
        }
    }

    /// The `connect-proxy` instances fronting service `name`, with their nodes.
    pub fn connect_instances(&self, name: &str) -> Vec<(&Node, &NodeService)> {
        self.lookup(self.by_connect.get(name))
    }

    /// `/v1/catalog/service/:name` entries carrying every tag in `tags`; with
    /// `connect`, the proxies fronting `name` instead (`/v1/catalog/connect`).
    pub fn service_nodes(&self, name: &str, tags: &[String], connect: bool) -> Vec<ServiceNode> {
        self.instances_for(name, connect)
            .into_iter()
            .filter(|(_, s)| has_tags(s, tags))
            .map(|(n, s)| ServiceNode::new(n, s))
            .collect()
    }

    fn instances_for(&self, name: &str, connect: bool) -> Vec<(&Node, &NodeService)> {
        if connect {
            self.connect_instances(name)
        } else {
            self.instances(name)
        }
    }

    /// The instances on `node`, or `None` when the node is unknown.
    pub fn node_services(&self, node: &str) -> Option<(Node, Vec<NodeService>)> {
        let n = self.nodes.get(node)?.clone();
        let svcs = self
            .services
            .get(node)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        Some((n, svcs))
    }

    /// The checks on `node`.
    pub fn node_checks(&self, node: &str) -> Vec<HealthCheck> {
        self.checks
            .get(node)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every check, in node then ID order.
    pub fn all_checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.values().flat_map(|c| c.values())
    }

    /// The checks of every instance of service `name`.
    pub fn service_checks(&self, name: &str) -> Vec<HealthCheck> {
        self.instances(name)
            .into_iter()
            .flat_map(|(n, s)| {
                self.checks
                    .get(&n.node)
                    .into_iter()
                    .flat_map(|c| c.values())
                    .filter(move |c| c.service_id == s.id)
                    .cloned()
            })
            .collect()
    }

    /// Like [`Self::check_service_nodes`] for every service whose name equals
    /// `name` ignoring ASCII case (DNS names are case-insensitive).
    pub fn check_service_nodes_ci(&self, name: &str) -> Vec<CheckServiceNode> {
        if self.by_service.contains_key(name) {
            return self.check_service_nodes(name, &[], false);
        }
        self.by_service
            .keys()
            .filter(|k| k.eq_ignore_ascii_case(name))
            .flat_map(|k| self.check_service_nodes(k, &[], false))
            .collect()
    }

    /// `/v1/health/service/:name` entries: each instance with its node's
    /// checks and its own, carrying every tag in `tags`; with `connect`, the
    /// proxies fronting `name` (`/v1/health/connect/:name`).
    pub fn check_service_nodes(
        &self,
        name: &str,
        tags: &[String],
        connect: bool,
    ) -> Vec<CheckServiceNode> {
        self.instances_for(name, connect)
            .into_iter()
            .filter(|(_, s)| has_tags(s, tags))
            .map(|(n, s)| CheckServiceNode {
                node: n.clone(),
                service: s.clone(),
                checks: self
                    .checks
                    .get(&n.node)
                    .into_iter()
                    .flat_map(|c| c.values())
                    .filter(|c| c.service_id.is_empty() || c.service_id == s.id)
                    .cloned()
                    .collect(),
            })
            .collect()
    }
}

/// The service a `connect-proxy` instance fronts, if any.
pub fn connect_destination(svc: &NodeService) -> Option<&str> {
    if svc.kind != crate::structs::kind::CONNECT_PROXY {
        return None;
    }
    svc.proxy
        .as_ref()?
        .get("DestinationServiceName")?
        .as_str()
        .filter(|d| !d.is_empty())
}

/// The index keys and watch topics a change to an instance bumps.
fn instance_topics(svc: &NodeService) -> Vec<String> {
    let mut topics = vec![table::service(&svc.service)];
    if let Some(dest) = connect_destination(svc) {
        topics.push(table::connect(dest));
    }
    topics
}

/// True when the instance carries every tag (case-insensitively, as Consul).
pub fn has_tags(svc: &NodeService, tags: &[String]) -> bool {
    tags.iter()
        .all(|want| svc.tags.iter().any(|t| t.eq_ignore_ascii_case(want)))
}
