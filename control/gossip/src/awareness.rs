//! Lifeguard's local health awareness (memberlist's `awareness`): how far
//! this node trusts its own ability to probe in time.
//!
//! A node that is itself in trouble (starved of CPU, dropping packets) sees
//! its probes fail and hears that others suspect it. Rather than suspecting
//! healthy peers at its usual pace, it raises a score and stretches its
//! probe timers by `score + 1`; probes that are acknowledged lower the score
//! again. [`Health`] reads the score moves out of what foca reports
//! (`unstable-notifications`), as memberlist's probe loop does:
//!
//! * +1 when a probe of ours fails (`ProbeFailed`);
//! * +1 when we refute a suspicion of ourselves: our incarnation went up, or
//!   we renewed our identity after being declared failed;
//! * −1 when the member we probe acknowledges, directly or through a helper.

use std::time::Duration;

use foca::{Header, Incarnation, Message, ProbeNumber, Timer};

/// memberlist's default `AwarenessMaxMultiplier`: at worst a node probes
/// eight times more slowly than configured.
pub(crate) const MAX_MULTIPLIER: u32 = 8;

/// The health score, `0..max_multiplier`; 0 is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Awareness {
    max_multiplier: u32,
    score: u32,
}

impl Awareness {
    /// A healthy score whose timeouts stretch at most `max_multiplier`
    /// times (1 disables the stretching).
    pub(crate) fn new(max_multiplier: u32) -> Awareness {
        Awareness {
            max_multiplier: max_multiplier.max(1),
            score: 0,
        }
    }

    /// The current score.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// Moves the score by `delta`, kept within `0..max_multiplier`; true if
    /// it changed.
    pub(crate) fn apply_delta(&mut self, delta: i32) -> bool {
        let top = i64::from(self.max_multiplier - 1);
        let next = (i64::from(self.score) + i64::from(delta)).clamp(0, top);
        let next = u32::try_from(next).unwrap_or(0);
        let changed = next != self.score;
        self.score = next;
        changed
    }

    /// `timeout` stretched by `score + 1` (memberlist's `ScaleTimeout`).
    pub(crate) fn scale(&self, timeout: Duration) -> Duration {
        timeout.saturating_mul(self.score + 1)
    }
}

/// The probe this node has in flight.
#[derive(Debug, Clone)]
struct Probe<T> {
    number: ProbeNumber,
    target: T,
    acked: bool,
}

/// Follows foca's notifications and keeps the [`Awareness`] score.
#[derive(Debug)]
pub(crate) struct Health<T> {
    awareness: Awareness,
    probe: Option<Probe<T>>,
    /// Our identity and the highest incarnation it has been seen to claim.
    own: Option<(T, Incarnation)>,
}

impl<T: Clone + PartialEq> Health<T> {
    /// A healthy node.
    pub(crate) fn new(max_multiplier: u32) -> Health<T> {
        Health {
            awareness: Awareness::new(max_multiplier),
            probe: None,
            own: None,
        }
    }

    /// The current score.
    pub(crate) fn score(&self) -> u32 {
        self.awareness.score()
    }

    /// How long to wait before handing `timer` to foca, which asked for
    /// `after`: the probe cycle (`probe_period`) and the wait for a direct
    /// ack (`probe_rtt`) are stretched by the score. foca refuses to change
    /// those two in `set_config`, so they are scaled here, where its timers
    /// are scheduled; both timers of one cycle are scheduled together, so
    /// their order is kept.
    pub(crate) fn timer_delay(&self, timer: &Timer<T>, after: Duration) -> Duration {
        match timer {
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => {
                self.awareness.scale(after)
            }
            _ => after,
        }
    }

    /// foca gave up on a probe (`ProbeFailed`).
    pub(crate) fn probe_failed(&mut self) -> bool {
        self.probe = None;
        self.awareness.apply_delta(1)
    }

    /// foca sent `header`: a `Ping` starts a probe, and our own incarnation
    /// going up means we refuted a suspicion.
    pub(crate) fn sent(&mut self, header: &Header<T>) -> bool {
        if let Message::Ping(number) = header.message {
            self.probe = Some(Probe {
                number,
                target: header.dst.clone(),
                acked: false,
            });
        }
        if self.own.as_ref().is_some_and(|(id, _)| *id == header.src) {
            return self.refuted(&header.src, header.src_incarnation);
        }
        // First message, or one of a renewed identity: a new baseline.
        self.own = Some((header.src.clone(), header.src_incarnation));
        false
    }

    /// foca received `header`: an ack of the probe in flight, direct or
    /// forwarded, counts once.
    pub(crate) fn received(&mut self, header: &Header<T>) -> bool {
        let Some(probe) = self.probe.as_mut() else {
            return false;
        };
        let acks = match &header.message {
            Message::Ack(n) => *n == probe.number && header.src == probe.target,
            Message::ForwardedAck {
                origin,
                probe_number,
            } => *probe_number == probe.number && *origin == probe.target,
            _ => false,
        };
        if !acks || probe.acked {
            return false;
        }
        probe.acked = true;
        self.awareness.apply_delta(-1)
    }

    /// `id` (our identity) claims at least `incarnation` after refuting a
    /// suspicion; true if that raised the score.
    pub(crate) fn refuted(&mut self, id: &T, incarnation: Incarnation) -> bool {
        match &mut self.own {
            Some((own, known)) if own == id => {
                if incarnation <= *known {
                    return false;
                }
                *known = incarnation;
            }
            _ => self.own = Some((id.clone(), incarnation)),
        }
        self.awareness.apply_delta(1)
    }

    /// We renewed our identity after being declared failed.
    pub(crate) fn renewed(&mut self) -> bool {
        self.awareness.apply_delta(1)
    }

    /// The highest incarnation `id` (our identity) is known to have claimed:
    /// never above foca's own, which only grows within one identity.
    pub(crate) fn incarnation(&self, id: &T) -> Incarnation {
        match &self.own {
            Some((own, known)) if own == id => *known,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_stays_within_bounds() {
        let mut a = Awareness::new(MAX_MULTIPLIER);
        assert_eq!(a.score(), 0);
        assert!(!a.apply_delta(-1), "already at 0");
        for want in 1..MAX_MULTIPLIER {
            assert!(a.apply_delta(1));
            assert_eq!(a.score(), want);
        }
        assert!(!a.apply_delta(1), "capped at max - 1");
        assert_eq!(a.score(), MAX_MULTIPLIER - 1);
        assert!(a.apply_delta(-3));
        assert_eq!(a.score(), MAX_MULTIPLIER - 4);
        assert!(a.apply_delta(i32::MIN));
        assert_eq!(a.score(), 0);
        assert!(a.apply_delta(i32::MAX));
        assert_eq!(a.score(), MAX_MULTIPLIER - 1);

        for max in [0, 1] {
            let mut off = Awareness::new(max);
            assert!(!off.apply_delta(5));
            assert_eq!(off.score(), 0);
        }
    }

    #[test]
    fn timeouts_scale_by_score_plus_one() {
        let mut a = Awareness::new(MAX_MULTIPLIER);
        let d = Duration::from_millis(200);
        assert_eq!(a.scale(d), d);
        a.apply_delta(3);
        assert_eq!(a.scale(d), Duration::from_millis(800));
        a.apply_delta(100);
        assert_eq!(a.scale(d), d * MAX_MULTIPLIER);
        assert_eq!(a.scale(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn only_probe_timers_are_stretched() {
        let mut h = Health::<u8>::new(MAX_MULTIPLIER);
        h.probe_failed();
        h.probe_failed();
        let d = Duration::from_millis(100);
        let probe = Timer::ProbeRandomMember(0);
        let indirect = Timer::SendIndirectProbe {
            probed_id: 1,
            token: 0,
        };
        assert_eq!(h.timer_delay(&probe, d), d * 3);
        assert_eq!(h.timer_delay(&indirect, d), d * 3);
        let down = Timer::ChangeSuspectToDown {
            member_id: 1,
            incarnation: 0,
            token: 0,
        };
        assert_eq!(h.timer_delay(&down, d), d);
        assert_eq!(h.timer_delay(&Timer::PeriodicGossip(0), d), d);
        assert_eq!(h.timer_delay(&Timer::RemoveDown(1), d), d);
    }

    fn header(src: u8, dst: u8, src_incarnation: Incarnation, message: Message<u8>) -> Header<u8> {
        Header {
            src,
            src_incarnation,
            dst,
            message,
        }
    }

    #[test]
    fn failed_probes_raise_and_acks_of_the_current_probe_lower() {
        let mut h = Health::<u8>::new(MAX_MULTIPLIER);
        assert!(h.probe_failed());
        assert!(h.probe_failed());
        assert_eq!(h.score(), 2);

        // We (0) probe 1 with probe number 5.
        h.sent(&header(0, 1, 0, Message::Ping(5)));
        // Not acks of that probe: another number, another sender, a ping.
        assert!(!h.received(&header(1, 0, 0, Message::Ack(4))));
        assert!(!h.received(&header(2, 0, 0, Message::Ack(5))));
        assert!(!h.received(&header(1, 0, 0, Message::Ping(5))));
        assert_eq!(h.score(), 2);
        assert!(h.received(&header(1, 0, 0, Message::Ack(5))));
        assert_eq!(h.score(), 1);
        // The same probe acknowledged again (late ack, forwarded ack) counts
        // once.
        assert!(!h.received(&header(1, 0, 0, Message::Ack(5))));
        let forwarded = |origin, probe_number| Message::ForwardedAck {
            origin,
            probe_number,
        };
        assert!(!h.received(&header(2, 0, 0, forwarded(1, 5))));

        // Next probe, of 2, acknowledged through helper 1.
        h.sent(&header(0, 2, 0, Message::Ping(6)));
        assert!(!h.received(&header(1, 0, 0, forwarded(3, 6))));
        assert!(h.received(&header(1, 0, 0, forwarded(2, 6))));
        assert_eq!(h.score(), 0);

        // Once a probe has failed, a late ack of it does nothing.
        h.sent(&header(0, 1, 0, Message::Ping(7)));
        h.probe_failed();
        assert!(!h.received(&header(1, 0, 0, Message::Ack(7))));
        assert_eq!(h.score(), 1);
    }

    #[test]
    fn refuting_raises_once_per_incarnation() {
        let mut h = Health::<u8>::new(MAX_MULTIPLIER);
        assert_eq!(h.incarnation(&0), 0);
        assert!(!h.sent(&header(0, 1, 0, Message::Gossip)), "baseline");
        assert!(!h.sent(&header(0, 1, 0, Message::Gossip)));
        // foca bumped our incarnation: it refuted a suspicion.
        assert!(h.sent(&header(0, 1, 1, Message::Gossip)));
        assert_eq!((h.score(), h.incarnation(&0)), (1, 1));
        // A TCP ping made us refute incarnation 1 -> at least 2; the sends
        // that follow at 2 do not count it again.
        assert!(h.refuted(&0, 2));
        assert!(!h.sent(&header(0, 2, 2, Message::Gossip)));
        assert!(!h.refuted(&0, 2), "stale suspicion");
        assert_eq!((h.score(), h.incarnation(&0)), (2, 2));

        // A renewed identity counts, and starts a new baseline at 0.
        assert!(h.renewed());
        assert_eq!(h.incarnation(&9), 0);
        assert!(!h.sent(&header(9, 1, 0, Message::Gossip)));
        assert_eq!((h.score(), h.incarnation(&9)), (3, 0));
        assert_eq!(h.incarnation(&0), 0, "the old life is forgotten");
    }
}
