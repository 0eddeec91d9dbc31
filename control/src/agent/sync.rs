//! Anti-entropy: make the catalog's record of this node match local state.
//!
//! Local changes are pushed at once ([`Agent::sync_changes`]); a periodic full
//! sync ([`Agent::sync_full`]) also removes what the catalog has but the agent
//! does not, and re-pushes what differs.

use super::Agent;
use crate::raft::{now_ms, Command, CommandResult};
use crate::structs::{
    DeregisterRequest, HealthCheck, NodeService, RegisterRequest, SERF_HEALTH_CHECK,
};
use std::collections::BTreeMap;

/// The service every server registers for itself, as Consul does.
pub const CONSUL_SERVICE: &str = "consul";

fn consul_service(c: &super::AgentConfig) -> NodeService {
    NodeService {
        id: CONSUL_SERVICE.into(),
        service: CONSUL_SERVICE.into(),
        port: c.ports.server,
        datacenter: c.datacenter.clone(),
        ..Default::default()
    }
}

/// A service to push, with its version and its checks' versions.
type PendingService = (NodeService, u64, Vec<(HealthCheck, u64)>);

impl Agent {
    fn register_request(&self) -> RegisterRequest {
        let c = &self.config;
        RegisterRequest {
            datacenter: c.datacenter.clone(),
            id: c.node_id.clone(),
            node: c.node_name.clone(),
            address: c.advertise_addr.clone(),
            tagged_addresses: BTreeMap::from([
                ("lan".to_string(), c.advertise_addr.clone()),
                ("lan_ipv4".to_string(), c.advertise_addr.clone()),
                ("wan".to_string(), c.advertise_addr.clone()),
                ("wan_ipv4".to_string(), c.advertise_addr.clone()),
            ]),
            node_meta: c.node_meta.clone(),
            ..Default::default()
        }
    }

    async fn commit(&self, cmd: Command) -> Result<(), String> {
        match self.node.write(cmd).await {
            Ok((_, CommandResult::Error(e))) => Err(e.to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Registers this node (and, on a server, its `consul` service). Its
    /// `serfHealth` check is the leader's to keep
    /// ([`crate::server::membership`]).
    pub(super) async fn register_node(&self) -> Result<(), String> {
        let mut req = self.register_request();
        if self.config.server {
            req.service = Some(consul_service(&self.config));
        }
        self.commit(Command::Register {
            req: Box::new(req),
            now_ms: now_ms(),
        })
        .await
    }

    /// Removes one of this node's services or checks from the catalog.
    async fn deregister(&self, service_id: &str, check_id: &str) -> Result<(), String> {
        self.commit(Command::Deregister {
            req: DeregisterRequest {
                datacenter: self.config.datacenter.clone(),
                node: self.config.node_name.clone(),
                service_id: service_id.to_string(),
                check_id: check_id.to_string(),
            },
            now_ms: now_ms(),
        })
        .await
    }

    /// Pushes every local change the catalog has not seen.
    pub async fn sync_changes(&self) -> Result<(), String> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let (deleted_services, deleted_checks, services, checks) = {
            let local = self.local();
            let services: Vec<PendingService> = local
                .services
                .values()
                .filter(|s| {
                    !s.in_sync
                        || local
                            .checks
                            .values()
                            .any(|c| !c.in_sync && c.check.service_id == s.service.id)
                })
                .map(|s| {
                    let checks = local
                        .checks
                        .values()
                        .filter(|c| c.check.service_id == s.service.id)
                        .map(|c| (c.check.clone(), c.version))
                        .collect();
                    (s.service.clone(), s.version, checks)
                })
                .collect();
            let checks: Vec<(HealthCheck, u64)> = local
                .checks
                .values()
                .filter(|c| !c.in_sync && c.check.service_id.is_empty())
                .map(|c| (c.check.clone(), c.version))
                .collect();
            (
                local.deleted_services.clone(),
                local.deleted_checks.clone(),
                services,
                checks,
            )
        };
        for id in &deleted_services {
            self.deregister(id, "").await?;
            self.local().deleted_services.retain(|d| d != id);
        }
        for id in &deleted_checks {
            self.deregister("", id).await?;
            self.local().deleted_checks.retain(|d| d != id);
        }
        for (svc, version, svc_checks) in services {
            let mut req = self.register_request();
            req.skip_node_update = true;
            req.service = Some(svc.clone());
            req.checks = svc_checks.iter().map(|(c, _)| c.clone()).collect();
            self.commit(Command::Register {
                req: Box::new(req),
                now_ms: now_ms(),
            })
            .await?;
            let mut local = self.local();
            if let Some(s) = local
                .services
                .get_mut(&svc.id)
                .filter(|s| s.version == version)
            {
                s.in_sync = true;
            }
            for (c, v) in svc_checks {
                if let Some(lc) = local
                    .checks
                    .get_mut(&c.check_id)
                    .filter(|lc| lc.version == v)
                {
                    lc.in_sync = true;
                }
            }
        }
        for (check, version) in checks {
            let mut req = self.register_request();
            req.skip_node_update = true;
            req.check = Some(check.clone());
            self.commit(Command::Register {
                req: Box::new(req),
                now_ms: now_ms(),
            })
            .await?;
            if let Some(c) = self
                .local()
                .checks
                .get_mut(&check.check_id)
                .filter(|c| c.version == version)
            {
                c.in_sync = true;
            }
        }
        Ok(())
    }

    /// Compares the catalog's record of this node with local state, marks
    /// every difference for syncing, and syncs.
    pub async fn sync_full(&self) -> Result<(), String> {
        let record = self
            .node
            .node_record(&self.config.node_name)
            .await
            .map_err(|e| e.to_string())?;
        let want = self.register_request();
        let node_ok = record.node.as_ref().is_some_and(|n| {
            n.address == want.address && n.meta == want.node_meta && n.id == want.id
        }) && (!self.config.server || record.services.contains_key(CONSUL_SERVICE));
        let (catalog_services, catalog_checks) = (record.services, record.checks);
        if !node_ok {
            self.register_node().await?;
        }
        {
            let mut local = self.local();
            for (id, svc) in &catalog_services {
                if self.config.server && id == CONSUL_SERVICE {
                    continue;
                }
                match local.services.get_mut(id) {
                    None => {
                        if !local.deleted_services.contains(id) {
                            local.deleted_services.push(id.clone());
                        }
                    }
                    Some(l) => {
                        if l.service.enable_tag_override {
                            l.service.tags = svc.tags.clone();
                        }
                        let mut mine = l.service.clone();
                        mine.raft = svc.raft;
                        if &mine != svc {
                            l.in_sync = false;
                        }
                    }
                }
            }
            for s in local.services.values_mut() {
                if !catalog_services.contains_key(&s.service.id) {
                    s.in_sync = false;
                }
            }
            for (id, check) in &catalog_checks {
                if id == SERF_HEALTH_CHECK {
                    continue;
                }
                match local.checks.get_mut(id) {
                    None => {
                        if !local.deleted_checks.contains(id) {
                            local.deleted_checks.push(id.clone());
                        }
                    }
                    Some(l) => {
                        if l.check.status != check.status
                            || l.check.output != check.output
                            || l.check.service_id != check.service_id
                        {
                            l.in_sync = false;
                        }
                    }
                }
            }
            for c in local.checks.values_mut() {
                if !catalog_checks.contains_key(&c.check.check_id) {
                    c.in_sync = false;
                }
            }
        }
        self.sync_changes().await
    }
}
