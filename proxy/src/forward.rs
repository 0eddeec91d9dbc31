//! The last layer of both paths: copy bytes both ways until both sides are
//! done, the connection goes idle, or it fails.
//!
//! `tokio::io::copy_bidirectional` carries half-close: when one side shuts
//! its write half (EOF), the other side's write half is shut (a TCP FIN, or
//! a TLS `close_notify`) and the other direction keeps flowing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a forwarded connection ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both sides closed; bytes copied from `a` to `b` and from `b` to `a`.
    Closed { a_to_b: u64, b_to_a: u64 },
    /// Nothing moved either way for the idle timeout.
    Idle,
}

/// Copies between `a` and `b` until both directions end, closing both when
/// no byte has moved for `idle`.
pub(crate) async fn forward<A, B>(a: A, mut b: B, idle: Duration) -> io::Result<Outcome>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    // Every byte of either direction is read from or written to `a`, so
    // watching `a` alone sees all activity.
    let activity = Activity::new();
    let mut a = Tracked::new(a, activity.clone());
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut a, &mut b) => {
            let (a_to_b, b_to_a) = result?;
            Ok(Outcome::Closed { a_to_b, b_to_a })
        }
        () = activity.idle_for(idle) => Ok(Outcome::Idle),
    }
}

/// When bytes last moved, as milliseconds since a base instant: an atomic,
/// so the watchdog reads it without a lock.
#[derive(Clone)]
pub(crate) struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    /// No activity yet: the idle time counts from now.
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once no byte has moved for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            tokio::time::sleep_until(deadline).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}

/// A stream that records activity on every read or write that moves bytes.
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    /// `inner`, reporting to `activity`.
    pub(crate) fn new(inner: S, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_carries_half_close() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let task = tokio::spawn(forward(a, b, Duration::from_secs(60)));

        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        // The client closes its write half: the server sees EOF and can
        // still answer.
        client.shutdown().await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        server.shutdown().await.unwrap();

        let outcome = task.await.unwrap().unwrap();
        assert_eq!(
            outcome,
            Outcome::Closed {
                a_to_b: 4,
                b_to_a: 4
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closes_an_idle_connection_and_not_a_busy_one() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let idle = Duration::from_secs(30);
        let task = tokio::spawn(forward(a, b, idle));

        // Traffic every 20s keeps it open past the 30s timeout.
        let mut buf = [0u8; 1];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!task.is_finished());

        // Then silence: closed once 30s pass without a byte.
        let outcome = task.await.unwrap().unwrap();
        assert_eq!(outcome, Outcome::Idle);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }
}
