//! Connection counters, shared by every connection task of a proxy.
//!
//! The counters are prometheus-client metrics registered in the proxy's
//! registry ([`crate::metrics`]), so `/metrics` and [`ProxyStats`] read the
//! same numbers.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// The counters of one proxy, by direction. Shared through an `Arc`
/// ([`crate::Proxy::stats`]); reads are relaxed snapshots.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// The public listener: mTLS in, to the local app.
    pub inbound: DirectionStats,
    /// The upstream listeners: from the local app, mTLS out.
    pub outbound: DirectionStats,
}

/// The counters of one direction. Every accepted connection ends up counted
/// once as established, denied or failed (an accepted connection that is
/// still being set up is none of these yet).
#[derive(Debug, Default)]
pub struct DirectionStats {
    accepted: Counter,
    established: Counter,
    denied: Counter,
    failed: Counter,
    active: Gauge,
}

impl DirectionStats {
    /// Counters that are also the given registered metrics.
    pub(crate) fn registered(
        accepted: Counter,
        established: Counter,
        denied: Counter,
        failed: Counter,
        active: Gauge,
    ) -> Self {
        Self {
            accepted,
            established,
            denied,
            failed,
            active,
        }
    }

    /// TCP connections accepted by a listener.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Connections that got as far as forwarding bytes (or, on an HTTP
    /// listener, serving requests).
    pub fn established(&self) -> u64 {
        self.established.get()
    }

    /// Connections refused by an intention (inbound, L4 only: an HTTP
    /// listener denies requests, which `/metrics` counts).
    pub fn denied(&self) -> u64 {
        self.denied.get()
    }

    /// Connections that failed before forwarding: TLS handshake refused or
    /// timed out, no endpoint reachable, local app down.
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }

    /// Connections open right now, from accept to close.
    pub fn active(&self) -> u64 {
        u64::try_from(self.active.get()).unwrap_or(0)
    }

    pub(crate) fn on_accept(&self) {
        self.accepted.inc();
        self.active.inc();
    }

    pub(crate) fn on_close(&self) {
        self.active.dec();
    }

    pub(crate) fn on_established(&self) {
        self.established.inc();
    }

    pub(crate) fn on_denied(&self) {
        self.denied.inc();
    }

    pub(crate) fn on_failed(&self) {
        self.failed.inc();
    }
}
