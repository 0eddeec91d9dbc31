//! The Raft log and vote: in memory for `-dev`, and also in a redb file under
//! `-data-dir`, each append committed with fsync before it is acknowledged.

use super::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

#[derive(Default)]
struct Inner {
    logs: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    last_purged: Option<LogId<u64>>,
    db: Option<Database>,
}

/// The Raft log store. Clones share one log.
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl LogStore {
    /// Opens the log under `dir` (creating it), or an in-memory log for `None`.
    pub fn open(dir: Option<&Path>) -> std::io::Result<LogStore> {
        let mut inner = Inner::default();
        if let Some(dir) = dir {
            let db = Database::create(dir.join("log.redb")).map_err(io_err)?;
            {
                let tx = db.begin_write().map_err(io_err)?;
                tx.open_table(LOGS).map_err(io_err)?;
                tx.open_table(META).map_err(io_err)?;
                tx.commit().map_err(io_err)?;
            }
            let tx = db.begin_read().map_err(io_err)?;
            let logs = tx.open_table(LOGS).map_err(io_err)?;
            for row in logs.iter().map_err(io_err)? {
                let (k, v) = row.map_err(io_err)?;
                let entry: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io_err)?;
                inner.logs.insert(k.value(), entry);
            }
            let meta = tx.open_table(META).map_err(io_err)?;
            let read = |key: &str| -> std::io::Result<Option<Vec<u8>>> {
                Ok(meta.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
            };
            if let Some(b) = read(VOTE)? {
                inner.vote = Some(serde_json::from_slice(&b).map_err(io_err)?);
            }
            if let Some(b) = read(COMMITTED)? {
                inner.committed = serde_json::from_slice(&b).map_err(io_err)?;
            }
            if let Some(b) = read(PURGED)? {
                inner.last_purged = serde_json::from_slice(&b).map_err(io_err)?;
            }
            drop(meta);
            drop(logs);
            drop(tx);
            inner.db = Some(db);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A redb error, boxed (redb's own is large).
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DbError {}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError(Box::new(e.into()))
            }
        }
    )*};
}

db_error_from!(
    redb::Error,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::TransactionError
);

impl Inner {
    /// Runs `f` in one durable redb write transaction, if persistent.
    fn persist(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        self.persist_with(redb::Durability::Immediate, f)
    }

    /// Runs `f` in one redb write transaction with the given durability.
    fn persist_with(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let mut tx = db.begin_write()?;
        tx.set_durability(durability);
        f(&tx)?;
        // The commit may fsync: let the runtime move other tasks off this
        // worker meanwhile (a current-thread runtime just blocks).
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| tx.commit())?;
        } else {
            tx.commit()?;
        }
        Ok(())
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: redb::Durability,
    ) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value).map_err(|e| redb::Error::Io(io_err(e)))?;
        self.persist_with(durability, |tx| {
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self
            .lock()
            .logs
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.lock();
        let last = inner.logs.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let mut inner = self.lock();
        inner
            .put_meta(VOTE, vote, redb::Durability::Immediate)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let mut inner = self.lock();
        // The committed index is a hint for replay after a restart, not a
        // promise: it rides on the next log append's fsync instead of paying
        // its own (openraft does not need it for correctness).
        inner
            .put_meta(COMMITTED, &committed, redb::Durability::None)
            .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.lock();
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let result = inner.persist(|tx| {
            let mut table = tx.open_table(LOGS)?;
            for e in &entries {
                let bytes = serde_json::to_vec(e).map_err(|e| redb::Error::Io(io_err(e)))?;
                table.insert(e.log_id.index, bytes.as_slice())?;
            }
            Ok(())
        });
        if let Err(e) = result {
            let err = io_err(&e);
            callback.log_io_completed(Err(io_err(&e)));
            return Err(StorageIOError::write_logs(&err).into());
        }
        for e in entries {
            inner.logs.insert(e.log_id.index, e);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut inner = self.lock();
        let doomed: Vec<u64> = inner.logs.range(log_id.index..).map(|(k, _)| *k).collect();
        inner
            .persist(|tx| {
                let mut table = tx.open_table(LOGS)?;
                for k in &doomed {
                    table.remove(*k)?;
                }
                Ok(())
            })
            .map_err(|e| StorageIOError::write_logs(&e))?;
        for k in doomed {
            inner.logs.remove(&k);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut inner = self.lock();
        let doomed: Vec<u64> = inner.logs.range(..=log_id.index).map(|(k, _)| *k).collect();
        let purged =
            serde_json::to_vec(&Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        inner
            .persist(|tx| {
                let mut table = tx.open_table(LOGS)?;
                for k in &doomed {
                    table.remove(*k)?;
                }
                tx.open_table(META)?.insert(PURGED, purged.as_slice())?;
                Ok(())
            })
            .map_err(|e| StorageIOError::write_logs(&e))?;
        for k in doomed {
            inner.logs.remove(&k);
        }
        inner.last_purged = Some(log_id);
        Ok(())
    }
}
