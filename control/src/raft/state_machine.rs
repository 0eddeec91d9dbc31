//! The Raft state machine: applies committed commands to the [`Store`], and
//! saves and restores snapshots of it (to a file under `-data-dir`).

use super::{CommandResult, ServerNode, TypeConfig};
use crate::state::{StateData, Store};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type StorageResult<T> = Result<T, StorageError<u64>>;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What a snapshot holds: the position in the log and every table.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, ServerNode>,
    data: StateData,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    store: Arc<Store>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, ServerNode>,
    current: CurrentSnapshot,
    dir: Option<PathBuf>,
}

/// The latest snapshot, shared with the builders that replace it.
type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta<u64, ServerNode>, Vec<u8>)>>>;

/// Builds a snapshot from a copy of the tables taken when it was asked for.
pub struct SnapshotBuilder {
    meta: SnapshotMeta<u64, ServerNode>,
    data: StateData,
    dir: Option<PathBuf>,
    current: CurrentSnapshot,
}

impl StateMachine {
    /// Opens the state machine, restoring the latest snapshot under `dir`.
    pub fn open(store: Arc<Store>, dir: Option<&Path>) -> std::io::Result<StateMachine> {
        let mut sm = StateMachine {
            store,
            last_applied: None,
            membership: StoredMembership::default(),
            current: CurrentSnapshot::default(),
            dir: dir.map(Path::to_path_buf),
        };
        if let Some(dir) = dir {
            let path = dir.join(SNAPSHOT_FILE);
            if path.exists() {
                let bytes = std::fs::read(&path)?;
                sm.load(bytes).map_err(|e| {
                    std::io::Error::other(format!("snapshot {}: {e}", path.display()))
                })?;
            }
        }
        Ok(sm)
    }

    fn load(&mut self, bytes: Vec<u8>) -> Result<(), serde_json::Error> {
        let file: SnapshotFile = serde_json::from_slice(&bytes)?;
        self.last_applied = file.meta.last_log_id;
        self.membership = file.meta.last_membership.clone();
        self.store.restore(file.data);
        *lock(&self.current) = Some((file.meta, bytes));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_atomically(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let file = SnapshotFile {
            meta: self.meta.clone(),
            data: std::mem::take(&mut self.data),
        };
        let bytes =
            serde_json::to_vec(&file).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        if let Some(dir) = &self.dir {
            write_atomically(dir, &bytes).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        }
        *lock(&self.current) = Some((file.meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, ServerNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(cmd) => {
                    let index = entry.log_id.index;
                    self.store
                        .write(|data, changes| cmd.apply(index, data, changes))
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Done
                }
            };
            out.push(result);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let id = self
            .last_applied
            .map(|l| format!("{}-{}", l.leader_id.term, l.index))
            .unwrap_or_else(|| "0-0".into());
        SnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            data: self.store.snapshot(),
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        self.load(bytes.clone())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        if let Some(dir) = &self.dir {
            write_atomically(dir, &bytes)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(lock(&self.current).as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
