//! The outbound path of an upstream listener: pick an endpoint (round robin,
//! failing over on connect errors) → originate mTLS that must reach the
//! destination's identity → forward. An L7 upstream hands the connection
//! to [`crate::outbound_http`] instead, which routes each request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::forward::{forward, Outcome};
use crate::metrics::OUTBOUND;
use crate::outbound_http;
use crate::proxy::Shared;

/// Serves one connection from the local app on `destination`'s listener.
/// `turn` is this connection's place in the listener's round robin.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    destination: &str,
    turn: usize,
    shared: &Arc<Shared>,
) {
    let stats = &shared.stats.outbound;
    let snapshot = shared.snapshot();
    if snapshot.routers.contains_key(destination) {
        drop(snapshot);
        stats.on_established();
        debug!(destination, %peer, "outbound HTTP connection established");
        outbound_http::serve(stream, peer, destination.to_owned(), shared.clone()).await;
        return;
    }
    let (Some(upstream), Some(tls)) = (
        snapshot.config.upstream(destination),
        snapshot.tls.upstreams.get(destination),
    ) else {
        // Removed by an update while this connection was accepted.
        stats.on_failed();
        return;
    };
    let connector = tls.connector.clone();
    let server_name = tls.server_name.clone();
    let endpoints = upstream.endpoints.clone();
    let config = &snapshot.config;
    let (connect_timeout, handshake_timeout, idle_timeout) = (
        config.connect_timeout,
        config.handshake_timeout,
        config.idle_timeout,
    );
    drop(snapshot);

    let Some((endpoint, tcp)) = connect_any(&endpoints, turn, connect_timeout).await else {
        stats.on_failed();
        warn!(
            destination,
            endpoints = endpoints.len(),
            "no endpoint of the upstream is reachable"
        );
        return;
    };
    let tls = match timeout(handshake_timeout, connector.connect(server_name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            stats.on_failed();
            shared.metrics.handshake_failures(OUTBOUND).inc();
            warn!(destination, %endpoint, %error, "upstream TLS handshake failed");
            return;
        }
        Err(_) => {
            stats.on_failed();
            shared.metrics.handshake_failures(OUTBOUND).inc();
            warn!(destination, %endpoint, "upstream TLS handshake timed out");
            return;
        }
    };
    stats.on_established();
    debug!(destination, %endpoint, %peer, "outbound connection established");
    match forward(stream, tls, idle_timeout).await {
        Ok(Outcome::Closed { a_to_b, b_to_a }) => {
            let (request_bytes, response_bytes) = shared.metrics.bytes(OUTBOUND, destination);
            request_bytes.inc_by(a_to_b);
            response_bytes.inc_by(b_to_a);
            debug!(
                destination,
                bytes_out = a_to_b,
                bytes_in = b_to_a,
                "outbound connection closed"
            );
        }
        Ok(Outcome::Idle) => debug!(destination, "outbound connection closed: idle"),
        Err(error) => debug!(destination, %error, "outbound connection ended with an error"),
    }
}

/// Connects to the endpoint whose turn it is, or failing that to each next
/// one in order, every attempt bounded by `connect_timeout`.
async fn connect_any(
    endpoints: &[SocketAddr],
    turn: usize,
    connect_timeout: Duration,
) -> Option<(SocketAddr, TcpStream)> {
    let n = endpoints.len();
    for i in 0..n {
        let endpoint = endpoints[(turn.wrapping_add(i)) % n];
        match timeout(connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Some((endpoint, tcp));
            }
            Ok(Err(error)) => {
                debug!(%endpoint, %error, "upstream endpoint refused, trying the next")
            }
            Err(_) => debug!(%endpoint, "upstream endpoint timed out, trying the next"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn fails_over_to_the_next_endpoint_and_rotates() {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let down_addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let endpoints = [down_addr, up_addr];
        let t = Duration::from_secs(5);
        for turn in 0..4 {
            let (endpoint, _tcp) = connect_any(&endpoints, turn, t).await.unwrap();
            assert_eq!(endpoint, up_addr);
        }

        let both_up = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            (l.local_addr().unwrap(), l)
        };
        let endpoints = [up_addr, both_up.0];
        assert_eq!(connect_any(&endpoints, 0, t).await.unwrap().0, up_addr);
        assert_eq!(connect_any(&endpoints, 1, t).await.unwrap().0, both_up.0);
        assert_eq!(connect_any(&endpoints, 2, t).await.unwrap().0, up_addr);

        assert!(connect_any(&[down_addr], 0, t).await.is_none());
        assert!(connect_any(&[], 0, t).await.is_none());
    }
}
