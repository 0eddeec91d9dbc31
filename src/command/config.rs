//! `mesh config write|read|list|delete`, as `consul config`.

use crate::client::{Client, HttpFlags};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

/// Arguments of `mesh config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Writes a config entry from a JSON or HCL file.
    Write {
        #[command(flatten)]
        http: HttpFlags,
        /// Check-and-set against -modify-index.
        #[arg(long)]
        cas: bool,
        /// The index -cas compares with (0: only if absent).
        #[arg(long = "modify-index")]
        modify_index: Option<u64>,
        /// The file.
        file: PathBuf,
    },
    /// Prints one config entry as JSON.
    Read {
        #[command(flatten)]
        http: HttpFlags,
        /// The kind.
        #[arg(long)]
        kind: String,
        /// The name.
        #[arg(long)]
        name: String,
    },
    /// Lists the names of a kind's entries.
    List {
        #[command(flatten)]
        http: HttpFlags,
        /// The kind.
        #[arg(long)]
        kind: String,
    },
    /// Deletes a config entry.
    Delete {
        #[command(flatten)]
        http: HttpFlags,
        /// The kind.
        #[arg(long)]
        kind: String,
        /// The name.
        #[arg(long)]
        name: String,
    },
}

/// Runs `mesh config`.
pub async fn run(args: ConfigArgs) -> Result<()> {
    match args.command {
        ConfigCommand::Write {
            http,
            cas,
            modify_index,
            file,
        } => {
            let entry =
                mesh_control::agent::config_file::parse_file(&file).map_err(|e| anyhow!(e))?;
            let kind = entry["Kind"].as_str().unwrap_or_default().to_string();
            let name = entry["Name"].as_str().unwrap_or_default().to_string();
            let path = match (cas, modify_index) {
                (true, Some(i)) => format!("/v1/config?cas={i}"),
                (true, None) => bail!("Must specify -modify-index with -cas!"),
                (false, _) => "/v1/config".to_string(),
            };
            let reply = Client::new(&http)?
                .put(&path, serde_json::to_vec(&entry)?)
                .await?;
            if reply.status.as_u16() == 400 {
                bail!(
                    "Error writing config entry {kind}/{name}: {}",
                    String::from_utf8_lossy(&reply.body).trim()
                );
            }
            let written: bool = reply.ok()?.json()?;
            if !written {
                bail!("Config entry not updated: {kind}/{name}");
            }
            println!("Config entry written: {kind}/{name}");
        }
        ConfigCommand::Read { http, kind, name } => {
            let reply = Client::new(&http)?
                .get(&format!("/v1/config/{kind}/{name}"))
                .await?;
            if reply.status.as_u16() == 404 {
                bail!("Error reading config entry {kind}/{name}: not found");
            }
            let v: Value = reply.ok()?.json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        ConfigCommand::List { http, kind } => {
            let entries: Vec<Value> = Client::new(&http)?
                .get(&format!("/v1/config/{kind}"))
                .await?
                .ok()?
                .json()?;
            for e in entries {
                println!("{}", e["Name"].as_str().unwrap_or_default());
            }
        }
        ConfigCommand::Delete { http, kind, name } => {
            let reply = Client::new(&http)?
                .delete(&format!("/v1/config/{kind}/{name}"))
                .await?;
            if reply.status.as_u16() == 400 {
                bail!(
                    "Error deleting config entry {kind}/{name}: {}",
                    String::from_utf8_lossy(&reply.body).trim()
                );
            }
            reply.ok()?;
            println!("Config entry deleted: {kind}/{name}");
        }
    }
    Ok(())
}
