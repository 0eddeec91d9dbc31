//! The agent's leaf certificate cache: one leaf per service, issued on first
//! request, renewed at a random point between half and four fifths of its
//! lifetime, and re-issued when the active root changes. Readers may block
//! until a newer leaf exists (`?index=`).
//!
//! The private key is made where the leaf is used: a server agent signs
//! with the CA it holds, a client agent sends a CSR to a server (Consul's
//! `ConnectCA.Sign`) and follows the roots through the servers.

use super::long_poll;
use crate::rpc::link::ServerLink;
use crate::rpc::HttpExchange;
use crate::server::ca::{CaManager, CaOpError};
use crate::state::{ca::CA, Store, Topic};
use mesh_ca::{IssuedCert, SpiffeId};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How long a client agent's roots request may wait for a change: short
/// enough that a server lost without a closed connection is noticed within
/// a minute.
const ROOTS_WAIT: Duration = Duration::from_secs(60);

/// How long a client agent's first signing waits for the servers' roots.
const ROOTS_FIRST_WAIT: Duration = Duration::from_secs(10);

struct Leaf {
    cert: IssuedCert,
    root_id: String,
    index: u64,
    renew_at: SystemTime,
}

/// What the cache needs to know of the CA's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootsSeen {
    /// The raft index of the CA state.
    pub index: u64,
    /// The active root's ID, once the CA has one.
    pub active_id: Option<String>,
    /// The cluster's SPIFFE trust domain (empty before the CA starts).
    pub trust_domain: String,
}

/// Follows the roots in a server's own `store`.
pub fn roots_from_store(store: Arc<Store>) -> watch::Receiver<RootsSeen> {
    store.follow(|d| {
        let seen = RootsSeen {
            index: d.index(CA),
            active_id: d.ca.active().map(|(r, _)| r.id.clone()),
            trust_domain: d
                .ca
                .config
                .as_ref()
                .map(|c| c.trust_domain())
                .unwrap_or_default(),
        };
        (seen, vec![Topic::Exact(CA.into())])
    })
}

/// Follows the roots through the servers (a client agent): a blocking
/// query on `/v1/connect/ca/roots`, answered by a server's API.
pub fn roots_from_servers(link: ServerLink) -> watch::Receiver<RootsSeen> {
    let ask = move |held: &RootsSeen| {
        let req = HttpExchange {
            head: "GET".into(),
            uri: format!(
                "/v1/connect/ca/roots?index={}&wait={}s",
                held.index,
                ROOTS_WAIT.as_secs()
            ),
            ..HttpExchange::default()
        };
        let link = link.clone();
        async move {
            let answer = link.forward_http(req, ROOTS_WAIT + Duration::from_secs(30));
            answer
                .await
                .map_err(|e| e.to_string())
                .and_then(|a| parse_roots(&a))
        }
    };
    long_poll::follow(
        RootsSeen::default(),
        "following the CA roots",
        ask,
        |_, _| false,
    )
}

/// The roots a server's `/v1/connect/ca/roots` answered.
fn parse_roots(answer: &HttpExchange) -> Result<RootsSeen, String> {
    if answer.head != "200" {
        return Err(format!(
            "status {}: {}",
            answer.head,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let index = answer
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-consul-index"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("roots: {e}"))?;
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    Ok(RootsSeen {
        index,
        active_id: Some(text("ActiveRootID")).filter(|id| !id.is_empty()),
        trust_domain: text("TrustDomain"),
    })
}

/// Who signs this agent's leaves.
pub enum Signer {
    /// A server agent: the CA it holds.
    Ca(Arc<CaManager>),
    /// A client agent: a server, sent a CSR over RPC.
    Servers(ServerLink),
}

/// Cached leaves by service name.
pub struct LeafCache {
    signer: Signer,
    roots: watch::Receiver<RootsSeen>,
    datacenter: String,
    leaves: Mutex<HashMap<String, Leaf>>,
    changes: watch::Sender<u64>,
}

fn renew_time(cert: &IssuedCert) -> SystemTime {
    let life = cert
        .valid_before
        .duration_since(cert.valid_after)
        .unwrap_or(Duration::from_secs(3600));
    let share = rand::thread_rng().gen_range(0.5..0.8);
    cert.valid_after + life.mul_f64(share)
}

impl LeafCache {
    /// A cache signing through `signer` for services of `datacenter`,
    /// re-issuing when `roots` change; starts the renewal task.
    pub fn start(
        signer: Signer,
        roots: watch::Receiver<RootsSeen>,
        datacenter: String,
    ) -> Arc<LeafCache> {
        let cache = Arc::new(LeafCache {
            signer,
            roots,
            datacenter,
            leaves: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { return };
                let mut roots = c.roots.clone();
                roots.mark_unchanged();
                c.renew_due().await;
                let next = c.next_renewal();
                drop(c);
                let wait = next
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(60));
                tokio::select! {
                    _ = roots.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Leaf>> {
        self.leaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn active_root(&self) -> Option<String> {
        self.roots.borrow().active_id.clone()
    }

    fn next_index(&self) -> u64 {
        let ca_index = self.roots.borrow().index;
        ca_index.max(*self.changes.borrow() + 1)
    }

    /// A new leaf for `service`, its key made here.
    async fn sign(&self, service: &str) -> Result<IssuedCert, CaOpError> {
        match &self.signer {
            Signer::Ca(ca) => ca.issue(service, &self.datacenter),
            Signer::Servers(link) => {
                // Right after the agent starts the servers may not have
                // answered the roots query yet: give them a moment.
                let mut roots = self.roots.clone();
                let known = roots.wait_for(|r| !r.trust_domain.is_empty());
                let trust_domain = match tokio::time::timeout(ROOTS_FIRST_WAIT, known).await {
                    Ok(Ok(r)) => r.trust_domain.clone(),
                    _ => return Err(CaOpError::NotInitialized),
                };
                let id = SpiffeId::service(
                    &trust_domain,
                    mesh_ca::DEFAULT_NAMESPACE,
                    &self.datacenter,
                    service,
                )?;
                let (csr, key) = mesh_ca::generate_csr(&id)?;
                let mut cert = link.sign_leaf(csr, service, &self.datacenter).await?;
                cert.private_key_pem = key;
                Ok(cert)
            }
        }
    }

    async fn issue(&self, service: &str) -> Result<(u64, IssuedCert), CaOpError> {
        let cert = self.sign(service).await?;
        let index = self.next_index();
        let root_id = self.active_root().unwrap_or_default();
        self.lock().insert(
            service.to_string(),
            Leaf {
                renew_at: renew_time(&cert),
                cert: cert.clone(),
                root_id,
                index,
            },
        );
        self.changes.send_replace(index);
        Ok((index, cert))
    }

    /// The current leaf of `service`, issuing one if needed.
    pub async fn get(&self, service: &str) -> Result<(u64, IssuedCert), CaOpError> {
        let active = self.active_root();
        if let Some(l) = self.lock().get(service) {
            if Some(&l.root_id) == active.as_ref() && SystemTime::now() < l.cert.valid_before {
                return Ok((l.index, l.cert.clone()));
            }
        }
        self.issue(service).await
    }

    /// Follows issuance: the receiver wakes whenever any leaf is (re)issued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Like [`Self::get`], but waits (up to `wait`) until the leaf's index
    /// passes `min_index`.
    pub async fn get_blocking(
        &self,
        service: &str,
        min_index: u64,
        wait: Duration,
    ) -> Result<(u64, IssuedCert), CaOpError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.changes.subscribe();
        loop {
            let (index, cert) = self.get(service).await?;
            if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
                return Ok((index, cert));
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn renew_due(&self) {
        let active = self.active_root();
        let now = SystemTime::now();
        let due: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, l)| Some(&l.root_id) != active.as_ref() || now >= l.renew_at)
            .map(|(s, _)| s.clone())
            .collect();
        for service in due {
            if let Err(e) = self.issue(&service).await {
                tracing::warn!(service = %service, error = %e, "leaf renewal failed");
            }
        }
    }

    fn next_renewal(&self) -> SystemTime {
        self.lock()
            .values()
            .map(|l| l.renew_at)
            .min()
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(60))
    }
}
