//! The member table: what this node believes about every member, as serf
//! keeps it on top of memberlist.
//!
//! foca decides liveness (up/down); intents decide whether a member that went
//! down left (Left) or died (Failed), and carry tags. The table is pure data:
//! the runtime feeds it and publishes the [`MemberEvent`]s it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;
use crate::wire::{Intent, MemberState};

/// A member's status, as Consul reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Reachable.
    Alive,
    /// Announced a graceful leave and is on its way out.
    Leaving,
    /// Left gracefully, or was force-left after failing.
    Left,
    /// Stopped answering probes.
    Failed,
}

impl MemberStatus {
    /// Consul's numeric status (`/v1/agent/members` `Status`): Alive=1,
    /// Leaving=2, Left=3, Failed=4.
    pub fn code(self) -> u8 {
        match self {
            MemberStatus::Alive => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
            MemberStatus::Failed => 4,
        }
    }

    /// Consul's lower-case name (`alive`, `leaving`, `left`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }

    fn is_gone(self) -> bool {
        matches!(self, MemberStatus::Left | MemberStatus::Failed)
    }
}

impl std::fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the pool, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address (UDP and TCP).
    pub addr: SocketAddr,
    /// Serf tags.
    pub tags: BTreeMap<String, String>,
    /// Status.
    pub status: MemberStatus,
    /// Which life of the node this is: its start time in milliseconds since
    /// the Unix epoch, bumped on each rejoin after being declared down.
    pub generation: u64,
}

/// What happened to a member, as serf's member events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEventKind {
    /// A member became alive (joined, rejoined or was seen for the first time).
    Join,
    /// A member left gracefully (or was force-left).
    Leave,
    /// A member failed.
    Failed,
    /// A member changed tags or address, or announced it is leaving.
    Update,
    /// A failed or left member was forgotten after `reap_after`.
    Reap,
}

/// A change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    /// What happened.
    pub kind: MemberEventKind,
    /// The member after the change.
    pub member: Member,
}

#[derive(Debug, Clone)]
struct Entry {
    id: NodeId,
    tags: BTreeMap<String, String>,
    tags_version: u64,
    status: MemberStatus,
    left_intent: bool,
    since: Instant,
}

impl Entry {
    fn new(id: NodeId, status: MemberStatus) -> Entry {
        Entry {
            id,
            tags: BTreeMap::new(),
            tags_version: 0,
            status,
            left_intent: false,
            since: Instant::now(),
        }
    }

    fn member(&self) -> Member {
        Member {
            name: self.id.name.clone(),
            addr: self.id.addr,
            tags: self.tags.clone(),
            status: self.status,
            generation: self.id.generation,
        }
    }

    fn set_status(&mut self, status: MemberStatus) {
        if self.status != status {
            self.status = status;
            self.since = Instant::now();
        }
    }
}

type Events = Vec<MemberEvent>;

fn event(kind: MemberEventKind, e: &Entry) -> MemberEvent {
    MemberEvent {
        kind,
        member: e.member(),
    }
}

/// Every member this node knows, by name, the local node included.
#[derive(Debug)]
pub(crate) struct Table {
    local: String,
    entries: BTreeMap<String, Entry>,
}

impl Table {
    /// A table holding only the local node.
    pub(crate) fn new(local: NodeId, tags: BTreeMap<String, String>) -> Table {
        let mut entry = Entry::new(local.clone(), MemberStatus::Alive);
        entry.tags = tags;
        entry.tags_version = 1;
        let mut entries = BTreeMap::new();
        entries.insert(local.name.clone(), entry);
        Table {
            local: local.name,
            entries,
        }
    }

    fn local_entry(&mut self) -> &mut Entry {
        self.entries
            .get_mut(&self.local)
            .expect("the local entry is never removed")
    }

    /// The local identity.
    pub(crate) fn local_id(&self) -> NodeId {
        self.entries[&self.local].id.clone()
    }

    /// The local tags intent, to (re)announce them.
    pub(crate) fn local_tags_intent(&self) -> Intent {
        let e = &self.entries[&self.local];
        Intent::Tags {
            id: e.id.clone(),
            version: e.tags_version,
            tags: e.tags.clone(),
        }
    }

    /// Replaces the local tags; returns the intent announcing them.
    pub(crate) fn set_local_tags(&mut self, tags: BTreeMap<String, String>) -> (Intent, Events) {
        let e = self.local_entry();
        e.tags = tags;
        e.tags_version += 1;
        let ev = vec![event(MemberEventKind::Update, e)];
        (self.local_tags_intent(), ev)
    }

    /// foca renewed the local identity after being wrongly declared down.
    pub(crate) fn renew_local(&mut self, id: NodeId) {
        self.local_entry().id = id;
    }

    /// Sets the local status (leaving, left).
    pub(crate) fn set_local_status(&mut self, status: MemberStatus) -> Events {
        let e = self.local_entry();
        e.set_status(status);
        vec![event(MemberEventKind::Update, e)]
    }

    /// The entry named `name`, as a member.
    pub(crate) fn get(&self, name: &str) -> Option<(NodeId, MemberStatus)> {
        self.entries.get(name).map(|e| (e.id.clone(), e.status))
    }

    /// All members, the local one included.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.entries.values().map(Entry::member).collect()
    }

    /// Members other than the local one with `status` (alive ones to gossip
    /// with, failed ones to try to reconnect to).
    pub(crate) fn peers(&self, status: MemberStatus) -> Vec<Member> {
        self.entries
            .values()
            .filter(|e| e.id.name != self.local && e.status == status)
            .map(Entry::member)
            .collect()
    }

    /// The full state, for push-pull.
    pub(crate) fn states(&self) -> Vec<MemberState> {
        self.entries
            .values()
            .map(|e| MemberState {
                id: e.id.clone(),
                status: e.status,
                tags_version: e.tags_version,
                tags: e.tags.clone(),
                gone_ms: if e.status.is_gone() {
                    e.since.elapsed().as_millis() as u64
                } else {
                    0
                },
            })
            .collect()
    }

    /// Whether `id` is a life worth telling foca about: not ours, and not
    /// older than the life we know under that name.
    pub(crate) fn is_current_or_newer(&self, id: &NodeId) -> bool {
        if id.name == self.local {
            return false;
        }
        self.entries
            .get(&id.name)
            .is_none_or(|e| e.id == *id || id.newer_than(&e.id))
    }

    /// foca declared `id` up.
    pub(crate) fn up(&mut self, id: &NodeId) -> Events {
        if id.name == self.local {
            tracing::warn!(
                node = %id.name, addr = %id.addr,
                "name conflict: another node is using this node's name"
            );
            return vec![];
        }
        match self.entries.get_mut(&id.name) {
            None => {
                let e = Entry::new(id.clone(), MemberStatus::Alive);
                let ev = vec![event(MemberEventKind::Join, &e)];
                self.entries.insert(id.name.clone(), e);
                ev
            }
            Some(e) if e.id == *id => {
                if e.status.is_gone() {
                    e.set_status(MemberStatus::Alive);
                    return vec![event(MemberEventKind::Join, e)];
                }
                vec![]
            }
            Some(e) if id.newer_than(&e.id) => {
                if e.status == MemberStatus::Alive && e.id.addr != id.addr {
                    tracing::warn!(
                        node = %id.name, old = %e.id.addr, new = %id.addr,
                        "name conflict or restart at a new address: keeping the newer node"
                    );
                }
                let was_alive = e.status == MemberStatus::Alive;
                e.id = id.clone();
                e.tags_version = 0;
                e.left_intent = false;
                e.set_status(MemberStatus::Alive);
                let kind = if was_alive {
                    MemberEventKind::Update
                } else {
                    MemberEventKind::Join
                };
                vec![event(kind, e)]
            }
            Some(e) => {
                if e.status == MemberStatus::Alive && e.id.addr != id.addr {
                    tracing::warn!(
                        node = %id.name, kept = %e.id.addr, other = %id.addr,
                        "name conflict: an older node uses the same name; ignoring it"
                    );
                }
                vec![]
            }
        }
    }

    /// foca declared `id` down.
    pub(crate) fn down(&mut self, id: &NodeId) -> Events {
        let Some(e) = self.entries.get_mut(&id.name) else {
            return vec![];
        };
        if e.id != *id || e.status.is_gone() || id.name == self.local {
            return vec![];
        }
        if e.left_intent {
            e.set_status(MemberStatus::Left);
            vec![event(MemberEventKind::Leave, e)]
        } else {
            e.set_status(MemberStatus::Failed);
            vec![event(MemberEventKind::Failed, e)]
        }
    }

    /// Applies an intent received from the pool.
    pub(crate) fn intent(&mut self, intent: &Intent) -> Events {
        match intent {
            Intent::Tags { id, version, tags } => match self.entries.get_mut(&id.name) {
                Some(e) if e.id == *id && *version > e.tags_version && id.name != self.local => {
                    e.tags = tags.clone();
                    e.tags_version = *version;
                    vec![event(MemberEventKind::Update, e)]
                }
                _ => vec![],
            },
            Intent::Leave { id } => self.leave_intent(id, false),
            Intent::ForceLeave { id, .. } => self.leave_intent(id, true),
        }
    }

    fn leave_intent(&mut self, id: &NodeId, forced: bool) -> Events {
        if id.name == self.local {
            return vec![];
        }
        let Some(e) = self.entries.get_mut(&id.name) else {
            return vec![];
        };
        if e.id != *id {
            return vec![];
        }
        match e.status {
            MemberStatus::Failed => {
                e.left_intent = true;
                e.set_status(MemberStatus::Left);
                vec![event(MemberEventKind::Leave, e)]
            }
            MemberStatus::Alive if !forced => {
                e.left_intent = true;
                e.set_status(MemberStatus::Leaving);
                vec![event(MemberEventKind::Update, e)]
            }
            _ => vec![],
        }
    }

    /// Merges a peer's full state after foca has been told about its live
    /// members (so live ones are already here if foca accepted them).
    /// Members gone for `reap_after` or longer are not taken in.
    pub(crate) fn merge(&mut self, states: &[MemberState], reap_after: Duration) -> Events {
        let mut events = vec![];
        for s in states {
            let gone_for = Duration::from_millis(s.gone_ms);
            if s.status.is_gone() && gone_for >= reap_after {
                continue;
            }
            let since = Instant::now()
                .checked_sub(gone_for)
                .unwrap_or_else(Instant::now);
            if s.id.name == self.local {
                if s.id.newer_than(&self.entries[&self.local].id) {
                    tracing::warn!(
                        node = %s.id.name, addr = %s.id.addr,
                        "name conflict: a newer node uses this node's name"
                    );
                }
                continue;
            }
            match self.entries.get_mut(&s.id.name) {
                None if s.status.is_gone() || s.status == MemberStatus::Leaving => {
                    let status = match s.status {
                        MemberStatus::Failed => MemberStatus::Failed,
                        _ => MemberStatus::Left,
                    };
                    let mut e = Entry::new(s.id.clone(), status);
                    e.since = since;
                    e.tags = s.tags.clone();
                    e.tags_version = s.tags_version;
                    e.left_intent = status == MemberStatus::Left;
                    self.entries.insert(s.id.name.clone(), e);
                }
                None => {}
                Some(e) if e.id == s.id => {
                    if s.tags_version > e.tags_version {
                        e.tags = s.tags.clone();
                        e.tags_version = s.tags_version;
                        events.push(event(MemberEventKind::Update, e));
                    }
                    if matches!(s.status, MemberStatus::Leaving | MemberStatus::Left) {
                        events.extend(self.leave_intent(&s.id, false));
                    }
                }
                Some(e) if s.id.newer_than(&e.id) && s.status.is_gone() => {
                    let mut n = Entry::new(s.id.clone(), s.status);
                    n.since = since;
                    n.tags = s.tags.clone();
                    n.tags_version = s.tags_version;
                    n.left_intent = s.status == MemberStatus::Left;
                    *e = n;
                    events.push(event(MemberEventKind::Update, e));
                }
                Some(_) => {}
            }
        }
        events
    }

    /// Forgets members that have been Left or Failed for `after`.
    pub(crate) fn reap(&mut self, after: Duration) -> (Events, Vec<String>) {
        let now = Instant::now();
        let local = self.local.clone();
        let mut events = vec![];
        let mut names = vec![];
        self.entries.retain(|name, e| {
            let expired =
                *name != local && e.status.is_gone() && now.duration_since(e.since) >= after;
            if expired {
                events.push(event(MemberEventKind::Reap, e));
                names.push(name.clone());
            }
            !expired
        });
        (events, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, port: u16, generation: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        }
    }

    fn status(t: &Table, name: &str) -> Option<MemberStatus> {
        t.get(name).map(|(_, s)| s)
    }

    #[test]
    fn leave_intent_then_down_is_left_and_plain_down_is_failed() {
        let mut t = Table::new(id("me", 1, 1), BTreeMap::new());
        let (a, b) = (id("a", 2, 1), id("b", 3, 1));
        t.up(&a);
        t.up(&b);
        t.intent(&Intent::Leave { id: a.clone() });
        assert_eq!(status(&t, "a"), Some(MemberStatus::Leaving));
        assert_eq!(t.down(&a)[0].kind, MemberEventKind::Leave);
        assert_eq!(status(&t, "a"), Some(MemberStatus::Left));
        assert_eq!(t.down(&b)[0].kind, MemberEventKind::Failed);
        // A leave intent arriving after the failure still turns it Left.
        t.intent(&Intent::Leave { id: b.clone() });
        assert_eq!(status(&t, "b"), Some(MemberStatus::Left));
    }

    #[test]
    fn force_leave_only_affects_failed_members() {
        let mut t = Table::new(id("me", 1, 1), BTreeMap::new());
        let a = id("a", 2, 1);
        t.up(&a);
        t.intent(&Intent::ForceLeave {
            id: a.clone(),
            ltime: 1,
        });
        assert_eq!(status(&t, "a"), Some(MemberStatus::Alive));
        t.down(&a);
        t.intent(&Intent::ForceLeave { id: a, ltime: 2 });
        assert_eq!(status(&t, "a"), Some(MemberStatus::Left));
    }

    #[test]
    fn restart_replaces_old_life_and_stale_down_is_ignored() {
        let mut t = Table::new(id("me", 1, 1), BTreeMap::new());
        let old = id("a", 2, 1);
        let new = id("a", 5, 2);
        t.up(&old);
        t.down(&old);
        assert_eq!(status(&t, "a"), Some(MemberStatus::Failed));
        assert_eq!(t.up(&new)[0].kind, MemberEventKind::Join);
        assert!(t.down(&old).is_empty());
        assert_eq!(status(&t, "a"), Some(MemberStatus::Alive));
        assert!(!t.is_current_or_newer(&old));
        assert!(t.is_current_or_newer(&new));
    }

    #[test]
    fn tags_apply_by_version_and_merge_brings_left_members() {
        let mut t = Table::new(id("me", 1, 1), BTreeMap::new());
        let a = id("a", 2, 1);
        t.up(&a);
        let tags = BTreeMap::from([("role".to_string(), "consul".to_string())]);
        let intent = |version| Intent::Tags {
            id: a.clone(),
            version,
            tags: tags.clone(),
        };
        assert_eq!(t.intent(&intent(2)).len(), 1);
        assert!(t.intent(&intent(1)).is_empty());
        let gone = |name: &str, gone_ms| MemberState {
            id: id(name, 9, 1),
            status: MemberStatus::Left,
            tags_version: 1,
            tags: BTreeMap::new(),
            gone_ms,
        };
        let reap_after = Duration::from_secs(60);
        t.merge(&[gone("z", 1_000), gone("y", 60_000)], reap_after);
        assert_eq!(status(&t, "z"), Some(MemberStatus::Left));
        assert_eq!(status(&t, "y"), None, "already past reap_after");
        // Its age travels with it: a peer that reaped it will not get it back.
        let z = t.states().into_iter().find(|s| s.id.name == "z").unwrap();
        assert!(z.gone_ms >= 1_000);
        assert!(t.reap(reap_after).1.is_empty());
        let (ev, names) = t.reap(Duration::from_millis(1_000));
        assert_eq!(names, vec!["z".to_string()]);
        assert_eq!(ev[0].kind, MemberEventKind::Reap);
        assert_eq!(t.members().len(), 2);
    }
}
