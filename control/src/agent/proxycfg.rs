//! The config the agent pushes to its proxies (design contract 7).
//!
//! A proxy asks once ([`ProxyRequest`]); the agent computes a
//! [`ProxyConfig`] from what it knows — the proxy's registration, the CA
//! roots, the service's leaf from the [`LeafCache`], the intentions naming
//! the service (with their L7 permissions), each upstream's compiled
//! discovery chain and the healthy proxies of every target in it — and
//! recomputes it whenever one of those changes, handing every version that
//! differs from the last to the proxy ([`ProxyConfigs::follow`]).
//!
//! An upstream's protocol is its chain's. An L7 upstream gets the chain
//! itself (routes, splits, targets with endpoints); every upstream gets the
//! endpoints of the chain's default target (falling back to its failover
//! targets) for plain L4 forwarding. A target's endpoints are the sidecars
//! of its service whose registration matches the subset's filter and whose
//! checks pass (with `OnlyPassing`) or are not critical.

use super::leaf::LeafCache;
use super::proxy_view::{View, Views};
use super::Agent;
use crate::config_entry::intentions::{sort_by_precedence, Action, WILDCARD};
use crate::config_entry::kind as entry_kind;
use crate::config_entry::service_defaults::PassiveHealthCheck;
use crate::discovery_chain::proxy::{default_targets, to_proxy_chain};
use crate::discovery_chain::{compile, ChainEntries, CompileRequest, Target};
use crate::server::ca::CaOpError;
use crate::state::{ca::CA, config_topic, table, StateData, Topic};
use crate::structs::{kind, status, CheckServiceNode, NodeService};
use mesh_proxy::{
    IntentionRule, OutlierDetection, Protocol, ProxyConfig, PublicListener, Upstream,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long to wait before recomputing after a transient failure (no CA
/// root yet, the signing rate limit).
const RETRY: Duration = Duration::from_secs(1);

/// Which proxy a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyTarget {
    /// A registered `connect-proxy` service, by its service ID: the public
    /// listener and upstreams come from its registration.
    Sidecar(String),
    /// A proxy for this service name with no registration: upstreams only.
    Service(String),
}

/// What a proxy asks the agent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The proxy.
    pub target: ProxyTarget,
    /// Upstreams given on the proxy's command line, as `(destination,
    /// bind)`, added to those of the registration.
    pub extra_upstreams: Vec<(String, SocketAddr)>,
    /// The IP the public listener binds, overriding the registration's.
    pub bind_address: Option<IpAddr>,
    /// Where the proxy serves Prometheus metrics, overriding the
    /// registration's `Proxy.Config.prometheus_bind_addr`.
    pub metrics_addr: Option<SocketAddr>,
}

/// Why no config can be computed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyCfgError {
    /// No local service has this ID.
    #[error("unknown proxy service ID {0:?}")]
    UnknownProxy(String),
    /// The service exists but cannot be served as a sidecar.
    #[error("service {id:?} cannot be proxied: {reason}")]
    BadRegistration {
        /// The service ID.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream given by the proxy is malformed.
    #[error("invalid upstream {0:?}: want DEST:IP:PORT")]
    BadUpstream(String),
    /// The leaf could not be issued (no root yet, rate limited, no leader).
    #[error("no leaf certificate: {0}")]
    Leaf(#[from] CaOpError),
    /// No view of the servers' state yet (a client agent whose servers do
    /// not answer).
    #[error("no answer from the servers: {0}")]
    Servers(String),
}

impl ProxyCfgError {
    /// True when waiting may fix it (the CA), false when the request itself
    /// is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProxyCfgError::Leaf(_) | ProxyCfgError::Servers(_))
    }
}

/// Parses an upstream as the proxy sends it: `DEST:IP:PORT`.
pub fn parse_upstream(s: &str) -> Result<(String, SocketAddr), ProxyCfgError> {
    let bad = || ProxyCfgError::BadUpstream(s.to_string());
    let (dest, addr) = s.split_once(':').ok_or_else(bad)?;
    if dest.is_empty() {
        return Err(bad());
    }
    Ok((dest.to_string(), addr.parse().map_err(|_| bad())?))
}

/// The listeners a request resolves to, before any certificate is read:
/// what a client agent sends a server to have its proxy's view computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub(crate) service: String,
    public: Option<PublicListener>,
    upstreams: Vec<(String, SocketAddr)>,
    connect_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    metrics_bind: Option<SocketAddr>,
}

impl Plan {
    /// The store topics whose changes can change this plan's config: the
    /// CA, every config entry kind, and the instances and proxies of each
    /// upstream and of `targets` (the services its chains resolve to).
    pub(crate) fn topics(&self, targets: &BTreeSet<String>) -> Vec<Topic> {
        let mut topics = vec![Topic::Exact(CA.into())];
        topics.extend(
            entry_kind::ALL
                .iter()
                .map(|k| Topic::Exact(config_topic(k))),
        );
        let services: BTreeSet<&str> = self
            .upstreams
            .iter()
            .map(|(dest, _)| dest.as_str())
            .chain(targets.iter().map(String::as_str))
            .collect();
        for s in services {
            topics.push(Topic::Exact(table::connect(s)));
            topics.push(Topic::Exact(table::service(s)));
        }
        topics
    }
}

/// Reads a millisecond count from Consul's built-in proxy settings.
fn millis(config: &Value, key: &str) -> Option<Duration> {
    config[key]
        .as_u64()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// An IP address field, `default` when unset.
fn ip_field(v: &Value, field: &str, default: IpAddr) -> Result<IpAddr, String> {
    match v[field].as_str().filter(|a| !a.is_empty()) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("{field} {a:?} is not an IP address")),
    }
}

/// The plan a sidecar registration describes. Consul's built-in proxy
/// settings in `Proxy.Config` (`bind_address`, `bind_port`,
/// `local_service_address`, `local_connect_timeout_ms`,
/// `handshake_timeout_ms`) and `prometheus_bind_addr` are honoured.
fn sidecar_plan(svc: &NodeService, req: &ProxyRequest) -> Result<Plan, String> {
    if svc.kind != kind::CONNECT_PROXY {
        return Err(format!("its Kind is {:?}, not \"connect-proxy\"", svc.kind));
    }
    let proxy = svc.proxy.clone().unwrap_or_default();
    let config = &proxy["Config"];
    let service = proxy["DestinationServiceName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("Proxy.DestinationServiceName is not set")?
        .to_string();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let local_app = match config["local_service_address"].as_str() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("local_service_address {a:?} is not IP:PORT"))?,
        None => {
            let ip = ip_field(&proxy, "LocalServiceAddress", loopback)?;
            let port = proxy["LocalServicePort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or("Proxy.LocalServicePort is not set")?;
            SocketAddr::new(ip, port)
        }
    };
    let bind_ip = match req.bind_address {
        Some(ip) => ip,
        None => ip_field(config, "bind_address", IpAddr::from([0, 0, 0, 0]))?,
    };
    let bind_port = config["bind_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(svc.port);
    let mut upstreams = Vec::new();
    for (i, u) in proxy["Upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let dest = u["DestinationName"]
            .as_str()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("Upstreams[{i}].DestinationName is not set"))?;
        let ip = ip_field(u, "LocalBindAddress", loopback)?;
        let port = u["LocalBindPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("Upstreams[{i}].LocalBindPort is not set"))?;
        upstreams.push((dest.to_string(), SocketAddr::new(ip, port)));
    }
    upstreams.extend(req.extra_upstreams.iter().cloned());
    Ok(Plan {
        service,
        public: Some(PublicListener {
            bind: SocketAddr::new(bind_ip, bind_port),
            local_app,
            protocol: Protocol::Tcp,
        }),
        upstreams,
        connect_timeout: millis(config, "local_connect_timeout_ms"),
        handshake_timeout: millis(config, "handshake_timeout_ms"),
        metrics_bind: match (req.metrics_addr, config["prometheus_bind_addr"].as_str()) {
            (Some(addr), _) => Some(addr),
            (None, None) => None,
            (None, Some(a)) => Some(
                a.parse()
                    .map_err(|_| format!("prometheus_bind_addr {a:?} is not IP:PORT"))?,
            ),
        },
    })
}

/// The intentions with `service` (or `*`) as destination, highest
/// precedence first, as the proxy's rules.
fn intention_rules(d: &StateData, service: &str) -> Vec<IntentionRule> {
    let mut matching: Vec<_> = d
        .intentions()
        .into_iter()
        .filter(|i| i.destination_name == service || i.destination_name == WILDCARD)
        .collect();
    sort_by_precedence(&mut matching);
    matching
        .into_iter()
        .map(|i| IntentionRule {
            source: i.source_name,
            allow: i.action == Some(Action::Allow),
            precedence: i.precedence,
            permissions: i.permissions.iter().map(|p| p.to_proxy()).collect(),
        })
        .collect()
}

/// The public listener of a proxy instance.
fn endpoint(e: &CheckServiceNode) -> Option<SocketAddr> {
    Some(SocketAddr::new(e.address().parse().ok()?, e.service.port))
}

/// The public listeners of `dest`'s proxies whose checks all pass.
fn healthy_endpoints(d: &StateData, dest: &str) -> Vec<SocketAddr> {
    d.check_service_nodes(dest, &[], true)
        .into_iter()
        .filter(|e| e.checks.iter().all(|c| c.status == status::PASSING))
        .filter_map(|e| endpoint(&e))
        .collect()
}

/// The public listeners of the proxies serving `target` in datacenter
/// `dc`: those whose registration (with the node and checks, as Consul
/// evaluates subset filters) matches the subset's filter, and whose checks
/// pass — or, unless the subset is `OnlyPassing`, are at worst warning.
/// Targets in other datacenters have none here.
fn target_endpoints(d: &StateData, dc: &str, target: &Target) -> Vec<SocketAddr> {
    if target.datacenter != dc {
        return Vec::new();
    }
    let filter = match target.subset.filter.as_str() {
        "" => None,
        expr => match mesh_filter::Filter::parse(expr) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(target = %target.id, error = %e, "subset filter does not parse; no endpoints");
                return Vec::new();
            }
        },
    };
    let healthy = |status: &str| {
        status == status::PASSING || (!target.subset.only_passing && status == status::WARNING)
    };
    d.check_service_nodes(&target.service, &[], true)
        .into_iter()
        .filter(|e| e.checks.iter().all(|c| healthy(&c.status)))
        .filter(|e| {
            filter
                .as_ref()
                .is_none_or(|f| serde_json::to_value(e).is_ok_and(|v| f.matches(&v)))
        })
        .filter_map(|e| endpoint(&e))
        .collect()
}

/// Consul's `PassiveHealthCheck` as the proxy applies it; an unset field
/// keeps Envoy's default, as Consul does.
fn outlier_detection(p: &PassiveHealthCheck) -> OutlierDetection {
    let default = OutlierDetection::default();
    OutlierDetection {
        max_failures: Some(p.max_failures)
            .filter(|n| *n > 0)
            .unwrap_or(default.max_failures),
        base_ejection_time: Some(p.base_ejection_time.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(default.base_ejection_time),
    }
}

/// Parses a chain protocol into the proxy's.
fn protocol(p: &str) -> Protocol {
    match p {
        "http" => Protocol::Http,
        "http2" => Protocol::Http2,
        "grpc" => Protocol::Grpc,
        _ => Protocol::Tcp,
    }
}

/// What an upstream needs besides its name and bind address.
struct UpstreamCtx<'a> {
    store: &'a StateData,
    entries: &'a ChainEntries,
    /// The downstream service (whose `service-defaults` may hold upstream
    /// settings).
    service: &'a str,
    datacenter: &'a str,
    trust_domain: &'a str,
}

impl UpstreamCtx<'_> {
    /// The upstream to `dest` at `bind`, adding the services its chain
    /// resolves to to `targets`.
    fn upstream(&self, dest: &str, bind: SocketAddr, targets: &mut BTreeSet<String>) -> Upstream {
        let settings = self
            .entries
            .services
            .get(self.service)
            .and_then(|s| s.upstream_config.as_ref())
            .and_then(|u| u.for_upstream(dest));
        let compiled = compile(&CompileRequest {
            service: dest,
            datacenter: self.datacenter,
            trust_domain: self.trust_domain,
            override_protocol: settings
                .map(|s| s.protocol.as_str())
                .filter(|p| !p.is_empty()),
            override_connect_timeout: settings
                .map(|s| Duration::from_millis(u64::from(s.connect_timeout_ms)))
                .filter(|t| !t.is_zero()),
            entries: self.entries,
        });
        let compiled = match compiled {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(upstream = %dest, error = %e, "discovery chain does not compile; plain L4 upstream");
                targets.insert(dest.to_string());
                return Upstream::tcp(dest, bind, healthy_endpoints(self.store, dest));
            }
        };
        targets.extend(compiled.targets.values().map(|t| t.service.clone()));
        let mut chain = to_proxy_chain(&compiled, |t| {
            target_endpoints(self.store, self.datacenter, t)
        });
        chain.outlier_detection = settings
            .and_then(|s| s.passive_health_check.as_ref())
            .map(outlier_detection);
        let endpoints = default_targets(&chain)
            .into_iter()
            .filter_map(|id| chain.targets.get(id))
            .map(|t| t.endpoints.clone())
            .find(|e| !e.is_empty())
            .unwrap_or_default();
        let protocol = protocol(&compiled.protocol);
        Upstream {
            destination: dest.to_string(),
            bind,
            endpoints,
            protocol,
            chain: protocol.is_l7().then_some(chain),
        }
    }
}

/// What the servers' state says of `plan`'s proxy in datacenter `dc`: its
/// config without the leaf (the agent adds its own leaf and intention
/// default), and the services its upstreams' chains resolve to.
pub(crate) fn view(store: &StateData, plan: &Plan, dc: &str) -> (ProxyConfig, BTreeSet<String>) {
    let trust_domain = store
        .ca
        .config
        .as_ref()
        .map(|c| c.trust_domain())
        .unwrap_or_default();
    let entries = ChainEntries::from_state(store);
    let ctx = UpstreamCtx {
        store,
        entries: &entries,
        service: &plan.service,
        datacenter: dc,
        trust_domain: &trust_domain,
    };
    let mut targets = BTreeSet::new();
    let upstreams = plan
        .upstreams
        .iter()
        .map(|(dest, bind)| ctx.upstream(dest, *bind, &mut targets))
        .collect();
    let public_listener = plan.public.clone().map(|p| PublicListener {
        protocol: protocol(&entries.protocol_of(&plan.service)),
        ..p
    });
    let local_connect_timeout = entries
        .services
        .get(&plan.service)
        .map(|s| Duration::from_millis(u64::from(s.local_connect_timeout_ms)))
        .filter(|t| !t.is_zero());
    let config = ProxyConfig {
        version: 0,
        service: plan.service.clone(),
        trust_domain,
        datacenter: dc.to_string(),
        roots_pem: store.ca.roots.iter().map(|r| r.root_cert.clone()).collect(),
        public_listener,
        upstreams,
        intentions: intention_rules(store, &plan.service),
        connect_timeout: plan
            .connect_timeout
            .or(local_connect_timeout)
            .unwrap_or(mesh_proxy::DEFAULT_CONNECT_TIMEOUT),
        handshake_timeout: plan
            .handshake_timeout
            .unwrap_or(mesh_proxy::DEFAULT_HANDSHAKE_TIMEOUT),
        metrics_bind: plan.metrics_bind,
        ..ProxyConfig::default()
    };
    (config, targets)
}

/// Computes and follows the configs of this agent's proxies.
#[derive(Clone)]
pub struct ProxyConfigs {
    agent: Arc<Agent>,
    leaves: Arc<LeafCache>,
    views: Views,
}

impl ProxyConfigs {
    /// Configs from `agent`'s registrations and `views`, with leaves from
    /// `leaves`.
    pub fn new(agent: Arc<Agent>, leaves: Arc<LeafCache>, views: Views) -> Self {
        ProxyConfigs {
            agent,
            leaves,
            views,
        }
    }

    fn plan(&self, req: &ProxyRequest) -> Result<Plan, ProxyCfgError> {
        match &req.target {
            ProxyTarget::Service(name) => Ok(Plan {
                service: name.clone(),
                public: None,
                upstreams: req.extra_upstreams.clone(),
                connect_timeout: None,
                handshake_timeout: None,
                metrics_bind: req.metrics_addr,
            }),
            ProxyTarget::Sidecar(id) => {
                let svc = self
                    .agent
                    .local()
                    .services
                    .get(id)
                    .map(|s| s.service.clone())
                    .ok_or_else(|| ProxyCfgError::UnknownProxy(id.clone()))?;
                sidecar_plan(&svc, req).map_err(|reason| ProxyCfgError::BadRegistration {
                    id: id.clone(),
                    reason,
                })
            }
        }
    }

    /// The config made of the servers' `view` and this agent's leaf and
    /// settings, with version 0.
    async fn assemble(&self, view: &ProxyConfig) -> Result<ProxyConfig, ProxyCfgError> {
        let (_, leaf) = self.leaves.get(&view.service).await?;
        let config = self.agent.config();
        Ok(ProxyConfig {
            leaf_cert_pem: leaf.cert_pem,
            leaf_key_pem: leaf.private_key_pem,
            datacenter: config.datacenter.clone(),
            default_allow: config.default_intention_policy == Action::Allow,
            ..view.clone()
        })
    }

    /// Starts following `req`: the receiver gets version 1 of its config at
    /// once and every version that differs from the one before after it,
    /// until it is dropped or the proxy's registration goes away. Fails
    /// with why when no first config can be made within `wait` (transient
    /// failures, such as a CA without a root yet, are retried until then).
    pub async fn open(
        &self,
        req: ProxyRequest,
        wait: Duration,
    ) -> Result<mpsc::Receiver<ProxyConfig>, ProxyCfgError> {
        let (tx, rx) = mpsc::channel(4);
        let (opened, first) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + wait;
        tokio::spawn(self.clone().follow(req, tx, opened, deadline));
        match first.await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProxyCfgError::Servers("the config task ended".into())),
        }
    }

    /// The loop behind [`Self::open`]: recomputes whenever the registration,
    /// the leaf or the servers' view changes. `opened` hears of the first
    /// config, or of the failure that ends the wait for it.
    async fn follow(
        self,
        req: ProxyRequest,
        tx: mpsc::Sender<ProxyConfig>,
        opened: oneshot::Sender<Result<(), ProxyCfgError>>,
        deadline: tokio::time::Instant,
    ) {
        let mut opened = Some(opened);
        let mut last: Option<ProxyConfig> = None;
        let mut followed: Option<(Plan, watch::Receiver<View>)> = None;
        loop {
            // Subscribe before reading so that no change is missed.
            let mut local = self.agent.local().subscribe();
            let mut leaves = self.leaves.subscribe();
            let computed = match self.plan(&req) {
                Ok(plan) => {
                    // A new plan (the registration changed) gets a new feed;
                    // dropping the old one ends it.
                    let (plan, mut feed) = match followed.take() {
                        Some((p, feed)) if p == plan => (p, feed),
                        _ => {
                            let dc = &self.agent.config().datacenter;
                            let feed = self.views.follow(plan.clone(), dc);
                            (plan, feed)
                        }
                    };
                    let view = feed.borrow_and_update().clone();
                    followed = Some((plan, feed));
                    match view {
                        Ok(view) => self.assemble(&view).await,
                        Err(why) => Err(ProxyCfgError::Servers(why)),
                    }
                }
                Err(e) => Err(e),
            };
            let mut retry = false;
            match computed {
                Ok(config) => {
                    let version = last.as_ref().map_or(0, |l| l.version);
                    let unchanged = last.as_ref().is_some_and(|l| {
                        ProxyConfig {
                            version,
                            ..config.clone()
                        } == *l
                    });
                    if !unchanged {
                        let next = ProxyConfig {
                            version: version + 1,
                            ..config
                        };
                        if tx.send(next.clone()).await.is_err() {
                            return;
                        }
                        last = Some(next);
                        if let Some(o) = opened.take() {
                            let _ = o.send(Ok(()));
                        }
                    }
                }
                Err(e) if opened.is_some() => {
                    if !e.is_transient() || tokio::time::Instant::now() + RETRY >= deadline {
                        if let Some(o) = opened.take() {
                            let _ = o.send(Err(e));
                        }
                        return;
                    }
                    retry = true;
                }
                Err(e) if !e.is_transient() => {
                    tracing::info!(error = %e, "no more config for this proxy");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proxy config not recomputed; retrying");
                    retry = true;
                }
            }
            let feed_changed = async {
                match followed.as_mut() {
                    Some((_, feed)) => feed.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                alive = feed_changed => {
                    if !alive {
                        followed = None;
                    }
                }
                _ = local.changed() => {}
                _ = leaves.changed() => {}
                _ = tx.closed() => return,
                _ = tokio::time::sleep(RETRY), if retry => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sidecar(proxy: Value) -> NodeService {
        NodeService {
            kind: kind::CONNECT_PROXY.into(),
            id: "socat-sidecar-proxy".into(),
            service: "socat-sidecar-proxy".into(),
            port: 21000,
            proxy: Some(proxy),
            ..NodeService::default()
        }
    }

    fn request(extra: &[(&str, &str)]) -> ProxyRequest {
        ProxyRequest {
            target: ProxyTarget::Sidecar("socat-sidecar-proxy".into()),
            extra_upstreams: extra
                .iter()
                .map(|(d, a)| (d.to_string(), a.parse().unwrap()))
                .collect(),
            bind_address: None,
            metrics_addr: None,
        }
    }

    #[test]
    fn a_sidecar_registration_becomes_listeners() {
        let svc = sidecar(json!({
            "DestinationServiceName": "socat",
            "LocalServicePort": 8181,
            "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}],
        }));
        let plan = sidecar_plan(&svc, &request(&[("cache", "127.0.0.1:9292")])).unwrap();
        assert_eq!(plan.service, "socat");
        let public = plan.public.unwrap();
        assert_eq!(public.bind, "0.0.0.0:21000".parse().unwrap());
        assert_eq!(public.local_app, "127.0.0.1:8181".parse().unwrap());
        assert_eq!(
            plan.upstreams,
            vec![
                ("db".to_string(), "127.0.0.1:9191".parse().unwrap()),
                ("cache".to_string(), "127.0.0.1:9292".parse().unwrap()),
            ]
        );
        assert_eq!(plan.connect_timeout, None);
    }

    #[test]
    fn built_in_proxy_settings_are_honoured() {
        let svc = sidecar(json!({
            "DestinationServiceName": "socat",
            "LocalServicePort": 8181,
            "Config": {"bind_address": "127.0.0.2", "bind_port": 20000,
                       "local_service_address": "10.0.0.9:8282",
                       "prometheus_bind_addr": "127.0.0.1:9102",
                       "local_connect_timeout_ms": 250, "handshake_timeout_ms": 2000},
        }));
        let plan = sidecar_plan(&svc, &request(&[])).unwrap();
        let public = plan.public.unwrap();
        assert_eq!(public.bind, "127.0.0.2:20000".parse().unwrap());
        assert_eq!(public.local_app, "10.0.0.9:8282".parse().unwrap());
        assert_eq!(plan.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(plan.handshake_timeout, Some(Duration::from_secs(2)));
        assert_eq!(plan.metrics_bind, Some("127.0.0.1:9102".parse().unwrap()));

        let mut req = request(&[]);
        req.bind_address = Some("127.0.0.1".parse().unwrap());
        let plan = sidecar_plan(&svc, &req).unwrap();
        assert_eq!(
            plan.public.unwrap().bind,
            "127.0.0.1:20000".parse().unwrap()
        );
    }

    #[test]
    fn unusable_registrations_say_what_is_missing() {
        let err = |svc: NodeService| sidecar_plan(&svc, &request(&[])).unwrap_err();
        assert!(err(sidecar(json!({"LocalServicePort": 1}))).contains("DestinationServiceName"));
        assert!(err(sidecar(json!({"DestinationServiceName": "x"}))).contains("LocalServicePort"));
        let bad_ip = sidecar(json!({"DestinationServiceName": "x", "LocalServicePort": 1,
            "LocalServiceAddress": "nope"}));
        assert!(err(bad_ip).contains("\"nope\""));
        let no_port = sidecar(json!({"DestinationServiceName": "x", "LocalServicePort": 1,
            "Upstreams": [{"DestinationName": "db"}]}));
        assert!(err(no_port).contains("Upstreams[0].LocalBindPort"));
        let plain = NodeService {
            kind: String::new(),
            ..sidecar(json!({}))
        };
        assert!(err(plain).contains("connect-proxy"));
    }

    /// A store with billing's proxies: v1 passing, v2 warning, another v2
    /// critical; and `entries` written.
    fn billing_store(entries: &[Value]) -> StateData {
        let mut d = StateData::default();
        let mut changes = crate::state::Changes::default();
        let proxies = [
            ("v1", "passing", 21001),
            ("v2", "warning", 21002),
            ("v2", "critical", 21003),
        ];
        for (i, (version, status, port)) in proxies.into_iter().enumerate() {
            let id = format!("billing-{port}");
            let req: crate::structs::RegisterRequest = serde_json::from_value(json!({
                "Node": "n1", "Address": "10.0.0.9",
                "Service": {"Kind": "connect-proxy", "ID": id, "Service": "billing-sidecar-proxy",
                    "Port": port, "Meta": {"version": version},
                    "Proxy": {"DestinationServiceName": "billing"}},
                "Checks": [{"CheckID": format!("{id}-check"), "Name": "alive",
                    "Status": status, "ServiceID": id}],
            }))
            .unwrap();
            d.ensure_registration(i as u64 + 1, 0, &req, &mut changes)
                .unwrap();
        }
        for (i, e) in entries.iter().enumerate() {
            let e = crate::config_entry::parse(e.clone()).unwrap();
            d.config_set(10 + i as u64, &e, None, &mut changes);
        }
        d
    }

    /// Web's upstream `dest`, with `service_defaults_of_web` written first.
    fn web_upstream(
        d: &StateData,
        dest: &str,
        service_defaults_of_web: Option<Value>,
    ) -> (Upstream, BTreeSet<String>) {
        let mut d = d.clone();
        if let Some(v) = service_defaults_of_web {
            let e = crate::config_entry::parse(v).unwrap();
            d.config_set(99, &e, None, &mut crate::state::Changes::default());
        }
        let entries = ChainEntries::from_state(&d);
        let ctx = UpstreamCtx {
            store: &d,
            entries: &entries,
            service: "web",
            datacenter: "dc1",
            trust_domain: "t.consul",
        };
        let mut targets = BTreeSet::new();
        let u = ctx.upstream(dest, "127.0.0.1:9191".parse().unwrap(), &mut targets);
        (u, targets)
    }

    fn billing_upstream(
        d: &StateData,
        service_defaults_of_web: Option<Value>,
    ) -> (Upstream, BTreeSet<String>) {
        web_upstream(d, "billing", service_defaults_of_web)
    }

    #[test]
    fn an_http_upstream_gets_its_chain_with_subset_endpoints() {
        let entries = [
            json!({"Kind": "service-defaults", "Name": "billing", "Protocol": "http"}),
            json!({"Kind": "service-resolver", "Name": "billing", "Subsets": {
                "v1": {"Filter": "Service.Meta.version == v1"},
                "v2": {"Filter": "Service.Meta.version == v2"}}}),
            json!({"Kind": "service-splitter", "Name": "billing", "Splits": [
                {"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}),
        ];
        let d = billing_store(&entries);
        let (u, targets) = billing_upstream(&d, None);
        assert_eq!(u.protocol, Protocol::Http);
        assert_eq!(targets, BTreeSet::from(["billing".to_string()]));
        let chain = u.chain.unwrap();
        let addr = |p: u16| SocketAddr::new([10, 0, 0, 9].into(), p);
        assert_eq!(
            chain.targets["v1.billing.default.dc1"].endpoints,
            vec![addr(21001)]
        );
        assert_eq!(
            chain.targets["v2.billing.default.dc1"].endpoints,
            vec![addr(21002)],
            "warning counts, critical does not"
        );
        assert_eq!(u.endpoints, vec![addr(21001)], "the first leg's, for L4");

        // OnlyPassing leaves the warning instance out.
        let strict = billing_store(&[
            entries[0].clone(),
            json!({"Kind": "service-resolver", "Name": "billing", "Subsets": {
                "v2": {"Filter": "Service.Meta.version == v2", "OnlyPassing": true}}}),
        ]);
        let (u, _) = billing_upstream(&strict, None);
        assert_eq!(u.chain.unwrap().targets.len(), 1);
        let (u, _) = billing_upstream(
            &strict,
            Some(
                json!({"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {
                "Overrides": [{"Name": "billing", "Protocol": "tcp", "ConnectTimeoutMs": 250}]}}),
            ),
        );
        assert_eq!(u.protocol, Protocol::Tcp, "the upstream override wins");
        assert!(u.chain.is_none());
        assert_eq!(u.endpoints, vec![addr(21001), addr(21002)]);
    }

    #[test]
    fn a_tcp_upstream_follows_redirects_and_topics_cover_targets() {
        let d = billing_store(&[json!({"Kind": "service-resolver", "Name": "payments",
            "Redirect": {"Service": "billing"}})]);
        let (u, targets) = web_upstream(&d, "payments", None);
        assert_eq!(u.protocol, Protocol::Tcp);
        assert!(u.chain.is_none());
        assert_eq!(u.endpoints.len(), 2);
        assert_eq!(targets, BTreeSet::from(["billing".to_string()]));

        let plan = Plan {
            service: "web".into(),
            public: None,
            upstreams: vec![("payments".into(), "127.0.0.1:9191".parse().unwrap())],
            connect_timeout: None,
            handshake_timeout: None,
            metrics_bind: None,
        };
        let topics = plan.topics(&targets);
        for t in [
            "config:service-splitter",
            "config:proxy-defaults",
            "config:service-intentions",
            "connect:billing",
            "service:billing",
            "connect:payments",
            "ca",
        ] {
            assert!(topics.contains(&Topic::Exact(t.into())), "{t}: {topics:?}");
        }
    }

    #[test]
    fn passive_health_checks_keep_envoys_defaults_for_unset_fields() {
        let set = PassiveHealthCheck {
            max_failures: 3,
            base_ejection_time: crate::structs::ConsulDuration(Duration::from_secs(90)),
            ..PassiveHealthCheck::default()
        };
        assert_eq!(
            outlier_detection(&set),
            OutlierDetection {
                max_failures: 3,
                base_ejection_time: Duration::from_secs(90)
            }
        );
        assert_eq!(
            outlier_detection(&PassiveHealthCheck::default()),
            OutlierDetection::default()
        );
    }

    #[test]
    fn upstreams_parse_as_dest_ip_port() {
        assert_eq!(
            parse_upstream("socat:127.0.0.1:9191").unwrap(),
            ("socat".to_string(), "127.0.0.1:9191".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("db:[::1]:5432").unwrap().1,
            "[::1]:5432".parse().unwrap()
        );
        for bad in ["socat", ":127.0.0.1:1", "socat:9191", "socat:host:1"] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
