//! The agent's own services and checks, with what still needs syncing to the
//! catalog.

use super::definition::{CheckDefinition, CheckKind, ServiceDefinition};
use crate::structs::{HealthCheck, NodeService};
use std::collections::BTreeMap;
use std::time::Instant;

/// Where a registration came from: config files are replaced on reload, API
/// registrations are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `-config-dir`/`-config-file` definition.
    Config,
    /// An HTTP API registration.
    Api,
}

/// A local service instance.
#[derive(Debug, Clone)]
pub struct LocalService {
    /// The catalog record.
    pub service: NodeService,
    /// The definition it came from.
    pub definition: ServiceDefinition,
    /// Where it came from.
    pub source: Source,
    /// True once the catalog holds this version.
    pub in_sync: bool,
    /// Bumped on every local change, so a sync only marks what it sent.
    pub version: u64,
}

/// A local check.
#[derive(Debug, Clone)]
pub struct LocalCheck {
    /// The catalog record, with the latest status and output.
    pub check: HealthCheck,
    /// The definition it came from.
    pub definition: CheckDefinition,
    /// How it runs.
    pub kind: CheckKind,
    /// Where it came from.
    pub source: Source,
    /// True once the catalog holds this version.
    pub in_sync: bool,
    /// Bumped on every local change.
    pub version: u64,
    /// When it last turned critical, for `DeregisterCriticalServiceAfter`.
    pub critical_since: Option<Instant>,
}

/// Local services and checks, and deletions not yet synced.
#[derive(Debug)]
pub struct LocalState {
    /// Services by ID.
    pub services: BTreeMap<String, LocalService>,
    /// Checks by ID.
    pub checks: BTreeMap<String, LocalCheck>,
    /// Service IDs removed locally but maybe still in the catalog.
    pub deleted_services: Vec<String>,
    /// Check IDs removed locally but maybe still in the catalog.
    pub deleted_checks: Vec<String>,
    next_version: u64,
    versions: tokio::sync::watch::Sender<u64>,
}

impl Default for LocalState {
    fn default() -> Self {
        LocalState {
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            deleted_services: Vec::new(),
            deleted_checks: Vec::new(),
            next_version: 0,
            versions: tokio::sync::watch::channel(0).0,
        }
    }
}

impl LocalState {
    /// A fresh version number.
    pub fn next_version(&mut self) -> u64 {
        self.next_version += 1;
        self.versions.send_replace(self.next_version);
        self.next_version
    }

    /// Follows local changes: the receiver sees every new version.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// Adds or replaces a service.
    pub fn add_service(&mut self, def: ServiceDefinition, service: NodeService, source: Source) {
        let version = self.next_version();
        self.deleted_services.retain(|id| id != &service.id);
        self.services.insert(
            service.id.clone(),
            LocalService {
                service,
                definition: def,
                source,
                in_sync: false,
                version,
            },
        );
    }

    /// Removes a service and its checks; returns false if unknown.
    pub fn remove_service(&mut self, id: &str) -> bool {
        if self.services.remove(id).is_none() {
            return false;
        }
        self.next_version();
        self.deleted_services.push(id.to_string());
        let checks: Vec<String> = self
            .checks
            .values()
            .filter(|c| c.check.service_id == id)
            .map(|c| c.check.check_id.clone())
            .collect();
        // The catalog drops them with the service; say so in case the service
        // comes back before the next sync with other checks.
        for c in checks {
            self.checks.remove(&c);
            if !self.deleted_checks.contains(&c) {
                self.deleted_checks.push(c);
            }
        }
        true
    }

    /// Adds or replaces a check.
    pub fn add_check(&mut self, mut check: LocalCheck) {
        check.version = self.next_version();
        check.in_sync = false;
        self.deleted_checks.retain(|id| id != &check.check.check_id);
        self.checks.insert(check.check.check_id.clone(), check);
    }

    /// Removes a check; returns false if unknown.
    pub fn remove_check(&mut self, id: &str) -> bool {
        if self.checks.remove(id).is_none() {
            return false;
        }
        self.next_version();
        self.deleted_checks.push(id.to_string());
        true
    }

    /// Sets a check's status and output. Returns true when the status changed
    /// (which is synced at once; output-only changes wait for anti-entropy).
    pub fn set_check_status(&mut self, id: &str, status: &str, output: &str) -> Option<bool> {
        let version = self.next_version();
        let c = self.checks.get_mut(id)?;
        let changed = c.check.status != status;
        if !changed && c.check.output == output {
            return Some(false);
        }
        if changed {
            c.critical_since = (status == crate::structs::status::CRITICAL).then(Instant::now);
        }
        c.check.status = status.to_string();
        c.check.output = output.to_string();
        c.in_sync = false;
        c.version = version;
        Some(changed)
    }

    /// True when something is waiting to be synced.
    pub fn dirty(&self) -> bool {
        !self.deleted_services.is_empty()
            || !self.deleted_checks.is_empty()
            || self.services.values().any(|s| !s.in_sync)
            || self.checks.values().any(|c| !c.in_sync)
    }
}
