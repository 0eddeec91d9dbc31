//! `/v1/txn`: several KV operations applied all or nothing.

use super::{table, Changes, StateData, StateError};
use crate::structs::{DirEntry, KvOp};
use serde::{Deserialize, Serialize};

/// One operation of a transaction (Consul's `TxnOp`; only `KV` is supported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnOp {
    /// The KV operation.
    #[serde(rename = "KV")]
    pub kv: TxnKvOp,
}

/// A KV operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKvOp {
    /// What to do.
    pub verb: KvOp,
    /// The key (or prefix for the tree verbs).
    pub key: String,
    /// The value, base64 in JSON.
    #[serde(default, with = "crate::structs::base64_value")]
    pub value: Option<Vec<u8>>,
    /// Client flags.
    #[serde(default)]
    pub flags: u64,
    /// The index for CAS and check-index.
    #[serde(default)]
    pub index: u64,
    /// The session for lock verbs.
    #[serde(default)]
    pub session: String,
}

/// One result of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnResult {
    /// The entry read or written.
    #[serde(rename = "KV")]
    pub kv: DirEntry,
}

/// Why one operation failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// Position of the failing operation.
    pub op_index: usize,
    /// What went wrong.
    pub what: String,
}

/// The outcome of a transaction: results, or the errors that rolled it back.
pub type TxnResults = Result<Vec<TxnResult>, Vec<TxnError>>;

/// What an operation overwrote, to restore it on rollback.
struct Undo {
    key: String,
    entry: Option<DirEntry>,
    tombstone: Option<u64>,
}

impl StateData {
    /// Applies `ops` in order; if any fails, restores every key it touched and
    /// reports the failure.
    pub fn txn(
        &mut self,
        index: u64,
        now_ms: u64,
        ops: &[TxnOp],
        changes: &mut Changes,
    ) -> TxnResults {
        let saved_index = self.index(table::KVS);
        let mut undo: Vec<Undo> = Vec::new();
        let mut local = Changes::default();
        let mut results = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.txn_op(index, now_ms, &op.kv, &mut undo, &mut local) {
                Ok(found) => results.extend(found.into_iter().map(|kv| TxnResult { kv })),
                Err(what) => {
                    for u in undo.into_iter().rev() {
                        match u.entry {
                            Some(e) => self.kvs.insert(u.key.clone(), e),
                            None => self.kvs.remove(&u.key),
                        };
                        match u.tombstone {
                            Some(t) => self.tombstones.insert(u.key, t),
                            None => self.tombstones.remove(&u.key),
                        };
                    }
                    self.indexes.insert(table::KVS.to_string(), saved_index);
                    return Err(vec![TxnError { op_index: i, what }]);
                }
            }
        }
        changes.merge(local);
        Ok(results)
    }

    fn txn_op(
        &mut self,
        index: u64,
        now_ms: u64,
        op: &TxnKvOp,
        undo: &mut Vec<Undo>,
        changes: &mut Changes,
    ) -> Result<Vec<DirEntry>, String> {
        let existing = self.kvs.get(&op.key).cloned();
        let missing = || format!("key {:?} doesn't exist", op.key);
        match op.verb {
            KvOp::Get => return existing.map(|e| vec![e]).ok_or_else(missing),
            KvOp::GetTree => return Ok(self.kv_list(&op.key).1),
            KvOp::CheckIndex => {
                let e = existing.ok_or_else(missing)?;
                if e.raft.modify_index != op.index {
                    return Err(format!(
                        "current modify index {} != {}",
                        e.raft.modify_index, op.index
                    ));
                }
                return Ok(vec![without_value(e)]);
            }
            KvOp::CheckSession => {
                let e = existing.ok_or_else(missing)?;
                if e.session != op.session {
                    return Err(format!(
                        "key {:?} is not locked by session {:?}",
                        op.key, op.session
                    ));
                }
                return Ok(vec![without_value(e)]);
            }
            KvOp::CheckNotExists => {
                return match existing {
                    Some(_) => Err(format!("key {:?} exists", op.key)),
                    None => Ok(Vec::new()),
                }
            }
            _ => {}
        }
        let touched: Vec<String> = if op.verb == KvOp::DeleteTree {
            self.keys_under(&op.key).cloned().collect()
        } else {
            vec![op.key.clone()]
        };
        for key in touched {
            undo.push(Undo {
                entry: self.kvs.get(&key).cloned(),
                tombstone: self.tombstones.get(&key).copied(),
                key,
            });
        }
        let entry = DirEntry {
            key: op.key.clone(),
            flags: op.flags,
            value: op.value.clone(),
            session: op.session.clone(),
            raft: crate::structs::RaftIndex {
                create_index: 0,
                modify_index: op.index,
            },
            ..Default::default()
        };
        let ok = self
            .kv_apply(index, now_ms, op.verb, &entry, changes)
            .map_err(|e: StateError| e.to_string())?;
        if !ok {
            return Err(match op.verb {
                KvOp::Lock => format!("failed to lock key {:?}", op.key),
                KvOp::Unlock => format!("failed to unlock key {:?}", op.key),
                KvOp::DeleteCas => format!("failed to delete key {:?}, index is stale", op.key),
                _ => format!("failed to set key {:?}, index is stale", op.key),
            });
        }
        Ok(match op.verb {
            KvOp::Delete | KvOp::DeleteCas | KvOp::DeleteTree => Vec::new(),
            _ => self
                .kvs
                .get(&op.key)
                .cloned()
                .map(without_value)
                .into_iter()
                .collect(),
        })
    }
}

fn without_value(mut e: DirEntry) -> DirEntry {
    e.value = None;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(verb: KvOp, key: &str, index: u64) -> TxnOp {
        TxnOp {
            kv: TxnKvOp {
                verb,
                key: key.into(),
                value: Some(b"v".to_vec()),
                flags: 0,
                index,
                session: String::new(),
            },
        }
    }

    #[test]
    fn failure_rolls_back_everything() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        s.txn(1, 0, &[op(KvOp::Set, "a", 0)], &mut c).unwrap();
        let err = s
            .txn(
                2,
                0,
                &[
                    op(KvOp::Set, "b", 0),
                    op(KvOp::Delete, "a", 0),
                    op(KvOp::Cas, "a", 99),
                ],
                &mut c,
            )
            .unwrap_err();
        assert_eq!(err[0].op_index, 2);
        assert!(s.kvs.contains_key("a"));
        assert!(!s.kvs.contains_key("b"));
        assert_eq!(s.index(table::KVS), 1);
    }

    #[test]
    fn results_follow_the_ops() {
        let mut s = StateData::default();
        let mut c = Changes::default();
        let out = s
            .txn(
                1,
                0,
                &[op(KvOp::Set, "a", 0), op(KvOp::Get, "a", 0)],
                &mut c,
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kv.value, None);
        assert_eq!(out[1].kv.value.as_deref(), Some(&b"v"[..]));
    }
}
