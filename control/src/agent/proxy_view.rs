//! The servers' side of a proxy's config: everything but the leaf, computed
//! from the replicated state (see [`super::proxycfg::view`]) and followed as
//! it changes.
//!
//! A server agent computes it from its own store. A client agent holds no
//! state, so it asks a server: one long poll per proxy plan
//! ([`crate::rpc::Request::ProxyView`]), answered when the view differs
//! from the one the client has — Consul's client agents follow the same
//! data with blocking queries to the servers.

use super::long_poll;
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
/// (proxies keep serving); before the first view, it says why there is none.
fn follow_servers(link: ServerLink, plan: Plan, dc: String) -> watch::Receiver<View> {
    let waiting = Err("waiting for the servers' first answer".to_string());
    let ask = move |held: &View| {
        let known = held.as_ref().ok().cloned();
        let (link, plan, dc) = (link.clone(), plan.clone(), dc.clone());
        async move {
            let view = link.proxy_view(plan, dc, known, VIEW_WAIT).await;
            view.map(Ok).map_err(|e| e.to_string())
        }
    };
    long_poll::follow(waiting, "a proxy view request", ask, |held, why| {
        let waiting = held.is_err();
        if waiting {
            *held = Err(why);
        }
        waiting
    })
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
