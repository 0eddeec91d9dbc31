//! `mesh members`: the cluster's members as the agent sees them.

use crate::client::{Client, HttpFlags};
use anyhow::Result;
use clap::Args;
use serde_json::Value;

/// Arguments of `mesh members`.
#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    http: HttpFlags,
}

fn status_name(code: i64) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

/// Runs `mesh members`.
pub async fn run(args: MembersArgs) -> Result<()> {
    let members: Vec<Value> = Client::new(&args.http)?
        .get("/v1/agent/members")
        .await?
        .ok()?
        .json()?;
    let mut rows = vec![[
        "Node".to_string(),
        "Address".into(),
        "Status".into(),
        "Type".into(),
        "Build".into(),
        "Protocol".into(),
        "DC".into(),
    ]];
    for m in &members {
        let tag = |k: &str| m["Tags"][k].as_str().unwrap_or("").to_string();
        let role = if tag("role") == "consul" {
            "server"
        } else {
            "client"
        };
        rows.push([
            m["Name"].as_str().unwrap_or("").to_string(),
            format!("{}:{}", m["Addr"].as_str().unwrap_or(""), m["Port"]),
            status_name(m["Status"].as_i64().unwrap_or(0)).to_string(),
            role.to_string(),
            tag("build"),
            m["ProtocolCur"].to_string(),
            tag("dc"),
        ]);
    }
    print!("{}", super::table(&rows));
    Ok(())
}
