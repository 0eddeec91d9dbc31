//! The agent: this node's services and checks, the check runners, and the
//! anti-entropy that keeps the catalog in step with them.

mod checks;
pub mod config_file;
pub mod definition;
pub mod leaf;
mod local;
mod long_poll;
mod persist;
pub mod proxy_view;
pub mod proxycfg;
mod sidecar;
mod sync;

pub use definition::{CheckDefinition, CheckKind, ServiceDefinition};
pub use local::{LocalCheck, LocalService, LocalState, Source};

use crate::cluster::Cluster;
use crate::structs::{status, HealthCheck};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The agent's identity and settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name.
    pub node_name: String,
    /// This node's UUID.
    pub node_id: String,
    /// The datacenter.
    pub datacenter: String,
    /// The address other nodes and clients use for this node.
    pub advertise_addr: String,
    /// Whether this agent is a server.
    pub server: bool,
    /// Allow script checks.
    pub enable_script_checks: bool,
    /// What happens to a connection no intention matches
    /// (`default_intention_policy`; allow while ACLs are off, as Consul).
    pub default_intention_policy: crate::config_entry::intentions::Action,
    /// Config files and directories, in load order.
    pub config_paths: Vec<PathBuf>,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// The DNS domain, with a trailing dot.
    pub domain: String,
    /// Bound ports, for `/v1/agent/self` and members.
    pub ports: Ports,
    /// How often the full anti-entropy sync runs.
    pub sync_interval: Duration,
    /// Where API registrations are kept across restarts; `None` in `-dev`.
    pub data_dir: Option<PathBuf>,
}

/// The ports the agent serves on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// HTTP API (`None`: disabled, `ports.http = -1`).
    pub http: Option<u16>,
    /// HTTPS API (`None`: disabled, Consul's default).
    pub https: Option<u16>,
    /// DNS.
    pub dns: u16,
    /// Server RPC.
    pub server: u16,
    /// LAN gossip.
    pub serf_lan: u16,
}

/// Why the agent refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No such service or check.
    #[error("{0}")]
    NotFound(String),
    /// The definition is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The catalog could not be updated.
    #[error("{0}")]
    Sync(String),
}

/// The local agent.
pub struct Agent {
    config: AgentConfig,
    node: Cluster,
    local: Mutex<LocalState>,
    runners: Mutex<HashMap<String, JoinHandle<()>>>,
    sync_lock: tokio::sync::Mutex<()>,
    reload_lock: tokio::sync::Mutex<()>,
    reload_hooks: Mutex<Vec<ReloadHook>>,
    me: Weak<Agent>,
    leave: tokio::sync::watch::Sender<bool>,
}

/// What else a reload reads again (the agent's TLS certificates); an
/// error keeps what was in use.
pub type ReloadHook = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The ID of the node maintenance check.
pub const NODE_MAINTENANCE_CHECK: &str = "_node_maintenance";
/// The prefix of service maintenance check IDs.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
const DEFAULT_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
const DEFAULT_SERVICE_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

impl Agent {
    /// The agent, not yet in the catalog: [`Agent::begin`] puts it there.
    /// It writes to the catalog through `node`.
    pub fn new(config: AgentConfig, node: Cluster) -> Arc<Agent> {
        let (leave, _) = tokio::sync::watch::channel(false);
        Arc::new_cyclic(|me| Agent {
            config,
            node,
            local: Mutex::new(LocalState::default()),
            runners: Mutex::new(HashMap::new()),
            sync_lock: tokio::sync::Mutex::new(()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_hooks: Mutex::default(),
            me: me.clone(),
            leave,
        })
    }

    /// Registers the node, restores API registrations, loads the config
    /// files' services and checks, and starts anti-entropy. Needs a leader.
    pub async fn begin(self: &Arc<Self>) -> Result<(), String> {
        let agent = self;
        agent.register_node().await?;
        agent.restore_registrations().await?;
        agent.reload().await?;
        let weak = Arc::downgrade(agent);
        let interval = agent.config.sync_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(agent) = weak.upgrade() else { return };
                if let Err(e) = agent.sync_full().await {
                    tracing::warn!(error = %e, "anti-entropy sync failed");
                }
            }
        });
        let weak = Arc::downgrade(agent);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(agent) = weak.upgrade() else { return };
                agent.reap_critical_services().await;
            }
        });
        Ok(())
    }

    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn hooks(&self) -> MutexGuard<'_, Vec<ReloadHook>> {
        self.reload_hooks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Local state; hold the guard briefly and never across `.await`.
    pub fn local(&self) -> MutexGuard<'_, LocalState> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync_soon(&self) {
        let Some(agent) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = agent.sync_changes().await {
                tracing::warn!(error = %e, "sync failed");
            }
        });
    }

    /// Saves the API registrations, if the agent has a data directory.
    fn persist(&self) {
        let Some(dir) = &self.config.data_dir else {
            return;
        };
        let state = persist::collect(&self.local());
        if let Err(e) = persist::save(dir, &state) {
            tracing::error!(error = %e, "saving local registrations failed");
        }
    }

    /// Registers again what the API registered before a restart.
    async fn restore_registrations(&self) -> Result<(), String> {
        let Some(dir) = &self.config.data_dir else {
            return Ok(());
        };
        let saved = persist::load(dir)?;
        for s in saved.services {
            let name = s.name.clone();
            if let Err(e) = self.add_service(s, Source::Api, false).await {
                tracing::warn!(service = %name, error = %e, "could not restore service");
            }
        }
        for c in saved.checks {
            let id = c.id.clone();
            if let Err(e) = self.add_check(c, Source::Api).await {
                tracing::warn!(check = %id, error = %e, "could not restore check");
            }
        }
        Ok(())
    }

    fn sync_error(e: String) -> AgentError {
        AgentError::Sync(e)
    }

    /// Registers a service and its checks, replacing any with the same ID,
    /// and the sidecar proxy its `connect.sidecar_service` asks for.
    /// With `replace_existing_checks`, checks of the old registration that the
    /// new one lacks are removed.
    pub async fn add_service(
        &self,
        mut def: ServiceDefinition,
        source: Source,
        replace_existing_checks: bool,
    ) -> Result<(), AgentError> {
        def.validate().map_err(AgentError::Invalid)?;
        let sidecar_id = sidecar::sidecar_id(&def.id);
        let taken: Vec<u16> = self
            .local()
            .services
            .values()
            .filter(|s| {
                s.service.kind == crate::structs::kind::CONNECT_PROXY && s.service.id != sidecar_id
            })
            .map(|s| s.service.port)
            .collect();
        let sidecar = sidecar::sidecar_for(&def, &taken).map_err(AgentError::Invalid)?;
        let had_sidecar = self.local().services.contains_key(&sidecar_id);
        self.add_one_service(def, source, replace_existing_checks)?;
        match sidecar {
            Some(mut sc) => {
                sc.validate().map_err(AgentError::Invalid)?;
                self.add_one_service(sc, source, true)?;
            }
            None if had_sidecar => {
                self.drop_service(&sidecar_id);
            }
            None => {}
        }
        self.persist();
        self.sync_changes().await.map_err(Self::sync_error)
    }

    fn add_one_service(
        &self,
        def: ServiceDefinition,
        source: Source,
        replace_existing_checks: bool,
    ) -> Result<(), AgentError> {
        let checks = def.check_definitions();
        let mut prepared = Vec::new();
        for c in &checks {
            prepared.push(self.prepare_check(c.clone(), source)?);
        }
        let service = def.to_node_service(&self.config.datacenter);
        let id = service.id.clone();
        let stale: Vec<String> = {
            let mut local = self.local();
            let stale: Vec<String> = if replace_existing_checks {
                local
                    .checks
                    .values()
                    .filter(|c| c.check.service_id == id)
                    .filter(|c| !checks.iter().any(|n| n.id == c.check.check_id))
                    .map(|c| c.check.check_id.clone())
                    .collect()
            } else {
                Vec::new()
            };
            for s in &stale {
                local.remove_check(s);
            }
            local.add_service(def, service, source);
            stale
        };
        for s in stale {
            self.stop_runner(&s);
        }
        for (check, c_def, kind) in prepared {
            self.install_check(check, c_def, kind);
        }
        Ok(())
    }

    /// Removes a service and its checks locally; false if unknown.
    fn drop_service(&self, id: &str) -> bool {
        let checks: Vec<String> = {
            let mut local = self.local();
            let checks = local
                .checks
                .values()
                .filter(|c| c.check.service_id == id)
                .map(|c| c.check.check_id.clone())
                .collect();
            if !local.remove_service(id) {
                return false;
            }
            checks
        };
        for c in checks {
            self.stop_runner(&c);
        }
        true
    }

    /// The status an alias check of `service` reports: the worst of that
    /// service's checks (and the node's), ignoring the alias check itself.
    pub(crate) fn alias_status(&self, own_id: &str, service: &str) -> (&'static str, String) {
        let local = self.local();
        if !local.services.contains_key(service) {
            return (
                status::CRITICAL,
                format!(
                    "Service {service} could not be found on node {}",
                    self.config.node_name
                ),
            );
        }
        let statuses: Vec<&str> = local
            .checks
            .values()
            .filter(|c| c.check.check_id != own_id)
            .filter(|c| c.check.service_id == service || c.check.service_id.is_empty())
            .map(|c| c.check.status.as_str())
            .collect();
        let worst = crate::structs::aggregate_status(statuses.iter().copied());
        let output = match (statuses.is_empty(), worst) {
            (true, _) => "No checks found.".to_string(),
            (false, status::PASSING) => "All checks passing.".to_string(),
            (false, s) => format!("Aliased service has a check in {s} state."),
        };
        (worst, output)
    }

    /// Deregisters a service, its checks, and the sidecar it brought.
    pub async fn remove_service(&self, id: &str) -> Result<(), AgentError> {
        let sidecar = {
            let local = self.local();
            local
                .services
                .get(id)
                .filter(|s| sidecar::wants_sidecar(&s.definition))
                .map(|_| sidecar::sidecar_id(id))
        };
        if !self.drop_service(id) {
            return Err(AgentError::NotFound(format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            )));
        }
        if let Some(sc) = sidecar {
            self.drop_service(&sc);
        }
        self.persist();
        self.sync_changes().await.map_err(Self::sync_error)
    }

    fn prepare_check(
        &self,
        mut def: CheckDefinition,
        source: Source,
    ) -> Result<(LocalCheck, CheckDefinition, CheckKind), AgentError> {
        if def.id.is_empty() {
            def.id = def.name.clone();
        }
        if def.id.is_empty() {
            return Err(AgentError::Invalid("Missing check name".into()));
        }
        if def.name.is_empty() {
            def.name = def.id.clone();
        }
        if !def.status.is_empty() && !status::is_valid(&def.status) {
            return Err(AgentError::Invalid(format!(
                "Invalid check status: {:?}",
                def.status
            )));
        }
        let kind = def
            .kind(self.config.enable_script_checks)
            .map_err(AgentError::Invalid)?;
        let check = def.to_health_check(&self.config.node_name, &kind);
        Ok((
            LocalCheck {
                check,
                definition: def.clone(),
                kind: kind.clone(),
                source,
                in_sync: false,
                version: 0,
                critical_since: None,
            },
            def,
            kind,
        ))
    }

    fn install_check(&self, mut check: LocalCheck, def: CheckDefinition, kind: CheckKind) {
        let id = check.check.check_id.clone();
        {
            let mut local = self.local();
            if let Some(svc) = local.services.get(&check.check.service_id) {
                check.check.service_name = svc.service.service.clone();
                check.check.service_tags = svc.service.tags.clone();
            }
            if check.check.status == status::CRITICAL {
                check.critical_since = Some(std::time::Instant::now());
            }
            local.add_check(check);
        }
        self.stop_runner(&id);
        if let Some(handle) = checks::spawn(self.me.clone(), def, kind) {
            self.runners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, handle);
        }
    }

    fn stop_runner(&self, id: &str) {
        if let Some(h) = self
            .runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            h.abort();
        }
    }

    /// Registers a check.
    pub async fn add_check(&self, def: CheckDefinition, source: Source) -> Result<(), AgentError> {
        if !def.service_id.is_empty() && !self.local().services.contains_key(&def.service_id) {
            return Err(AgentError::NotFound(format!(
                "ServiceID {:?} does not exist",
                def.service_id
            )));
        }
        let (check, def, kind) = self.prepare_check(def, source)?;
        self.install_check(check, def, kind);
        self.persist();
        self.sync_changes().await.map_err(Self::sync_error)
    }

    /// Deregisters a check.
    pub async fn remove_check(&self, id: &str) -> Result<(), AgentError> {
        if !self.local().remove_check(id) {
            return Err(AgentError::NotFound(format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            )));
        }
        self.stop_runner(id);
        self.persist();
        self.sync_changes().await.map_err(Self::sync_error)
    }

    /// The current status of a check.
    pub fn check_status(&self, id: &str) -> Option<String> {
        self.local().checks.get(id).map(|c| c.check.status.clone())
    }

    /// Records a probe result; a status change is synced at once.
    pub(crate) async fn check_result(&self, id: &str, status: &str, output: &str) {
        let changed = self.local().set_check_status(id, status, output);
        if changed == Some(true) {
            self.sync_soon();
        }
    }

    /// Updates a TTL check (`/v1/agent/check/pass|warn|fail|update`) and
    /// restarts its TTL.
    pub async fn update_ttl(&self, id: &str, status: &str, output: &str) -> Result<(), AgentError> {
        let output = checks::truncate_output(output, definition::DEFAULT_OUTPUT_MAX_SIZE);
        let changed = {
            // One critical section from "the check exists" to "its timer is
            // installed": a concurrent deregistration either comes first
            // (NotFound here) or after (and stops this timer).
            let mut local = self.local();
            let Some(c) = local.checks.get(id) else {
                return Err(AgentError::NotFound(format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name.")));
            };
            let CheckKind::Ttl(ttl) = c.kind else {
                return Err(AgentError::Invalid(format!(
                    "CheckID {id:?} does not have associated TTL"
                )));
            };
            let changed = local.set_check_status(id, status, &output);
            let handle = checks::spawn_ttl(self.me.clone(), id.to_string(), ttl);
            if let Some(old) = self
                .runners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string(), handle)
            {
                old.abort();
            }
            changed
        };
        if changed.is_some() {
            self.sync_changes().await.map_err(Self::sync_error)?;
        }
        Ok(())
    }

    /// Puts a service into (or out of) maintenance mode.
    pub async fn service_maintenance(
        &self,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), AgentError> {
        let name = {
            let local = self.local();
            match local.services.get(id) {
                Some(s) => s.service.service.clone(),
                None => {
                    return Err(AgentError::NotFound(format!(
                        "No service registered with ID {id:?}"
                    )))
                }
            }
        };
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        if !enable {
            if self.local().remove_check(&check_id) {
                self.sync_changes().await.map_err(Self::sync_error)?;
            }
            return Ok(());
        }
        let notes = if reason.is_empty() {
            DEFAULT_SERVICE_MAINTENANCE_REASON
        } else {
            reason
        };
        self.add_maintenance_check(check_id, "Service Maintenance Mode", notes, id, &name)
            .await
    }

    /// Puts the node into (or out of) maintenance mode.
    pub async fn node_maintenance(&self, enable: bool, reason: &str) -> Result<(), AgentError> {
        if !enable {
            if self.local().remove_check(NODE_MAINTENANCE_CHECK) {
                self.sync_changes().await.map_err(Self::sync_error)?;
            }
            return Ok(());
        }
        let notes = if reason.is_empty() {
            DEFAULT_MAINTENANCE_REASON
        } else {
            reason
        };
        self.add_maintenance_check(
            NODE_MAINTENANCE_CHECK.into(),
            "Node Maintenance Mode",
            notes,
            "",
            "",
        )
        .await
    }

    async fn add_maintenance_check(
        &self,
        id: String,
        name: &str,
        notes: &str,
        service_id: &str,
        service_name: &str,
    ) -> Result<(), AgentError> {
        let def = CheckDefinition {
            id: id.clone(),
            name: name.into(),
            notes: notes.into(),
            service_id: service_id.into(),
            status: status::CRITICAL.into(),
            ..Default::default()
        };
        let check = HealthCheck {
            node: self.config.node_name.clone(),
            check_id: id,
            name: name.into(),
            status: status::CRITICAL.into(),
            notes: notes.into(),
            service_id: service_id.into(),
            service_name: service_name.into(),
            check_type: "maintenance".into(),
            ..Default::default()
        };
        self.install_check(
            LocalCheck {
                check,
                definition: def.clone(),
                kind: CheckKind::Maintenance,
                source: Source::Api,
                in_sync: false,
                version: 0,
                critical_since: None,
            },
            def,
            CheckKind::Maintenance,
        );
        self.sync_changes().await.map_err(Self::sync_error)
    }

    /// Has every later [`Agent::reload`] run `hook` too.
    pub fn on_reload(&self, hook: ReloadHook) {
        self.hooks().push(hook);
    }

    /// Re-reads the config files: services and checks they added, changed or
    /// removed take effect. A broken file changes nothing. Then the reload
    /// hooks run (certificates are read again).
    pub async fn reload(&self) -> Result<(), String> {
        let _one = self.reload_lock.lock().await;
        self.reload_files().await?;
        for hook in self.hooks().iter() {
            hook()?;
        }
        Ok(())
    }

    async fn reload_files(&self) -> Result<(), String> {
        let loaded = config_file::load_paths(&self.config.config_paths)?;
        let (old_services, old_checks): (Vec<String>, Vec<String>) = {
            let local = self.local();
            (
                local
                    .services
                    .values()
                    .filter(|s| s.source == Source::Config)
                    .map(|s| s.service.id.clone())
                    .collect(),
                local
                    .checks
                    .values()
                    .filter(|c| c.source == Source::Config && c.check.service_id.is_empty())
                    .map(|c| c.check.check_id.clone())
                    .collect(),
            )
        };
        // Validate everything before changing anything.
        for s in &loaded.services {
            let mut s = s.clone();
            s.validate()
                .map_err(|e| format!("service {:?}: {e}", s.name))?;
            for c in s.check_definitions() {
                self.prepare_check(c, Source::Config)
                    .map_err(|e| format!("service {:?}: check: {e}", s.name))?;
            }
        }
        for c in &loaded.checks {
            self.prepare_check(c.clone(), Source::Config)
                .map_err(|e| format!("check {:?}: {e}", c.name))?;
        }
        let mut keep_services = Vec::new();
        for s in loaded.services {
            let mut v = s.clone();
            let _ = v.validate();
            let unchanged = self
                .local()
                .services
                .get(&v.id)
                .is_some_and(|l| l.definition == v && l.source == Source::Config);
            keep_services.push(v.id.clone());
            if sidecar::wants_sidecar(&v) {
                keep_services.push(sidecar::sidecar_id(&v.id));
            }
            if !unchanged {
                self.add_service(s, Source::Config, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut keep_checks = Vec::new();
        for c in loaded.checks {
            let id = if c.id.is_empty() {
                c.name.clone()
            } else {
                c.id.clone()
            };
            keep_checks.push(id.clone());
            let unchanged = self.local().checks.get(&id).is_some_and(|l| {
                l.source == Source::Config
                    && (l.definition == c
                        || l.definition.id == id && {
                            let mut d = c.clone();
                            d.id = id.clone();
                            if d.name.is_empty() {
                                d.name = id.clone();
                            }
                            l.definition == d
                        })
            });
            if !unchanged {
                self.add_check(c, Source::Config)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        for id in old_services.iter().filter(|id| !keep_services.contains(id)) {
            let _ = self.remove_service(id).await;
        }
        for id in old_checks.iter().filter(|id| !keep_checks.contains(id)) {
            let _ = self.remove_check(id).await;
        }
        Ok(())
    }

    async fn reap_critical_services(&self) {
        let now = std::time::Instant::now();
        let doomed: Vec<String> = {
            let local = self.local();
            local
                .checks
                .values()
                .filter(|c| !c.check.service_id.is_empty())
                .filter_map(|c| {
                    let after = c.definition.deregister_critical_service_after?.0;
                    let since = c.critical_since?;
                    (c.check.status == status::CRITICAL && now.duration_since(since) >= after)
                        .then(|| c.check.service_id.clone())
                })
                .collect()
        };
        for id in doomed {
            tracing::info!(service = %id, "deregistering service: critical for too long");
            let _ = self.remove_service(&id).await;
        }
    }

    /// Asks the agent to leave: the process shuts down gracefully.
    pub fn leave(&self) {
        let _ = self.leave.send(true);
    }

    /// Resolves when [`Agent::leave`] is called.
    pub async fn left(&self) {
        let mut rx = self.leave.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
