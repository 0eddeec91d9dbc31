//! Frames on the server RPC port. Once the handshake
//! ([`super::handshake`]) has opened a connection, each message is a 4-byte
//! big-endian length and that many bytes: JSON, or, on a connection keyed
//! by the gossip key, AES-256-GCM of the JSON with its tag, the length as
//! associated data and a per-direction counter as the nonce (so a frame
//! cannot be forged, replayed, reordered or moved to another connection).
//!
//! The length is checked before anything is allocated, and a body is read
//! as its bytes arrive, so memory follows what a peer actually sends, never
//! what its header declares.

use ring::aead::{Aad, LessSafeKey, Nonce, NONCE_LEN};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;

/// The first byte a client sends: mesh RPC.
pub const PROTOCOL_MARKER: u8 = 0x6d;

/// The largest frame accepted: a Raft append or snapshot chunk can carry a
/// restored state (itself at most [`crate::snapshot::MAX_UNPACKED`]).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

/// The bytes AES-GCM adds to a sealed frame.
const TAG_LEN: usize = 16;

/// How much of a body is reserved before its bytes arrive.
const FIRST_READ: usize = 64 * 1024;

/// The slowest a frame's body may arrive once its header has: a frame of
/// `n` bytes gets [`FRAME_TIME`] plus `n / MIN_RATE` seconds.
const MIN_RATE: usize = 256 * 1024;

/// The base time a frame's body may take.
const FRAME_TIME: Duration = Duration::from_secs(10);

/// Why a frame could not be read or written, or a connection opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The socket failed or closed.
    #[error("rpc i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The frame was larger than [`MAX_FRAME`].
    #[error("rpc frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The frame was not the JSON expected.
    #[error("rpc frame: {0}")]
    Decode(#[from] serde_json::Error),
    /// The peer does not speak mesh RPC.
    #[error("not a mesh RPC connection (first byte {0:#04x})")]
    Protocol(u8),
    /// The handshake failed: the peer could not prove it holds the key,
    /// or a sealed frame did not open.
    #[error("rpc authentication: {0}")]
    Auth(String),
    /// The server refused this connection, with its reason.
    #[error("rpc connection refused by the server: {0}")]
    Refused(String),
    /// The peer took too long.
    #[error("rpc peer silent for {0:?}")]
    Timeout(Duration),
}

impl WireError {
    /// True when the peer closed the connection between frames.
    pub fn is_closed(&self) -> bool {
        matches!(self, WireError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }
}

/// Frame encryption for one connection: a key and a counter per direction.
pub(super) struct Sealing {
    send: LessSafeKey,
    recv: LessSafeKey,
    sent: u64,
    received: u64,
}

impl Sealing {
    /// Keys for frames this side sends and frames it receives.
    pub(super) fn new(send: LessSafeKey, recv: LessSafeKey) -> Sealing {
        Sealing {
            send,
            recv,
            sent: 0,
            received: 0,
        }
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A connection's transport: TCP, or TLS over it.
pub(super) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, either side.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// The certificate chain the peer presented over TLS, if any.
    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        let Stream::Tls(s) = self else { return None };
        s.get_ref().1.peer_certificates()
    }

    /// Whether the connection is TLS.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An open RPC connection: one message at a time each way.
pub struct Conn {
    stream: Stream,
    sealing: Option<Sealing>,
    idle_timeout: Option<Duration>,
}

impl Conn {
    /// A connection whose handshake is done; `sealing` when keyed.
    pub(super) fn new(stream: Stream, sealing: Option<Sealing>) -> Conn {
        Conn {
            stream,
            sealing,
            idle_timeout: None,
        }
    }

    /// Closes the connection when no frame starts within `timeout`.
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = Some(timeout);
    }

    /// Whether the connection is still open and has nothing unread: one
    /// the peer closed while it sat idle fails this.
    pub fn is_idle_and_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(
            self.stream.tcp().try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Writes one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WireError> {
        let mut body = serde_json::to_vec(msg)?;
        if body.len() > MAX_FRAME {
            return Err(WireError::TooLarge(body.len()));
        }
        let mut frame = Vec::with_capacity(4 + body.len() + TAG_LEN);
        match &mut self.sealing {
            None => frame.extend_from_slice(&(body.len() as u32).to_be_bytes()),
            Some(s) => {
                let len = ((body.len() + TAG_LEN) as u32).to_be_bytes();
                s.send
                    .seal_in_place_append_tag(nonce(s.sent), Aad::from(len), &mut body)
                    .map_err(|_| WireError::Auth("sealing a frame failed".into()))?;
                s.sent += 1;
                frame.extend_from_slice(&len);
            }
        }
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads one message.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, WireError> {
        let mut len = [0u8; 4];
        match self.idle_timeout {
            Some(t) => tokio::time::timeout(t, self.stream.read_exact(&mut len))
                .await
                .map_err(|_| WireError::Timeout(t))??,
            None => self.stream.read_exact(&mut len).await?,
        };
        let declared = u32::from_be_bytes(len) as usize;
        let limit = MAX_FRAME + if self.sealing.is_some() { TAG_LEN } else { 0 };
        if declared > limit {
            return Err(WireError::TooLarge(declared));
        }
        let allowed = FRAME_TIME + Duration::from_secs((declared / MIN_RATE) as u64);
        let mut body = Vec::with_capacity(declared.min(FIRST_READ));
        let mut limited = (&mut self.stream).take(declared as u64);
        tokio::time::timeout(allowed, limited.read_to_end(&mut body))
            .await
            .map_err(|_| WireError::Timeout(allowed))??;
        if body.len() < declared {
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let plain = match &mut self.sealing {
            None => &body[..],
            Some(s) => {
                let plain = s
                    .recv
                    .open_in_place(nonce(s.received), Aad::from(len), &mut body)
                    .map_err(|_| WireError::Auth("a frame failed to authenticate".into()))?;
                s.received += 1;
                &*plain
            }
        };
        Ok(serde_json::from_slice(plain)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::aead::{UnboundKey, AES_256_GCM};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn plain(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }

    fn key(byte: u8) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[byte; 32]).unwrap())
    }

    #[tokio::test]
    async fn frames_round_trip_and_hostile_lengths_are_refused() {
        let (a, b) = pair().await;
        let (mut a, mut b) = (Conn::new(plain(a), None), Conn::new(plain(b), None));
        a.send(&vec!["x".to_string(), "y".into()]).await.unwrap();
        let got: Vec<String> = b.recv().await.unwrap();
        assert_eq!(got, ["x", "y"]);

        let (mut a, b) = pair().await;
        let mut b = Conn::new(plain(b), None);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = b.recv::<Vec<String>>().await.unwrap_err();
        assert!(matches!(err, WireError::TooLarge(_)), "{err}");

        let (mut a, b) = pair().await;
        let mut b = Conn::new(plain(b), None);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{]x").await.unwrap();
        let err = b.recv::<Vec<String>>().await.unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err}");
    }

    #[tokio::test]
    async fn a_declared_length_reserves_nothing_until_bytes_arrive() {
        let (mut a, b) = pair().await;
        let mut b = Conn::new(plain(b), None);
        b.set_idle_timeout(Duration::from_secs(5));
        // A header declaring 512 MiB, then 10 bytes and a close: the read
        // ends with EOF having held only what arrived.
        a.write_all(&(MAX_FRAME as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(b"0123456789").await.unwrap();
        drop(a);
        let err = b.recv::<String>().await.unwrap_err();
        assert!(err.is_closed(), "{err}");
    }

    #[tokio::test]
    async fn sealed_frames_open_only_in_order_on_their_own_connection() {
        let (a, b) = pair().await;
        let mut a = Conn::new(plain(a), Some(Sealing::new(key(1), key(2))));
        let mut b = Conn::new(plain(b), Some(Sealing::new(key(2), key(1))));
        a.send(&"one").await.unwrap();
        a.send(&"two").await.unwrap();
        assert_eq!(b.recv::<String>().await.unwrap(), "one");
        assert_eq!(b.recv::<String>().await.unwrap(), "two");
        b.send(&"back").await.unwrap();
        assert_eq!(a.recv::<String>().await.unwrap(), "back");

        // The wrong key, or a replayed frame (counter 0 again), is refused.
        let (a, b) = pair().await;
        let mut a = Conn::new(plain(a), Some(Sealing::new(key(9), key(2))));
        let mut b = Conn::new(plain(b), Some(Sealing::new(key(2), key(1))));
        a.send(&"forged").await.unwrap();
        let err = b.recv::<String>().await.unwrap_err();
        assert!(matches!(err, WireError::Auth(_)), "{err}");

        let (a, b) = pair().await;
        let mut a = Conn::new(plain(a), Some(Sealing::new(key(1), key(2))));
        let mut b = Conn::new(plain(b), Some(Sealing::new(key(2), key(1))));
        a.send(&"first").await.unwrap();
        assert_eq!(b.recv::<String>().await.unwrap(), "first");
        let mut replay = Conn::new(a.stream, Some(Sealing::new(key(1), key(2))));
        replay.send(&"first").await.unwrap();
        let err = b.recv::<String>().await.unwrap_err();
        assert!(matches!(err, WireError::Auth(_)), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_stalls_between_frames_is_timed_out() {
        let (_a, b) = pair().await;
        let mut b = Conn::new(plain(b), None);
        b.set_idle_timeout(Duration::from_millis(50));
        let err = b.recv::<String>().await.unwrap_err();
        assert!(matches!(err, WireError::Timeout(_)), "{err}");
    }
}
