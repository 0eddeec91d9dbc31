//! TCP checks: passing when a connection opens.

use super::Probe;
use crate::structs::status;
use std::time::Duration;

/// Connects to `addr` within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::new(status::PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => Probe::new(status::CRITICAL, format!("dial tcp {addr}: {e}")),
        Err(_) => Probe::new(status::CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}
