//! The UDP and TCP loops around an answerer: a [`crate::DnsServer`] that
//! answers from its catalog, or anything else that turns a query into a
//! reply (a client agent forwards queries to a server).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{timeout, Instant};

use crate::config::DnsConfig;

/// Size of a DNS message on UDP without EDNS0 (RFC 1035): what a UDP query
/// is answered within unless it advertises more.
pub const CLASSIC_UDP_SIZE: usize = 512;

/// Largest message TCP framing can carry.
pub const MAX_TCP_SIZE: usize = 65535;

/// Consecutive UDP receive errors after which `serve` gives up.
const MAX_UDP_ERRORS: u32 = 100;

/// Pause after a failed TCP accept (out of file descriptors, say), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A reply on its way: `None` when the query gets no reply at all.
pub type AnswerFuture<'a> = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'a>>;

/// Turns one query message into its reply, wire bytes in and out, within
/// `max_size` bytes (see [`crate::DnsServer::answer`]).
pub trait Answer: Send + Sync + 'static {
    /// Answers `query`.
    fn answer(&self, query: Vec<u8>, max_size: usize) -> AnswerFuture<'_>;
}

/// How TCP connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections at most. A connection accepted beyond this sheds an
    /// open one (the longest idle, else the longest busy), so a flood of
    /// idle or stalled connections cannot lock new clients out.
    pub max_connections: usize,
    /// A connection that has not begun a query for this long is closed.
    pub idle_timeout: Duration,
    /// Reading the rest of a query once its first byte has arrived, or
    /// writing a reply, may take this long.
    pub io_timeout: Duration,
}

impl From<&DnsConfig> for TcpLimits {
    fn from(c: &DnsConfig) -> Self {
        TcpLimits {
            max_connections: c.tcp_max_connections,
            idle_timeout: c.tcp_idle_timeout,
            io_timeout: c.tcp_io_timeout,
        }
    }
}

/// Serves on an already-bound UDP socket and TCP listener until the future
/// is dropped (which also closes every open TCP connection).
///
/// UDP queries are answered inline, in arrival order; each TCP connection
/// gets a task of its own, answering its queries (2-byte length framing) one
/// after another until the client closes it, stays idle too long, or is shed
/// to make room for a new one.
pub async fn serve(
    answerer: Arc<dyn Answer>,
    limits: TcpLimits,
    udp: UdpSocket,
    tcp: TcpListener,
) -> io::Result<()> {
    tokio::try_join!(
        serve_udp(answerer.clone(), udp),
        serve_tcp(answerer, limits, tcp)
    )?;
    Ok(())
}

async fn serve_udp(answerer: Arc<dyn Answer>, socket: UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_TCP_SIZE];
    let mut errors = 0;
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => {
                errors = 0;
                received
            }
            // ICMP errors from earlier sends surface here on some
            // systems; they concern one client, not the socket.
            Err(err) => {
                errors += 1;
                if errors >= MAX_UDP_ERRORS {
                    return Err(err);
                }
                tracing::debug!(%err, "DNS UDP receive failed");
                continue;
            }
        };
        let Some(response) = answerer.answer(buf[..len].to_vec(), CLASSIC_UDP_SIZE).await else {
            continue;
        };
        if let Err(err) = socket.send_to(&response, peer).await {
            tracing::debug!(%err, %peer, "DNS UDP send failed");
        }
    }
}

/// What a connection's task tells the accept loop, which picks the
/// connection to shed when a new one arrives at the limit.
struct Progress {
    /// When the accept loop started: the zero of `since_ms`.
    epoch: Instant,
    /// When the connection last became idle (accepted, or a reply sent) or
    /// busy (a query began), in milliseconds since the loop's start.
    since_ms: AtomicU64,
    /// True from a query's first byte until its reply is written.
    busy: AtomicBool,
}

impl Progress {
    fn mark(&self, busy: bool) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Relaxed);
        self.busy.store(busy, Ordering::Relaxed);
    }

    /// Sorts the connection to shed first: idle before busy, then the one
    /// that has been so longest.
    fn shed_order(&self) -> (bool, u64) {
        (
            self.busy.load(Ordering::Relaxed),
            self.since_ms.load(Ordering::Relaxed),
        )
    }
}

/// An open connection, as the accept loop keeps it.
struct Open {
    task: AbortHandle,
    progress: Arc<Progress>,
}

async fn serve_tcp(
    answerer: Arc<dyn Answer>,
    limits: TcpLimits,
    listener: TcpListener,
) -> io::Result<()> {
    let epoch = Instant::now();
    // Connections live in this set, so dropping the future ends them.
    let mut connections = JoinSet::new();
    let mut open: HashMap<tokio::task::Id, Open> = HashMap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if open.len() >= limits.max_connections {
                        shed(&mut open, peer);
                    }
                    let progress = Arc::new(Progress {
                        epoch,
                        since_ms: AtomicU64::new(0),
                        busy: AtomicBool::new(false),
                    });
                    progress.mark(false);
                    let task = connections.spawn(serve_connection(
                        answerer.clone(),
                        limits,
                        stream,
                        peer,
                        progress.clone(),
                    ));
                    open.insert(task.id(), Open { task, progress });
                }
                Err(err) => {
                    tracing::warn!(%err, "DNS TCP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(err) => err.id(),
                };
                open.remove(&id);
            }
        }
    }
}

/// Closes the open connection that has been idle longest (or, when all are
/// busy, busy longest) to make room for one from `peer`.
fn shed(open: &mut HashMap<tokio::task::Id, Open>, peer: SocketAddr) {
    let victim = open
        .iter()
        .min_by_key(|(_, conn)| conn.progress.shed_order())
        .map(|(id, _)| *id);
    if let Some(conn) = victim.and_then(|id| open.remove(&id)) {
        tracing::debug!(%peer, "too many DNS TCP connections; closing the longest idle");
        conn.task.abort();
    }
}

async fn serve_connection(
    answerer: Arc<dyn Answer>,
    limits: TcpLimits,
    mut stream: TcpStream,
    peer: SocketAddr,
    progress: Arc<Progress>,
) {
    let _ = stream.set_nodelay(true);
    let mut out = Vec::new();
    loop {
        progress.mark(false);
        let mut len = [0u8; 2];
        match timeout(limits.idle_timeout, stream.read_exact(&mut len[..1])).await {
            Ok(Ok(_)) => {}
            // Closed, failed or idle: the connection is done.
            _ => return,
        }
        progress.mark(true);
        // Once a query has begun, all of it must arrive in time: a client
        // that sends part of one and stalls is not waited for.
        let read = async {
            stream.read_exact(&mut len[1..]).await?;
            let len = usize::from(u16::from_be_bytes(len));
            let mut query = vec![0u8; len];
            stream.read_exact(&mut query).await?;
            io::Result::Ok(query)
        };
        let query = match timeout(limits.io_timeout, read).await {
            Ok(Ok(query)) if !query.is_empty() => query,
            Ok(Ok(_)) => return,
            _ => {
                tracing::debug!(%peer, "DNS TCP query not read in time");
                return;
            }
        };
        let Some(response) = answerer.answer(query, MAX_TCP_SIZE).await else {
            continue;
        };
        let Ok(response_len) = u16::try_from(response.len()) else {
            return;
        };
        // One write, so the length and the message leave in one segment.
        out.clear();
        out.extend_from_slice(&response_len.to_be_bytes());
        out.extend_from_slice(&response);
        match timeout(limits.io_timeout, stream.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
