//! Watches: how a blocking query learns that the data it read has changed.
//!
//! A query subscribes to the topics it reads before it reads them; a write
//! notifies the topics it touched. Only the waiters on those topics wake, so a
//! parked query costs one `Notify` and a weak reference per topic, and no CPU.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// What a query reads, for waking it when that changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// A named table or record, e.g. `services` or `service:web`.
    Exact(String),
    /// Every KV key under this prefix (the empty prefix is the whole store).
    KvPrefix(String),
}

/// The topics one write touched.
#[derive(Debug, Default)]
pub struct Changes {
    exact: Vec<String>,
    kv_keys: Vec<String>,
    kv_trees: Vec<String>,
    everything: bool,
}

impl Changes {
    /// Marks a table or record topic as changed.
    pub fn touch(&mut self, topic: impl Into<String>) {
        self.exact.push(topic.into());
    }

    /// Marks one KV key as changed.
    pub fn touch_key(&mut self, key: &str) {
        self.kv_keys.push(key.to_string());
    }

    /// Marks every KV key under `prefix` as changed.
    pub fn touch_tree(&mut self, prefix: &str) {
        self.kv_trees.push(prefix.to_string());
    }

    /// Marks every topic as changed (every table was replaced).
    pub fn touch_everything(&mut self) {
        self.everything = true;
    }

    /// Adds every topic of `other`.
    pub fn merge(&mut self, other: Changes) {
        self.exact.extend(other.exact);
        self.kv_keys.extend(other.kv_keys);
        self.kv_trees.extend(other.kv_trees);
        self.everything |= other.everything;
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.everything
            && self.exact.is_empty()
            && self.kv_keys.is_empty()
            && self.kv_trees.is_empty()
    }
}

type Waiters = Vec<Weak<Notify>>;

#[derive(Default)]
struct Topics {
    exact: HashMap<String, Waiters>,
    prefix: BTreeMap<String, Waiters>,
    inserted_since_sweep: usize,
}

/// The registry of parked queries by topic.
#[derive(Default)]
pub struct WatchHub {
    topics: Mutex<Topics>,
}

/// A query's subscription: wakes when any of its topics changes.
pub struct WatchSet {
    notify: Arc<Notify>,
}

impl WatchSet {
    /// Waits until one of the watched topics changes. A change that happened
    /// after the subscription but before this call is not lost.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

/// Sweep dead waiters after this many subscriptions.
const SWEEP_EVERY: usize = 4096;

impl WatchHub {
    /// Subscribes to `topics`; subscribe before reading so no change is missed.
    pub fn subscribe(&self, topics: &[Topic]) -> WatchSet {
        let notify = Arc::new(Notify::new());
        let weak = Arc::downgrade(&notify);
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for topic in topics {
            let list = match topic {
                Topic::Exact(name) => t.exact.entry(name.clone()).or_default(),
                Topic::KvPrefix(p) => t.prefix.entry(p.clone()).or_default(),
            };
            list.push(weak.clone());
        }
        t.inserted_since_sweep += topics.len();
        if t.inserted_since_sweep >= SWEEP_EVERY {
            t.inserted_since_sweep = 0;
            sweep(&mut t.exact);
            t.prefix.retain(|_, w| {
                w.retain(|x| x.strong_count() > 0);
                !w.is_empty()
            });
        }
        WatchSet { notify }
    }

    /// Wakes the waiters of every topic in `changes`.
    pub fn notify(&self, changes: &Changes) {
        if changes.is_empty() {
            return;
        }
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if changes.everything {
            let exact = std::mem::take(&mut t.exact);
            let prefix = std::mem::take(&mut t.prefix);
            t.inserted_since_sweep = 0;
            drop(t);
            exact
                .into_values()
                .chain(prefix.into_values())
                .for_each(wake);
            return;
        }
        for name in &changes.exact {
            if let Some(list) = t.exact.remove(name) {
                wake(list);
            }
        }
        for key in &changes.kv_keys {
            let mut ends: Vec<usize> = key.char_indices().map(|(i, _)| i).collect();
            ends.push(key.len());
            for end in ends {
                if let Some(list) = t.prefix.remove(&key[..end]) {
                    wake(list);
                }
            }
        }
        for tree in &changes.kv_trees {
            let under: Vec<String> = t
                .prefix
                .range(tree.clone()..)
                .take_while(|(p, _)| p.starts_with(tree.as_str()))
                .map(|(p, _)| p.clone())
                .collect();
            let mut ends: Vec<usize> = tree.char_indices().map(|(i, _)| i).collect();
            ends.push(tree.len());
            let above = ends.into_iter().map(|e| tree[..e].to_string());
            for p in under.into_iter().chain(above) {
                if let Some(list) = t.prefix.remove(&p) {
                    wake(list);
                }
            }
        }
    }

    /// How many topics have waiters (for tests and metrics).
    pub fn topic_count(&self) -> usize {
        let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.exact.len() + t.prefix.len()
    }
}

fn wake(list: Waiters) {
    for w in list {
        if let Some(n) = w.upgrade() {
            n.notify_one();
        }
    }
}

fn sweep(map: &mut HashMap<String, Waiters>) {
    map.retain(|_, w| {
        w.retain(|x| x.strong_count() > 0);
        !w.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn fires(w: &WatchSet) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn wakes_only_matching_topics() {
        let hub = WatchHub::default();
        let web = hub.subscribe(&[Topic::Exact("service:web".into())]);
        let db = hub.subscribe(&[Topic::Exact("service:db".into())]);
        let mut c = Changes::default();
        c.touch("service:web");
        hub.notify(&c);
        assert!(fires(&web).await);
        assert!(!fires(&db).await);
    }

    #[tokio::test]
    async fn kv_prefixes_wake_on_keys_below_them() {
        let hub = WatchHub::default();
        let all = hub.subscribe(&[Topic::KvPrefix(String::new())]);
        let foo = hub.subscribe(&[Topic::KvPrefix("foo/".into())]);
        let bar = hub.subscribe(&[Topic::KvPrefix("bar/".into())]);
        let deep = hub.subscribe(&[Topic::KvPrefix("foo/a/b".into())]);
        let mut c = Changes::default();
        c.touch_key("foo/x");
        hub.notify(&c);
        assert!(fires(&all).await);
        assert!(fires(&foo).await);
        assert!(!fires(&bar).await);
        assert!(!fires(&deep).await);

        let mut c = Changes::default();
        c.touch_tree("foo/");
        hub.notify(&c);
        assert!(fires(&deep).await);
    }

    #[tokio::test]
    async fn change_before_wait_is_not_lost() {
        let hub = WatchHub::default();
        let w = hub.subscribe(&[Topic::Exact("nodes".into())]);
        let mut c = Changes::default();
        c.touch("nodes");
        hub.notify(&c);
        assert!(fires(&w).await);
    }

    #[tokio::test]
    async fn everything_wakes_every_topic() {
        let hub = WatchHub::default();
        let web = hub.subscribe(&[Topic::Exact("service:web".into())]);
        let kv = hub.subscribe(&[Topic::KvPrefix("deep/key".into())]);
        let mut c = Changes::default();
        c.touch_everything();
        assert!(!c.is_empty());
        hub.notify(&c);
        assert!(fires(&web).await);
        assert!(fires(&kv).await);
        assert_eq!(hub.topic_count(), 0);
    }

    #[test]
    fn dropped_waiters_are_swept() {
        let hub = WatchHub::default();
        for i in 0..SWEEP_EVERY + 1 {
            drop(hub.subscribe(&[Topic::Exact(format!("t{i}"))]));
        }
        assert!(hub.topic_count() < 10);
    }
}
