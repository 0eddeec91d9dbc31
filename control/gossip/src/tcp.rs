//! The TCP side of the gossip port: push-pull state exchange (join and
//! anti-entropy), pings after a failed UDP probe (`ping`) and keyring
//! operations, one request and one reply per connection.
//!
//! A frame is a 4-byte big-endian length and a sealed envelope. A server that
//! cannot open a request answers with a plaintext notice frame
//! (`0xFF | key-problem flag | message`), so the client can say why instead of
//! reporting a closed connection.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::crypto::OpenError;
use crate::error::GossipError;
use crate::runtime::{Command, Shared};
use crate::wire::{Request, Response};

const NOTICE: u8 = 0xFF;
/// Largest frame accepted: push-pull state of several thousand members.
const MAX_FRAME: usize = 8 << 20;

async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    // Read as it arrives rather than trusting the claimed length with an
    // allocation up front.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(body)
}

fn open_error(e: OpenError, what: &str) -> GossipError {
    if e.is_key_problem() {
        GossipError::Encryption(format!("{what}: {e}"))
    } else {
        GossipError::Protocol(format!("{what}: {e}"))
    }
}

/// Sends one request to `addr` and waits for its reply.
pub(crate) async fn request(
    shared: &Shared,
    addr: SocketAddr,
    req: &Request,
) -> Result<Response, GossipError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = postcard::to_allocvec(req).map_err(|e| GossipError::Protocol(e.to_string()))?;
        let sealed = shared.keyring().seal(&body);
        write_frame(&mut stream, &sealed).await?;
        let reply = read_frame(&mut stream).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GossipError::Protocol(
                    "the remote node closed the connection without replying".into(),
                )
            } else {
                GossipError::Io(e)
            }
        })?;
        if let [NOTICE, key_problem, msg @ ..] = reply.as_slice() {
            let msg = String::from_utf8_lossy(msg);
            let msg = format!("the remote node could not read our message: {msg}");
            return Err(if *key_problem == 1 {
                GossipError::Encryption(msg)
            } else {
                GossipError::Protocol(msg)
            });
        }
        let plain = shared
            .keyring()
            .open(&reply)
            .map_err(|e| open_error(e, "cannot read the remote node's reply"))?;
        postcard::from_bytes(&plain).map_err(|e| GossipError::Protocol(e.to_string()))
    };
    match tokio::time::timeout(shared.cfg.tcp_timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(GossipError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no reply within {:?}", shared.cfg.tcp_timeout),
        ))),
    }
}

/// Accepts connections until the pool stops.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let stop = shared.stopped();
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await.map(|_| ());
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let timeout = shared.cfg.tcp_timeout;
                        match tokio::time::timeout(timeout, handle(stream, &shared)).await {
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gossip TCP request dropped"),
                            Err(_) => tracing::debug!(%peer, "gossip TCP request timed out"),
                            Ok(Ok(())) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "gossip TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> Result<(), GossipError> {
    let frame = read_frame(&mut stream).await?;
    let opened = shared.keyring().open(&frame);
    let plain = match opened {
        Ok(p) => p,
        Err(e) => {
            let mut notice = vec![NOTICE, u8::from(e.is_key_problem())];
            notice.extend_from_slice(e.to_string().as_bytes());
            write_frame(&mut stream, &notice).await?;
            return Err(open_error(e, "cannot read a request"));
        }
    };
    let req: Request =
        postcard::from_bytes(&plain).map_err(|e| GossipError::Protocol(e.to_string()))?;
    let resp = match req {
        Request::PushPull { join, members } => {
            let ours = shared.table().states();
            let (tx, rx) = oneshot::channel();
            if shared
                .send(Command::Merge {
                    states: members,
                    reply: tx,
                })
                .await
                .is_err()
            {
                Response::Error("the gossip pool is shut down".into())
            } else {
                let _ = rx.await;
                if join {
                    tracing::debug!("member joined through push-pull");
                }
                Response::PushPull { members: ours }
            }
        }
        Request::Keyring(op) => Response::Keyring(crate::keyring::apply_local(shared, &op)),
        Request::Ping {
            target,
            incarnation,
        } => {
            let (tx, rx) = oneshot::channel();
            let asked = shared
                .send(Command::Ping {
                    target,
                    incarnation,
                    reply: tx,
                })
                .await;
            match asked {
                Ok(()) => match rx.await {
                    Ok(Ok((id, incarnation))) => Response::Pong { id, incarnation },
                    Ok(Err(e)) => Response::Error(e),
                    Err(_) => Response::Error("the gossip pool is shut down".into()),
                },
                Err(_) => Response::Error("the gossip pool is shut down".into()),
            }
        }
    };
    let body = postcard::to_allocvec(&resp).map_err(|e| GossipError::Protocol(e.to_string()))?;
    let sealed = shared.keyring().seal(&body);
    write_frame(&mut stream, &sealed).await?;
    Ok(())
}
