//! `mesh agent`: runs an agent until interrupted or asked to leave.
//! SIGHUP reloads the config files.

use anyhow::{bail, Context, Result};
use clap::Args;
use mesh_control::agent::{config_file, AgentConfig, Ports};
use mesh_control::config_entry::intentions::Action;
use mesh_control::dns::DnsConfig;
use mesh_control::http::serve::HttpLimits;
use mesh_control::lan::LanConfig;
use mesh_control::launch::{launch, Bootstrap, LaunchConfig};
use mesh_control::rpc::server::RpcLimits;
use mesh_control::tls::{AutoEncrypt, TlsConfig};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `mesh agent`, named as Consul's.
#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// Development mode: an in-memory single server on 127.0.0.1.
    #[arg(long)]
    dev: bool,
    /// Run as a server.
    #[arg(long)]
    server: bool,
    /// Bootstrap a single-server datacenter.
    #[arg(long)]
    bootstrap: bool,
    /// Servers to wait for before bootstrapping the cluster.
    #[arg(long = "bootstrap-expect")]
    bootstrap_expect: Option<u32>,
    /// An agent to join at start (repeatable); the start fails if none answers.
    #[arg(long)]
    join: Vec<String>,
    /// An agent to join, retried until one answers (repeatable).
    #[arg(long = "retry-join")]
    retry_join: Vec<String>,
    /// Time between -retry-join attempts (default 30s).
    #[arg(long = "retry-interval", value_parser = humantime::parse_duration)]
    retry_interval: Option<Duration>,
    /// Rejoin the members known before a restart even after a graceful leave.
    #[arg(long)]
    rejoin: bool,
    /// The gossip encryption key (base64, from `mesh keygen`).
    #[arg(long)]
    encrypt: Option<String>,
    /// Where to keep state; required unless -dev.
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// A directory of .json/.hcl config files (repeatable).
    #[arg(long = "config-dir")]
    config_dir: Vec<PathBuf>,
    /// A config file (repeatable).
    #[arg(long = "config-file")]
    config_file: Vec<PathBuf>,
    /// The node name (default: the hostname).
    #[arg(long)]
    node: Option<String>,
    /// The node ID (default: a random UUID).
    #[arg(long = "node-id")]
    node_id: Option<String>,
    /// Node metadata as key:value (repeatable).
    #[arg(long = "node-meta")]
    node_meta: Vec<String>,
    /// The datacenter (default dc1).
    #[arg(long)]
    datacenter: Option<String>,
    /// The address for cluster communication.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// The address to advertise to other nodes (default: -bind).
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// The address the HTTP API and DNS listen on.
    #[arg(long)]
    client: Option<IpAddr>,
    /// HTTP API port (default 8500; 0 picks a free one; -1 turns it off).
    #[arg(long = "http-port", allow_negative_numbers = true)]
    http_port: Option<i32>,
    /// HTTPS API port (default -1: off; 0 picks a free one); needs
    /// `tls.https` (or `tls.defaults`) `cert_file` and `key_file`.
    #[arg(long = "https-port", allow_negative_numbers = true)]
    https_port: Option<i32>,
    /// DNS port (default 8600; 0 picks a free one).
    #[arg(long = "dns-port")]
    dns_port: Option<u16>,
    /// Server RPC port (default 8300).
    #[arg(long = "server-port")]
    server_port: Option<u16>,
    /// LAN gossip port (default 8301).
    #[arg(long = "serf-lan-port")]
    serf_lan_port: Option<u16>,
    /// Allow script checks.
    #[arg(long = "enable-script-checks")]
    enable_script_checks: bool,
    /// The DNS domain (default consul).
    #[arg(long)]
    domain: Option<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level")]
    log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long = "log-json")]
    log_json: bool,
}

/// The node's ID: kept in `DATA_DIR/node-id` so it survives restarts, as
/// Consul does; random in `-dev`.
fn node_id(data_dir: Option<&std::path::Path>) -> Result<String> {
    let Some(dir) = data_dir else {
        return Ok(uuid::Uuid::new_v4().to_string());
    };
    let path = dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        uuid::Uuid::parse_str(id).with_context(|| format!("{}: not a UUID", path.display()))?;
        return Ok(id.to_string());
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mesh".into())
}

/// Turns flags and config-file settings into a launch config; flags win.
fn build(args: AgentArgs) -> Result<(LaunchConfig, String, bool)> {
    let mut paths = args.config_file.clone();
    paths.extend(args.config_dir.iter().cloned());
    let file = config_file::load_paths(&paths)
        .map_err(|e| anyhow::anyhow!("Error loading config: {e}"))?
        .settings;
    let server = args.dev || args.server || file.server.unwrap_or(false);
    let expect = args.bootstrap_expect.or(file.bootstrap_expect);
    let bootstrap =
        args.dev || args.bootstrap || file.bootstrap.unwrap_or(false) || expect == Some(1);
    let data_dir = args.data_dir.or(file.data_dir.clone().map(PathBuf::from));
    if !args.dev && data_dir.is_none() {
        bail!("data_dir cannot be empty: use -data-dir (or -dev for an in-memory agent)");
    }
    if !server && (expect.is_some() || args.bootstrap) {
        bail!("-bootstrap and -bootstrap-expect are for servers: add -server");
    }
    if args.dev && expect.is_some_and(|n| n > 1) {
        bail!("-bootstrap-expect cannot be used with -dev: a dev agent is a one-server cluster");
    }
    if expect == Some(0) {
        bail!("-bootstrap-expect=0 is invalid: give the number of servers (1, 3 or 5)");
    }
    let keys = match args.encrypt.as_deref().or(file.encrypt.as_deref()) {
        Some(k) => vec![mesh_gossip::parse_key(k).context("invalid -encrypt key")?],
        None => Vec::new(),
    };
    let duration =
        |flag: Option<Duration>, file: Option<&str>, what: &str, default: Duration| match (
            flag, file,
        ) {
            (Some(d), _) => Ok(d),
            (None, Some(text)) => {
                humantime::parse_duration(text).with_context(|| format!("invalid {what} {text:?}"))
            }
            (None, None) => Ok(default),
        };
    let mut retry_join = args.retry_join.clone();
    retry_join.extend(file.retry_join.clone().unwrap_or_default());
    let retry_interval = duration(
        args.retry_interval,
        file.retry_interval.as_deref(),
        "retry_interval",
        Duration::from_secs(30),
    )?;
    let reap_after = duration(
        None,
        file.reconnect_timeout.as_deref(),
        "reconnect_timeout",
        Duration::from_secs(72 * 3600),
    )?;
    let limits = file.limits.clone().unwrap_or_default();
    let rpc_defaults = RpcLimits::default();
    let rpc_limits = RpcLimits {
        handshake_timeout: duration(
            None,
            limits.rpc_handshake_timeout.as_deref(),
            "limits.rpc_handshake_timeout",
            rpc_defaults.handshake_timeout,
        )?,
        max_conns_per_client: match limits.rpc_max_conns_per_client {
            Some(0) => bail!("limits.rpc_max_conns_per_client must be at least 1"),
            Some(n) => n,
            None => rpc_defaults.max_conns_per_client,
        },
        ..rpc_defaults
    };
    let auto_encrypt = auto_encrypt(&file, server)?;
    let mut tls = tls_config(config_file::FileTlsSettings::internal_rpc(&file));
    // auto_encrypt.tls dials the servers over TLS, as Consul's agents do.
    tls.verify_outgoing |= auto_encrypt.tls;
    tls.validate(auto_encrypt).map_err(anyhow::Error::msg)?;
    let https_tls = tls_config(config_file::FileTlsSettings::https(&file));
    let http_limits = HttpLimits {
        max_conns_per_client: limits
            .http_max_conns_per_client
            .unwrap_or(HttpLimits::default().max_conns_per_client),
        ..HttpLimits::default()
    };
    let bootstrap = match expect {
        _ if bootstrap => Bootstrap::Alone,
        Some(n) => Bootstrap::Expect(n),
        None => Bootstrap::Join,
    };
    let parse_ip = |s: Option<String>, what: &str| -> Result<Option<IpAddr>> {
        s.map(|a| a.parse().with_context(|| format!("invalid {what} {a:?}")))
            .transpose()
    };
    let loopback: IpAddr = [127, 0, 0, 1].into();
    let bind = args
        .bind
        .or(parse_ip(file.bind_addr, "bind_addr")?)
        .unwrap_or(loopback);
    let advertise = args
        .advertise
        .or(parse_ip(file.advertise_addr, "advertise_addr")?)
        .unwrap_or(if bind.is_unspecified() {
            loopback
        } else {
            bind
        });
    let client = args
        .client
        .or(parse_ip(file.client_addr, "client_addr")?)
        .unwrap_or(loopback);
    let ports = file.ports.clone().unwrap_or_default();
    let snapshot_threshold = file.raft_snapshot_threshold.unwrap_or(16384).max(1);
    let api_port = |flag: Option<i32>, file: Option<i32>, default: i32, what: &str| match flag
        .or(file)
        .unwrap_or(default)
    {
        -1 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("invalid {what} {p}: a port, or -1 for off")),
    };
    let http_port = api_port(args.http_port, ports.http, 8500, "ports.http")?;
    let https_port = api_port(args.https_port, ports.https, -1, "ports.https")?;
    let dns_port = args.dns_port.or(ports.dns).unwrap_or(8600);
    let server_port = args.server_port.or(ports.server).unwrap_or(8300);
    let serf_lan_port = args.serf_lan_port.or(ports.serf_lan).unwrap_or(8301);
    let mut node_meta: BTreeMap<String, String> = file.node_meta.unwrap_or_default();
    for kv in &args.node_meta {
        let (k, v) = kv
            .split_once(':')
            .with_context(|| format!("invalid -node-meta {kv:?}: want key:value"))?;
        node_meta.insert(k.to_string(), v.to_string());
    }
    let mut domain = args
        .domain
        .or(file.domain)
        .unwrap_or_else(|| "consul".into());
    if !domain.ends_with('.') {
        domain.push('.');
    }
    let log_level = args.log_level.or(file.log_level).unwrap_or_else(|| {
        if args.dev {
            "debug".into()
        } else {
            "info".into()
        }
    });
    let default_intention_policy = match file.default_intention_policy.as_deref() {
        None | Some("") | Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        Some(other) => {
            bail!("invalid default_intention_policy {other:?}: must be \"allow\" or \"deny\"")
        }
    };
    let agent = AgentConfig {
        node_name: args.node.or(file.node_name).unwrap_or_else(hostname),
        node_id: match args.node_id {
            Some(id) => id,
            None => node_id(data_dir.as_deref())?,
        },
        datacenter: args
            .datacenter
            .or(file.datacenter)
            .unwrap_or_else(|| "dc1".into())
            .to_lowercase(),
        advertise_addr: advertise.to_string(),
        server,
        enable_script_checks: args.enable_script_checks
            || file.enable_script_checks.unwrap_or(false),
        default_intention_policy,
        config_paths: paths,
        node_meta,
        domain,
        ports: Ports {
            http: http_port,
            https: https_port,
            dns: dns_port,
            server: server_port,
            serf_lan: serf_lan_port,
        },
        sync_interval: Duration::from_secs(60),
        data_dir: data_dir.clone(),
    };
    Ok((
        LaunchConfig {
            agent,
            http_addr: http_port.map(|p| SocketAddr::new(client, p)),
            https_addr: https_port.map(|p| SocketAddr::new(client, p)),
            https_tls,
            http_limits,
            dns_addr: SocketAddr::new(client, dns_port),
            dns: DnsConfig::default(),
            snapshot_threshold,
            rpc_addr: SocketAddr::new(bind, server_port),
            bootstrap,
            lan: LanConfig {
                bind: SocketAddr::new(bind, serf_lan_port),
                advertise,
                keys,
                join: args.join.clone(),
                retry_join,
                retry_interval,
                rejoin_after_leave: args.rejoin || file.rejoin_after_leave.unwrap_or(false),
                reap_after,
            },
            rpc_limits,
            tls,
            auto_encrypt,
        },
        log_level,
        args.log_json,
    ))
}

/// Runs `mesh agent`.
pub async fn run(args: AgentArgs) -> ExitCode {
    let (config, level, json) = match build(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("==> {e:#}");
            return ExitCode::from(crate::EX_USAGE);
        }
    };
    if let Err(e) = super::init_logging(&level, json) {
        eprintln!("==> {e:#}");
        return ExitCode::from(crate::EX_USAGE);
    }
    let mode = if !config.agent.server {
        "client"
    } else if config.agent.data_dir.is_none() {
        "dev (in-memory)"
    } else {
        "server"
    };
    let running = match launch(config.clone()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("==> Error starting agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let a = running.agent.config();
    println!("==> Mesh agent running!");
    println!("           Version: '{}'", mesh_control::VERSION);
    println!("           Node ID: '{}'", a.node_id);
    println!("         Node name: '{}'", a.node_name);
    println!("        Datacenter: '{}' (Segment: '<all>')", a.datacenter);
    println!(
        "            Server: {} (Bootstrap: {})",
        a.server,
        matches!(config.bootstrap, Bootstrap::Alone)
    );
    let port = |a: Option<SocketAddr>| a.map_or(-1, |a| i32::from(a.port()));
    println!(
        "       Client Addr: [{}] (HTTP: {}, HTTPS: {}, gRPC: -1, DNS: {})",
        running.dns_addr.ip(),
        port(running.http_addr),
        port(running.https_addr),
        running.dns_addr.port()
    );
    println!(
        "      Cluster Addr: {} (LAN: {}, WAN: -1)",
        a.advertise_addr, a.ports.serf_lan
    );
    println!("              Mode: {mode}");
    println!();
    println!("==> Log data will now stream in as it occurs:");
    let graceful = wait_for_exit(&running.agent).await;
    if graceful {
        println!("==> Gracefully leaving the cluster");
        running.leave().await;
    } else {
        println!("==> Shutting down");
        running.shutdown().await;
    }
    ExitCode::SUCCESS
}

/// Waits for a reason to stop: true for `mesh leave` (leave the cluster
/// gracefully), false for a signal (servers keep their place, as Consul's
/// `leave_on_terminate = false`).
async fn wait_for_exit(agent: &mesh_control::agent::Agent) -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        agent.left().await;
        return true;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("caught SIGHUP: reloading");
                if let Err(e) = agent.reload().await {
                    tracing::error!(error = %e, "reload failed; keeping the old configuration");
                }
            }
            _ = term.recv() => return false,
            _ = int.recv() => return false,
            _ = agent.left() => return true,
        }
    }
}

/// The `auto_encrypt` block: `tls` is a client agent's, `allow_tls` a
/// server's; either in the wrong place is refused.
fn auto_encrypt(file: &config_file::FileSettings, server: bool) -> Result<AutoEncrypt> {
    let block = file.auto_encrypt.clone().unwrap_or_default();
    let auto = AutoEncrypt {
        tls: block.tls.unwrap_or(false),
        allow_tls: block.allow_tls.unwrap_or(false),
    };
    if server && auto.tls {
        bail!(
            "auto_encrypt.tls is for client agents: a server's RPC certificate is its cert_file \
             (set auto_encrypt.allow_tls on servers to enroll client agents)"
        );
    }
    if !server && auto.allow_tls {
        bail!("auto_encrypt.allow_tls is for servers: set auto_encrypt.tls on client agents");
    }
    Ok(auto)
}

/// The TLS settings of one interface, as the agent takes them.
fn tls_config(s: config_file::FileTlsSettings) -> TlsConfig {
    TlsConfig {
        ca_file: s.ca_file.map(PathBuf::from),
        ca_path: s.ca_path.map(PathBuf::from),
        cert_file: s.cert_file.map(PathBuf::from),
        key_file: s.key_file.map(PathBuf::from),
        verify_incoming: s.verify_incoming.unwrap_or(false),
        // verify_server_hostname implies verify_outgoing, as Consul's
        // documentation long said (Consul itself then dials in plaintext).
        verify_outgoing: s
            .verify_outgoing
            .or(s.verify_server_hostname)
            .unwrap_or(false),
        verify_server_hostname: s.verify_server_hostname.unwrap_or(false),
        tls_min_version: s.tls_min_version,
        tls_cipher_suites: s.tls_cipher_suites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_server_hostname_implies_verify_outgoing_unless_it_is_turned_off() {
        let settings = |outgoing| config_file::FileTlsSettings {
            verify_server_hostname: Some(true),
            verify_outgoing: outgoing,
            ..Default::default()
        };
        assert!(tls_config(settings(None)).verify_outgoing);
        let off = tls_config(settings(Some(false)));
        assert!(!off.verify_outgoing);
        assert!(
            off.validate(AutoEncrypt::default()).is_err(),
            "a contradiction is refused"
        );
        assert!(!tls_config(Default::default()).verify_outgoing);
    }
}
