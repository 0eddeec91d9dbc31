//! `mesh leave`: asks the agent to leave and shut down.

use crate::client::{Client, HttpFlags};
use anyhow::Result;
use clap::Args;

/// Arguments of `mesh leave`.
#[derive(Args, Debug)]
pub struct LeaveArgs {
    #[command(flatten)]
    http: HttpFlags,
}

/// Runs `mesh leave`.
pub async fn run(args: LeaveArgs) -> Result<()> {
    Client::new(&args.http)?
        .put("/v1/agent/leave", Vec::new())
        .await?
        .ok()?;
    println!("Graceful leave complete");
    Ok(())
}
