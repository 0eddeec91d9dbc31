//! The commands, one module each.

mod agent;
mod catalog;
mod config;
mod connect;
mod gossip;
mod info;
mod intention;
mod kv;
mod leave;
mod lock;
mod members;
mod operator;
mod proxy;
mod reload;
mod services;
mod snapshot;
mod tls;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mesh: service networking in the shape of Consul.
#[derive(Parser, Debug)]
#[command(name = "mesh", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs an agent (server, or dev mode).
    Agent(agent::AgentArgs),
    /// Interacts with the catalog.
    Catalog(catalog::CatalogArgs),
    /// Writes, reads, lists and deletes config entries.
    Config(config::ConfigArgs),
    /// Manages the service mesh's certificate authority.
    Connect(connect::ConnectArgs),
    /// Marks a failed node as left.
    ForceLeave(gossip::ForceLeaveArgs),
    /// Provides debugging information for operators.
    Info(info::InfoArgs),
    /// Manages intentions: who may connect to whom.
    Intention(intention::IntentionArgs),
    /// Interacts with the key-value store.
    Kv(kv::KvArgs),
    /// Tells the agent to join other agents' LAN pool.
    Join(gossip::JoinArgs),
    /// Generates a new gossip encryption key.
    Keygen,
    /// Manages the gossip encryption keyring.
    Keyring(gossip::KeyringArgs),
    /// Gracefully leaves the cluster and shuts the agent down.
    Leave(leave::LeaveArgs),
    /// Runs a command while holding a lock.
    Lock(lock::LockArgs),
    /// Lists the members of the cluster.
    Members(members::MembersArgs),
    /// Operates the servers: their Raft configuration.
    Operator(operator::OperatorArgs),
    /// Runs a sidecar or client proxy of the service mesh.
    Proxy(proxy::ProxyArgs),
    /// Triggers the agent to reload its configuration files.
    Reload(reload::ReloadArgs),
    /// Registers and deregisters services with the local agent.
    Services(services::ServicesArgs),
    /// Saves, restores and inspects snapshots of the servers' state.
    Snapshot(snapshot::SnapshotArgs),
    /// Creates a CA and certificates for the agents' TLS.
    Tls(tls::TlsArgs),
    /// Prints the mesh version.
    Version,
}

/// Runs the parsed command, mapping errors to a message and exit status.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Agent(a) => return agent::run(a).await,
        Command::Catalog(a) => catalog::run(a).await,
        Command::Config(a) => config::run(a).await,
        Command::Connect(a) => connect::run(a).await,
        Command::ForceLeave(a) => gossip::force_leave(a).await,
        Command::Info(a) => info::run(a).await,
        Command::Join(a) => gossip::join(a).await,
        Command::Keygen => {
            gossip::keygen();
            Ok(())
        }
        Command::Keyring(a) => gossip::keyring(a).await,
        Command::Intention(a) => match intention::run(a).await {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Kv(a) => kv::run(a).await,
        Command::Leave(a) => leave::run(a).await,
        Command::Lock(a) => return lock::run(a).await,
        Command::Members(a) => members::run(a).await,
        Command::Operator(a) => operator::run(a).await,
        Command::Proxy(a) => return proxy::run(a).await,
        Command::Reload(a) => reload::run(a).await,
        Command::Services(a) => services::run(a).await,
        Command::Snapshot(a) => snapshot::run(a).await,
        Command::Tls(a) => tls::run(a),
        Command::Version => {
            println!("Mesh v{}", mesh_control::VERSION);
            println!("Protocol 2 spoken by default, understands 2 to 3");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error! {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends logs to stderr at `level` (and the usual quiet levels for
/// dependencies), as text or JSON lines.
pub(crate) fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{level},openraft=warn,hyper=warn,h2=warn,reqwest=warn"
    ))
    .with_context(|| format!("invalid -log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Lays out rows as columns separated by two spaces, as Consul's tables.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
