//! Pooled connections to other servers' RPC ports, opened with the
//! handshake ([`super::handshake`]) as this agent's role.

use super::handshake::{self, Role, RpcAuth};
use super::wire::{Conn, WireError};
use super::{Request, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a connection attempt, handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept per address.
const MAX_IDLE_PER_ADDR: usize = 64;

/// How long an idle connection is kept: well inside the server's idle
/// timeout ([`super::server::RpcLimits`]), so a request is never sent on a
/// connection the server is closing.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The request was never sent: safe to retry elsewhere. A server
    /// that refused the handshake says why here.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The request may or may not have been handled.
    #[error("rpc to {addr}: {source}")]
    Wire {
        /// The address called.
        addr: String,
        /// What went wrong.
        source: WireError,
    },
    /// No answer in time; the request may or may not have been handled.
    #[error("rpc to {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The address called.
        addr: String,
        /// How long the caller waited.
        timeout: Duration,
    },
}

/// Connections to peers, reused across calls.
pub struct RpcPool {
    role: Role,
    auth: RpcAuth,
    idle: Mutex<HashMap<String, Vec<(Conn, Instant)>>>,
}

impl RpcPool {
    /// A pool whose connections speak as `role`, authenticated by `auth`.
    pub fn new(role: Role, auth: RpcAuth) -> RpcPool {
        RpcPool {
            role,
            auth,
            idle: Mutex::default(),
        }
    }

    /// Sends `req` to `addr` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        addr: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let mut conn = match self.take_idle(addr) {
            Some(c) => c,
            None => self.connect(addr).await?,
        };
        let exchange = async {
            conn.send(req).await?;
            conn.recv::<Response>().await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(resp)) => {
                self.put_idle(addr, conn);
                Ok(resp)
            }
            Ok(Err(source)) => Err(RpcError::Wire {
                addr: addr.to_string(),
                source,
            }),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        }
    }

    /// Closes every idle connection.
    pub fn forget_all(&self) {
        lock(&self.idle).clear();
    }

    /// Closes every idle connection to `addr` (after it failed).
    pub fn forget(&self, addr: &str) {
        lock(&self.idle).remove(addr);
    }

    /// An idle connection that is still open: one the peer closed while it
    /// sat in the pool (a restarted or killed server) is dropped here rather
    /// than failing the request sent on it.
    /// Connections idle for longer than [`MAX_IDLE_AGE`] are dropped too.
    fn take_idle(&self, addr: &str) -> Option<Conn> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < MAX_IDLE_AGE && conn.is_idle_and_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, addr: &str, conn: Conn) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push((conn, Instant::now()));
        }
    }

    /// Dials `addr` and opens the connection with the handshake.
    async fn connect(&self, addr: &str) -> Result<Conn, RpcError> {
        let fail = |reason: String| RpcError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let opening = async {
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            handshake::open(stream, self.role, &self.auth).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_the_peer_closed_while_idle_is_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pool = RpcPool::new(Role::Server, RpcAuth::default());
        let open = |s| Conn::new(super::super::wire::Stream::Plain(s), None);
        let (accepted, _) = tokio::join!(listener.accept(), async {
            pool.put_idle(&addr, open(TcpStream::connect(&addr).await.unwrap()));
        });
        let (server_side, _) = accepted.unwrap();
        assert!(
            pool.take_idle(&addr).is_some(),
            "an open idle connection is reused"
        );
        let (accepted, _) = tokio::join!(listener.accept(), async {
            pool.put_idle(&addr, open(TcpStream::connect(&addr).await.unwrap()));
        });
        drop(accepted.unwrap());
        drop(server_side);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            // The FIN may take a moment to arrive; once it has, the pool
            // must not hand the connection out.
            let taken = pool.take_idle(&addr);
            if taken.is_none() {
                break;
            }
            pool.put_idle(&addr, taken.unwrap());
            assert!(
                std::time::Instant::now() < deadline,
                "a closed connection was reused"
            );
            tokio::task::yield_now().await;
        }
    }
}
