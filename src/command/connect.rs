//! `mesh connect ca get-config|set-config`, as `consul connect ca`.

use crate::client::{Client, HttpFlags};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

/// Arguments of `mesh connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(subcommand)]
    command: ConnectCommand,
}

#[derive(Subcommand, Debug)]
enum ConnectCommand {
    /// Manages the certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Prints the CA configuration as JSON.
    GetConfig {
        #[command(flatten)]
        http: HttpFlags,
    },
    /// Sets the CA configuration from a JSON file (may rotate the root).
    SetConfig {
        #[command(flatten)]
        http: HttpFlags,
        /// The JSON file with Provider and Config.
        #[arg(long = "config-file")]
        config_file: PathBuf,
    },
}

/// Runs `mesh connect`.
pub async fn run(args: ConnectArgs) -> Result<()> {
    let ConnectCommand::Ca { command } = args.command;
    match command {
        CaCommand::GetConfig { http } => {
            let v: Value = Client::new(&http)?
                .get("/v1/connect/ca/configuration")
                .await?
                .ok()?
                .json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        CaCommand::SetConfig { http, config_file } => {
            let body = std::fs::read(&config_file)
                .with_context(|| format!("reading {}", config_file.display()))?;
            serde_json::from_slice::<Value>(&body)
                .with_context(|| format!("{}: invalid JSON", config_file.display()))?;
            Client::new(&http)?
                .put("/v1/connect/ca/configuration", body)
                .await?
                .ok()?;
            println!("Configuration updated!");
        }
    }
    Ok(())
}
