//! `mesh proxy`: the sidecar (`-sidecar-for ID`) or a client-only proxy
//! (`-service NAME -upstream DEST:PORT`).
//!
//! The command follows its inputs at the local agent with blocking queries —
//! roots, its leaf, the intentions naming its service, and the healthy
//! proxies of each upstream — and hands every new combination to the running
//! proxy as a new config version, applied without a restart. (Design
//! contract 7 has the agent push one computed config; until the agent grows
//! that stream, the proxy assembles it from these watches.)

use crate::client::{Client, HttpFlags};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mesh_proxy::{IntentionRule, Proxy, ProxyConfig, PublicListener, Upstream};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

/// Arguments of `mesh proxy`.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Run as the sidecar of this registered service ID.
    #[arg(long = "sidecar-for", conflicts_with = "service")]
    sidecar_for: Option<String>,
    /// Run as a proxy for this service name (no registration needed).
    #[arg(long)]
    service: Option<String>,
    /// An upstream as DEST:PORT (repeatable): listen on 127.0.0.1:PORT.
    #[arg(long)]
    upstream: Vec<String>,
    /// The address the public listener binds (default 0.0.0.0).
    #[arg(long = "bind-address")]
    bind_address: Option<IpAddr>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
}

/// What the proxy serves, resolved once at start.
#[derive(Debug)]
struct Plan {
    service: String,
    public: Option<PublicListener>,
    upstreams: Vec<(String, SocketAddr)>,
}

/// One changed input.
enum Event {
    Roots {
        trust_domain: String,
        roots: Vec<String>,
    },
    Leaf {
        cert: String,
        key: String,
    },
    Intentions(Vec<IntentionRule>),
    Endpoints(String, Vec<SocketAddr>),
    Registration(Value),
}

/// Parses `DEST:PORT` (or `DEST:ADDR:PORT`).
fn parse_upstream(s: &str) -> Result<(String, SocketAddr)> {
    let (dest, rest) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("invalid -upstream {s:?}: want DEST:PORT"))?;
    let addr: SocketAddr = match rest.parse::<u16>() {
        Ok(port) => SocketAddr::new([127, 0, 0, 1].into(), port),
        Err(_) => rest
            .parse()
            .map_err(|_| anyhow!("invalid -upstream {s:?}: want DEST:PORT"))?,
    };
    if dest.is_empty() {
        bail!("invalid -upstream {s:?}: empty destination");
    }
    Ok((dest.to_string(), addr))
}

fn cli_upstreams(args: &ProxyArgs) -> Result<Vec<(String, SocketAddr)>> {
    args.upstream.iter().map(|u| parse_upstream(u)).collect()
}

/// Finds the sidecar registered for service ID `id`; returns its ID.
async fn find_sidecar(client: &Client, id: &str) -> Result<String> {
    let services: BTreeMap<String, Value> = client.get("/v1/agent/services").await?.ok()?.json()?;
    let mut proxies = services.values().filter(|s| {
        s["Kind"] == "connect-proxy" && s["Proxy"]["DestinationServiceID"].as_str() == Some(id)
    });
    let sidecar = proxies
        .next()
        .ok_or_else(|| anyhow!("no sidecar proxy is registered for service ID {id:?}"))?;
    if proxies.next().is_some() {
        bail!("more than one sidecar proxy is registered for service ID {id:?}");
    }
    Ok(sidecar["ID"]
        .as_str()
        .context("the sidecar has no ID")?
        .to_string())
}

/// The plan a sidecar registration describes, plus the `-upstream` flags.
fn sidecar_plan(sidecar: &Value, args: &ProxyArgs) -> Result<Plan> {
    let mut upstreams = cli_upstreams(args)?;
    let proxy = &sidecar["Proxy"];
    let service = proxy["DestinationServiceName"]
        .as_str()
        .context("the sidecar registration has no DestinationServiceName")?
        .to_string();
    let local_ip: IpAddr = proxy["LocalServiceAddress"]
        .as_str()
        .unwrap_or("127.0.0.1")
        .parse()
        .context("LocalServiceAddress is not an IP address")?;
    let local_port = proxy["LocalServicePort"]
        .as_u64()
        .context("LocalServicePort is missing")?;
    let port = sidecar["Port"]
        .as_u64()
        .context("the sidecar has no Port")?;
    let bind_ip = args.bind_address.unwrap_or([0, 0, 0, 0].into());
    for u in proxy["Upstreams"].as_array().into_iter().flatten() {
        let dest = u["DestinationName"]
            .as_str()
            .context("an upstream has no DestinationName")?;
        let ip: IpAddr = u["LocalBindAddress"]
            .as_str()
            .filter(|a| !a.is_empty())
            .unwrap_or("127.0.0.1")
            .parse()
            .context("LocalBindAddress is not an IP address")?;
        let port = u["LocalBindPort"]
            .as_u64()
            .context("an upstream has no LocalBindPort")?;
        upstreams.push((dest.to_string(), SocketAddr::new(ip, port as u16)));
    }
    Ok(Plan {
        service,
        public: Some(PublicListener {
            bind: SocketAddr::new(bind_ip, port as u16),
            local_app: SocketAddr::new(local_ip, local_port as u16),
        }),
        upstreams,
    })
}

/// Follows the sidecar's registration with hash-based blocking queries
/// (`/v1/agent/service/:id?hash=`), sending it whenever it changes.
fn watch_registration(http: HttpFlags, id: String, tx: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let Ok(client) = Client::new(&http) else {
            return;
        };
        let mut hash = String::new();
        loop {
            let url = format!("/v1/agent/service/{id}?hash={hash}&wait=5m");
            match client.get(&url).await.and_then(|r| r.ok()) {
                Ok(reply) => {
                    let Ok(body) = reply.json::<Value>() else {
                        continue;
                    };
                    let new = body["ContentHash"].as_str().unwrap_or_default().to_string();
                    if new != hash {
                        hash = new;
                        if tx.send(Event::Registration(body)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %id, error = %e, "registration watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Follows `path` with blocking queries, sending `parse(body)` whenever the
/// index moves. Retries with a short backoff when the agent is unreachable.
fn watch<F>(http: HttpFlags, path: String, tx: mpsc::Sender<Event>, parse: F)
where
    F: Fn(&Value) -> Option<Event> + Send + 'static,
{
    tokio::spawn(async move {
        let Ok(client) = Client::new(&http) else {
            return;
        };
        let mut index = 0u64;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let url = format!("{path}{sep}index={index}&wait=5m");
            match client.get(&url).await.and_then(|r| r.ok()) {
                Ok(reply) if reply.index != index || index == 0 => {
                    index = reply.index.max(1);
                    let Ok(body) = reply.json::<Value>() else {
                        continue;
                    };
                    if let Some(ev) = parse(&body) {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "watch failed; retrying");
                    index = 0;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

fn parse_roots(v: &Value) -> Option<Event> {
    Some(Event::Roots {
        trust_domain: v["TrustDomain"].as_str()?.to_string(),
        roots: v["Roots"]
            .as_array()?
            .iter()
            .filter_map(|r| r["RootCert"].as_str().map(str::to_string))
            .collect(),
    })
}

fn parse_leaf(v: &Value) -> Option<Event> {
    Some(Event::Leaf {
        cert: v["CertPEM"].as_str()?.to_string(),
        key: v["PrivateKeyPEM"].as_str()?.to_string(),
    })
}

fn parse_endpoints(dest: String) -> impl Fn(&Value) -> Option<Event> {
    move |v| {
        let endpoints = v
            .as_array()?
            .iter()
            .filter_map(|e| {
                let svc = &e["Service"];
                let addr = svc["Address"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .or(e["Node"]["Address"].as_str())?;
                let ip: IpAddr = addr.parse().ok()?;
                Some(SocketAddr::new(ip, svc["Port"].as_u64()? as u16))
            })
            .collect();
        Some(Event::Endpoints(dest.clone(), endpoints))
    }
}

fn parse_intentions(service: String) -> impl Fn(&Value) -> Option<Event> {
    move |v| {
        let rules = v[service.as_str()]
            .as_array()?
            .iter()
            .filter_map(|i| {
                Some(IntentionRule {
                    source: i["SourceName"].as_str()?.to_string(),
                    allow: i["Action"].as_str()? == "allow",
                    precedence: i["Precedence"].as_i64()? as i32,
                })
            })
            .collect();
        Some(Event::Intentions(rules))
    }
}

/// The inputs seen so far; a config exists once each has arrived.
#[derive(Default)]
struct Inputs {
    roots: Option<(String, Vec<String>)>,
    leaf: Option<(String, String)>,
    intentions: Option<Vec<IntentionRule>>,
    endpoints: BTreeMap<String, Vec<SocketAddr>>,
}

impl Inputs {
    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Roots {
                trust_domain,
                roots,
            } => self.roots = Some((trust_domain, roots)),
            Event::Leaf { cert, key } => self.leaf = Some((cert, key)),
            Event::Intentions(r) => self.intentions = Some(r),
            Event::Endpoints(dest, e) => {
                self.endpoints.insert(dest, e);
            }
            Event::Registration(_) => {}
        }
    }

    fn config(&self, plan: &Plan, datacenter: &str, version: u64) -> Option<ProxyConfig> {
        let (trust_domain, roots) = self.roots.clone()?;
        let (cert, key) = self.leaf.clone()?;
        let intentions = self.intentions.clone()?;
        let mut upstreams = Vec::new();
        for (dest, bind) in &plan.upstreams {
            upstreams.push(Upstream {
                destination: dest.clone(),
                bind: *bind,
                endpoints: self.endpoints.get(dest)?.clone(),
            });
        }
        Some(ProxyConfig {
            version,
            service: plan.service.clone(),
            trust_domain,
            datacenter: datacenter.to_string(),
            leaf_cert_pem: cert,
            leaf_key_pem: key,
            roots_pem: roots,
            public_listener: plan.public.clone(),
            upstreams,
            intentions,
            default_allow: true,
            idle_timeout: mesh_proxy::DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: mesh_proxy::DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: mesh_proxy::DEFAULT_CONNECT_TIMEOUT,
        })
    }
}

/// Runs `mesh proxy` until SIGTERM or SIGINT, then drains.
pub async fn run(args: ProxyArgs) -> ExitCode {
    if let Err(e) = super::init_logging(&args.log_level, false) {
        eprintln!("==> {e:#}");
        return ExitCode::from(crate::EX_USAGE);
    }
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("==> {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ProxyArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    let (tx, mut rx) = mpsc::channel(64);
    let mut plan = match (&args.service, &args.sidecar_for) {
        (Some(service), _) => Plan {
            service: service.clone(),
            public: None,
            upstreams: cli_upstreams(&args)?,
        },
        (None, Some(id)) => {
            let sidecar_id = find_sidecar(&client, id).await?;
            let reg: Value = client
                .get(&format!("/v1/agent/service/{sidecar_id}"))
                .await?
                .ok()?
                .json()?;
            let plan = sidecar_plan(&reg, &args)?;
            watch_registration(args.http.clone(), sidecar_id, tx.clone());
            plan
        }
        (None, None) => bail!("one of -sidecar-for or -service is required"),
    };
    let me: Value = client.get("/v1/agent/self").await?.ok()?.json()?;
    let datacenter = me["Config"]["Datacenter"]
        .as_str()
        .unwrap_or("dc1")
        .to_string();

    watch(
        args.http.clone(),
        "/v1/agent/connect/ca/roots".into(),
        tx.clone(),
        parse_roots,
    );
    watch(
        args.http.clone(),
        format!("/v1/agent/connect/ca/leaf/{}", plan.service),
        tx.clone(),
        parse_leaf,
    );
    watch(
        args.http.clone(),
        format!(
            "/v1/connect/intentions/match?by=destination&name={}",
            plan.service
        ),
        tx.clone(),
        parse_intentions(plan.service.clone()),
    );
    let mut watched = std::collections::BTreeSet::new();
    let watch_upstreams = |plan: &Plan, watched: &mut std::collections::BTreeSet<String>| {
        for (dest, _) in &plan.upstreams {
            if watched.insert(dest.clone()) {
                watch(
                    args.http.clone(),
                    format!("/v1/health/connect/{dest}?passing"),
                    tx.clone(),
                    parse_endpoints(dest.clone()),
                );
            }
        }
    };
    watch_upstreams(&plan, &mut watched);

    let mut inputs = Inputs::default();
    let mut version = 1;
    let first = loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("timed out waiting for the agent's roots, leaf and intentions")?
            .ok_or_else(|| anyhow!("lost the agent"))?;
        if let Event::Registration(reg) = &ev {
            plan = sidecar_plan(reg, &args)?;
            watch_upstreams(&plan, &mut watched);
        }
        inputs.apply(ev);
        if let Some(cfg) = inputs.config(&plan, &datacenter, version) {
            break cfg;
        }
    };
    let proxy = Proxy::start(first).await.context("starting the proxy")?;
    println!("==> Mesh proxy running for service {:?}", plan.service);
    if let Some(addr) = proxy.public_addr() {
        println!("    Public listener: {addr}");
    }
    for (dest, _) in &plan.upstreams {
        if let Some(addr) = proxy.upstream_addr(dest) {
            println!("    Upstream {dest}: {addr}");
        }
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                if let Event::Registration(reg) = &ev {
                    match sidecar_plan(reg, &args) {
                        Ok(p) if p.service == plan.service => {
                            plan = p;
                            watch_upstreams(&plan, &mut watched);
                        }
                        Ok(_) => tracing::error!("the sidecar now fronts another service; restart the proxy"),
                        Err(e) => tracing::error!(error = %e, "ignoring an unusable registration"),
                    }
                }
                inputs.apply(ev);
                version += 1;
                if let Some(cfg) = inputs.config(&plan, &datacenter, version) {
                    if let Err(e) = proxy.update(cfg).await {
                        tracing::error!(error = %e, "config update refused; keeping the running config");
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let left = proxy.shutdown(Duration::from_secs(10)).await;
    tracing::info!(closed = left, "proxy stopped");
    Ok(())
}
