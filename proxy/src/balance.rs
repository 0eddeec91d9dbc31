//! Endpoints of L7 targets: their live state (requests in flight, passive
//! outlier detection) and the load balancers that pick one per request.
//!
//! Endpoint state lives in an [`EndpointTable`] the proxy keeps across config
//! versions, so an ejection or an in-flight count survives a config update
//! that still lists the endpoint. Picking takes no lock: every counter is an
//! atomic.
//!
//! Outlier detection is passive, as Envoy's `consecutive_5xx`: an endpoint
//! that answers the upstream's `MaxFailures` 5xx responses (or refused
//! connections) in a row is ejected for its `BaseEjectionTime` times the
//! number of times it was ejected before (capped; see
//! [`crate::OutlierDetection`]). An ejected endpoint is skipped while a target
//! has another one; a target whose endpoints are all ejected is treated as
//! having none healthy (failover applies), and when nothing else is left the
//! ejected endpoints serve anyway: ejection never takes every endpoint away.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use hyper::header::COOKIE;
use hyper::Request;
use rand::Rng;
use tokio::time::Instant;

use crate::chain::{HashPolicy, LbPolicy, LoadBalancer, OutlierDetection};

/// An ejection lasts at most this many times the base ejection time.
const MAX_EJECTION_FACTOR: u32 = 10;
/// Points each endpoint gets on the hash ring.
const RING_POINTS_PER_ENDPOINT: usize = 64;

/// Entries in a Maglev lookup table: a prime, Envoy's default size.
const MAGLEV_TABLE_SIZE: usize = 65_537;

/// The live state of one endpoint address.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// The endpoint.
    pub(crate) addr: SocketAddr,
    base: Instant,
    in_flight: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `base` until which the endpoint is ejected.
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
}

/// Every endpoint's state, by address. Shared by all config versions.
#[derive(Debug)]
pub(crate) struct EndpointTable {
    base: Instant,
    states: Mutex<HashMap<SocketAddr, Weak<EndpointState>>>,
}

/// Counts a request in flight on an endpoint until dropped.
pub(crate) struct InFlight(Arc<EndpointState>);

/// How a target's endpoints are picked.
#[derive(Debug)]
pub(crate) struct Balancer {
    policy: LbPolicy,
    hash_policies: Vec<HashPolicy>,
    next: AtomicUsize,
    /// For `ring_hash`: (point, endpoint index), sorted by point.
    ring: Vec<(u64, usize)>,
    /// For `maglev`: the lookup table, an endpoint index per slot.
    table: Vec<u32>,
}

// === impl EndpointTable ===

impl Default for EndpointTable {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            states: Mutex::default(),
        }
    }
}

impl EndpointTable {
    /// The state of `addr`, shared with every config version that lists it.
    pub(crate) fn get(&self, addr: SocketAddr) -> Arc<EndpointState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        // Forget endpoints no config lists any more.
        states.retain(|_, state| state.strong_count() > 0);
        let state = Arc::new(EndpointState {
            addr,
            base: self.base,
            in_flight: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        });
        states.insert(addr, Arc::downgrade(&state));
        state
    }
}

// === impl EndpointState ===

impl EndpointState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the endpoint is ejected right now.
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Records the outcome of one request (`ok`: neither a 5xx nor a connect
    /// failure). Returns true when this failure ejected the endpoint.
    pub(crate) fn record(&self, ok: bool, policy: &OutlierDetection) -> bool {
        let base = u64::try_from(policy.base_ejection_time.as_millis()).unwrap_or(u64::MAX);
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            // Back for a whole base period: the back-off starts over.
            let until = self.ejected_until_ms.load(Ordering::Relaxed);
            if until != 0 && self.now_ms() > until.saturating_add(base) {
                self.ejections.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.max_failures.max(1) || self.is_ejected() {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let times = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(MAX_EJECTION_FACTOR);
        let length = base.saturating_mul(u64::from(times));
        self.ejected_until_ms
            .store(self.now_ms().saturating_add(length), Ordering::Relaxed);
        true
    }

    /// Counts a request in flight until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Balancer ===

impl Balancer {
    /// A balancer over `endpoints` (their order fixes the hash ring).
    pub(crate) fn new(lb: &LoadBalancer, endpoints: &[SocketAddr]) -> Self {
        let ring = match lb.policy {
            LbPolicy::RingHash => {
                let mut ring: Vec<(u64, usize)> = endpoints
                    .iter()
                    .enumerate()
                    .flat_map(|(i, addr)| {
                        (0..RING_POINTS_PER_ENDPOINT).map(move |point| (hash_of(&(addr, point)), i))
                    })
                    .collect();
                ring.sort_unstable();
                ring
            }
            _ => Vec::new(),
        };
        let table = match lb.policy {
            LbPolicy::Maglev => maglev_table(endpoints, MAGLEV_TABLE_SIZE),
            _ => Vec::new(),
        };
        Self {
            policy: lb.policy,
            hash_policies: lb.hash_policies.clone(),
            next: AtomicUsize::new(0),
            ring,
            table,
        }
    }

    /// Picks one of `endpoints` for `req` from `peer`: among those neither
    /// ejected nor in `tried`, else among those not tried, else among all.
    /// `None` only when `endpoints` is empty.
    pub(crate) fn pick<B>(
        &self,
        endpoints: &[Arc<EndpointState>],
        tried: &[SocketAddr],
        req: &Request<B>,
        peer: SocketAddr,
    ) -> Option<Arc<EndpointState>> {
        let fresh = |e: &&Arc<EndpointState>| !tried.contains(&e.addr);
        let mut candidates: Vec<usize> = (0..endpoints.len())
            .filter(|&i| fresh(&&endpoints[i]) && !endpoints[i].is_ejected())
            .collect();
        if candidates.is_empty() {
            candidates = (0..endpoints.len())
                .filter(|&i| fresh(&&endpoints[i]))
                .collect();
        }
        if candidates.is_empty() {
            candidates = (0..endpoints.len()).collect();
        }
        let n = candidates.len();
        let chosen = match self.policy {
            _ if n <= 1 => *candidates.first()?,
            LbPolicy::RoundRobin => candidates[self.next.fetch_add(1, Ordering::Relaxed) % n],
            LbPolicy::Random => candidates[rand::thread_rng().gen_range(0..n)],
            LbPolicy::LeastRequest => {
                // The better of two random choices.
                let mut rng = rand::thread_rng();
                let a = candidates[rng.gen_range(0..n)];
                let b = candidates[rng.gen_range(0..n)];
                if endpoints[b].in_flight() < endpoints[a].in_flight() {
                    b
                } else {
                    a
                }
            }
            LbPolicy::RingHash | LbPolicy::Maglev => match self.request_hash(req, peer) {
                Some(hash) if self.policy == LbPolicy::Maglev => {
                    self.in_table(hash, &candidates)?
                }
                Some(hash) => self.on_ring(hash, &candidates)?,
                None => candidates[rand::thread_rng().gen_range(0..n)],
            },
        };
        endpoints.get(chosen).cloned()
    }

    /// The first candidate clockwise from `hash` on the ring.
    fn on_ring(&self, hash: u64, candidates: &[usize]) -> Option<usize> {
        let start = self.ring.partition_point(|(point, _)| *point < hash);
        let (after, before) = self.ring.split_at(start);
        before
            .iter()
            .chain(after)
            .map(|(_, i)| *i)
            .find(|i| candidates.contains(i))
    }

    /// The candidate in `hash`'s slot of the Maglev table, or in the next
    /// slot holding a candidate (the chosen one was tried or ejected).
    fn in_table(&self, hash: u64, candidates: &[usize]) -> Option<usize> {
        let len = self.table.len();
        let start = (hash % len as u64) as usize;
        (0..len)
            .map(|step| self.table[(start + step) % len] as usize)
            .find(|i| candidates.contains(i))
    }

    /// The request's hash from the hash policies, in order; `None` when no
    /// policy produced anything.
    fn request_hash<B>(&self, req: &Request<B>, peer: SocketAddr) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        let mut any = false;
        for policy in &self.hash_policies {
            let value = policy_value(policy, req, peer);
            if let Some(value) = &value {
                value.hash(&mut hasher);
                any = true;
            }
            if value.is_some() && policy.terminal {
                break;
            }
        }
        any.then(|| hasher.finish())
    }
}

/// What one hash policy takes from a request.
fn policy_value<B>(policy: &HashPolicy, req: &Request<B>, peer: SocketAddr) -> Option<Vec<u8>> {
    if policy.source_ip {
        return Some(peer.ip().to_string().into_bytes());
    }
    let name = policy.field_value.as_str();
    match policy.field.as_str() {
        "header" => req.headers().get(name).map(|v| v.as_bytes().to_vec()),
        "cookie" => req
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        "query_parameter" => req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        _ => None,
    }
}

/// Maglev's lookup table (Eisenbud et al., NSDI 2016) of `size` slots (a
/// prime) over `endpoints`: each endpoint walks its own permutation of the
/// slots, taking turns, so every endpoint gets `size / n` slots (±1) and a
/// change of endpoints moves few of them.
fn maglev_table(endpoints: &[SocketAddr], size: usize) -> Vec<u32> {
    let n = endpoints.len();
    if n == 0 {
        return Vec::new();
    }
    let perms: Vec<(usize, usize)> = endpoints
        .iter()
        .map(|addr| {
            let offset = (hash_of(&(addr, "offset")) % size as u64) as usize;
            let skip = (hash_of(&(addr, "skip")) % (size as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![u32::MAX; size];
    let mut next = vec![0usize; n];
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % size;
            while table[slot] != u32::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % size;
            }
            table[slot] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    table
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(table: &EndpointTable, n: u16) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| table.get(SocketAddr::from(([127, 0, 0, 1], 20000 + i))))
            .collect()
    }

    fn req(header: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri("/");
        if let Some(v) = header {
            builder = builder.header("x-user", v);
        }
        builder.body(()).unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn balancer(policy: LbPolicy, eps: &[Arc<EndpointState>]) -> Balancer {
        let addrs: Vec<SocketAddr> = eps.iter().map(|e| e.addr).collect();
        let lb = LoadBalancer {
            policy,
            hash_policies: vec![HashPolicy {
                field: "header".into(),
                field_value: "x-user".into(),
                ..HashPolicy::default()
            }],
        };
        Balancer::new(&lb, &addrs)
    }

    #[test]
    fn round_robin_skips_tried_and_ejected_endpoints() {
        let table = EndpointTable::default();
        let eps = endpoints(&table, 3);
        let b = balancer(LbPolicy::RoundRobin, &eps);
        let picks: Vec<u16> = (0..6)
            .map(|_| b.pick(&eps, &[], &req(None), peer()).unwrap().addr.port())
            .collect();
        assert_eq!(picks, [20000, 20001, 20002, 20000, 20001, 20002]);

        let tried = [eps[0].addr, eps[1].addr];
        for _ in 0..3 {
            assert_eq!(
                b.pick(&eps, &tried, &req(None), peer()).unwrap().addr,
                eps[2].addr
            );
        }

        let policy = OutlierDetection::default();
        for _ in 0..policy.max_failures - 1 {
            assert!(!eps[2].record(false, &policy));
        }
        assert!(eps[2].record(false, &policy));
        assert!(eps[2].is_ejected());
        for _ in 0..4 {
            assert_ne!(
                b.pick(&eps, &[], &req(None), peer()).unwrap().addr,
                eps[2].addr
            );
        }
        // With the others tried, the ejected one still serves.
        assert_eq!(
            b.pick(&eps, &tried, &req(None), peer()).unwrap().addr,
            eps[2].addr
        );
        // Same address in a later config version: still ejected.
        assert!(table.get(eps[2].addr).is_ejected());
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let table = EndpointTable::default();
        let ep = table.get("127.0.0.1:9".parse().unwrap());
        let policy = OutlierDetection::default();
        for _ in 0..3 {
            for _ in 0..policy.max_failures - 1 {
                assert!(!ep.record(false, &policy));
            }
            assert!(!ep.record(true, &policy));
        }
        assert!(!ep.is_ejected());
    }

    #[test]
    fn the_upstreams_policy_sets_the_threshold_and_the_back_off() {
        use std::time::Duration;

        let table = EndpointTable::default();
        let ep = table.get("127.0.0.1:9".parse().unwrap());
        let policy = OutlierDetection {
            max_failures: 2,
            base_ejection_time: Duration::from_secs(600),
        };
        assert!(!ep.record(false, &policy));
        assert!(ep.record(false, &policy), "ejected after 2");
        let until = ep.ejected_until_ms.load(Ordering::Relaxed);
        assert!(until >= ep.now_ms() + 599_000, "for the base ejection time");
        // Zero failures would never eject; it counts as one.
        let other = table.get("127.0.0.1:10".parse().unwrap());
        let zero = OutlierDetection {
            max_failures: 0,
            ..policy
        };
        assert!(other.record(false, &zero));
    }

    #[test]
    fn consistent_hashing_sticks_and_spreads() {
        let table = EndpointTable::default();
        let eps = endpoints(&table, 4);
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let b = balancer(policy, &eps);
            let mut seen = std::collections::HashSet::new();
            for user in 0..64 {
                let user = user.to_string();
                let first = b.pick(&eps, &[], &req(Some(&user)), peer()).unwrap().addr;
                for _ in 0..3 {
                    let again = b.pick(&eps, &[], &req(Some(&user)), peer()).unwrap().addr;
                    assert_eq!(again, first);
                }
                seen.insert(first);
            }
            assert_eq!(seen.len(), 4, "{policy:?} used only {seen:?}");
        }
    }

    #[test]
    fn the_maglev_table_is_balanced_and_moves_little_when_an_endpoint_goes() {
        let addrs: Vec<SocketAddr> = (0..5u16)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 8000 + i)))
            .collect();
        let size = 1009;
        let table = maglev_table(&addrs, size);
        let mut per = [0usize; 5];
        for &i in &table {
            per[i as usize] += 1;
        }
        for count in per {
            assert!((size / 5..=size / 5 + 1).contains(&count), "{per:?}");
        }
        // Without the last endpoint, the slots of the others mostly stay.
        let fewer = maglev_table(&addrs[..4], size);
        let kept = table
            .iter()
            .zip(&fewer)
            .filter(|(a, b)| **a != 4 && a == b)
            .count();
        let owned = table.iter().filter(|a| **a != 4).count();
        assert!(
            kept * 10 >= owned * 8,
            "only {kept} of {owned} slots stayed"
        );
        assert!(maglev_table(&[], size).is_empty());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let table = EndpointTable::default();
        let eps = endpoints(&table, 2);
        let b = balancer(LbPolicy::LeastRequest, &eps);
        let _busy: Vec<InFlight> = (0..5).map(|_| eps[0].start()).collect();
        let idle = (0..50)
            .filter(|_| b.pick(&eps, &[], &req(None), peer()).unwrap().addr == eps[1].addr)
            .count();
        // Two random choices pick the busy one only when both land on it.
        assert!(idle > 25, "{idle}");
        assert!(b.pick(&[], &[], &req(None), peer()).is_none());
    }
}
