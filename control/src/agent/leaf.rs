//! The agent's leaf certificate cache: one leaf per service, issued on first
//! request, renewed at a random point between half and four fifths of its
//! lifetime, and re-issued when the active root changes. Readers may block
//! until a newer leaf exists (`?index=`).

use crate::server::ca::{CaManager, CaOpError};
use crate::state::{ca::CA, Store, Topic};
use mesh_ca::IssuedCert;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

struct Leaf {
    cert: IssuedCert,
    root_id: String,
    index: u64,
    renew_at: SystemTime,
}

/// Cached leaves by service name.
pub struct LeafCache {
    ca: Arc<CaManager>,
    store: Arc<Store>,
    datacenter: String,
    leaves: Mutex<HashMap<String, Leaf>>,
    changes: tokio::sync::watch::Sender<u64>,
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
    /// A cache signing through `ca` for services of `datacenter`; starts the
    /// renewal task.
    pub fn start(ca: Arc<CaManager>, store: Arc<Store>, datacenter: String) -> Arc<LeafCache> {
        let cache = Arc::new(LeafCache {
            ca,
            store,
            datacenter,
            leaves: Mutex::new(HashMap::new()),
            changes: tokio::sync::watch::channel(0).0,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { return };
                let watch = c.store.watch(&[Topic::Exact(CA.into())]);
                c.renew_due();
                let next = c.next_renewal();
                drop(c);
                let wait = next
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(60));
                tokio::select! {
                    _ = watch.changed() => {}
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
        self.store.read().ca.active().map(|(r, _)| r.id.clone())
    }

    fn next_index(&self) -> u64 {
        let ca_index = self.store.read().index(CA);
        ca_index.max(*self.changes.borrow() + 1)
    }

    fn issue(&self, service: &str) -> Result<(u64, IssuedCert), CaOpError> {
        let cert = self.ca.issue(service, &self.datacenter)?;
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
    pub fn get(&self, service: &str) -> Result<(u64, IssuedCert), CaOpError> {
        let active = self.active_root();
        if let Some(l) = self.lock().get(service) {
            if Some(&l.root_id) == active.as_ref() && SystemTime::now() < l.cert.valid_before {
                return Ok((l.index, l.cert.clone()));
            }
        }
        self.issue(service)
    }

    /// Follows issuance: the receiver wakes whenever any leaf is (re)issued.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
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
            let (index, cert) = self.get(service)?;
            if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
                return Ok((index, cert));
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn renew_due(&self) {
        let active = self.active_root();
        let now = SystemTime::now();
        let due: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, l)| Some(&l.root_id) != active.as_ref() || now >= l.renew_at)
            .map(|(s, _)| s.clone())
            .collect();
        for service in due {
            if let Err(e) = self.issue(&service) {
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
