//! `mesh intention create|check|get|list|delete`, as `consul intention`.

use crate::client::{Client, HttpFlags};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Arguments of `mesh intention`.
#[derive(Args, Debug)]
pub struct IntentionArgs {
    #[command(subcommand)]
    command: IntentionCommand,
}

#[derive(Subcommand, Debug)]
enum IntentionCommand {
    /// Creates an intention (allow unless -deny).
    Create {
        #[command(flatten)]
        http: HttpFlags,
        /// Allow the connections (the default).
        #[arg(long, conflicts_with = "deny")]
        allow: bool,
        /// Deny the connections.
        #[arg(long)]
        deny: bool,
        /// Replace an existing intention for the same pair.
        #[arg(long)]
        replace: bool,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// The source service (or *).
        source: String,
        /// The destination service (or *).
        destination: String,
    },
    /// Says whether SRC may connect to DST (exit 0 allowed, 2 denied).
    Check {
        #[command(flatten)]
        http: HttpFlags,
        /// The source service.
        source: String,
        /// The destination service.
        destination: String,
    },
    /// Shows one intention, by SRC DST or by its legacy ID.
    Get {
        #[command(flatten)]
        http: HttpFlags,
        /// The source service (or *), or the intention's ID.
        source: String,
        /// The destination service (or *).
        destination: Option<String>,
    },
    /// Lists every intention.
    List {
        #[command(flatten)]
        http: HttpFlags,
    },
    /// Deletes one intention, by SRC DST or by its legacy ID.
    Delete {
        #[command(flatten)]
        http: HttpFlags,
        /// The source service (or *), or the intention's ID.
        source: String,
        /// The destination service (or *).
        destination: Option<String>,
    },
}

fn exact(source: &str, destination: &str) -> String {
    format!(
        "/v1/connect/intentions/exact?source={}&destination={}",
        crate::client::encode_key(source),
        crate::client::encode_key(destination)
    )
}

/// The path of one intention: by pair, or by ID when only one argument was
/// given.
fn one(source_or_id: &str, destination: Option<&str>) -> String {
    match destination {
        Some(destination) => exact(source_or_id, destination),
        None => format!(
            "/v1/connect/intentions/{}",
            crate::client::encode_key(source_or_id)
        ),
    }
}

/// Runs `mesh intention`; the exit code is 2 for a denied `check`.
pub async fn run(args: IntentionArgs) -> Result<u8> {
    match args.command {
        IntentionCommand::Create {
            http,
            allow: _,
            deny,
            replace,
            description,
            source,
            destination,
        } => {
            let client = Client::new(&http)?;
            if !replace
                && client
                    .get(&exact(&source, &destination))
                    .await?
                    .status
                    .is_success()
            {
                bail!("Intention with source {source:?} and destination {destination:?} already exists");
            }
            let action = if deny { "deny" } else { "allow" };
            let body =
                json!({"Action": action, "Description": description, "SourceType": "consul"});
            client
                .put(&exact(&source, &destination), serde_json::to_vec(&body)?)
                .await?
                .ok()?;
            println!("Created: {source} => {destination} ({action})");
        }
        IntentionCommand::Check {
            http,
            source,
            destination,
        } => {
            let path = format!(
                "/v1/connect/intentions/check?source={}&destination={}",
                crate::client::encode_key(&source),
                crate::client::encode_key(&destination)
            );
            let v: Value = Client::new(&http)?.get(&path).await?.ok()?.json()?;
            if v["Allowed"].as_bool() == Some(true) {
                println!("Allowed");
            } else {
                println!("Denied");
                return Ok(2);
            }
        }
        IntentionCommand::Get {
            http,
            source,
            destination,
        } => {
            let reply = Client::new(&http)?
                .get(&one(&source, destination.as_deref()))
                .await?;
            if reply.status.as_u16() == 404 {
                match destination {
                    Some(destination) => bail!("Intention not found: {source} => {destination}"),
                    None => bail!("Intention not found: {source}"),
                }
            }
            let v: Value = reply.ok()?.json()?;
            let rows = [
                [
                    "Source:".to_string(),
                    v["SourceName"].as_str().unwrap_or("").to_string(),
                ],
                [
                    "Destination:".into(),
                    v["DestinationName"].as_str().unwrap_or("").to_string(),
                ],
                [
                    "Action:".into(),
                    v["Action"].as_str().unwrap_or("").to_string(),
                ],
                [
                    "Description:".into(),
                    v["Description"].as_str().unwrap_or("").to_string(),
                ],
                ["Precedence:".into(), v["Precedence"].to_string()],
                ["ID:".into(), v["ID"].as_str().unwrap_or("").to_string()],
            ];
            print!("{}", super::table(&rows));
        }
        IntentionCommand::List { http } => {
            let all: Vec<Value> = Client::new(&http)?
                .get("/v1/connect/intentions")
                .await?
                .ok()?
                .json()?;
            let mut rows = vec![[
                "ID".to_string(),
                "Source".into(),
                "Action".into(),
                "Destination".into(),
                "Precedence".into(),
            ]];
            for i in all {
                let s = |k: &str| i[k].as_str().unwrap_or("").to_string();
                rows.push([
                    s("ID"),
                    s("SourceName"),
                    s("Action"),
                    s("DestinationName"),
                    i["Precedence"].to_string(),
                ]);
            }
            print!("{}", super::table(&rows));
        }
        IntentionCommand::Delete {
            http,
            source,
            destination,
        } => {
            Client::new(&http)?
                .delete(&one(&source, destination.as_deref()))
                .await?
                .ok()?;
            println!("Intention deleted.");
        }
    }
    Ok(0)
}
