//! The mesh data plane: listeners, mTLS, L4 forwarding and L7 routing.
//!
//! The proxy knows nothing of Raft or the catalog: it consumes a versioned
//! `ProxyConfig` pushed by the local agent. The Connect issue gives it its body.
