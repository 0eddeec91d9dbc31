//! Connection counters, shared by every connection task of a proxy.
//!
//! Plain atomics for now; metrics export builds on them later.

use std::sync::atomic::{AtomicU64, Ordering};

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
    accepted: AtomicU64,
    established: AtomicU64,
    denied: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
}

impl DirectionStats {
    /// TCP connections accepted by a listener.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections that got as far as forwarding bytes.
    pub fn established(&self) -> u64 {
        self.established.load(Ordering::Relaxed)
    }

    /// Connections refused by an intention (inbound only).
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Connections that failed before forwarding: TLS handshake refused or
    /// timed out, no endpoint reachable, local app down.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Connections open right now, from accept to close.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn on_accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_close(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn on_established(&self) {
        self.established.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_denied(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}
