//! `mesh lock PREFIX CMD`: runs a command while holding a session-backed
//! lock on `PREFIX/.lock`, as `consul lock` does. The session is renewed
//! while the command runs; the lock is released when it exits.

use crate::client::{encode_key, Client, HttpFlags};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;

/// Consul's flag value marking a key as a lock.
const LOCK_FLAG: u64 = 0x2ddccbc058a50c18;
/// The session TTL; renewed at half of it.
const SESSION_TTL: Duration = Duration::from_secs(15);

/// Arguments of `mesh lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// A name for the session.
    #[arg(long, default_value = "")]
    name: String,
    /// Give up if the lock is not acquired within this long (e.g. 30s).
    #[arg(long)]
    timeout: Option<String>,
    /// Print what happens.
    #[arg(long)]
    verbose: bool,
    /// The KV prefix of the lock.
    prefix: String,
    /// The command (and arguments) to run while holding the lock.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `mesh lock`.
pub async fn run(args: LockArgs) -> ExitCode {
    match run_locked(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error! {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_locked(args: LockArgs) -> Result<ExitCode> {
    let client = Client::new(&args.http)?;
    let key = format!("{}/.lock", args.prefix.trim_end_matches('/'));
    let command = args.command.join(" ");
    let name = if args.name.is_empty() {
        format!("Consul lock for '{command}' at '{}'", args.prefix)
    } else {
        args.name.clone()
    };
    let session: Value = client
        .put(
            "/v1/session/create",
            serde_json::to_vec(&json!({
                "Name": name, "TTL": "15s", "Behavior": "release", "LockDelay": "1s"
            }))?,
        )
        .await?
        .ok()?
        .json()?;
    let sid = session["ID"]
        .as_str()
        .context("session create returned no ID")?
        .to_string();
    let deadline = match &args.timeout {
        Some(t) => Some(
            tokio::time::Instant::now()
                + mesh_control::structs::parse_duration(t).map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let result = hold_and_run(&client, &args, &key, &sid, &command, deadline).await;
    let _ = client
        .put(
            &format!("/v1/kv/{}?release={sid}", encode_key(&key)),
            Vec::new(),
        )
        .await;
    let _ = client
        .put(&format!("/v1/session/destroy/{sid}"), Vec::new())
        .await;
    if args.verbose {
        eprintln!("Lock release complete");
    }
    result
}

async fn hold_and_run(
    client: &Client,
    args: &LockArgs,
    key: &str,
    sid: &str,
    command: &str,
    deadline: Option<tokio::time::Instant>,
) -> Result<ExitCode> {
    let path = format!("/v1/kv/{}", encode_key(key));
    loop {
        let acquired: bool = client
            .put(
                &format!("{path}?acquire={sid}&flags={LOCK_FLAG}"),
                Vec::new(),
            )
            .await?
            .ok()?
            .json()?;
        if acquired {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            bail!("Lock acquisition failed: timed out");
        }
        // Wait until the holder lets go (or a short while, for lock-delay).
        let current = client.get(&path).await?;
        let index = current.index;
        let held = current.status.is_success()
            && current
                .json::<Vec<Value>>()?
                .first()
                .is_some_and(|e| e["Session"].as_str().is_some_and(|s| !s.is_empty()));
        let wait = if held { "15s" } else { "1s" };
        let _ = client
            .get(&format!("{path}?index={index}&wait={wait}"))
            .await?;
    }
    if args.verbose {
        eprintln!("Lock acquisition successful");
    }
    let renewer = {
        let client = Client::new(&args.http)?;
        let sid = sid.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SESSION_TTL / 2).await;
                if client
                    .put(&format!("/v1/session/renew/{sid}"), Vec::new())
                    .await
                    .map(|r| r.status.is_success())
                    .unwrap_or(false)
                {
                    continue;
                }
                eprintln!("Lock lost: session could not be renewed");
                return;
            }
        })
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let status = tokio::select! {
        s = child.wait() => s.context("waiting for the child")?,
        _ = tokio::signal::ctrl_c() => {
            let _ = child.kill().await;
            child.wait().await.context("waiting for the child")?
        }
    };
    renewer.abort();
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}
