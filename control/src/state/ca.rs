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

    /// Makes `root` (signing with `key`) the one active root. The root
    /// active so far is kept, inactive, as rotated out at `now_ms`; an
    /// earlier copy of `root` itself (a provided root brought back) is
    /// replaced, so root IDs stay unique.
    pub fn activate(&mut self, root: CaRoot, key: CaRootKey, now_ms: u64) {
        self.roots.retain(|r| r.id != root.id);
        self.keys.retain(|k| k.root_id != root.id);
        self.rotated_out_at.remove(&root.id);
        for old in self.roots.iter_mut().filter(|r| r.active) {
            old.active = false;
            self.rotated_out_at.insert(old.id.clone(), now_ms);
        }
        self.roots.push(root);
        self.keys.push(key);
    }
}

impl StateData {
    /// Replaces the CA state (the leader computes it; keys are random).
    pub fn ca_set(&mut self, index: u64, ca: &CaState, changes: &mut Changes) {
        self.ca = ca.clone();
        self.bump(CA, index, changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_ca::{ConsulProvider, Provider};
    use std::time::SystemTime;

    fn root() -> (CaRoot, CaRootKey) {
        ConsulProvider::new(&CaConfiguration::new("abc"))
            .unwrap()
            .generate_root(SystemTime::now())
            .unwrap()
    }

    #[test]
    fn activate_keeps_one_active_root_and_unique_ids() {
        let (a, a_key) = root();
        let (b, b_key) = root();
        let mut state = CaState::default();
        state.activate(a.clone(), a_key.clone(), 1);
        state.activate(b.clone(), b_key, 2);
        assert_eq!(state.active().unwrap().0.id, b.id);
        assert_eq!(state.rotated_out_at.get(&a.id), Some(&2));

        // Bringing `a` back replaces its old, inactive copy.
        state.activate(a.clone(), a_key, 3);
        assert_eq!(state.roots.len(), 2);
        assert_eq!(state.keys.len(), 2);
        assert_eq!(state.active().unwrap().0.id, a.id);
        assert_eq!(state.roots.iter().filter(|r| r.active).count(), 1);
        assert!(!state.rotated_out_at.contains_key(&a.id));
        assert_eq!(state.rotated_out_at.get(&b.id), Some(&3));
    }
}
