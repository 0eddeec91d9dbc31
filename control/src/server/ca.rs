//! The CA's leader duties: create the trust domain and first root on first
//! leadership, rotate roots (cross-signed by the old one) when the
//! configuration asks for a new root, prune rotated-out roots after twice the
//! leaf TTL, and sign leaf certificates at a bounded rate.

use crate::raft::{now_ms, Command, RaftNode};
use crate::state::ca::CaState;
use mesh_ca::{CaConfiguration, ConsulProvider, IssuedCert, Provider, SpiffeId};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
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
    limiter: RateLimiter,
}

/// The settings whose change needs a new root.
fn root_settings(c: &CaConfiguration) -> Option<(String, u32, Duration)> {
    let cc = c.consul_config().ok()?;
    Some((cc.private_key_type, cc.private_key_bits, cc.root_cert_ttl))
}

impl CaManager {
    /// A manager for `node`'s CA, signing at most `rate` CSRs a second.
    pub fn new(node: RaftNode, rate: f64) -> Self {
        CaManager {
            node,
            limiter: RateLimiter::new(rate),
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

    /// Creates the trust domain and the first root if there is none.
    pub async fn initialize(&self) -> Result<(), CaOpError> {
        if self.state().config.is_some() {
            return Ok(());
        }
        let config = CaConfiguration::new(uuid::Uuid::new_v4().to_string());
        let provider = ConsulProvider::new(&config)?;
        let (root, key) = provider.generate_root(SystemTime::now())?;
        tracing::info!(trust_domain = %config.trust_domain(), root = %root.id, "initialized the CA");
        self.commit(CaState {
            config: Some(config),
            roots: vec![root],
            keys: vec![key],
            rotated_out_at: Default::default(),
        })
        .await
    }

    fn provider(state: &CaState) -> Result<ConsulProvider, CaOpError> {
        let config = state.config.as_ref().ok_or(CaOpError::NotInitialized)?;
        let (root, key) = state.active().ok_or(CaOpError::NotInitialized)?;
        Ok(ConsulProvider::new(config)?.with_active_root(root.clone(), key)?)
    }

    /// Stores a new configuration; if it changes the root's key type, size
    /// or lifetime, rotates to a new root cross-signed by the old one.
    pub async fn set_config(&self, mut new: CaConfiguration) -> Result<(), CaOpError> {
        let mut state = self.state();
        let old = state.config.clone().ok_or(CaOpError::NotInitialized)?;
        new.cluster_id = old.cluster_id.clone();
        if new.provider.is_empty() {
            new.provider = old.provider.clone();
        }
        new.consul_config()?;
        let mut merged = old.clone();
        merged.config.extend(new.config.clone());
        merged.provider = new.provider.clone();
        merged.force_without_cross_signing = new.force_without_cross_signing;
        if root_settings(&merged) != root_settings(&old) {
            let (root, key) = state.active().ok_or(CaOpError::NotInitialized)?;
            let provider = ConsulProvider::new(&merged)?.with_active_root(root.clone(), key)?;
            let (new_root, new_key) = provider.rotate(SystemTime::now())?;
            let now = now_ms();
            for r in state.roots.iter_mut().filter(|r| r.active) {
                r.active = false;
                state.rotated_out_at.insert(r.id.clone(), now);
            }
            tracing::info!(root = %new_root.id, "rotated the CA root");
            state.roots.push(new_root);
            state.keys.push(new_key);
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
            if let Err(e) = self.prune().await {
                tracing::warn!(error = %e, "pruning CA roots failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
