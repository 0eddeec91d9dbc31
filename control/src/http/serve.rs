//! The HTTP API's serving loop: accepts connections, refuses a client past
//! its connection limit, and serves each connection with HTTP/1.1 under
//! header and body read timeouts.
//!
//! Consul counts connections per client IP (`limits.http_max_conns_per_client`,
//! default 200) and answers one past the limit with a 429 before closing
//! it. Go's `net/http`, as Consul configures it, has no header or body
//! timeout on plain HTTP; here a client has [`HttpLimits::header_read_timeout`]
//! to send each request's headers (hyper's timer runs from the connection's
//! start, and again after each response, so it is also how long an idle
//! keep-alive connection stays open), and a request body may stall for at
//! most [`HttpLimits::body_read_timeout`]. Nothing times out while a handler
//! works, so blocking queries park for their full `wait`.

use crate::conn_limit::{ClientConns, ConnGuard};
use crate::tls::HttpsTls;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::{BoxError, Router};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The connection and read limits of the HTTP API (Consul's `limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// The most connections one client IP may hold open at once
    /// (`limits.http_max_conns_per_client`); 0 is no limit.
    pub max_conns_per_client: usize,
    /// How long a client has to send a request's headers, from the
    /// connection's opening or the end of the previous response.
    pub header_read_timeout: Duration,
    /// How long a request body may go without sending any bytes while the
    /// handler waits for them.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    /// Consul's 200 connections per client; 30 seconds for headers (hyper's
    /// default) and for a stalled body.
    fn default() -> Self {
        HttpLimits {
            max_conns_per_client: 200,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Consul's answer to a connection past the limit (go-connlimit's).
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
    Content-Type: text/plain\r\n\
    Content-Length: 81\r\n\
    Connection: close\r\n\r\n\
    Your IP is issuing too many concurrent connections, please rate limit your calls\n";

/// How long the 429 may take to write before the connection is dropped
/// anyway (Consul's 10 ms).
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(10);

/// How long to wait after an accept error that is not one connection's
/// (out of file descriptors, say) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` under `limits`, over TLS when `tls` is given
/// (the HTTPS port), until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<HttpsTls>>,
) -> Result<(), Infallible> {
    let conns = ClientConns::default();
    let limits = Arc::new(limits);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "accepting an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match conns.admit(remote.ip(), limits.max_conns_per_client) {
            Some(guard) => {
                let (app, limits, tls) = (app.clone(), limits.clone(), tls.clone());
                tokio::spawn(async move {
                    let Some(tls) = tls else {
                        return serve_connection(stream, remote, app, limits, guard).await;
                    };
                    // The handshake counts against the header timeout.
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(tls)) => serve_connection(tls, remote, app, limits, guard).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %remote, error = %e, "HTTPS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %remote, "HTTPS handshake timed out"),
                    }
                });
            }
            None => {
                tracing::debug!(client = %remote.ip(), "too many HTTP connections from one client");
                tokio::spawn(refuse(stream));
            }
        }
    }
}

/// Errors that concern one connection only.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Answers 429 and closes, as Consul does.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    })
    .await;
}

/// One connection: HTTP/1.1 with the header timeout, each request's body
/// under the body timeout and its peer's address as [`ConnectInfo`].
async fn serve_connection<S>(
    stream: S,
    remote: SocketAddr,
    app: Router,
    limits: Arc<HttpLimits>,
    _guard: ConnGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req: Request = req.map(|body| Body::new(TimedBody::new(body, body_timeout)));
        req.extensions_mut().insert(ConnectInfo(remote));
        app.clone().oneshot(req)
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::trace!(client = %remote, error = %e, "HTTP connection ended");
    }
}

// === impl TimedBody ===

/// A request body that fails once it has sent nothing for `timeout` while
/// being read.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Started when a read finds no data; cleared when data comes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            stalled: None,
        }
    }
}

/// A request body that stalled past [`HttpLimits::body_read_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
struct BodyTimeout(Duration);

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.stalled = None;
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let timeout = this.timeout;
        let stalled = this
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
