//! `mesh snapshot save|restore|inspect`, as `consul snapshot`.

use crate::client::{Client, HttpFlags};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mesh_control::snapshot::{self, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `mesh snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Saves a point-in-time snapshot of the servers' state to FILE.
    Save(SaveArgs),
    /// Restores the servers' state from the snapshot in FILE.
    Restore(RestoreArgs),
    /// Verifies the snapshot in FILE and prints what it holds.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
struct SaveArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// Let any server answer, even without a leader (possibly stale).
    #[arg(long)]
    stale: bool,
    /// Where to write the snapshot.
    file: PathBuf,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    http: HttpFlags,
    /// The snapshot to restore.
    file: PathBuf,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// The snapshot to inspect.
    file: PathBuf,
}

/// Runs `mesh snapshot`.
pub async fn run(args: SnapshotArgs) -> Result<()> {
    match args.command {
        SnapshotCommand::Save(a) => save(a).await,
        SnapshotCommand::Restore(a) => restore(a).await,
        SnapshotCommand::Inspect(a) => inspect(a).await,
    }
}

/// Fetches the archive, writes it beside FILE, reads it back and verifies
/// it, and only then moves it into place: a FILE that exists is sound.
async fn save(args: SaveArgs) -> Result<()> {
    let path = if args.stale {
        "/v1/snapshot?stale"
    } else {
        "/v1/snapshot"
    };
    let reply = Client::new(&args.http)?
        .get(path)
        .await
        .context("Error saving snapshot")?
        .ok()
        .context("Error saving snapshot")?;
    let file = args.file;
    let mut part = file.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    std::fs::write(&part, &reply.body)
        .with_context(|| format!("Error writing snapshot to {}", part.display()))?;
    let verified = verify_file(&part).await;
    let snap = match verified {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.context("Error verifying snapshot file"));
        }
    };
    std::fs::rename(&part, &file)
        .with_context(|| format!("Error moving snapshot into {}", file.display()))?;
    println!("Saved and verified snapshot to index {}", snap.meta.index);
    Ok(())
}

async fn restore(args: RestoreArgs) -> Result<()> {
    let body = std::fs::read(&args.file)
        .with_context(|| format!("Error reading snapshot file {}", args.file.display()))?;
    Client::new(&args.http)?
        .put("/v1/snapshot", body)
        .await
        .context("Error restoring snapshot")?
        .ok()
        .context("Error restoring snapshot")?;
    println!("Restored snapshot");
    Ok(())
}

async fn inspect(args: InspectArgs) -> Result<()> {
    let snap = verify_file(&args.file)
        .await
        .context("Error verifying snapshot file")?;
    let m = &snap.meta;
    let d = &snap.data;
    print!(
        "{}",
        super::table(&[
            ["ID".to_string(), m.id.clone()],
            ["Size".into(), m.size.to_string()],
            ["Index".into(), m.index.to_string()],
            ["Term".into(), m.term.to_string()],
            ["Version".into(), m.version.to_string()],
        ])
    );
    let count = |n: usize| n.to_string();
    println!();
    print!(
        "{}",
        super::table(&[
            ["Type".to_string(), "Count".into()],
            ["----".into(), "-----".into()],
            ["Node".into(), count(d.nodes.len())],
            ["Service".into(), nested(&d.services)],
            ["Check".into(), nested(&d.checks)],
            ["KVS".into(), count(d.kvs.len())],
            ["Tombstone".into(), count(d.tombstones.len())],
            ["Session".into(), count(d.sessions.len())],
            ["ConfigEntry".into(), nested(&d.config_entries)],
            ["ConnectCARoot".into(), count(d.ca.roots.len())],
        ])
    );
    Ok(())
}

/// Reads and verifies the archive at `path` (checksums, version, JSON).
async fn verify_file(path: &Path) -> Result<Snapshot> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("Error reading snapshot file {}", path.display()))?;
    let snap = tokio::task::spawn_blocking(move || snapshot::read(&bytes))
        .await
        .context("verifying the snapshot")??;
    Ok(snap)
}

/// How many records a two-level table holds.
fn nested<K, V>(table: &BTreeMap<String, BTreeMap<K, V>>) -> String {
    table.values().map(BTreeMap::len).sum::<usize>().to_string()
}
