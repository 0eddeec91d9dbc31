//! The mesh data plane: a sidecar proxy that carries a service's traffic
//! over mutual TLS with SPIFFE identities.
//!
//! The proxy knows nothing of Raft or the catalog. The local agent computes
//! one versioned [`ProxyConfig`] per proxy — identity, leaf certificate and
//! roots, listeners, upstream endpoints, intentions — and pushes each new
//! version; [`Proxy::update`] swaps it in atomically (an `arc-swap` pointer)
//! without a restart, and open connections survive it.
//!
//! Two paths, each a short chain of small steps in its own module:
//!
//! - **Inbound** (the public listener, [`PublicListener`]): accept TCP →
//!   terminate mTLS, requiring a client certificate that chains to the
//!   roots (`mesh-ca`'s verifier) → read the peer's SPIFFE ID → authorise
//!   it by [`IntentionRule`]s → connect to the local app → forward. With an
//!   L7 [`Protocol`] the listener parses HTTP/1.1 and HTTP/2 (ALPN) instead
//!   and authorises each request, L7 [`Permission`]s included (403 `RBAC:
//!   access denied`), forwarding allowed ones over pooled connections.
//! - **Outbound** (one listener per [`Upstream`]): accept plain TCP from the
//!   local app → pick a destination sidecar (round robin, failing over on
//!   connect errors) → originate mTLS with the leaf, accepting only a server
//!   whose SPIFFE ID names the destination → forward. An upstream with an
//!   L7 protocol and a [`Chain`] parses HTTP/1.1 and HTTP/2 (prior
//!   knowledge, gRPC) instead and, per request, takes the first matching
//!   [`Route`] → a weighted [`Split`] → its [`Target`] (or the target's
//!   failover) → a load-balanced endpoint that outlier detection has not
//!   ejected → a pooled mTLS connection verified against the target's
//!   service, with retries, timeouts, prefix rewrite and header changes.
//!
//! Metrics (connections, requests, latency, retries, timeouts, bytes,
//! denials, handshake failures, leaf expiry, config version) are
//! prometheus-client metrics, served at `/metrics` on
//! [`ProxyConfig::metrics_bind`]; [`ProxyStats`] reads the same counters.
//!
//! Forwarding copies both ways with half-close and closes idle connections.
//!
//! ```no_run
//! # async fn run(config: mesh_proxy::ProxyConfig) -> Result<(), mesh_proxy::ProxyError> {
//! use std::time::Duration;
//!
//! let proxy = mesh_proxy::Proxy::start(config.clone()).await?;
//! println!("public listener on {:?}", proxy.public_addr());
//! // ... later, from the agent's config stream:
//! proxy.update(mesh_proxy::ProxyConfig { version: config.version + 1, ..config }).await?;
//! proxy.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod authz;
mod balance;
mod chain;
mod client;
mod config;
mod error;
mod forward;
mod http;
mod inbound;
mod inbound_http;
mod listener;
mod matching;
mod metrics;
mod outbound;
mod outbound_http;
mod proxy;
mod router;
mod stats;
mod tls;

pub use chain::{
    Chain, HashPolicy, HeaderChanges, HeaderMatch, HttpMatch, LbPolicy, LoadBalancer,
    OutlierDetection, Permission, Protocol, QueryParamMatch, Route, Split, Target,
};
pub use config::{
    IntentionRule, ProxyConfig, PublicListener, Upstream, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
};
pub use error::ProxyError;
pub use proxy::Proxy;
pub use stats::{DirectionStats, ProxyStats};
