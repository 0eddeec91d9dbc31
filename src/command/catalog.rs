//! `mesh catalog services|nodes|datacenters`, as `consul catalog`.

use crate::client::{Client, HttpFlags};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::collections::BTreeMap;

/// Arguments of `mesh catalog`.
#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Subcommand, Debug)]
enum CatalogCommand {
    /// Lists services.
    Services {
        #[command(flatten)]
        http: HttpFlags,
        /// Show each service's tags.
        #[arg(long)]
        tags: bool,
    },
    /// Lists nodes.
    Nodes {
        #[command(flatten)]
        http: HttpFlags,
    },
    /// Lists datacenters.
    Datacenters {
        #[command(flatten)]
        http: HttpFlags,
    },
}

/// Runs `mesh catalog`.
pub async fn run(args: CatalogArgs) -> Result<()> {
    match args.command {
        CatalogCommand::Services { http, tags } => {
            let services: BTreeMap<String, Vec<String>> = Client::new(&http)?
                .get("/v1/catalog/services")
                .await?
                .ok()?
                .json()?;
            if tags {
                let rows: Vec<[String; 2]> = services
                    .into_iter()
                    .map(|(name, tags)| [name, tags.join(",")])
                    .collect();
                print!("{}", super::table(&rows));
            } else {
                for name in services.keys() {
                    println!("{name}");
                }
            }
        }
        CatalogCommand::Nodes { http } => {
            let nodes: Vec<Value> = Client::new(&http)?
                .get("/v1/catalog/nodes")
                .await?
                .ok()?
                .json()?;
            let mut rows = vec![[
                "Node".to_string(),
                "ID".into(),
                "Address".into(),
                "DC".into(),
            ]];
            for n in nodes {
                let s = |k: &str| n[k].as_str().unwrap_or("").to_string();
                let id = s("ID");
                rows.push([
                    s("Node"),
                    id.chars().take(8).collect(),
                    s("Address"),
                    s("Datacenter"),
                ]);
            }
            print!("{}", super::table(&rows));
        }
        CatalogCommand::Datacenters { http } => {
            let dcs: Vec<String> = Client::new(&http)?
                .get("/v1/catalog/datacenters")
                .await?
                .ok()?
                .json()?;
            for dc in dcs {
                println!("{dc}");
            }
        }
    }
    Ok(())
}
