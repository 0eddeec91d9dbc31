//! What a command must satisfy to be applied: the limits the HTTP API puts
//! on the same writes. The API refuses such writes with Consul's messages
//! before proposing them; the leader checks every proposal again (an RPC
//! peer may propose directly), and the state machine checks each entry as
//! it applies it, so no path reaches the store with input the API would
//! refuse. Checks depend on the command alone, so every server decides the
//! same.

use super::proposer::MAX_BATCH;
use super::Command;
use crate::state::StateError;

/// The largest KV value (Consul's `kv_max_value_size`).
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

/// The most operations one transaction may hold, as Consul.
pub const MAX_TXN_OPS: usize = 128;

/// The most value bytes one transaction may carry (Consul's
/// `txn_max_req_len` bounds the whole request the same way).
pub const MAX_TXN_VALUES: usize = 512 * 1024;

impl Command {
    /// The command's name, for messages (never its payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Batch(_) => "Batch",
            Command::Register { .. } => "Register",
            Command::Deregister { .. } => "Deregister",
            Command::Kv { .. } => "Kv",
            Command::Txn { .. } => "Txn",
            Command::SessionCreate { .. } => "SessionCreate",
            Command::SessionDestroy { .. } => "SessionDestroy",
            Command::ConfigEntrySet { .. } => "ConfigEntrySet",
            Command::ConfigEntryDelete { .. } => "ConfigEntryDelete",
            Command::IntentionUpsert { .. } => "IntentionUpsert",
            Command::IntentionDelete { .. } => "IntentionDelete",
            Command::CaSet { .. } => "CaSet",
            Command::IntentionLegacy(_) => "IntentionLegacy",
            Command::KvReapTombstones { .. } => "KvReapTombstones",
            Command::Restore { .. } => "Restore",
        }
    }

    /// Whether the command is within the API's limits; the reason if not.
    /// A batch's writes are judged one by one when applied, so a batch is
    /// judged only as a batch here.
    pub fn admit(&self) -> Result<(), StateError> {
        let refuse = |why: String| Err(StateError::Invalid(why));
        match self {
            Command::Batch(cmds) if cmds.len() > MAX_BATCH => refuse(format!(
                "a batch of {} writes exceeds the {MAX_BATCH}-write limit",
                cmds.len()
            )),
            Command::Batch(cmds) if cmds.iter().any(|c| matches!(c, Command::Batch(_))) => {
                refuse("a batch may not hold a batch".into())
            }
            Command::Kv { entry, .. } => {
                let len = entry.value.as_ref().map_or(0, Vec::len);
                if len > MAX_VALUE_SIZE {
                    return refuse(format!(
                        "KV value of {len} bytes exceeds the {MAX_VALUE_SIZE}-byte limit"
                    ));
                }
                Ok(())
            }
            Command::Txn { ops, .. } => {
                if ops.len() > MAX_TXN_OPS {
                    return refuse(format!(
                        "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                        ops.len()
                    ));
                }
                let bytes: usize = ops
                    .iter()
                    .map(|op| op.kv.value.as_ref().map_or(0, Vec::len))
                    .sum();
                if bytes > MAX_TXN_VALUES {
                    return refuse(format!(
                        "transaction values of {bytes} bytes exceed the {MAX_TXN_VALUES}-byte limit"
                    ));
                }
                Ok(())
            }
            Command::Restore { data } => data.validate_restore(),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Changes, StateData, TxnKvOp, TxnOp};
    use crate::structs::{DirEntry, KvOp};

    fn set(key: &str, len: usize) -> Command {
        Command::Kv {
            op: KvOp::Set,
            entry: DirEntry {
                key: key.into(),
                value: Some(vec![b'x'; len]),
                ..DirEntry::default()
            },
            now_ms: 0,
        }
    }

    fn txn(ops: usize, each: usize) -> Command {
        let op = |i: usize| TxnOp {
            kv: TxnKvOp {
                verb: KvOp::Set,
                key: format!("t/{i}"),
                value: Some(vec![b'y'; each]),
                flags: 0,
                index: 0,
                session: String::new(),
            },
        };
        Command::Txn {
            ops: (0..ops).map(op).collect(),
            now_ms: 0,
        }
    }

    #[test]
    fn writes_beyond_the_api_limits_are_refused_when_applied_and_change_nothing() {
        let mut data = StateData::default();
        let mut changes = Changes::default();
        for ok in [set("ok", MAX_VALUE_SIZE), txn(MAX_TXN_OPS, 10)] {
            assert_eq!(ok.admit(), Ok(()));
            assert!(!matches!(
                ok.apply(1, &mut data, &mut changes),
                super::super::CommandResult::Error(_)
            ));
        }
        let before = serde_json::to_value(&data).unwrap();
        let refused = [
            set("big", 10 * 1024 * 1024),
            txn(1000, 1),
            txn(2, MAX_TXN_VALUES / 2 + 1),
            Command::Batch(vec![Command::Batch(vec![])]),
            Command::Batch(vec![set("b", 1); MAX_BATCH + 1]),
        ];
        for cmd in refused {
            let why = cmd.admit().unwrap_err().to_string();
            assert!(
                ["limit", "batch", "too many"]
                    .iter()
                    .any(|w| why.contains(w)),
                "{why}"
            );
            let result = cmd.apply(2, &mut data, &mut changes);
            assert!(
                matches!(result, super::super::CommandResult::Error(_)),
                "{} applied: {result:?}",
                cmd.kind()
            );
        }
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            before,
            "nothing changed"
        );

        // Inside a batch, the refused write is refused and the others apply.
        let batch = Command::Batch(vec![set("in", 1), set("huge", MAX_VALUE_SIZE + 1)]);
        let super::super::CommandResult::Batch(results) = batch.apply(3, &mut data, &mut changes)
        else {
            panic!("a batch answers with a batch");
        };
        assert!(!matches!(results[0], super::super::CommandResult::Error(_)));
        assert!(matches!(results[1], super::super::CommandResult::Error(_)));
        assert!(data.kvs.contains_key("in") && !data.kvs.contains_key("huge"));
    }
}
