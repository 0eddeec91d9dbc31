//! Frames on the server RPC port: after a one-byte protocol marker, each
//! message is a 4-byte big-endian length and that many bytes of JSON.
//!
//! The length is checked before anything is allocated, so a hostile peer
//! cannot make a server reserve more than [`MAX_FRAME`].

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first byte a client sends: mesh RPC, version 1.
pub const PROTOCOL_MARKER: u8 = 0x6d;

/// The largest frame accepted (a Raft snapshot chunk or a restore).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

/// Why a frame could not be read or written.
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
}

/// Writes one message.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), WireError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, WireError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_hostile_lengths_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &vec!["x".to_string(), "y".into()])
            .await
            .unwrap();
        let got: Vec<String> = read_frame(&mut b).await.unwrap();
        assert_eq!(got, ["x", "y"]);

        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame::<_, Vec<String>>(&mut b).await.unwrap_err();
        assert!(matches!(err, WireError::TooLarge(_)), "{err}");

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{]x").await.unwrap();
        let err = read_frame::<_, Vec<String>>(&mut b).await.unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err}");
    }
}
