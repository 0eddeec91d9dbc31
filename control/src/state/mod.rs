//! The state store: the tables every Raft command writes and every API reads.
//!
//! [`StateData`] holds the tables (catalog, KV, sessions) and per-table Raft
//! indexes; it is what a snapshot contains. [`Store`] wraps it in a lock with a
//! [`WatchHub`] so blocking queries wake when the data they read changes. Writes
//! come only from the Raft state machine; reads never mutate.

pub mod ca;
mod catalog;
mod config_entry;
mod error;
mod kv;
mod restore;
mod session;
mod txn;
pub mod watch;

pub use config_entry::{config_topic, CONFIG_ENTRIES};
pub use error::StateError;
pub use txn::{TxnError, TxnKvOp, TxnOp, TxnResult, TxnResults};
pub use watch::{Changes, Topic, WatchHub, WatchSet};

use crate::structs::{DirEntry, HealthCheck, Node, NodeService, Session};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// Table names used as index keys and watch topics.
pub mod table {
    /// The nodes table.
    pub const NODES: &str = "nodes";
    /// The services table.
    pub const SERVICES: &str = "services";
    /// The checks table.
    pub const CHECKS: &str = "checks";
    /// The KV table.
    pub const KVS: &str = "kvs";
    /// The sessions table.
    pub const SESSIONS: &str = "sessions";

    /// The per-service-name index key and topic.
    pub fn service(name: &str) -> String {
        format!("service:{name}")
    }

    /// The index key and topic of the proxies fronting a service.
    pub fn connect(name: &str) -> String {
        format!("connect:{name}")
    }

    /// The per-node topic.
    pub fn node(name: &str) -> String {
        format!("node:{name}")
    }
}

/// All tables, as the state machine holds them and snapshots save them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateData {
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Service instances by node, then instance ID.
    pub services: BTreeMap<String, BTreeMap<String, NodeService>>,
    /// Checks by node, then check ID.
    pub checks: BTreeMap<String, BTreeMap<String, HealthCheck>>,
    /// KV entries by key.
    pub kvs: BTreeMap<String, DirEntry>,
    /// Index at which each deleted key went away, so prefix reads see deletes.
    pub tombstones: BTreeMap<String, u64>,
    /// Sessions by ID.
    pub sessions: BTreeMap<String, Session>,
    /// Keys in lock-delay, with the unix-millisecond time the delay ends.
    pub lock_delays: BTreeMap<String, u64>,
    /// The highest index that changed each table (and each service name).
    pub indexes: BTreeMap<String, u64>,
    /// The certificate authority.
    #[serde(default)]
    pub ca: ca::CaState,
    /// Config entries by kind, then name.
    #[serde(default)]
    pub config_entries: BTreeMap<String, BTreeMap<String, crate::config_entry::ConfigEntry>>,
    /// Derived: (node, instance ID) of each service name. Rebuilt on restore.
    #[serde(skip)]
    by_service: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Derived: (node, instance ID) of the proxies fronting each service.
    #[serde(skip)]
    by_connect: BTreeMap<String, BTreeSet<(String, String)>>,
}

/// Equal when the saved tables are; the derived lookups follow from them.
/// A table added to `StateData` belongs here too.
impl PartialEq for StateData {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
            && self.services == other.services
            && self.checks == other.checks
            && self.kvs == other.kvs
            && self.tombstones == other.tombstones
            && self.sessions == other.sessions
            && self.lock_delays == other.lock_delays
            && self.indexes == other.indexes
            && self.ca == other.ca
            && self.config_entries == other.config_entries
    }
}

impl StateData {
    /// The index of a table, 0 when it never changed.
    pub fn index(&self, name: &str) -> u64 {
        self.indexes.get(name).copied().unwrap_or(0)
    }

    /// The highest index of several tables.
    pub fn max_index(&self, names: &[&str]) -> u64 {
        names.iter().map(|n| self.index(n)).max().unwrap_or(0)
    }

    /// The highest index of any table: the last applied write.
    pub fn last_index(&self) -> u64 {
        self.indexes.values().copied().max().unwrap_or(0)
    }

    fn bump(&mut self, name: &str, index: u64, changes: &mut Changes) {
        let slot = self.indexes.entry(name.to_string()).or_default();
        if *slot < index {
            *slot = index;
        }
        changes.touch(name);
    }

    /// Rebuilds derived indexes after a snapshot is loaded.
    pub fn rebuild_derived(&mut self) {
        self.by_service.clear();
        self.by_connect.clear();
        let all: Vec<(String, NodeService)> = self
            .services
            .iter()
            .flat_map(|(node, svcs)| svcs.values().map(move |s| (node.clone(), s.clone())))
            .collect();
        for (node, svc) in all {
            self.index_service(&node, &svc);
        }
    }
}

/// The shared, watched state store.
#[derive(Default)]
pub struct Store {
    data: RwLock<StateData>,
    watches: WatchHub,
}

impl Store {
    /// Reads the tables. Hold the guard briefly and never across `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, StateData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a mutation and wakes the watchers of what it changed.
    pub fn write<T>(&self, f: impl FnOnce(&mut StateData, &mut Changes) -> T) -> T {
        let mut changes = Changes::default();
        let out = {
            let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
            f(&mut data, &mut changes)
        };
        self.watches.notify(&changes);
        out
    }

    /// Replaces every table (snapshot install) and wakes every watcher.
    pub fn restore(&self, mut data: StateData) {
        data.rebuild_derived();
        let mut changes = Changes::default();
        changes.touch_everything();
        *self.data.write().unwrap_or_else(|e| e.into_inner()) = data;
        self.watches.notify(&changes);
    }

    /// A copy of every table, for a snapshot.
    pub fn snapshot(&self) -> StateData {
        self.read().clone()
    }

    /// Subscribes to changes of `topics`.
    pub fn watch(&self, topics: &[Topic]) -> WatchSet {
        self.watches.subscribe(topics)
    }

    /// Follows what `read` derives from the tables. `read` also names the
    /// topics its value depends on; the value is recomputed whenever one of
    /// them changes (and at once when the topics themselves change). The
    /// receiver holds the first value at once and each that differs after;
    /// the task ends when every receiver is gone.
    pub fn follow<T, F>(self: Arc<Self>, mut read: F) -> tokio::sync::watch::Receiver<T>
    where
        T: PartialEq + Send + Sync + 'static,
        F: FnMut(&StateData) -> (T, Vec<Topic>) + Send + 'static,
    {
        let (first, mut topics) = read(&self.read());
        let (tx, rx) = tokio::sync::watch::channel(first);
        tokio::spawn(async move {
            loop {
                // Subscribe before reading so that no change is missed.
                let changed = self.watch(&topics);
                let (next, wanted) = read(&self.read());
                tx.send_if_modified(|cur| {
                    let differs = *cur != next;
                    if differs {
                        *cur = next;
                    }
                    differs
                });
                if wanted != topics {
                    topics = wanted;
                    continue;
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}
