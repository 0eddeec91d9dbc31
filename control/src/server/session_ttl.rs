//! Session TTLs: a session not renewed within twice its TTL (Consul's
//! multiplier) is destroyed through Raft, releasing or deleting its locks.
//!
//! Only the leader keeps timers, as in Consul: a renewal that reaches a
//! follower is forwarded to the leader, a timer that fires on a server that
//! has lost leadership does nothing, and a new leader restarts every
//! session's timer ([`SessionTimers::reset_all`]).

use crate::raft::{now_ms, Command, RaftNode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Consul waits this many TTLs before invalidating a session.
pub const TTL_MULTIPLIER: u32 = 2;

/// Running timers by session ID, with the generation that started each.
#[derive(Default)]
struct Timers {
    running: HashMap<String, (u64, JoinHandle<()>)>,
    generation: u64,
}

/// One timer per session with a TTL.
pub struct SessionTimers {
    node: RaftNode,
    timers: Arc<Mutex<Timers>>,
}

impl SessionTimers {
    /// Timers for the sessions of `node`'s store; call [`Self::reset_all`]
    /// when this node becomes leader.
    pub fn new(node: RaftNode) -> Self {
        SessionTimers {
            node,
            timers: Arc::default(),
        }
    }

    /// Starts (or restarts) the timer of session `id`: here when this
    /// server leads, on the leader otherwise.
    pub fn reset(&self, id: &str, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        if !self.node.is_leader() {
            let node = self.node.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = node.renew_session_on_leader(&id, ttl).await {
                    tracing::warn!(session = %id, error = %e, "forwarding a session renewal failed");
                }
            });
            return;
        }
        self.reset_here(id, ttl);
    }

    /// Starts (or restarts) the timer of session `id` on this server.
    pub fn reset_here(&self, id: &str, ttl: Duration) {
        let node = self.node.clone();
        let session = id.to_string();
        let timers = self.timers.clone();
        let mut t = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        t.generation += 1;
        let generation = t.generation;
        let handle = tokio::spawn(async move {
            tokio::time::sleep(ttl * TTL_MULTIPLIER).await;
            if !node.is_leader() {
                return;
            }
            let cmd = Command::SessionDestroy {
                id: session.clone(),
                now_ms: now_ms(),
            };
            if let Err(e) = node.write(cmd).await {
                tracing::warn!(session = %session, error = %e, "session TTL expiry failed");
            } else {
                tracing::debug!(session = %session, "session TTL expired");
            }
            let mut t = timers.lock().unwrap_or_else(|e| e.into_inner());
            if t.running
                .get(&session)
                .is_some_and(|(g, _)| *g == generation)
            {
                t.running.remove(&session);
            }
        });
        if let Some((_, old)) = t.running.insert(id.to_string(), (generation, handle)) {
            old.abort();
        }
    }

    /// Stops every timer (this server no longer leads).
    pub fn clear(&self) {
        let mut t = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, handle)) in t.running.drain() {
            handle.abort();
        }
    }

    /// Stops the timer of session `id`.
    pub fn cancel(&self, id: &str) {
        if let Some(h) = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .remove(id)
        {
            h.1.abort();
        }
    }

    /// Restarts the timers of every session in the store (after a restart or
    /// a leadership change, as Consul's leader does).
    pub fn reset_all(&self) {
        let sessions: Vec<(String, Duration)> = self
            .node
            .store()
            .read()
            .sessions
            .values()
            .map(|s| (s.id.clone(), s.ttl.0))
            .collect();
        for (id, ttl) in sessions {
            self.reset_here(&id, ttl);
        }
    }
}
