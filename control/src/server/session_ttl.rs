//! Session TTLs: a session not renewed within twice its TTL (Consul's
//! multiplier) is destroyed through Raft, releasing or deleting its locks.

use crate::raft::{now_ms, Command, RaftNode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Consul waits this many TTLs before invalidating a session.
pub const TTL_MULTIPLIER: u32 = 2;

/// One timer per session with a TTL.
pub struct SessionTimers {
    node: RaftNode,
    timers: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl SessionTimers {
    /// Timers for the sessions of `node`'s store; call [`Self::reset_all`]
    /// when this node becomes leader.
    pub fn new(node: RaftNode) -> Self {
        SessionTimers {
            node,
            timers: Mutex::new(HashMap::new()),
        }
    }

    /// Starts (or restarts) the timer of session `id`.
    pub fn reset(&self, id: &str, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let node = self.node.clone();
        let session = id.to_string();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(ttl * TTL_MULTIPLIER).await;
            let cmd = Command::SessionDestroy {
                id: session.clone(),
                now_ms: now_ms(),
            };
            if let Err(e) = node.write(cmd).await {
                tracing::warn!(session = %session, error = %e, "session TTL expiry failed");
            } else {
                tracing::debug!(session = %session, "session TTL expired");
            }
        });
        let old = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), handle);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Stops the timer of session `id`.
    pub fn cancel(&self, id: &str) {
        if let Some(h) = self
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            h.abort();
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
            self.reset(&id, ttl);
        }
    }
}
