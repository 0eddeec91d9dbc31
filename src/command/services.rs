//! `mesh services register|deregister`, as `consul services`.

use crate::client::{Client, HttpFlags};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use mesh_control::agent::config_file::load_paths;
use std::path::PathBuf;

/// Arguments of `mesh services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(subcommand)]
    command: ServicesCommand,
}

#[derive(Subcommand, Debug)]
enum ServicesCommand {
    /// Registers the services defined in a JSON or HCL file.
    Register {
        #[command(flatten)]
        http: HttpFlags,
        /// The definition file.
        file: PathBuf,
    },
    /// Deregisters the services in a file, or one by -id.
    Deregister {
        #[command(flatten)]
        http: HttpFlags,
        /// The ID of the service to deregister.
        #[arg(long)]
        id: Option<String>,
        /// A definition file whose services to deregister.
        file: Option<PathBuf>,
    },
}

/// Runs `mesh services`.
pub async fn run(args: ServicesArgs) -> Result<()> {
    match args.command {
        ServicesCommand::Register { http, file } => {
            let loaded = load_paths(std::slice::from_ref(&file)).map_err(|e| anyhow!(e))?;
            if loaded.services.is_empty() {
                bail!("{}: no service definitions found", file.display());
            }
            let client = Client::new(&http)?;
            for s in loaded.services {
                let body = serde_json::to_vec(&s)?;
                client.put("/v1/agent/service/register", body).await?.ok()?;
                println!("Registered service: {}", s.name);
            }
        }
        ServicesCommand::Deregister { http, id, file } => {
            let ids: Vec<String> = match (id, file) {
                (Some(id), None) => vec![id],
                (None, Some(file)) => load_paths(std::slice::from_ref(&file))
                    .map_err(|e| anyhow!(e))?
                    .services
                    .into_iter()
                    .map(|s| if s.id.is_empty() { s.name } else { s.id })
                    .collect(),
                _ => bail!("Exactly one of -id or a file argument is required"),
            };
            let client = Client::new(&http)?;
            for id in ids {
                client
                    .put(&format!("/v1/agent/service/deregister/{id}"), Vec::new())
                    .await?
                    .ok()?;
                println!("Deregistered service: {id}");
            }
        }
    }
    Ok(())
}
