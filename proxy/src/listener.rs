//! Listeners: binding, the accept loop, and the per-connection task that
//! counts the connection and ends it when the proxy closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::proxy::Shared;
use crate::{inbound, metrics, outbound, ProxyError};

/// Which listener of a config: the public one or an upstream's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ListenerKey {
    /// The public (inbound) listener.
    Public,
    /// The listener of the upstream to this destination.
    Upstream(String),
    /// The Prometheus metrics listener.
    Metrics,
}

/// A running accept loop. Dropping the handle stops the loop; connections
/// it accepted carry on.
pub(crate) struct ListenerHandle {
    /// The address the config asked for (port 0 included): the listener is
    /// rebound only when this changes.
    pub(crate) configured: SocketAddr,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
    /// The socket, shared with the loop so another key can take it over.
    listener: Arc<TcpListener>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A bound socket, not yet accepting.
pub(crate) struct Bound {
    /// The socket.
    pub(crate) socket: Arc<TcpListener>,
    /// The address actually bound.
    pub(crate) local: SocketAddr,
}

/// Binds `addr`, naming it in the error.
pub(crate) async fn bind(addr: SocketAddr) -> Result<Bound, ProxyError> {
    let bind_err = |source| ProxyError::Bind { addr, source };
    let socket = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = socket.local_addr().map_err(bind_err)?;
    Ok(Bound {
        socket: Arc::new(socket),
        local,
    })
}

impl ListenerHandle {
    /// Starts accepting on `bound` for `key`.
    pub(crate) fn spawn(
        key: ListenerKey,
        configured: SocketAddr,
        bound: Bound,
        shared: Arc<Shared>,
        kill: watch::Receiver<bool>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let listener = bound.socket;
        let task = tokio::spawn(accept_loop(key, listener.clone(), shared, kill, stopped));
        Self {
            configured,
            local: bound.local,
            listener,
            stop,
            task,
        }
    }

    /// The bound socket, for another key to take over.
    pub(crate) fn bound(&self) -> Bound {
        Bound {
            socket: self.listener.clone(),
            local: self.local,
        }
    }

    /// Stops accepting and waits until the loop has let go of the socket.
    pub(crate) async fn close(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    key: ListenerKey,
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    // The round robin of an upstream listener (L4).
    let mut turn = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off a little
                // rather than spin.
                warn!(?key, %error, "accept failed");
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        match &key {
            // Scrapes are not mesh traffic: not counted.
            ListenerKey::Metrics => {
                let serve =
                    metrics::serve(stream, shared.metrics.clone(), shared.draining.subscribe());
                spawn_until_killed(&kill, serve);
            }
            ListenerKey::Public => {
                let guard = ConnectionGuard::new(shared.clone(), &key);
                spawn_until_killed(&kill, async move {
                    inbound::serve(stream, peer, &guard.shared).await;
                });
            }
            ListenerKey::Upstream(destination) => {
                let guard = ConnectionGuard::new(shared.clone(), &key);
                let destination = destination.clone();
                let this_turn = turn;
                turn = turn.wrapping_add(1);
                spawn_until_killed(&kill, async move {
                    outbound::serve(stream, peer, &destination, this_turn, &guard.shared).await;
                });
            }
        }
    }
}

/// Runs `connection` until it ends or the proxy closes every connection
/// (dropping it, and the guard it holds, then).
fn spawn_until_killed<F>(kill: &watch::Receiver<bool>, connection: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut kill = kill.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = connection => {}
            _ = kill.wait_for(|killed| *killed) => debug!("connection closed by proxy shutdown"),
        }
    });
}

/// Counts a connection from accept to close, in the stats and in the
/// proxy's drain tracker.
struct ConnectionGuard {
    shared: Arc<Shared>,
    inbound: bool,
}

impl ConnectionGuard {
    fn new(shared: Arc<Shared>, key: &ListenerKey) -> Self {
        let inbound = *key == ListenerKey::Public;
        let guard = Self { shared, inbound };
        guard.stats().on_accept();
        guard.shared.open.send_modify(|n| *n += 1);
        guard
    }

    fn stats(&self) -> &crate::DirectionStats {
        if self.inbound {
            &self.shared.stats.inbound
        } else {
            &self.shared.stats.outbound
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats().on_close();
        self.shared.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}
