//! `mesh proxy`: the sidecar (`-sidecar-for ID`) or a client-only proxy
//! (`-service NAME -upstream DEST:PORT`).
//!
//! The command holds no mesh logic of its own: it opens the agent's config
//! stream (`/v1/agent/connect/proxy-config`), starts the proxy on the first
//! version and swaps in every later one without a restart (design contract
//! 7). When the stream breaks it keeps serving the last config and
//! reconnects.

use crate::client::{encode_key, Client, HttpFlags};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mesh_proxy::{Proxy, ProxyConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The agent sends a heartbeat line every 15 s; a stream silent for this
/// long is dead.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// How long to wait between attempts to reopen a broken stream.
const RECONNECT: Duration = Duration::from_secs(1);

/// How long SIGTERM lets open connections finish.
const DRAIN: Duration = Duration::from_secs(10);

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
    /// Serve Prometheus metrics on this IP:PORT (`/metrics`).
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<SocketAddr>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
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

/// The agent path of this proxy's config stream.
async fn stream_path(client: &Client, args: &ProxyArgs) -> Result<String> {
    let mut query = Vec::new();
    let path = match (&args.service, &args.sidecar_for) {
        (Some(service), _) => {
            query.push(format!("service={}", encode_key(service)));
            "/v1/agent/connect/proxy-config".to_string()
        }
        (None, Some(id)) => {
            let sidecar = find_sidecar(client, id).await?;
            format!("/v1/agent/connect/proxy-config/{}", encode_key(&sidecar))
        }
        (None, None) => bail!("one of -sidecar-for or -service is required"),
    };
    for u in &args.upstream {
        let (dest, addr) = parse_upstream(u)?;
        query.push(format!(
            "upstream={}",
            encode_key(&format!("{dest}:{addr}"))
        ));
    }
    if let Some(ip) = args.bind_address {
        query.push(format!("bind_address={}", encode_key(&ip.to_string())));
    }
    if let Some(addr) = args.metrics_addr {
        query.push(format!("metrics_addr={}", encode_key(&addr.to_string())));
    }
    Ok(if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    })
}

/// One open config stream: newline-delimited configs; empty lines are
/// heartbeats.
struct ConfigStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl ConfigStream {
    async fn open(client: &Client, path: &str) -> Result<ConfigStream> {
        Ok(ConfigStream {
            resp: client.stream(path, STREAM_IDLE).await?,
            buf: Vec::new(),
        })
    }

    /// The next config; an error when the stream ends or breaks.
    async fn next(&mut self) -> Result<ProxyConfig> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).context("decoding a config from the agent");
            }
            match self
                .resp
                .chunk()
                .await
                .context("reading the config stream")?
            {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => bail!("the agent closed the config stream"),
            }
        }
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

fn announce(proxy: &Proxy, config: &ProxyConfig) {
    println!("==> Mesh proxy running for service {:?}", config.service);
    if let Some(addr) = proxy.public_addr() {
        println!("    Public listener: {addr}");
    }
    for u in &config.upstreams {
        if let Some(addr) = proxy.upstream_addr(&u.destination) {
            println!("    Upstream {}: {addr}", u.destination);
        }
    }
}

async fn serve(args: ProxyArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    let path = stream_path(&client, &args).await?;
    let mut stream = ConfigStream::open(&client, &path).await?;
    let first = stream.next().await?;
    let mut version = first.version;
    let proxy = Proxy::start(first.clone())
        .await
        .context("starting the proxy")?;
    announce(&proxy, &first);

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut live = Some(stream);
    loop {
        let next = async {
            match &mut live {
                Some(stream) => stream.next().await,
                None => {
                    tokio::time::sleep(RECONNECT).await;
                    let mut stream = ConfigStream::open(&client, &path).await?;
                    let config = stream.next().await;
                    live = Some(stream);
                    config
                }
            }
        };
        let config = tokio::select! {
            config = next => config,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        match config {
            Ok(config) => {
                // Versions count per stream; a reopened stream starts over,
                // so number what is applied here.
                version += 1;
                let config = ProxyConfig { version, ..config };
                if let Err(e) = proxy.update(config).await {
                    tracing::error!(error = %e, "config update refused; keeping the running config");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "lost the agent's config stream; serving the last config and reconnecting");
                live = None;
            }
        }
    }
    let left = proxy.shutdown(DRAIN).await;
    tracing::info!(closed = left, "proxy stopped");
    Ok(())
}
