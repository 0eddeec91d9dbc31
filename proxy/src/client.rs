//! Pooled HTTP clients: mTLS to other sidecars (one pool per target service,
//! since each verifies its own SPIFFE ID; HTTP/2 or HTTP/1.1 as ALPN
//! decides) and plain connections to the local app.
//!
//! Both are hyper-util's pooling client. The pool is keyed by the request
//! URI's authority, which the proxy sets to the chosen endpoint, so each
//! endpoint has its own idle connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_ca::rustls::pki_types::ServerName;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::chain::Protocol;
use crate::http::ProxyBody;

/// How long an unused pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The ALPN protocols of sidecar-to-sidecar HTTP, preferred first.
pub(crate) fn alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// A pooled client of mTLS connections to one service's sidecars.
pub(crate) type MeshClient = Client<MeshConnector, ProxyBody>;

/// A pooled client of plain connections to the local app.
pub(crate) type AppClient = Client<HttpConnector, ProxyBody>;

/// Opens mTLS connections to the endpoint a request URI names.
#[derive(Clone)]
pub(crate) struct MeshConnector {
    /// Presents the leaf, offers ALPN, accepts only the target service.
    pub(crate) tls: TlsConnector,
    /// The SNI to send.
    pub(crate) server_name: ServerName<'static>,
    /// Bounds the TCP connect.
    pub(crate) connect_timeout: Duration,
    /// Bounds the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// Counts refused or timed-out handshakes.
    pub(crate) handshake_failures: Counter,
}

/// An mTLS connection to a sidecar, telling the pool whether it speaks
/// HTTP/2.
pub(crate) struct MeshConn {
    io: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
}

/// The pooled client for `connector`.
pub(crate) fn mesh_client(connector: MeshConnector) -> MeshClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// The pooled client of the local app: HTTP/1.1 for `http`, HTTP/2 with
/// prior knowledge for `http2` and `grpc`.
pub(crate) fn app_client(protocol: Protocol, connect_timeout: Duration) -> AppClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(matches!(protocol, Protocol::Http2 | Protocol::Grpc))
        .build(connector)
}

// === impl MeshConnector ===

impl MeshConnector {
    async fn connect(self, uri: Uri) -> io::Result<MeshConn> {
        let addr: SocketAddr = uri
            .authority()
            .and_then(|a| a.as_str().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no endpoint in URI"))?;
        let tcp = timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let handshake = timeout(
            self.handshake_timeout,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
        .and_then(|r| r);
        let tls = handshake.inspect_err(|_| {
            self.handshake_failures.inc();
        })?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(MeshConn {
            io: TokioIo::new(tls),
            h2,
        })
    }
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = MeshConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<MeshConn>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

// === impl MeshConn ===

impl Connection for MeshConn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for MeshConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for MeshConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
