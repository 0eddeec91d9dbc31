//! Reaping KV tombstones (a leader duty, as Consul's tombstone GC).
//!
//! A deleted key leaves a tombstone holding the index of its deletion, so
//! that a blocking query on its prefix sees the index move. Tombstones are
//! only needed while such a query may still be parked on an older index:
//! after [`TOMBSTONE_TTL`] they are removed through Raft
//! (`Command::KvReapTombstones`). The leader samples the highest tombstone
//! index every [`GRANULARITY`] and, once a sample is older than the TTL,
//! reaps every tombstone up to it.

use crate::raft::{Command, RaftNode};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How long a tombstone is kept (Consul's `tombstone_ttl` default).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

/// How often the highest tombstone index is sampled (Consul's
/// `tombstone_ttl_granularity` default).
pub const GRANULARITY: Duration = Duration::from_secs(30);

/// Samples of the highest tombstone index, oldest first.
#[derive(Debug, Default)]
struct Samples(VecDeque<(Instant, u64)>);

impl Samples {
    /// Records `max_index` seen at `now` (only if it grew).
    fn record(&mut self, now: Instant, max_index: u64) {
        if max_index > self.0.back().map_or(0, |(_, i)| *i) {
            self.0.push_back((now, max_index));
        }
    }

    /// The highest index whose sample is at least `ttl` old, removing the
    /// samples it covers.
    fn due(&mut self, now: Instant, ttl: Duration) -> Option<u64> {
        let mut due = None;
        while let Some((at, index)) = self.0.front().copied() {
            if now.duration_since(at) < ttl {
                break;
            }
            due = Some(index);
            self.0.pop_front();
        }
        due
    }
}

/// Runs the tombstone GC on `node` forever.
pub async fn run(node: RaftNode) {
    let mut samples = Samples::default();
    let mut tick = tokio::time::interval(GRANULARITY);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let max = {
            let d = node.store().read();
            d.tombstones.values().copied().max().unwrap_or(0)
        };
        samples.record(now, max);
        if !node.status().is_leader {
            continue;
        }
        if let Some(up_to) = samples.due(now, TOMBSTONE_TTL) {
            if let Err(e) = node.write(Command::KvReapTombstones { up_to }).await {
                tracing::warn!(error = %e, "reaping KV tombstones failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_samples_older_than_the_ttl_are_due() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut s = Samples::default();
        s.record(t0, 5);
        s.record(t0 + Duration::from_secs(30), 5);
        s.record(t0 + Duration::from_secs(30), 9);
        s.record(t0 + Duration::from_secs(40), 0);
        assert_eq!(s.due(t0 + Duration::from_secs(59), ttl), None);
        assert_eq!(s.due(t0 + Duration::from_secs(60), ttl), Some(5));
        assert_eq!(s.due(t0 + Duration::from_secs(61), ttl), None);
        assert_eq!(s.due(t0 + Duration::from_secs(95), ttl), Some(9));
        assert_eq!(s.due(t0 + Duration::from_secs(500), ttl), None);
    }
}
