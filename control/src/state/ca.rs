//! The CA's state in Raft: its configuration, the trusted roots (the active
//! one and those being rotated out) and their private keys.

use super::{Changes, StateData};
use mesh_ca::{CaConfiguration, CaRoot, CaRootKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The index key and watch topic of the CA.
pub const CA: &str = "ca";

/// Everything the CA keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaState {
    /// The configuration, once the leader has initialized the CA.
    pub config: Option<CaConfiguration>,
    /// Trusted roots; exactly one is active.
    pub roots: Vec<CaRoot>,
    /// The private key of each root (never served).
    pub keys: Vec<CaRootKey>,
    /// When each inactive root stopped signing (unix ms), for pruning.
    pub rotated_out_at: BTreeMap<String, u64>,
}

impl CaState {
    /// The active root and its key.
    pub fn active(&self) -> Option<(&CaRoot, &CaRootKey)> {
        let root = self.roots.iter().find(|r| r.active)?;
        let key = self.keys.iter().find(|k| k.root_id == root.id)?;
        Some((root, key))
    }
}

impl StateData {
    /// Replaces the CA state (the leader computes it; keys are random).
    pub fn ca_set(&mut self, index: u64, ca: &CaState, changes: &mut Changes) {
        self.ca = ca.clone();
        self.bump(CA, index, changes);
    }
}
