//! The KV table: Consul's set, CAS, lock/unlock and delete semantics, and the
//! reads behind `/v1/kv`.

use super::{table, Changes, StateData, StateError};
use crate::structs::{DirEntry, KvOp, RaftIndex};

/// The outcome of one KV write: `true` unless a condition (CAS, lock) failed.
pub type KvOutcome = Result<bool, StateError>;

impl StateData {
    /// Applies one KV write. A failed condition returns `Ok(false)` and
    /// changes nothing.
    pub fn kv_apply(
        &mut self,
        index: u64,
        now_ms: u64,
        op: KvOp,
        entry: &DirEntry,
        changes: &mut Changes,
    ) -> KvOutcome {
        match op {
            KvOp::Set => {
                self.kv_set(index, entry, false, changes);
                Ok(true)
            }
            KvOp::Cas => {
                let current = self.kvs.get(&entry.key).map(|e| e.raft.modify_index);
                let expected = entry.raft.modify_index;
                let ok = match current {
                    None => expected == 0,
                    Some(i) => expected != 0 && i == expected,
                };
                if ok {
                    self.kv_set(index, entry, false, changes);
                }
                Ok(ok)
            }
            KvOp::Lock => self.kv_lock(index, now_ms, entry, changes),
            KvOp::Unlock => {
                let Some(old) = self
                    .kvs
                    .get(&entry.key)
                    .filter(|e| e.session == entry.session)
                else {
                    return Ok(false);
                };
                let mut e = entry.clone();
                e.lock_index = old.lock_index;
                e.session.clear();
                self.kv_set(index, &e, true, changes);
                Ok(true)
            }
            KvOp::Delete => {
                self.kv_delete(index, &entry.key, changes);
                Ok(true)
            }
            KvOp::DeleteCas => {
                let current = self.kvs.get(&entry.key).map(|e| e.raft.modify_index);
                match current {
                    None => Ok(true),
                    Some(i) if i == entry.raft.modify_index => {
                        self.kv_delete(index, &entry.key, changes);
                        Ok(true)
                    }
                    Some(_) => Ok(false),
                }
            }
            KvOp::DeleteTree => {
                self.kv_delete_tree(index, &entry.key, changes);
                Ok(true)
            }
            KvOp::Get
            | KvOp::GetTree
            | KvOp::CheckIndex
            | KvOp::CheckSession
            | KvOp::CheckNotExists => Err(StateError::Invalid(format!(
                "verb {op:?} is only valid in a transaction"
            ))),
        }
    }

    fn kv_lock(
        &mut self,
        index: u64,
        now_ms: u64,
        entry: &DirEntry,
        changes: &mut Changes,
    ) -> KvOutcome {
        if entry.session.is_empty() {
            return Err(StateError::Invalid("missing session".into()));
        }
        if !self.sessions.contains_key(&entry.session) {
            return Err(StateError::InvalidSession(entry.session.clone()));
        }
        if self
            .lock_delays
            .get(&entry.key)
            .is_some_and(|&until| until > now_ms)
        {
            return Ok(false);
        }
        let mut e = entry.clone();
        match self.kvs.get(&entry.key) {
            Some(old) if !old.session.is_empty() => {
                if old.session != entry.session {
                    return Ok(false);
                }
                e.lock_index = old.lock_index;
            }
            Some(old) => e.lock_index = old.lock_index + 1,
            None => e.lock_index = 1,
        }
        self.kv_set(index, &e, true, changes);
        Ok(true)
    }

    /// Writes an entry. Unless `update_session`, the lock holder and lock
    /// index are kept from the existing entry.
    fn kv_set(
        &mut self,
        index: u64,
        entry: &DirEntry,
        update_session: bool,
        changes: &mut Changes,
    ) {
        let mut e = entry.clone();
        e.raft = RaftIndex::new(index);
        if e.value.is_none() {
            e.value = Some(Vec::new());
        }
        if let Some(old) = self.kvs.get(&entry.key) {
            e.raft.create_index = old.raft.create_index;
            if !update_session {
                e.session = old.session.clone();
                e.lock_index = old.lock_index;
            }
        } else if !update_session {
            e.session.clear();
            e.lock_index = 0;
        }
        self.tombstones.remove(&e.key);
        changes.touch_key(&e.key);
        self.kvs.insert(e.key.clone(), e);
        self.bump(table::KVS, index, changes);
    }

    fn kv_delete(&mut self, index: u64, key: &str, changes: &mut Changes) {
        if self.kvs.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), index);
            changes.touch_key(key);
            self.bump(table::KVS, index, changes);
        }
    }

    fn kv_delete_tree(&mut self, index: u64, prefix: &str, changes: &mut Changes) {
        let keys: Vec<String> = self.keys_under(prefix).cloned().collect();
        if keys.is_empty() {
            return;
        }
        for k in keys {
            self.kvs.remove(&k);
            self.tombstones.insert(k, index);
        }
        changes.touch_tree(prefix);
        self.bump(table::KVS, index, changes);
    }

    pub(super) fn keys_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.kvs
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(move |k| k.starts_with(prefix))
    }

    // === reads ===

    /// One entry, and the index a blocking read of it compares against.
    pub fn kv_get(&self, key: &str) -> (u64, Option<DirEntry>) {
        match self.kvs.get(key) {
            Some(e) => (e.raft.modify_index, Some(e.clone())),
            None => (self.index(table::KVS), None),
        }
    }

    /// Every entry under `prefix`, and the index of the newest change below it
    /// (deletes included).
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<DirEntry>) {
        let entries: Vec<DirEntry> = self
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let newest = entries
            .iter()
            .map(|e| e.raft.modify_index)
            .max()
            .unwrap_or(0);
        (self.prefix_index(prefix, newest), entries)
    }

    /// The keys under `prefix`, rolled up at the first `separator` after it.
    pub fn kv_keys(&self, prefix: &str, separator: &str) -> (u64, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut newest = 0;
        for (k, e) in self.kvs.range(prefix.to_string()..) {
            if !k.starts_with(prefix) {
                break;
            }
            newest = newest.max(e.raft.modify_index);
            let rest = &k[prefix.len()..];
            let key = match (separator.is_empty(), rest.find(separator)) {
                (false, Some(at)) => &k[..prefix.len() + at + separator.len()],
                _ => k.as_str(),
            };
            if out.last().map(String::as_str) != Some(key) {
                out.push(key.to_string());
            }
        }
        (self.prefix_index(prefix, newest), out)
    }

    fn prefix_index(&self, prefix: &str, newest_entry: u64) -> u64 {
        if prefix.is_empty() {
            return self.index(table::KVS);
        }
        let graveyard = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match newest_entry.max(graveyard) {
            0 => self.index(table::KVS),
            i => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> DirEntry {
        DirEntry {
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn cas_zero_only_creates() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        assert!(s
            .kv_apply(1, 0, KvOp::Cas, &entry("a", "1"), &mut c)
            .unwrap());
        assert!(!s
            .kv_apply(2, 0, KvOp::Cas, &entry("a", "2"), &mut c)
            .unwrap());
        let mut e = entry("a", "3");
        e.raft.modify_index = 1;
        assert!(s.kv_apply(3, 0, KvOp::Cas, &e, &mut c).unwrap());
        assert!(!s.kv_apply(4, 0, KvOp::Cas, &e, &mut c).unwrap());
        assert_eq!(s.kv_get("a").1.unwrap().value.unwrap(), b"3");
        assert_eq!(s.kv_get("a").1.unwrap().raft.create_index, 1);
    }

    #[test]
    fn release_keeps_the_lock_index() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        for id in ["s1", "s2"] {
            s.sessions
                .insert(id.into(), crate::structs::Session::default());
        }
        let mut e = entry("k", "v");
        e.session = "s1".into();
        assert!(s.kv_apply(1, 0, KvOp::Lock, &e, &mut c).unwrap());
        assert!(s.kv_apply(2, 0, KvOp::Unlock, &e, &mut c).unwrap());
        assert_eq!(s.kv_get("k").1.unwrap().lock_index, 1);
        e.session = "s2".into();
        assert!(s.kv_apply(3, 0, KvOp::Lock, &e, &mut c).unwrap());
        assert_eq!(s.kv_get("k").1.unwrap().lock_index, 2);
    }

    #[test]
    fn keys_roll_up_at_separator() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        for (i, k) in ["a/b/c", "a/b/d", "a/e", "b"].iter().enumerate() {
            s.kv_apply(i as u64 + 1, 0, KvOp::Set, &entry(k, "x"), &mut c)
                .unwrap();
        }
        assert_eq!(s.kv_keys("a/", "/").1, vec!["a/b/", "a/e"]);
        assert_eq!(s.kv_keys("", "/").1, vec!["a/", "b"]);
        assert_eq!(s.kv_keys("", "").1.len(), 4);
    }

    #[test]
    fn deletes_advance_the_prefix_index() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        s.kv_apply(1, 0, KvOp::Set, &entry("p/a", "x"), &mut c)
            .unwrap();
        s.kv_apply(2, 0, KvOp::Set, &entry("p/b", "x"), &mut c)
            .unwrap();
        s.kv_apply(3, 0, KvOp::Set, &entry("q", "x"), &mut c)
            .unwrap();
        s.kv_apply(4, 0, KvOp::Delete, &entry("p/b", ""), &mut c)
            .unwrap();
        assert_eq!(s.kv_list("p/").0, 4);
        s.kv_apply(5, 0, KvOp::DeleteTree, &entry("p/", ""), &mut c)
            .unwrap();
        let (idx, entries) = s.kv_list("p/");
        assert_eq!((idx, entries.len()), (5, 0));
    }
}
