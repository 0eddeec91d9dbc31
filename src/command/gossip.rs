//! The LAN pool from the command line, as Consul's: `mesh join`,
//! `mesh force-leave`, `mesh keygen` and `mesh keyring`.

use crate::client::{Client, HttpFlags};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

/// Arguments of `mesh join`.
#[derive(Args, Debug)]
pub struct JoinArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Addresses of agents to join (`host` or `host:port`).
    #[arg(required = true)]
    addresses: Vec<String>,
}

/// Runs `mesh join`.
pub async fn join(args: JoinArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    let mut joined = 0;
    for addr in &args.addresses {
        match client
            .put(&format!("/v1/agent/join/{addr}"), Vec::new())
            .await?
            .ok()
        {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("Error joining address '{addr}': {e:#}"),
        }
    }
    if joined == 0 {
        bail!("Failed to join any nodes.");
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(())
}

/// Arguments of `mesh force-leave`.
#[derive(Args, Debug)]
pub struct ForceLeaveArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// The failed node to mark as left.
    node: String,
}

/// Runs `mesh force-leave`.
pub async fn force_leave(args: ForceLeaveArgs) -> Result<()> {
    Client::new(&args.http)?
        .put(&format!("/v1/agent/force-leave/{}", args.node), Vec::new())
        .await?
        .ok()?;
    Ok(())
}

/// Runs `mesh keygen`: prints a new 32-byte gossip key.
pub fn keygen() {
    println!("{}", mesh_gossip::generate_key());
}

/// Arguments of `mesh keyring`.
#[derive(Args, Debug)]
pub struct KeyringArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// List the keys in use and how many members hold each.
    #[arg(long)]
    list: bool,
    /// Install a new key on every member.
    #[arg(long)]
    install: Option<String>,
    /// Make an installed key the one that encrypts.
    #[arg(long = "use")]
    use_key: Option<String>,
    /// Remove a key from every member.
    #[arg(long)]
    remove: Option<String>,
}

/// Runs `mesh keyring`.
pub async fn keyring(args: KeyringArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    let body = |k: &str| serde_json::to_vec(&json!({ "Key": k })).unwrap_or_default();
    let chosen = [
        args.list,
        args.install.is_some(),
        args.use_key.is_some(),
        args.remove.is_some(),
    ];
    if chosen.iter().filter(|c| **c).count() != 1 {
        bail!("give exactly one of -list, -install, -use or -remove");
    }
    if let Some(k) = &args.install {
        println!("==> Installing new gossip encryption key...");
        client
            .send(reqwest::Method::POST, "/v1/operator/keyring", Some(body(k)))
            .await?
            .ok()?;
    } else if let Some(k) = &args.use_key {
        println!("==> Changing primary gossip encryption key...");
        client.put("/v1/operator/keyring", body(k)).await?.ok()?;
    } else if let Some(k) = &args.remove {
        println!("==> Removing gossip encryption key...");
        client
            .send(
                reqwest::Method::DELETE,
                "/v1/operator/keyring",
                Some(body(k)),
            )
            .await?
            .ok()?;
    } else {
        println!("==> Gathering installed encryption keys...");
        let rings: Vec<Value> = client.get("/v1/operator/keyring").await?.ok()?.json()?;
        for ring in &rings {
            let total = ring["NumNodes"].as_u64().unwrap_or(0);
            println!();
            println!("LAN:");
            for (key, n) in ring["Keys"].as_object().into_iter().flatten() {
                println!("  {key} [{}/{total}]", n.as_u64().unwrap_or(0));
            }
        }
    }
    Ok(())
}
