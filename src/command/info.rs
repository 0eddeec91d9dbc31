//! `mesh info`: the agent's configuration and state, for operators.

use crate::client::{Client, HttpFlags};
use anyhow::Result;
use clap::Args;
use serde_json::Value;

/// Arguments of `mesh info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    http: HttpFlags,
}

/// Runs `mesh info`.
pub async fn run(args: InfoArgs) -> Result<()> {
    let client = Client::new(&args.http)?;
    let me: Value = client.get("/v1/agent/self").await?.ok()?.json()?;
    let leader: Value = client.get("/v1/status/leader").await?.ok()?.json()?;
    let c = &me["Config"];
    println!("agent:");
    println!("\tnode_name = {}", c["NodeName"].as_str().unwrap_or(""));
    println!("\tnode_id = {}", c["NodeID"].as_str().unwrap_or(""));
    println!("\tdatacenter = {}", c["Datacenter"].as_str().unwrap_or(""));
    println!("\tserver = {}", c["Server"]);
    println!("\tversion = {}", c["Version"].as_str().unwrap_or(""));
    println!("raft:");
    println!("\tleader_addr = {}", leader.as_str().unwrap_or(""));
    Ok(())
}
