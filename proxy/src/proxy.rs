//! The running proxy: the current config version (an `arc-swap` pointer
//! every connection loads once), its listeners, and the live update that
//! moves from one version to the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Mutex};
use tracing::info;

use crate::authz::Authorizer;
use crate::balance::EndpointTable;
use crate::chain::Protocol;
use crate::client::{app_client, mesh_client, AppClient, MeshClient, MeshConnector};
use crate::listener::{self, ListenerHandle, ListenerKey};
use crate::metrics::{Metrics, OUTBOUND};
use crate::router::Router;
use crate::tls::TlsMaterial;
use crate::{ProxyConfig, ProxyError, ProxyStats};

/// How long shutdown waits for connections to notice they were closed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A running sidecar proxy.
///
/// Start it with [`Proxy::start`], feed it new config versions with
/// [`Proxy::update`], stop it with [`Proxy::shutdown`]. Dropping it stops
/// the listeners and closes every connection at once.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<ListenerKey, ListenerHandle>>,
    /// The bound address of each listener, readable without the lock.
    addrs: ArcSwap<HashMap<ListenerKey, SocketAddr>>,
    /// Set to `true` (or dropped) to close every open connection.
    kill: watch::Sender<bool>,
}

/// What every connection task shares.
pub(crate) struct Shared {
    current: ArcSwap<Snapshot>,
    pub(crate) stats: Arc<ProxyStats>,
    /// The metrics registry; `stats` is part of it.
    pub(crate) metrics: Arc<Metrics>,
    /// The live state of L7 endpoints, across config versions.
    pub(crate) endpoints: EndpointTable,
    /// How many connections are open, for draining.
    pub(crate) open: watch::Sender<usize>,
    /// Turns true when the proxy shuts down: HTTP connections finish their
    /// requests in flight and close.
    pub(crate) draining: watch::Sender<bool>,
}

/// One config version, with everything derived from it.
pub(crate) struct Snapshot {
    pub(crate) config: Arc<ProxyConfig>,
    pub(crate) tls: TlsMaterial,
    pub(crate) authz: Authorizer,
    /// The compiled chains of the L7 upstreams, by destination.
    pub(crate) routers: HashMap<String, Router>,
    /// The pooled HTTP clients this version uses.
    pub(crate) clients: Clients,
}

/// The pooled HTTP clients of a config version. A new version takes over
/// the previous version's pools when its identity and timeouts are the
/// same, so config updates do not cost new connections.
#[derive(Default)]
pub(crate) struct Clients {
    tls_key: u64,
    /// By target service and connect timeout.
    mesh: HashMap<(String, Duration), MeshClient>,
    /// The local app's, with the protocol and connect timeout it was made
    /// for.
    app: Option<(Protocol, Duration, AppClient)>,
}

// === impl Snapshot ===

impl Snapshot {
    fn build(
        config: ProxyConfig,
        previous: Option<&Snapshot>,
        endpoints: &EndpointTable,
        metrics: &Metrics,
    ) -> Result<Self, ProxyError> {
        config.validate()?;
        let tls = TlsMaterial::build(&config)?;
        let authz = Authorizer::new(&config.intentions, config.default_allow)?;
        let mut routers = HashMap::new();
        for (i, upstream) in config.upstreams.iter().enumerate() {
            if let Some(chain) = upstream.l7_chain() {
                let field = format!("Upstreams[{i}].Chain");
                routers.insert(
                    upstream.destination.clone(),
                    Router::compile(chain, &field, endpoints)?,
                );
            }
        }
        let clients = Clients::build(
            &config,
            &tls,
            &routers,
            previous.map(|p| &p.clients),
            metrics,
        );
        Ok(Self {
            config: Arc::new(config),
            tls,
            authz,
            routers,
            clients,
        })
    }

    /// The listeners this version wants, by key, with their configured
    /// addresses.
    fn wanted(&self) -> HashMap<ListenerKey, SocketAddr> {
        let config = &self.config;
        let public = config
            .public_listener
            .iter()
            .map(|public| (ListenerKey::Public, public.bind));
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| (ListenerKey::Upstream(u.destination.clone()), u.bind));
        let metrics = config
            .metrics_bind
            .iter()
            .map(|addr| (ListenerKey::Metrics, *addr));
        public.chain(upstreams).chain(metrics).collect()
    }
}

// === impl Clients ===

impl Clients {
    fn build(
        config: &ProxyConfig,
        tls: &TlsMaterial,
        routers: &HashMap<String, Router>,
        previous: Option<&Clients>,
        metrics: &Metrics,
    ) -> Self {
        let reusable = previous.filter(|p| p.tls_key == tls.key);
        let mut mesh = HashMap::new();
        for target in routers.values().flat_map(Router::targets) {
            let connect_timeout = target.connect_timeout.unwrap_or(config.connect_timeout);
            let key = (target.service.clone(), connect_timeout);
            if mesh.contains_key(&key) {
                continue;
            }
            let reused = reusable.and_then(|p| p.mesh.get(&key).cloned());
            let client = match (reused, tls.targets.get(&target.service)) {
                (Some(client), _) => client,
                (None, Some(upstream)) => mesh_client(MeshConnector {
                    tls: upstream.connector.clone(),
                    server_name: upstream.server_name.clone(),
                    connect_timeout,
                    handshake_timeout: config.handshake_timeout,
                    handshake_failures: metrics.handshake_failures(OUTBOUND),
                }),
                // TLS material is built for every target service.
                (None, None) => continue,
            };
            mesh.insert(key, client);
        }
        let app = config
            .public_listener
            .as_ref()
            .filter(|public| public.protocol.is_l7())
            .map(|public| {
                let wanted = (public.protocol, config.connect_timeout);
                let reused = previous
                    .and_then(|p| p.app.as_ref())
                    .filter(|(protocol, timeout, _)| (*protocol, *timeout) == wanted)
                    .map(|(_, _, client)| client.clone());
                let client = reused.unwrap_or_else(|| app_client(wanted.0, wanted.1));
                (wanted.0, wanted.1, client)
            });
        Self {
            tls_key: tls.key,
            mesh,
            app,
        }
    }

    /// The pool of `service`'s sidecars with `connect_timeout`.
    pub(crate) fn mesh(&self, service: &str, connect_timeout: Duration) -> Option<MeshClient> {
        self.mesh
            .get(&(service.to_owned(), connect_timeout))
            .cloned()
    }

    /// The local app's pool, on an L7 public listener.
    pub(crate) fn app(&self) -> Option<&AppClient> {
        self.app.as_ref().map(|(_, _, client)| client)
    }
}

// === impl Shared ===

impl Shared {
    /// The current config version: one pointer load. Connections take it
    /// once per step and never hold a lock across `.await`.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

// === impl Proxy ===

impl Proxy {
    /// Checks `config`, binds its listeners and starts serving.
    ///
    /// Listeners with port 0 get a free port; ask [`Proxy::public_addr`] and
    /// [`Proxy::upstream_addr`] which. Must be called inside a tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<Self, ProxyError> {
        let metrics = Arc::new(Metrics::new());
        let endpoints = EndpointTable::default();
        let snapshot = Snapshot::build(config, None, &endpoints, &metrics)?;
        metrics.config_applied(&snapshot.config);
        let mut bound = HashMap::new();
        for (key, addr) in snapshot.wanted() {
            bound.insert(key, (addr, listener::bind(addr).await?));
        }
        let (open, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            stats: metrics.stats.clone(),
            metrics,
            endpoints,
            open,
            draining: watch::channel(false).0,
        });
        let (kill, _) = watch::channel(false);
        let mut listeners = HashMap::new();
        for (key, (configured, socket)) in bound {
            let handle = ListenerHandle::spawn(
                key.clone(),
                configured,
                socket,
                shared.clone(),
                kill.subscribe(),
            );
            listeners.insert(key, handle);
        }
        let proxy = Self {
            shared,
            addrs: ArcSwap::from_pointee(addresses(&listeners)),
            listeners: Mutex::new(listeners),
            kill,
        };
        let config = proxy.config();
        info!(
            service = %config.service,
            version = config.version,
            public = ?proxy.public_addr(),
            upstreams = config.upstreams.len(),
            "proxy started"
        );
        Ok(proxy)
    }

    /// Applies a new config version, all or nothing.
    ///
    /// New certificates, roots, intentions, endpoints and timeouts apply to
    /// connections accepted from now on; open connections carry on (an
    /// intention that now denies their source does not cut them). A
    /// listener is rebound only when its configured address changes, and
    /// removed when its upstream (or the public listener) goes away.
    /// Refused with no change at all: a config that does not validate, bad
    /// certificates, an address that cannot be bound, or a version older
    /// than the running one (the same version is applied again).
    pub async fn update(&self, config: ProxyConfig) -> Result<(), ProxyError> {
        // Updates run one at a time; connections never take this lock.
        let mut listeners = self.listeners.lock().await;
        let current = self.shared.snapshot().config.version;
        if config.version < current {
            return Err(ProxyError::StaleVersion {
                current,
                offered: config.version,
            });
        }
        let snapshot = Snapshot::build(
            config,
            Some(&self.shared.snapshot()),
            &self.shared.endpoints,
            &self.shared.metrics,
        )?;
        let wanted = snapshot.wanted();

        // Listeners to close: gone from the config, or moved.
        let mut retired: HashMap<ListenerKey, ListenerHandle> = HashMap::new();
        let keys: Vec<ListenerKey> = listeners.keys().cloned().collect();
        for key in keys {
            if wanted.get(&key) != listeners.get(&key).map(|h| h.configured).as_ref() {
                if let Some(handle) = listeners.remove(&key) {
                    retired.insert(key, handle);
                }
            }
        }

        // Sockets for the new and moved listeners. A retired listener that
        // holds exactly the wanted address is taken over rather than bound
        // again (an upstream renamed in place). Any failure puts everything
        // back as it was.
        let mut fresh = Vec::new();
        for (key, addr) in &wanted {
            if listeners.contains_key(key) {
                continue;
            }
            let taken_over = (addr.port() != 0)
                .then(|| retired.values().find(|h| h.local == *addr))
                .flatten()
                .map(ListenerHandle::bound);
            let socket = match taken_over {
                Some(socket) => socket,
                None => match listener::bind(*addr).await {
                    Ok(socket) => socket,
                    Err(err) => {
                        listeners.extend(retired);
                        return Err(err);
                    }
                },
            };
            fresh.push((key.clone(), *addr, socket));
        }

        let version = snapshot.config.version;
        self.shared.metrics.config_applied(&snapshot.config);
        self.shared.current.store(Arc::new(snapshot));
        for (_, handle) in retired {
            handle.close().await;
        }
        for (key, configured, socket) in fresh {
            let handle = ListenerHandle::spawn(
                key.clone(),
                configured,
                socket,
                self.shared.clone(),
                self.kill.subscribe(),
            );
            listeners.insert(key, handle);
        }
        self.addrs.store(Arc::new(addresses(&listeners)));
        info!(version, "proxy config applied");
        Ok(())
    }

    /// Stops accepting, lets open connections finish for up to `drain`,
    /// then closes the rest. HTTP connections finish the requests in flight
    /// and close at once. Returns how many connections were still open
    /// when the drain time ran out.
    pub async fn shutdown(self, drain: Duration) -> usize {
        let listeners = std::mem::take(&mut *self.listeners.lock().await);
        for (_, handle) in listeners {
            handle.close().await;
        }
        self.shared.draining.send_replace(true);
        let mut open = self.shared.open.subscribe();
        let drained = tokio::time::timeout(drain, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        let cut = if drained { 0 } else { *open.borrow() };
        if cut > 0 {
            self.kill.send_replace(true);
            let _ = tokio::time::timeout(CLOSE_GRACE, open.wait_for(|n| *n == 0)).await;
        }
        info!(closed = cut, "proxy shut down");
        cut
    }

    /// The bound address of the public listener, if there is one.
    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.addrs.load().get(&ListenerKey::Public).copied()
    }

    /// The bound address of the metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.addrs.load().get(&ListenerKey::Metrics).copied()
    }

    /// The metrics in the text format `/metrics` serves (OpenMetrics).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// The bound address of the upstream listener for `destination`.
    pub fn upstream_addr(&self, destination: &str) -> Option<SocketAddr> {
        self.addrs
            .load()
            .get(&ListenerKey::Upstream(destination.to_owned()))
            .copied()
    }

    /// The config version in force.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.shared.snapshot().config.clone()
    }

    /// The connection counters, live.
    pub fn stats(&self) -> Arc<ProxyStats> {
        self.shared.stats.clone()
    }

    /// How many connections are open right now, both directions.
    pub fn open_connections(&self) -> usize {
        *self.shared.open.borrow()
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self.config();
        f.debug_struct("Proxy")
            .field("service", &config.service)
            .field("version", &config.version)
            .field("listeners", &**self.addrs.load())
            .finish()
    }
}

fn addresses(listeners: &HashMap<ListenerKey, ListenerHandle>) -> HashMap<ListenerKey, SocketAddr> {
    listeners
        .iter()
        .map(|(k, h)| (k.clone(), h.local))
        .collect()
}
