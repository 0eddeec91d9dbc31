//! The config entries table, and intentions kept inside `service-intentions`
//! entries.

use super::{Changes, StateData, StateError};
use crate::config_entry::intentions::{
    self, Action, Intention, IntentionPermission, LegacyIntention, LegacyIntentionOp,
    SourceIntention,
};
use crate::config_entry::{kind, ConfigEntry};
use crate::structs::RaftIndex;

/// The table's index key and topic.
pub const CONFIG_ENTRIES: &str = "config_entries";

/// The topic of one kind's entries.
pub fn config_topic(kind: &str) -> String {
    format!("config:{kind}")
}

impl StateData {
    fn bump_config(&mut self, index: u64, kind: &str, changes: &mut Changes) {
        self.bump(CONFIG_ENTRIES, index, changes);
        self.bump(&config_topic(kind), index, changes);
    }

    /// Writes an entry; with `cas`, only if its current `ModifyIndex` matches
    /// (0: only if absent). Returns whether it was written.
    pub fn config_set(
        &mut self,
        index: u64,
        entry: &ConfigEntry,
        cas: Option<u64>,
        changes: &mut Changes,
    ) -> bool {
        let existing = self.config_get(&entry.kind, &entry.name).map(|e| e.raft);
        if let Some(want) = cas {
            if existing.map(|r| r.modify_index).unwrap_or(0) != want {
                return false;
            }
        }
        let mut e = entry.clone();
        e.raft = RaftIndex {
            create_index: existing.map(|r| r.create_index).unwrap_or(index),
            modify_index: index,
        };
        self.config_entries
            .entry(e.kind.clone())
            .or_default()
            .insert(e.name.clone(), e);
        self.bump_config(index, &entry.kind, changes);
        true
    }

    /// Deletes an entry; with `cas`, only if its `ModifyIndex` matches.
    pub fn config_delete(
        &mut self,
        index: u64,
        kind: &str,
        name: &str,
        cas: Option<u64>,
        changes: &mut Changes,
    ) -> bool {
        let current = self.config_get(kind, name).map(|e| e.raft.modify_index);
        if cas.is_some_and(|want| current != Some(want)) {
            return false;
        }
        if current.is_none() {
            return true;
        }
        if let Some(by_name) = self.config_entries.get_mut(kind) {
            by_name.remove(name);
            if by_name.is_empty() {
                self.config_entries.remove(kind);
            }
        }
        self.bump_config(index, kind, changes);
        true
    }

    /// One entry.
    pub fn config_get(&self, kind: &str, name: &str) -> Option<&ConfigEntry> {
        self.config_entries.get(kind)?.get(name)
    }

    /// Every entry of a kind, by name.
    pub fn config_list(&self, kind: &str) -> Vec<&ConfigEntry> {
        self.config_entries
            .get(kind)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Every intention, flattened from the `service-intentions` entries.
    pub fn intentions(&self) -> Vec<Intention> {
        self.config_list(kind::SERVICE_INTENTIONS)
            .into_iter()
            .flat_map(intentions::from_entry)
            .collect()
    }

    /// Creates or replaces the intention `source` → `destination`: an
    /// action, or (for L7) permissions.
    #[allow(clippy::too_many_arguments)]
    pub fn intention_upsert(
        &mut self,
        index: u64,
        source: &str,
        destination: &str,
        action: Option<Action>,
        permissions: &[IntentionPermission],
        description: &str,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        let source = SourceIntention::new(
            source,
            destination,
            action,
            permissions.to_vec(),
            description,
        );
        self.intention_put(index, destination, source, changes)
    }

    /// Puts `source` into `destination`'s entry, replacing the intention
    /// from the same source.
    fn intention_put(
        &mut self,
        index: u64,
        destination: &str,
        source: SourceIntention,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        let e = self.intention_entry_with(destination, source)?;
        self.config_set(index, &e, None, changes);
        Ok(())
    }

    /// `destination`'s `service-intentions` entry as it would be with
    /// `source` put in (replacing the intention from the same source),
    /// validated.
    pub fn intention_entry_with(
        &self,
        destination: &str,
        source: SourceIntention,
    ) -> Result<ConfigEntry, StateError> {
        let mut body = self
            .config_get(kind::SERVICE_INTENTIONS, destination)
            .map(|e| e.body.clone())
            .unwrap_or_else(
                || serde_json::json!({"Kind": kind::SERVICE_INTENTIONS, "Name": destination}),
            );
        let mut entry: intentions::ServiceIntentions =
            serde_json::from_value(body.take()).map_err(|e| StateError::Invalid(e.to_string()))?;
        entry.sources.retain(|s| s.name != source.name);
        entry.sources.push(source);
        entry.sources.sort_by(|a, b| a.name.cmp(&b.name));
        let body = serde_json::to_value(entry).map_err(|e| StateError::Invalid(e.to_string()))?;
        crate::config_entry::parse(body).map_err(|e| StateError::Invalid(e.to_string()))
    }

    /// Applies a legacy ID-based intention write (`POST`, `PUT`, `DELETE`
    /// `/v1/connect/intentions[/:id]`): a create refuses a pair that already
    /// has an intention, an update may move the intention to another pair,
    /// and both keep the ID and metadata in the entry.
    pub fn intention_legacy(
        &mut self,
        index: u64,
        op: &LegacyIntentionOp,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        let all = self.intentions();
        let by_id = |id: &str| all.iter().find(|i| !i.id.is_empty() && i.id == id);
        let by_pair = |i: &LegacyIntention| {
            all.iter()
                .find(|x| x.source_name == i.source && x.destination_name == i.destination)
        };
        match op {
            LegacyIntentionOp::Create { id, intention } => {
                if by_pair(intention).is_some() {
                    return Err(StateError::Invalid(format!(
                        "duplicate intention found: {} => {}",
                        intention.source, intention.destination
                    )));
                }
                self.intention_put(
                    index,
                    &intention.destination,
                    intention.source_of(id),
                    changes,
                )
            }
            LegacyIntentionOp::Update { id, intention } => {
                let old = by_id(id).cloned().ok_or_else(|| {
                    StateError::NotFound(format!("Cannot modify non-existent intention: '{id}'"))
                })?;
                if by_pair(intention).is_some_and(|x| x.id != *id) {
                    return Err(StateError::Invalid(format!(
                        "duplicate intention found: {} => {}",
                        intention.source, intention.destination
                    )));
                }
                self.intention_delete(index, &old.source_name, &old.destination_name, changes);
                self.intention_put(
                    index,
                    &intention.destination,
                    intention.source_of(id),
                    changes,
                )
            }
            LegacyIntentionOp::Delete { id } => {
                let old = by_id(id).cloned().ok_or_else(|| {
                    StateError::NotFound(format!("Cannot delete non-existent intention: '{id}'"))
                })?;
                self.intention_delete(index, &old.source_name, &old.destination_name, changes);
                Ok(())
            }
        }
    }

    /// Deletes the intention `source` → `destination`; false if absent.
    pub fn intention_delete(
        &mut self,
        index: u64,
        source: &str,
        destination: &str,
        changes: &mut Changes,
    ) -> bool {
        let Some(existing) = self.config_get(kind::SERVICE_INTENTIONS, destination) else {
            return false;
        };
        let Ok(mut entry) =
            serde_json::from_value::<intentions::ServiceIntentions>(existing.body.clone())
        else {
            return false;
        };
        let before = entry.sources.len();
        entry.sources.retain(|s| s.name != source);
        if entry.sources.len() == before {
            return false;
        }
        if entry.sources.is_empty() {
            return self.config_delete(index, kind::SERVICE_INTENTIONS, destination, None, changes);
        }
        let Ok(body) = serde_json::to_value(entry) else {
            return false;
        };
        match crate::config_entry::parse(body) {
            Ok(e) => self.config_set(index, &e, None, changes),
            Err(_) => false,
        }
    }
}
