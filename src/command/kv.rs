//! `mesh kv get|put|delete|export|import`, as `consul kv`.

use crate::client::{encode_key, Client, HttpFlags};
use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Read;

/// Arguments of `mesh kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Reads a key (or a prefix with -recurse / -keys).
    Get(GetArgs),
    /// Writes a key.
    Put(PutArgs),
    /// Deletes a key (or a prefix with -recurse).
    Delete(DeleteArgs),
    /// Exports a prefix as JSON.
    Export(ExportArgs),
    /// Imports JSON produced by export.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Print every key under the prefix as key:value.
    #[arg(long)]
    recurse: bool,
    /// List keys under the prefix.
    #[arg(long)]
    keys: bool,
    /// The separator for -keys (default "/").
    #[arg(long, default_value = "/")]
    separator: String,
    /// Print every field of the entry.
    #[arg(long)]
    detailed: bool,
    /// The key or prefix.
    key: Option<String>,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Check-and-set against -modify-index.
    #[arg(long)]
    cas: bool,
    /// The index -cas compares with (0: only if absent).
    #[arg(long = "modify-index")]
    modify_index: Option<u64>,
    /// Opaque flags to store.
    #[arg(long)]
    flags: Option<u64>,
    /// Acquire the key's lock for -session.
    #[arg(long)]
    acquire: bool,
    /// Release the key's lock held by -session.
    #[arg(long)]
    release: bool,
    /// The session for -acquire / -release.
    #[arg(long)]
    session: Option<String>,
    /// The key.
    key: String,
    /// The value: text, @file, or - for stdin.
    value: Option<String>,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Delete every key under the prefix.
    #[arg(long)]
    recurse: bool,
    /// Check-and-set against -modify-index.
    #[arg(long)]
    cas: bool,
    /// The index -cas compares with.
    #[arg(long = "modify-index")]
    modify_index: Option<u64>,
    /// The key or prefix.
    key: String,
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// The prefix to export (default: everything).
    prefix: Option<String>,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// A prefix to put before every imported key.
    #[arg(long, default_value = "")]
    prefix: String,
    /// The JSON: text, @file, or - for stdin (default stdin).
    data: Option<String>,
}

/// One exported entry, as `consul kv export` writes it.
#[derive(Serialize, Deserialize, Debug)]
struct Exported {
    key: String,
    flags: u64,
    value: String,
}

/// Runs `mesh kv`.
pub async fn run(args: KvArgs) -> Result<()> {
    match args.command {
        KvCommand::Get(a) => get(a).await,
        KvCommand::Put(a) => put(a).await,
        KvCommand::Delete(a) => delete(a).await,
        KvCommand::Export(a) => export(a).await,
        KvCommand::Import(a) => import(a).await,
    }
}

fn decode_value(entry: &Value) -> Vec<u8> {
    entry["Value"]
        .as_str()
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .unwrap_or_default()
}

/// Reads a value argument: `@file`, `-` (stdin) or the text itself.
fn read_data(arg: Option<&str>) -> Result<Vec<u8>> {
    match arg {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            Ok(buf)
        }
        Some(a) if a.starts_with('@') => {
            std::fs::read(&a[1..]).with_context(|| format!("reading {}", &a[1..]))
        }
        Some(a) => Ok(a.as_bytes().to_vec()),
    }
}

async fn get(a: GetArgs) -> Result<()> {
    let client = Client::new(&a.http)?;
    let key = a.key.unwrap_or_default();
    if a.keys {
        let path = format!(
            "/v1/kv/{}?keys&separator={}",
            encode_key(&key),
            encode_key(&a.separator)
        );
        let reply = client.get(&path).await?;
        if reply.status.as_u16() == 404 {
            return Ok(());
        }
        for k in reply.ok()?.json::<Vec<String>>()? {
            println!("{k}");
        }
        return Ok(());
    }
    if a.recurse {
        let reply = client
            .get(&format!("/v1/kv/{}?recurse", encode_key(&key)))
            .await?;
        if reply.status.as_u16() == 404 {
            return Ok(());
        }
        for e in reply.ok()?.json::<Vec<Value>>()? {
            let k = e["Key"].as_str().unwrap_or_default();
            if a.detailed {
                print_detailed(&e);
                println!();
            } else {
                println!("{k}:{}", String::from_utf8_lossy(&decode_value(&e)));
            }
        }
        return Ok(());
    }
    if key.is_empty() {
        bail!("Missing KEY argument");
    }
    let reply = client.get(&format!("/v1/kv/{}", encode_key(&key))).await?;
    if reply.status.as_u16() == 404 {
        bail!("No key exists at: {key}");
    }
    let entries: Vec<Value> = reply.ok()?.json()?;
    let Some(e) = entries.first() else {
        bail!("No key exists at: {key}");
    };
    if a.detailed {
        print_detailed(e);
    } else {
        use std::io::Write;
        let mut out = std::io::stdout();
        out.write_all(&decode_value(e))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn print_detailed(e: &Value) {
    for field in [
        "CreateIndex",
        "Flags",
        "Key",
        "LockIndex",
        "ModifyIndex",
        "Session",
    ] {
        let v = match &e[field] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{field:<16}{v}");
    }
    println!(
        "{:<16}{}",
        "Value",
        String::from_utf8_lossy(&decode_value(e))
    );
}

async fn put(a: PutArgs) -> Result<()> {
    let client = Client::new(&a.http)?;
    let body = read_data(a.value.as_deref())?;
    let mut query = Vec::new();
    if let Some(f) = a.flags {
        query.push(format!("flags={f}"));
    }
    if a.cas {
        let Some(i) = a.modify_index else {
            bail!("Must specify -modify-index with -cas!");
        };
        query.push(format!("cas={i}"));
    }
    if a.acquire || a.release {
        let Some(s) = &a.session else {
            bail!("Must specify -session with -acquire or -release");
        };
        query.push(format!(
            "{}={s}",
            if a.acquire { "acquire" } else { "release" }
        ));
    }
    let mut path = format!("/v1/kv/{}", encode_key(&a.key));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let ok: bool = client.put(&path, body).await?.ok()?.json()?;
    if !ok {
        if a.cas {
            bail!("Did not write to {}: CAS failed", a.key);
        }
        bail!(
            "Failed writing data to {}: lock not acquired or released",
            a.key
        );
    }
    println!("Success! Data written to: {}", a.key);
    Ok(())
}

async fn delete(a: DeleteArgs) -> Result<()> {
    let client = Client::new(&a.http)?;
    let mut path = format!("/v1/kv/{}", encode_key(&a.key));
    if a.recurse {
        path.push_str("?recurse");
    } else if a.cas {
        let Some(i) = a.modify_index else {
            bail!("Must specify -modify-index with -cas!");
        };
        path.push_str(&format!("?cas={i}"));
    }
    let ok: bool = client.delete(&path).await?.ok()?.json()?;
    if !ok {
        bail!("Did not delete key {}: CAS failed", a.key);
    }
    if a.recurse {
        println!("Success! Deleted keys with prefix: {}", a.key);
    } else {
        println!("Success! Deleted key: {}", a.key);
    }
    Ok(())
}

async fn export(a: ExportArgs) -> Result<()> {
    let client = Client::new(&a.http)?;
    let prefix = a.prefix.unwrap_or_default();
    let reply = client
        .get(&format!("/v1/kv/{}?recurse", encode_key(&prefix)))
        .await?;
    let entries: Vec<Value> = if reply.status.as_u16() == 404 {
        Vec::new()
    } else {
        reply.ok()?.json()?
    };
    let out: Vec<Exported> = entries
        .iter()
        .map(|e| Exported {
            key: e["Key"].as_str().unwrap_or_default().to_string(),
            flags: e["Flags"].as_u64().unwrap_or(0),
            value: e["Value"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn import(a: ImportArgs) -> Result<()> {
    let client = Client::new(&a.http)?;
    let data = read_data(Some(a.data.as_deref().unwrap_or("-")))?;
    let entries: Vec<Exported> =
        serde_json::from_slice(&data).context("Failed to decode data: not a kv export")?;
    for e in entries {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&e.value)
            .with_context(|| format!("Failed to base 64 decode value of key {}", e.key))?;
        let key = format!("{}{}", a.prefix, e.key);
        client
            .put(
                &format!("/v1/kv/{}?flags={}", encode_key(&key), e.flags),
                value,
            )
            .await?
            .ok()?;
        println!("Imported: {key}");
    }
    Ok(())
}
