//! `mesh operator raft list-peers|remove-peer`, as `consul operator raft`.

use crate::client::{Client, HttpFlags};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Arguments of `mesh operator`.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Subcommand, Debug)]
enum OperatorCommand {
    /// Inspects and changes the servers' Raft configuration.
    Raft {
        #[command(subcommand)]
        command: RaftCommand,
    },
}

#[derive(Subcommand, Debug)]
enum RaftCommand {
    /// Lists the Raft peers: every server, its state and whether it votes.
    ListPeers {
        #[command(flatten)]
        http: HttpFlags,
        /// Answer from any server, not only the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Removes a server from the Raft configuration.
    RemovePeer {
        #[command(flatten)]
        http: HttpFlags,
        /// The server's node ID.
        #[arg(long)]
        id: Option<String>,
        /// The server's RPC address, IP:port.
        #[arg(long)]
        address: Option<String>,
    },
}

/// Runs `mesh operator`.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let OperatorCommand::Raft { command } = args.command;
    match command {
        RaftCommand::ListPeers { http, stale } => {
            let path = if stale {
                "/v1/operator/raft/configuration?stale"
            } else {
                "/v1/operator/raft/configuration"
            };
            let config: Value = Client::new(&http)?.get(path).await?.ok()?.json()?;
            let mut rows =
                vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"].map(String::from)];
            for s in config["Servers"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
                let state = if s["Leader"] == true {
                    "leader"
                } else {
                    "follower"
                };
                rows.push([
                    text("Node"),
                    text("ID"),
                    text("Address"),
                    state.into(),
                    s["Voter"].as_bool().unwrap_or(false).to_string(),
                    text("ProtocolVersion"),
                ]);
            }
            print!("{}", super::table(&rows));
        }
        RaftCommand::RemovePeer { http, id, address } => {
            let (query, what) = match (id, address) {
                (Some(id), None) => (format!("id={id}"), id),
                (None, Some(a)) => (format!("address={a}"), a),
                _ => bail!("give exactly one of -id or -address"),
            };
            Client::new(&http)?
                .delete(&format!("/v1/operator/raft/peer?{query}"))
                .await?
                .ok()?;
            println!("Removed peer with {what}");
        }
    }
    Ok(())
}
