//! The CA's leader duties: create the trust domain and first root on first
//! leadership, rotate roots (cross-signed by the old one) when the
//! configuration asks for a new root — other key settings, or an operator's
//! own root (`RootCert`, `PrivateKey`) — prune rotated-out roots after twice
//! the leaf TTL, and sign leaf certificates at a bounded rate.

use crate::raft::{now_ms, Command, RaftNode};
use crate::state::ca::CaState;
use mesh_ca::{
    CaConfiguration, CaRoot, ConsulCaConfig, ConsulProvider, IssuedCert, Provider, SpiffeId,
};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CaOpError {
    /// The CA has not been initialized yet.
    #[error("CA is not initialized yet")]
    NotInitialized,
    /// Too many signing requests; try again later (HTTP 429).
    #[error("Rate limit reached, try again later")]
    RateLimited,
    /// The request or configuration is invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Raft or the provider failed.
    #[error("{0}")]
    Internal(String),
}

impl From<mesh_ca::CaError> for CaOpError {
    fn from(e: mesh_ca::CaError) -> Self {
        if e.is_invalid_config() || e.is_invalid_input() || e.is_invalid_csr() {
            CaOpError::Invalid(e.to_string())
        } else {
            CaOpError::Internal(e.to_string())
        }
    }
}

/// Consul's default `csr_max_per_second`.
pub const CSR_MAX_PER_SECOND: f64 = 50.0;

/// A token bucket: at most `rate` operations a second, in bursts of up to
/// `rate` (at least one).
pub struct RateLimiter {
    bucket: Mutex<(f64, Instant)>,
    rate: f64,
}

impl RateLimiter {
    /// A full bucket refilling at `rate` tokens a second.
    pub fn new(rate: f64) -> Self {
        RateLimiter {
            bucket: Mutex::new((rate.max(1.0), Instant::now())),
            rate,
        }
    }

    /// Takes a token, or says the limit is reached.
    pub fn take(&self) -> Result<(), CaOpError> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), CaOpError> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.saturating_duration_since(b.1).as_secs_f64() * self.rate;
        b.0 = (b.0 + refill).min(self.rate.max(1.0));
        b.1 = now;
        if b.0 < 1.0 {
            return Err(CaOpError::RateLimited);
        }
        b.0 -= 1.0;
        Ok(())
    }
}

/// The CA as the leader runs it.
pub struct CaManager {
    node: RaftNode,
    /// This server's datacenter: the one whose client agents it enrolls.
    datacenter: String,
    limiter: RateLimiter,
    /// Serializes [`CaManager::initialize`]: the launch and a new leader
    /// may both ask, and only one root may be made.
    init: tokio::sync::Mutex<()>,
}

/// What a configuration asks of the active root.
#[derive(Debug, PartialEq, Eq)]
enum RootSettings {
    /// The operator's own root, by ID.
    Provided(String),
    /// A generated root of this key type, size and lifetime.
    Generated(String, u32, Duration),
}

fn root_settings(c: &ConsulCaConfig) -> RootSettings {
    match &c.provided_root {
        Some(provided) => RootSettings::Provided(provided.root.id.clone()),
        None => RootSettings::Generated(
            c.private_key_type.clone(),
            c.private_key_bits,
            c.root_cert_ttl,
        ),
    }
}

/// Whether moving from `old` to `new` needs a new root while `active`
/// signs: a provided root that is not the active one, or generated-root
/// settings other than before (leaving a provided root included).
fn needs_new_root(old: &CaConfiguration, new: &ConsulCaConfig, active: &CaRoot) -> bool {
    match root_settings(new) {
        RootSettings::Provided(id) => id != active.id,
        wanted => old.consul_config().ok().map(|c| root_settings(&c)) != Some(wanted),
    }
}

impl CaManager {
    /// A manager for `node`'s CA in `datacenter`, signing at most `rate`
    /// CSRs a second.
    pub fn new(node: RaftNode, rate: f64, datacenter: &str) -> Self {
        CaManager {
            node,
            datacenter: datacenter.to_owned(),
            limiter: RateLimiter::new(rate),
            init: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> CaState {
        self.node.store().read().ca.clone()
    }

    async fn commit(&self, ca: CaState) -> Result<(), CaOpError> {
        self.node
            .write(Command::CaSet { ca: Box::new(ca) })
            .await
            .map(|_| ())
            .map_err(|e| CaOpError::Internal(e.to_string()))
    }

    /// Creates the trust domain and the first root if there is none. A
    /// configuration already stored without an active root keeps its
    /// cluster ID and settings, and its provided root (`RootCert`,
    /// `PrivateKey`) becomes the first root; otherwise one is generated.
    pub async fn initialize(&self) -> Result<(), CaOpError> {
        let _one_at_a_time = self.init.lock().await;
        let mut state = self.state();
        if state.config.is_some() && state.active().is_some() {
            return Ok(());
        }
        let mut config = state.config.take().unwrap_or_default();
        if config.cluster_id.is_empty() {
            config.cluster_id = uuid::Uuid::new_v4().to_string();
        }
        let provider = ConsulProvider::new(&config)?;
        let (root, key) = provider.configured_root(SystemTime::now())?;
        tracing::info!(
            trust_domain = %config.trust_domain(),
            root = %root.id,
            provided = provider.config().provided_root.is_some(),
            "initialized the CA"
        );
        state.activate(root, key, now_ms());
        state.config = Some(config);
        self.commit(state).await
    }

    fn provider(state: &CaState) -> Result<ConsulProvider, CaOpError> {
        let config = state.config.as_ref().ok_or(CaOpError::NotInitialized)?;
        let (root, key) = state.active().ok_or(CaOpError::NotInitialized)?;
        Ok(ConsulProvider::new(config)?.with_active_root(root.clone(), key)?)
    }

    /// Stores a new configuration, merged over the stored one. If it asks
    /// for another root — other key type, size or lifetime, or a provided
    /// root (`RootCert`, `PrivateKey`) that is not the active one — rotates
    /// to it, cross-signed by the old root. A configuration that does not
    /// validate changes nothing.
    pub async fn set_config(&self, mut new: CaConfiguration) -> Result<(), CaOpError> {
        let mut state = self.state();
        let old = state.config.clone().ok_or(CaOpError::NotInitialized)?;
        new.cluster_id = old.cluster_id.clone();
        if new.provider.is_empty() {
            new.provider = old.provider.clone();
        }
        new.consul_config()?;
        let mut merged = old.clone();
        merged.merge(&new);
        let wanted = merged.consul_config()?;
        let (root, key) = state.active().ok_or(CaOpError::NotInitialized)?;
        let rotate = needs_new_root(&old, &wanted, root);
        if !rotate && merged == old {
            return Ok(());
        }
        if rotate {
            let provider = ConsulProvider::new(&merged)?.with_active_root(root.clone(), key)?;
            let (new_root, new_key) = provider.rotate(SystemTime::now())?;
            tracing::info!(
                root = %new_root.id,
                provided = wanted.provided_root.is_some(),
                "rotated the CA root"
            );
            state.activate(new_root, new_key, now_ms());
        }
        state.config = Some(merged);
        self.commit(state).await
    }

    /// Removes roots rotated out more than twice the leaf TTL ago.
    pub async fn prune(&self) -> Result<(), CaOpError> {
        let mut state = self.state();
        let Some(config) = &state.config else {
            return Ok(());
        };
        let leaf_ttl = config.consul_config()?.leaf_cert_ttl;
        let cutoff = now_ms().saturating_sub(2 * leaf_ttl.as_millis() as u64);
        let doomed: Vec<String> = state
            .rotated_out_at
            .iter()
            .filter(|(_, at)| **at < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        state.roots.retain(|r| r.active || !doomed.contains(&r.id));
        state.keys.retain(|k| !doomed.contains(&k.root_id));
        for id in &doomed {
            state.rotated_out_at.remove(id);
        }
        self.commit(state).await
    }

    /// Signs a CSR for a service of datacenter `dc`, rate-limited.
    pub fn sign(&self, csr_pem: &str, service: &str, dc: &str) -> Result<IssuedCert, CaOpError> {
        let state = self.state();
        let provider = Self::provider(&state)?;
        let id = mesh_ca::inspect_csr(csr_pem)?;
        if id.service_name() != Some(service) || id.datacenter() != Some(dc) {
            return Err(CaOpError::Invalid(format!(
                "CSR SPIFFE ID {} does not match service {service:?} in datacenter {dc:?}",
                id.uri()
            )));
        }
        self.limiter.take()?;
        let ttl = provider.config().leaf_cert_ttl;
        Ok(provider.sign(csr_pem, ttl, SystemTime::now())?)
    }

    /// Signs a client agent's RPC certificate CSR (auto_encrypt) for node
    /// `node` of datacenter `dc`, which must be this cluster's and the
    /// ones the CSR names; rate-limited with the leaf CSRs.
    pub fn sign_agent(&self, csr_pem: &str, node: &str, dc: &str) -> Result<IssuedCert, CaOpError> {
        let state = self.state();
        let provider = Self::provider(&state)?;
        let id = mesh_ca::inspect_csr(csr_pem)?;
        if id.agent_node() != Some(node) || id.datacenter() != Some(dc) {
            return Err(CaOpError::Invalid(format!(
                "CSR SPIFFE ID {} does not name client agent {node:?} in datacenter {dc:?}",
                id.uri()
            )));
        }
        if dc != self.datacenter {
            return Err(CaOpError::Invalid(format!(
                "this server signs client agents of datacenter {:?}, not {dc:?}",
                self.datacenter
            )));
        }
        self.limiter.take()?;
        let ttl = provider.config().leaf_cert_ttl;
        Ok(provider.sign_agent(csr_pem, ttl, SystemTime::now())?)
    }

    /// Makes a key and CSR for `service` and signs it: the agent's leaf
    /// (the key stays on this node).
    pub fn issue(&self, service: &str, dc: &str) -> Result<IssuedCert, CaOpError> {
        let td = self
            .state()
            .config
            .as_ref()
            .ok_or(CaOpError::NotInitialized)?
            .trust_domain();
        let id = SpiffeId::service(&td, mesh_ca::DEFAULT_NAMESPACE, dc, service)?;
        let (csr, key) = mesh_ca::generate_csr(&id)?;
        let mut cert = self.sign(&csr, service, dc)?;
        cert.private_key_pem = key;
        Ok(cert)
    }

    /// Runs the periodic leader work until the node shuts down.
    pub async fn run(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            if !self.node.is_leader() {
                continue;
            }
            if let Err(e) = self.prune().await {
                tracing::warn!(error = %e, "pruning CA roots failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";

    /// A root generated for [`CLUSTER`], and the configuration that brings it.
    fn provided() -> (CaRoot, CaConfiguration) {
        let (root, key) = ConsulProvider::new(&CaConfiguration::new(CLUSTER))
            .unwrap()
            .generate_root(SystemTime::now())
            .unwrap();
        let mut config = CaConfiguration::new(CLUSTER);
        config
            .config
            .insert("RootCert".into(), root.root_cert.clone().into());
        config
            .config
            .insert("PrivateKey".into(), key.private_key_pem.into());
        (root, config)
    }

    #[test]
    fn a_new_root_is_needed_only_when_the_wanted_one_differs() {
        let generated = CaConfiguration::new(CLUSTER);
        let (active, _) = provided();
        let (byo, byo_config) = provided();
        let byo_parsed = byo_config.consul_config().unwrap();
        let same = generated.consul_config().unwrap();

        assert!(!needs_new_root(&generated, &same, &active));
        let mut longer = generated.clone();
        longer.config.insert("RootCertTTL".into(), "43800h".into());
        assert!(needs_new_root(
            &generated,
            &longer.consul_config().unwrap(),
            &active
        ));
        // A provided root rotates in unless it already signs.
        assert!(needs_new_root(&generated, &byo_parsed, &active));
        assert!(!needs_new_root(&byo_config, &byo_parsed, &byo));
        assert!(needs_new_root(&byo_config, &byo_parsed, &active));
        // Dropping the provided root asks for a generated one.
        assert!(needs_new_root(&byo_config, &same, &byo));
    }

    #[test]
    fn the_limiter_refuses_past_its_rate_and_refills() {
        let l = RateLimiter::new(3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take_at(t0).unwrap();
        }
        assert!(matches!(l.take_at(t0), Err(CaOpError::RateLimited)));
        l.take_at(t0 + Duration::from_millis(400)).unwrap();
        assert!(matches!(
            l.take_at(t0 + Duration::from_millis(400)),
            Err(CaOpError::RateLimited)
        ));
    }
}
