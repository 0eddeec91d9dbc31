//! `mesh reload`: re-reads the agent's config files.

use crate::client::{Client, HttpFlags};
use anyhow::Result;
use clap::Args;

/// Arguments of `mesh reload`.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    http: HttpFlags,
}

/// Runs `mesh reload`.
pub async fn run(args: ReloadArgs) -> Result<()> {
    Client::new(&args.http)?
        .put("/v1/agent/reload", Vec::new())
        .await?
        .ok()?;
    println!("Configuration reload triggered");
    Ok(())
}
