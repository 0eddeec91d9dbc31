//! Replacing every table at once: a snapshot restore (`PUT /v1/snapshot`),
//! applied as one Raft entry, and the topics such a replacement touches.

use super::{ca, table, Changes, StateData, StateError};
use crate::structs::RaftIndex;

impl StateData {
    /// Replaces every table with `restored`, as the write of the Raft entry
    /// at `index`, and touches every topic, so every parked blocking query
    /// wakes (whatever it watches, its index has passed).
    ///
    /// # Indexes
    ///
    /// The restored records are stamped as written by the restore entry:
    ///
    /// - every per-table and per-name index (`services`, `service:web`,
    ///   `kvs`, `ca`, ... of the old tables and of the restored ones) becomes
    ///   `index`;
    /// - every record's `ModifyIndex` (nodes, services, checks, KV entries,
    ///   sessions, config entries) and every KV tombstone becomes `index`;
    /// - every `CreateIndex` is kept, clamped to at most `index`.
    ///
    /// Why: the restore entry *is* the write that put these records where
    /// they are, and `index` is greater than every index this cluster has
    /// handed out before it. So every read after the restore reports an
    /// `X-Consul-Index` above any a client saw before, every blocking query
    /// parked before it returns (its index passed, whatever the record's
    /// index was in the archive), and every later write, at an index above
    /// `index`, gets a `ModifyIndex` above every index in the store — even
    /// when the archive came from a cluster whose log ran further ahead.
    /// Keeping the archived `ModifyIndex`es would let indexes run backwards
    /// and leave watchers of a rewound key parked; the cost of stamping is
    /// that a check-and-set against an index read before the restore fails
    /// and the client reads again, the safe outcome after history was
    /// rewritten under it.
    pub fn restore_at(&mut self, index: u64, mut restored: StateData, changes: &mut Changes) {
        restored.rebuild_derived();
        changes.touch_everything();

        let stamp = |raft: &mut RaftIndex| {
            raft.create_index = raft.create_index.min(index);
            raft.modify_index = index;
        };
        restored.nodes.values_mut().for_each(|n| stamp(&mut n.raft));
        for svcs in restored.services.values_mut() {
            svcs.values_mut().for_each(|s| stamp(&mut s.raft));
        }
        for checks in restored.checks.values_mut() {
            checks.values_mut().for_each(|c| stamp(&mut c.raft));
        }
        restored.kvs.values_mut().for_each(|e| stamp(&mut e.raft));
        restored.tombstones.values_mut().for_each(|i| *i = index);
        restored
            .sessions
            .values_mut()
            .for_each(|s| stamp(&mut s.raft));
        for entries in restored.config_entries.values_mut() {
            entries.values_mut().for_each(|e| stamp(&mut e.raft));
        }
        let names: Vec<String> = self
            .indexes
            .keys()
            .chain(restored.indexes.keys())
            .cloned()
            .collect();
        for name in names {
            restored.indexes.insert(name, index);
        }
        for name in [
            table::NODES,
            table::SERVICES,
            table::CHECKS,
            table::KVS,
            table::SESSIONS,
            ca::CA,
        ] {
            restored.indexes.insert(name.to_string(), index);
        }
        *self = restored;
    }

    /// Checks that restored tables hang together: each record is filed
    /// under its own name, and services and checks belong to a known node.
    /// Names the first record that does not.
    pub fn validate_restore(&self) -> Result<(), StateError> {
        let bad = |what: String| Err(StateError::Invalid(what));
        for (name, n) in &self.nodes {
            if name != &n.node {
                return bad(format!("nodes.{name}: Node is {:?}", n.node));
            }
        }
        for (node, svcs) in &self.services {
            if !self.nodes.contains_key(node) {
                return bad(format!("services.{node}: no such node"));
            }
            for (id, s) in svcs {
                if id != &s.id {
                    return bad(format!("services.{node}.{id}: ID is {:?}", s.id));
                }
            }
        }
        for (node, checks) in &self.checks {
            if !self.nodes.contains_key(node) {
                return bad(format!("checks.{node}: no such node"));
            }
            for (id, c) in checks {
                if id != &c.check_id {
                    return bad(format!("checks.{node}.{id}: CheckID is {:?}", c.check_id));
                }
            }
        }
        for (key, e) in &self.kvs {
            if key != &e.key {
                return bad(format!("kvs.{key}: Key is {:?}", e.key));
            }
        }
        for (id, s) in &self.sessions {
            if id != &s.id {
                return bad(format!("sessions.{id}: ID is {:?}", s.id));
            }
        }
        for (kind, entries) in &self.config_entries {
            for (name, e) in entries {
                if kind != &e.kind || name != &e.name {
                    return bad(format!(
                        "config_entries.{kind}.{name}: entry is {} {:?}",
                        e.kind, e.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Store, Topic};
    use crate::structs::{DirEntry, KvOp};
    use std::time::Duration;

    fn set(data: &mut StateData, index: u64, key: &str, value: &str) {
        let entry = DirEntry {
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            ..DirEntry::default()
        };
        data.kv_apply(index, 0, KvOp::Set, &entry, &mut Changes::default())
            .unwrap();
    }

    #[test]
    fn restored_indexes_are_the_restore_entry_s_and_never_go_back() {
        let mut saved = StateData::default();
        set(&mut saved, 5, "a", "old");
        set(&mut saved, 6, "gone/x", "old");
        let mut live = saved.clone();
        set(&mut live, 7, "a", "new");
        set(&mut live, 8, "b", "new");

        let mut changes = Changes::default();
        live.restore_at(9, saved.clone(), &mut changes);
        let (idx, a) = live.kv_get("a");
        let a = a.unwrap();
        assert_eq!(a.value.as_deref(), Some(&b"old"[..]));
        assert_eq!((a.raft.create_index, a.raft.modify_index), (5, 9));
        assert_eq!(idx, 9, "a watcher of `a` at 7 sees the restore");
        assert_eq!(live.kv_get("b"), (9, None));
        assert_eq!(live.kv_list("gone/").0, 9);
        assert_eq!(live.last_index(), 9);

        // An archive from a cluster whose log ran further ahead.
        let mut ahead = StateData::default();
        set(&mut ahead, 500, "far", "x");
        live.restore_at(10, ahead, &mut changes);
        let far = live.kv_get("far").1.unwrap();
        assert_eq!((far.raft.create_index, far.raft.modify_index), (10, 10));
        set(&mut live, 11, "later", "x");
        assert_eq!(live.kv_get("later").0, 11);
    }

    #[tokio::test]
    async fn a_restore_wakes_every_watcher() {
        let store = Store::default();
        store.write(|d, c| {
            let entry = DirEntry {
                key: "only-before".into(),
                ..DirEntry::default()
            };
            d.kv_apply(1, 0, KvOp::Set, &entry, c).unwrap();
        });
        let kv = store.watch(&[Topic::KvPrefix("only-before".into())]);
        let svc = store.watch(&[Topic::Exact(table::service("web"))]);
        let ca = store.watch(&[Topic::Exact(ca::CA.into())]);
        store.write(|d, c| d.restore_at(2, StateData::default(), c));
        for w in [kv, svc, ca] {
            tokio::time::timeout(Duration::from_secs(1), w.changed())
                .await
                .expect("woken by the restore");
        }
    }

    #[test]
    fn misfiled_records_are_refused_by_name() {
        let mut d = StateData::default();
        set(&mut d, 1, "k", "v");
        assert!(d.validate_restore().is_ok());
        let mut e = d.kvs.remove("k").unwrap();
        e.key = "other".into();
        d.kvs.insert("k".into(), e);
        let err = d.validate_restore().unwrap_err().to_string();
        assert!(err.contains("kvs.k"), "{err}");
    }
}
