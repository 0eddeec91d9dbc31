//! The servers' side of a proxy's config: everything but the leaf, computed
//! from the replicated state (see [`super::proxycfg::view`]) and followed as
//! it changes.
//!
//! A server agent computes it from its own store. A client agent holds no
//! state, so it asks a server: one long poll per proxy plan
//! ([`crate::rpc::Request::ProxyView`]), answered when the view differs
//! from the one the client has — Consul's client agents follow the same
//! data with blocking queries to the servers.

use super::proxycfg::{view, Plan};
use crate::rpc::link::ServerLink;
use crate::state::Store;
use mesh_proxy::ProxyConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The latest view of one plan, or why there is none yet.
pub(crate) type View = Result<ProxyConfig, String>;

/// How long a client's view request may wait on the server for a change:
/// short enough that a server lost without a closed connection (a
/// partition) is noticed within a minute.
const VIEW_WAIT: Duration = Duration::from_secs(60);

/// How long a client waits before asking again after a failed request.
const RETRY: Duration = Duration::from_secs(1);

/// Where an agent's proxies get the servers' side of their config.
#[derive(Clone)]
pub enum Views {
    /// A server agent: its own store.
    Store(Arc<Store>),
    /// A client agent: the servers, over RPC.
    Servers(ServerLink),
}

impl Views {
    /// Follows the view of `plan` in datacenter `dc`; the task behind the
    /// receiver ends when the receiver is dropped.
    pub(crate) fn follow(&self, plan: Plan, dc: &str) -> watch::Receiver<View> {
        match self {
            Views::Store(store) => follow_store(store.clone(), plan, dc.to_string()),
            Views::Servers(link) => follow_servers(link.clone(), plan, dc.to_string()),
        }
    }
}

/// Follows `plan` in `store`: recomputes whenever a topic it reads changes,
/// including the services its chains come to resolve to.
fn follow_store(store: Arc<Store>, plan: Plan, dc: String) -> watch::Receiver<View> {
    store.follow(move |d| {
        let (view, targets) = view(d, &plan, &dc);
        (Ok(view), plan.topics(&targets))
    })
}

/// Follows `plan` through the servers: a long poll that returns when the
/// view differs from the one held. A failed request keeps the last view
/// (proxies keep serving) and is retried.
fn follow_servers(link: ServerLink, plan: Plan, dc: String) -> watch::Receiver<View> {
    let (tx, rx) = watch::channel(Err("waiting for the servers' first answer".to_string()));
    tokio::spawn(async move {
        loop {
            let known = tx.borrow().as_ref().ok().cloned();
            let asked = link.proxy_view(plan.clone(), dc.clone(), known, VIEW_WAIT);
            let failed = tokio::select! {
                answer = asked => match answer {
                    Ok(next) => {
                        tx.send_if_modified(|cur| {
                            let differs = cur.as_ref() != Ok(&next);
                            *cur = Ok(next);
                            differs
                        });
                        false
                    }
                    Err(e) => {
                        tracing::debug!(service = %plan.service, error = %e, "proxy view request failed; retrying");
                        tx.send_if_modified(|cur| {
                            let waiting = cur.is_err();
                            if waiting {
                                *cur = Err(e.to_string());
                            }
                            waiting
                        });
                        true
                    }
                },
                _ = tx.closed() => return,
            };
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    });
    rx
}

/// A server's answer to a client agent's view request: the view of `plan`
/// as soon as it differs from `known`, or as it is once `wait` has passed.
pub async fn answer(
    store: Arc<Store>,
    plan: Plan,
    dc: String,
    known: Option<ProxyConfig>,
    wait: Duration,
) -> ProxyConfig {
    let deadline = Instant::now() + wait.min(VIEW_WAIT);
    let mut feed = follow_store(store, plan, dc);
    loop {
        let current = feed.borrow_and_update().clone();
        if let Ok(v) = current {
            if known.as_ref() != Some(&v) || Instant::now() >= deadline {
                return v;
            }
        }
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return known.unwrap_or_default();
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
