//! The sessions table: creation checks, invalidation, and what invalidation
//! does to the locks a session holds.

use super::{table, Changes, StateData, StateError};
use crate::structs::{behavior, status, RaftIndex, Session};

impl StateData {
    /// Creates a session after checking its node and checks exist and are
    /// not critical.
    pub fn create_session(
        &mut self,
        index: u64,
        session: &Session,
        changes: &mut Changes,
    ) -> Result<(), StateError> {
        if session.id.is_empty() {
            return Err(StateError::Invalid("Missing session ID".into()));
        }
        if !matches!(
            session.behavior.as_str(),
            behavior::RELEASE | behavior::DELETE
        ) {
            return Err(StateError::Invalid(format!(
                "Invalid session behavior: {:?}",
                session.behavior
            )));
        }
        if !self.nodes.contains_key(&session.node) {
            return Err(StateError::Invalid(format!(
                "Missing node registration: {:?}",
                session.node
            )));
        }
        let service_checks = session.service_checks.iter().flatten().map(|c| &c.id);
        for id in session.node_checks.iter().chain(service_checks) {
            match self.checks.get(&session.node).and_then(|c| c.get(id)) {
                None => {
                    return Err(StateError::Invalid(format!(
                        "Missing check '{id}' registration"
                    )))
                }
                Some(c) if c.status == status::CRITICAL => {
                    return Err(StateError::Invalid(format!(
                        "Check '{id}' is in critical state"
                    )))
                }
                Some(_) => {}
            }
        }
        let mut s = session.clone();
        s.raft = RaftIndex::new(index);
        self.sessions.insert(s.id.clone(), s);
        self.bump(table::SESSIONS, index, changes);
        Ok(())
    }

    /// Destroys a session: its locks are released (or their keys deleted, by
    /// its behaviour) and put in lock-delay. Returns false if it did not exist.
    pub fn destroy_session(
        &mut self,
        index: u64,
        now_ms: u64,
        id: &str,
        changes: &mut Changes,
    ) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.bump(table::SESSIONS, index, changes);
        let held: Vec<String> = self
            .kvs
            .values()
            .filter(|e| e.session == id)
            .map(|e| e.key.clone())
            .collect();
        if held.is_empty() {
            return true;
        }
        let delay_ms = session.lock_delay.0.as_millis() as u64;
        for key in held {
            if delay_ms > 0 {
                self.lock_delays.insert(key.clone(), now_ms + delay_ms);
            }
            if session.behavior == behavior::DELETE {
                self.kvs.remove(&key);
                self.tombstones.insert(key.clone(), index);
            } else if let Some(e) = self.kvs.get_mut(&key) {
                e.session.clear();
                e.raft.modify_index = index;
            }
            changes.touch_key(&key);
        }
        self.lock_delays.retain(|_, until| *until > now_ms);
        self.bump(table::KVS, index, changes);
        true
    }

    /// Destroys every session that depends on check `check_id` of `node`.
    pub(super) fn invalidate_sessions_for_check(
        &mut self,
        index: u64,
        now_ms: u64,
        node: &str,
        check_id: &str,
        changes: &mut Changes,
    ) {
        let doomed: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && (s.node_checks.iter().any(|c| c == check_id)
                        || s.service_checks.iter().flatten().any(|c| c.id == check_id))
            })
            .map(|s| s.id.clone())
            .collect();
        for id in doomed {
            self.destroy_session(index, now_ms, &id, changes);
        }
    }

    /// Sessions on `node`.
    pub fn node_sessions(&self, node: &str) -> Vec<Session> {
        self.sessions
            .values()
            .filter(|s| s.node == node)
            .cloned()
            .collect()
    }
}
