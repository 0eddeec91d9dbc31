//! The one enum of everything the log can say, and what applying it returns.

use crate::config_entry::intentions::{Action, IntentionPermission, LegacyIntentionOp};
use crate::config_entry::ConfigEntry;
use crate::state::ca::CaState;
use crate::state::{Changes, StateData, StateError, TxnOp, TxnResults};
use crate::structs::{DeregisterRequest, DirEntry, KvOp, RegisterRequest, Session};
use serde::{Deserialize, Serialize};

/// A write to the state store. Append-only: never reorder or remove variants,
/// logs and snapshots on disk name them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Writes committed together in one log entry (the leader's group
    /// commit), applied in order at that entry's index.
    Batch(Vec<Command>),
    /// Catalog registration.
    Register {
        /// The registration.
        req: Box<RegisterRequest>,
        /// Proposal time (unix ms).
        now_ms: u64,
    },
    /// Catalog deregistration.
    Deregister {
        /// The deregistration.
        req: DeregisterRequest,
        /// Proposal time (unix ms).
        now_ms: u64,
    },
    /// One KV write.
    Kv {
        /// The verb.
        op: KvOp,
        /// The entry (key, value, flags, session, CAS index in `ModifyIndex`).
        entry: DirEntry,
        /// Proposal time (unix ms).
        now_ms: u64,
    },
    /// A KV transaction.
    Txn {
        /// The operations.
        ops: Vec<TxnOp>,
        /// Proposal time (unix ms).
        now_ms: u64,
    },
    /// Session creation.
    SessionCreate {
        /// The session, ID assigned.
        session: Session,
    },
    /// Session destruction (explicit, TTL expiry, or failed check).
    SessionDestroy {
        /// The session ID.
        id: String,
        /// Proposal time (unix ms).
        now_ms: u64,
    },
    /// A config entry write, optionally check-and-set.
    ConfigEntrySet {
        /// The validated entry.
        entry: ConfigEntry,
        /// Write only if the entry's ModifyIndex is this (0: absent).
        cas: Option<u64>,
    },
    /// A config entry deletion, optionally check-and-set.
    ConfigEntryDelete {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// Delete only if the entry's ModifyIndex is this.
        cas: Option<u64>,
    },
    /// Creates or replaces one intention inside its destination's entry.
    IntentionUpsert {
        /// The source service or `*`.
        source: String,
        /// The destination service or `*`.
        destination: String,
        /// Allow or deny; none for an L7 intention.
        action: Option<Action>,
        /// L7 permissions (instead of an action).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        permissions: Vec<IntentionPermission>,
        /// Free text.
        description: String,
    },
    /// Deletes one intention.
    IntentionDelete {
        /// The source service or `*`.
        source: String,
        /// The destination service or `*`.
        destination: String,
    },
    /// Replaces the CA's configuration, roots and keys.
    CaSet {
        /// The new CA state.
        ca: Box<CaState>,
    },
    /// A legacy ID-based intention write.
    IntentionLegacy(LegacyIntentionOp),
    /// Removes KV tombstones whose deletion index is at most `up_to`.
    KvReapTombstones {
        /// The highest deletion index reaped.
        up_to: u64,
    },
    /// Replaces every table with a snapshot's (`PUT /v1/snapshot`); see
    /// [`StateData::restore_at`] for how the restored indexes relate to
    /// this entry's.
    Restore {
        /// The tables, verified and validated before they were proposed.
        data: Box<StateData>,
    },
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    /// Applied (or a log entry with no command).
    #[default]
    Done,
    /// A conditional write: whether its condition held.
    Bool(bool),
    /// A transaction's results or errors.
    Txn(TxnResults),
    /// Refused; nothing changed.
    Error(StateError),
    /// The results of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResult>),
}

impl Command {
    /// Applies the command at `index`, once it passes [`Command::admit`].
    /// Deterministic: depends only on the state and the command.
    pub fn apply(&self, index: u64, data: &mut StateData, changes: &mut Changes) -> CommandResult {
        let done = |r: Result<(), StateError>| match r {
            Ok(()) => CommandResult::Done,
            Err(e) => CommandResult::Error(e),
        };
        if let Err(e) = self.admit() {
            return CommandResult::Error(e);
        }
        match self {
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.iter().map(|c| c.apply(index, data, changes)).collect())
            }
            Command::Register { req, now_ms } => {
                done(data.ensure_registration(index, *now_ms, req, changes))
            }
            Command::Deregister { req, now_ms } => {
                done(data.deregister(index, *now_ms, req, changes))
            }
            Command::Kv { op, entry, now_ms } => {
                match data.kv_apply(index, *now_ms, *op, entry, changes) {
                    Ok(b) => CommandResult::Bool(b),
                    Err(e) => CommandResult::Error(e),
                }
            }
            Command::Txn { ops, now_ms } => {
                CommandResult::Txn(data.txn(index, *now_ms, ops, changes))
            }
            Command::SessionCreate { session } => {
                done(data.create_session(index, session, changes))
            }
            Command::SessionDestroy { id, now_ms } => {
                CommandResult::Bool(data.destroy_session(index, *now_ms, id, changes))
            }
            Command::ConfigEntrySet { entry, cas } => {
                CommandResult::Bool(data.config_set(index, entry, *cas, changes))
            }
            Command::ConfigEntryDelete { kind, name, cas } => {
                CommandResult::Bool(data.config_delete(index, kind, name, *cas, changes))
            }
            Command::IntentionUpsert {
                source,
                destination,
                action,
                permissions,
                description,
            } => done(data.intention_upsert(
                index,
                source,
                destination,
                *action,
                permissions,
                description,
                changes,
            )),
            Command::IntentionDelete {
                source,
                destination,
            } => CommandResult::Bool(data.intention_delete(index, source, destination, changes)),
            Command::CaSet { ca } => {
                data.ca_set(index, ca, changes);
                CommandResult::Done
            }
            Command::IntentionLegacy(op) => done(data.intention_legacy(index, op, changes)),
            Command::KvReapTombstones { up_to } => {
                data.tombstones.retain(|_, deleted_at| *deleted_at > *up_to);
                CommandResult::Done
            }
            Command::Restore { data: restored } => {
                data.restore_at(index, (**restored).clone(), changes);
                CommandResult::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::DirEntry;

    fn kv(op: KvOp, key: &str) -> Command {
        Command::Kv {
            op,
            entry: DirEntry {
                key: key.into(),
                ..DirEntry::default()
            },
            now_ms: 0,
        }
    }

    #[test]
    fn a_batch_applies_in_order_at_one_index_with_a_result_each() {
        let mut data = StateData::default();
        let mut changes = Changes::default();
        let cas_absent = |key: &str| Command::Kv {
            op: KvOp::Cas,
            entry: DirEntry {
                key: key.into(),
                ..DirEntry::default()
            },
            now_ms: 0,
        };
        let batch = Command::Batch(vec![
            kv(KvOp::Set, "a"),
            cas_absent("a"),
            kv(KvOp::Get, "a"),
            cas_absent("b"),
        ]);
        let logged: Command = serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        let CommandResult::Batch(results) = logged.apply(7, &mut data, &mut changes) else {
            panic!("a batch answers with a batch");
        };
        assert_eq!(results.len(), 4);
        assert_eq!(results[0], CommandResult::Bool(true));
        assert_eq!(results[1], CommandResult::Bool(false), "a exists by then");
        assert!(
            matches!(results[2], CommandResult::Error(_)),
            "a refused write in the middle: {:?}",
            results[2]
        );
        assert_eq!(
            results[3],
            CommandResult::Bool(true),
            "later writes still apply"
        );
        assert_eq!(data.kv_get("a").0, 7);
        assert_eq!(data.kv_get("b").0, 7);
    }

    #[test]
    fn restore_survives_the_log_and_replaces_every_table() {
        let mut saved = StateData::default();
        let mut changes = Changes::default();
        kv(KvOp::Set, "kept").apply(1, &mut saved, &mut changes);
        let cmd = Command::Restore {
            data: Box::new(saved),
        };
        let logged: Command = serde_json::from_slice(&serde_json::to_vec(&cmd).unwrap()).unwrap();
        assert_eq!(logged, cmd);

        let mut live = StateData::default();
        kv(KvOp::Set, "dropped").apply(1, &mut live, &mut changes);
        kv(KvOp::Set, "kept").apply(2, &mut live, &mut changes);
        let mut changes = Changes::default();
        assert_eq!(
            logged.apply(3, &mut live, &mut changes),
            CommandResult::Done
        );
        assert!(!changes.is_empty());
        assert_eq!(live.kvs.keys().collect::<Vec<_>>(), ["kept"]);
        assert_eq!(live.kv_get("kept").0, 3);
        assert_eq!(live.kv_get("dropped").0, 3);
    }

    #[test]
    fn reaping_removes_old_tombstones_and_never_moves_an_index_back() {
        let mut data = StateData::default();
        let mut changes = Changes::default();
        kv(KvOp::Set, "a/1").apply(1, &mut data, &mut changes);
        kv(KvOp::Set, "b/1").apply(2, &mut data, &mut changes);
        kv(KvOp::Delete, "a/1").apply(3, &mut data, &mut changes);
        kv(KvOp::Delete, "b/1").apply(4, &mut data, &mut changes);
        assert_eq!(data.kv_list("a/").0, 3, "the tombstone's index");

        Command::KvReapTombstones { up_to: 3 }.apply(5, &mut data, &mut changes);
        assert!(!data.tombstones.contains_key("a/1"));
        assert!(data.tombstones.contains_key("b/1"), "newer than up_to");
        assert!(
            data.kv_list("a/").0 >= 3,
            "the prefix index does not go back"
        );
    }
}
