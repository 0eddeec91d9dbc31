//! End-to-end tests: each starts the real `mesh` binary on ephemeral ports
//! and talks to it as users do, over HTTP, DNS and the CLI.

mod blocking;
mod ca;
mod catalog;
mod cli;
mod cli_tls;
mod client_connect;
mod cluster;
mod cluster_tls;
mod config;
mod connect;
mod dns;
mod filter;
mod health;
mod http_limits;
mod https;
mod kv;
mod l7;
mod l7_config;
mod mesh;
mod metrics;
mod mtls;
mod persistence;
mod proxy_config;
mod rpc;
mod session;
mod snapshot;
mod support;
mod tls_cli;
