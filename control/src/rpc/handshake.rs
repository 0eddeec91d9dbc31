//! Opening an RPC connection: the caller says what it is (a server or a
//! client agent), and when the agent has a gossip key (`-encrypt`) both
//! ends prove they hold it before a single frame is parsed.
//!
//! The exchange, all fixed-size, so nothing a stranger sends is parsed
//! beyond 44 bytes:
//!
//! 1. caller → server: the protocol marker, the version (2), the caller's
//!    role, the mode (0 open, 1 keyed), the id of the caller's primary key
//!    (8 bytes of HKDF-SHA256 of the key) and a 32-byte random nonce.
//! 2. server → caller: 0 and, when keyed, its own nonce and
//!    HMAC-SHA256(auth key, "server" | hello | server nonce); or 1, a length
//!    byte and the reason it refuses (a mode or key it does not share).
//! 3. caller → server (keyed): HMAC-SHA256(auth key, "client" | hello |
//!    server nonce).
//!
//! The auth key and the two frame keys (AES-256-GCM, one per direction, see
//! [`super::wire`]) are derived from the gossip key with HKDF-SHA256, the
//! frame keys salted with both nonces, so every connection has keys of
//! its own. A server accepts any key in its keyring, so a key being
//! rotated in (`mesh keyring -install`, `-use`) keeps working; a caller
//! uses its primary key.

use super::wire::{Conn, Sealing, Stream, WireError, PROTOCOL_MARKER};
use crate::tls::RpcTls;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The handshake's version.
const VERSION: u8 = 2;
/// Mode: no key on either side.
const OPEN: u8 = 0;
/// Mode: both sides prove they hold a gossip key.
const KEYED: u8 = 1;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;
const NONCE: usize = 32;
const KEY_ID: usize = 8;
const MAC: usize = 32;
/// The caller's first message: marker, version, role, mode, key id, nonce.
const HELLO: usize = 4 + KEY_ID + NONCE;
/// The HKDF salt for everything derived from a gossip key.
const SALT: &[u8] = b"mesh rpc v2";
/// The first byte of a connection that starts TLS; the hello follows
/// inside it.
pub const TLS_MARKER: u8 = 0x74;

/// What a peer on the RPC port is, and so what it may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server: Raft traffic and leader requests.
    Server,
    /// A client agent: what a client agent forwards.
    Client,
    /// A client agent without its RPC certificate yet (auto_encrypt): it
    /// may only ask for one. On the wire it says it is a client; a server
    /// decides it is enrolling ([`RpcTls::admit`]).
    Enrolling,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Server => 1,
            Role::Client | Role::Enrolling => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Server),
            2 => Some(Role::Client),
            _ => None,
        }
    }
}

type KeySource = Box<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// The keys RPC connections are authenticated with: the agent's gossip
/// keyring, primary first. Empty: RPC is open.
#[derive(Clone, Default)]
pub struct RpcKeys(Arc<KeysInner>);

#[derive(Default)]
struct KeysInner {
    initial: Vec<Vec<u8>>,
    live: OnceLock<KeySource>,
}

impl std::fmt::Debug for RpcKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RpcKeys({} keys)", self.current().len())
    }
}

impl RpcKeys {
    /// The keys to use until [`RpcKeys::follow`] is called: the keyring the
    /// agent starts with.
    pub fn new(initial: Vec<Vec<u8>>) -> RpcKeys {
        RpcKeys(Arc::new(KeysInner {
            initial,
            live: OnceLock::new(),
        }))
    }

    /// Follows the keyring as `live` reports it (the running gossip pool,
    /// whose keyring `mesh keyring` changes); the first call wins.
    pub fn follow(&self, live: impl Fn() -> Vec<Vec<u8>> + Send + Sync + 'static) {
        let _ = self.0.live.set(Box::new(live));
    }

    /// The keys now, primary first.
    pub fn current(&self) -> Vec<Vec<u8>> {
        match self.0.live.get() {
            Some(live) => live(),
            None => self.0.initial.clone(),
        }
    }

    /// Whether connections are authenticated.
    pub fn is_keyed(&self) -> bool {
        !self.current().is_empty()
    }
}

/// How RPC connections are authenticated: the gossip keyring and, when
/// configured, TLS ([`RpcTls`]).
#[derive(Debug, Clone, Default)]
pub struct RpcAuth {
    /// The gossip keyring (none: no keyed handshake).
    pub keys: RpcKeys,
    /// The agent's TLS for RPC, if configured.
    pub tls: Option<Arc<RpcTls>>,
}

impl From<RpcKeys> for RpcAuth {
    fn from(keys: RpcKeys) -> RpcAuth {
        RpcAuth { keys, tls: None }
    }
}

impl RpcAuth {
    /// Whether a stranger is kept out: a keyed handshake, or TLS that
    /// requires a certificate from the CA.
    pub fn is_closed(&self) -> bool {
        self.keys.is_keyed() || self.tls.as_ref().is_some_and(|t| t.verify_incoming())
    }
}

/// The handshake's cryptographic failures cannot happen for the lengths
/// used here; they are reported rather than unwrapped.
fn crypto_failed(_: ring::error::Unspecified) -> WireError {
    WireError::Auth("key derivation failed".into())
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn prk(key: &[u8], salt: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(key)
}

fn key_id(key: &[u8]) -> Result<[u8; KEY_ID], WireError> {
    let mut id = [0u8; KEY_ID];
    prk(key, SALT)
        .expand(&[b"key id"], Len(KEY_ID))
        .and_then(|okm| okm.fill(&mut id))
        .map_err(crypto_failed)?;
    Ok(id)
}

fn auth_key(key: &[u8]) -> Result<hmac::Key, WireError> {
    let prk = prk(key, SALT);
    let info = [&b"auth"[..]];
    let okm = prk
        .expand(&info, hmac::HMAC_SHA256)
        .map_err(crypto_failed)?;
    Ok(hmac::Key::from(okm))
}

fn transcript(label: &[u8], hello: &[u8], server_nonce: &[u8]) -> Vec<u8> {
    [label, hello, server_nonce].concat()
}

/// The frame keys of one connection, as the side in `role` uses them.
fn sealing(
    key: &[u8],
    hello: &[u8],
    server_nonce: &[u8],
    role: Side,
) -> Result<Sealing, WireError> {
    let salt = [&hello[HELLO - NONCE..], server_nonce].concat();
    let prk = prk(key, &salt);
    let frame_key = |label: &[u8]| -> Result<LessSafeKey, WireError> {
        let info = [label];
        let okm = prk.expand(&info, &AES_256_GCM).map_err(crypto_failed)?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    };
    let (to_server, to_caller) = (frame_key(b"to server")?, frame_key(b"to caller")?);
    Ok(match role {
        Side::Caller => Sealing::new(to_server, to_caller),
        Side::Server => Sealing::new(to_caller, to_server),
    })
}

#[derive(Clone, Copy)]
enum Side {
    Caller,
    Server,
}

fn random<const N: usize>() -> Result<[u8; N], WireError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(crypto_failed)?;
    Ok(bytes)
}

/// Opens a connection as `role`: over TLS with `verify_outgoing`, then
/// proving the primary key of the keyring when there is one. The caller
/// bounds the time it may take.
pub async fn open(stream: TcpStream, role: Role, auth: &RpcAuth) -> Result<Conn, WireError> {
    let mut stream = match auth.tls.as_ref().and_then(|t| t.connector()) {
        Some((connector, name)) => {
            let mut stream = stream;
            stream.write_all(&[TLS_MARKER]).await?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| WireError::Auth(format!("TLS: {e}")))?;
            Stream::Tls(Box::new(tls.into()))
        }
        None => Stream::Plain(stream),
    };
    let keys = auth.keys.current();
    let primary = keys.first();
    let mut hello = [0u8; HELLO];
    hello[0] = PROTOCOL_MARKER;
    hello[1] = VERSION;
    hello[2] = role.byte();
    hello[3] = if primary.is_some() { KEYED } else { OPEN };
    if let Some(key) = primary {
        hello[4..4 + KEY_ID].copy_from_slice(&key_id(key)?);
    }
    hello[HELLO - NONCE..].copy_from_slice(&random::<NONCE>()?);
    stream.write_all(&hello).await?;
    if stream.read_u8().await? != ACCEPTED {
        let len = stream.read_u8().await? as usize;
        let mut reason = vec![0u8; len];
        stream.read_exact(&mut reason).await?;
        return Err(WireError::Refused(
            String::from_utf8_lossy(&reason).into_owned(),
        ));
    }
    let Some(key) = primary else {
        return Ok(Conn::new(stream, None));
    };
    let mut reply = [0u8; NONCE + MAC];
    stream.read_exact(&mut reply).await?;
    let (server_nonce, server_mac) = reply.split_at(NONCE);
    let auth = auth_key(key)?;
    hmac::verify(
        &auth,
        &transcript(b"server", &hello, server_nonce),
        server_mac,
    )
    .map_err(|_| WireError::Auth("the server did not prove it holds the gossip key".into()))?;
    let mac = hmac::sign(&auth, &transcript(b"client", &hello, server_nonce));
    stream.write_all(mac.as_ref()).await?;
    let sealing = sealing(key, &hello, server_nonce, Side::Caller)?;
    Ok(Conn::new(stream, Some(sealing)))
}

/// Answers a caller's handshake: the open connection and the caller's role,
/// or why it was refused (the caller is told too). The caller bounds the
/// time it may take.
pub async fn accept(mut tcp: TcpStream, auth: &RpcAuth) -> Result<(Conn, Role), WireError> {
    let tls = auth.tls.as_deref();
    let mut stream = match tcp.read_u8().await? {
        TLS_MARKER => {
            let Some(acceptor) = tls.and_then(RpcTls::acceptor) else {
                return Err(WireError::Refused(
                    "a TLS caller, but this server has no cert_file".into(),
                ));
            };
            let tls = acceptor
                .accept(tcp)
                .await
                .map_err(|e| WireError::Auth(format!("TLS: {e}")))?;
            let mut stream = Stream::Tls(Box::new(tls.into()));
            let marker = stream.read_u8().await?;
            if marker != PROTOCOL_MARKER {
                return Err(WireError::Protocol(marker));
            }
            stream
        }
        PROTOCOL_MARKER if tls.is_some_and(RpcTls::verify_incoming) => {
            let why = "this server accepts only TLS RPC (verify_incoming)";
            return refuse(Stream::Plain(tcp), why.into()).await;
        }
        PROTOCOL_MARKER => Stream::Plain(tcp),
        other => return Err(WireError::Protocol(other)),
    };
    let mut hello = [0u8; HELLO];
    hello[0] = PROTOCOL_MARKER;
    stream.read_exact(&mut hello[1..]).await?;
    if hello[1] != VERSION {
        let why = format!(
            "RPC protocol version {}; this server speaks {VERSION}",
            hello[1]
        );
        return refuse(stream, why).await;
    }
    let Some(role) = Role::from_byte(hello[2]) else {
        return refuse(stream, format!("unknown role {}", hello[2])).await;
    };
    let role = match tls {
        Some(tls) if stream.is_tls() => match tls.admit(role, stream.peer_certificates()) {
            Ok(role) => role,
            Err(why) => return refuse(stream, why).await,
        },
        Some(tls) if role == Role::Server => match tls.may_act_as_server(None) {
            Ok(()) => role,
            Err(why) => return refuse(stream, why).await,
        },
        _ => role,
    };
    let keys = auth.keys.current();
    match (hello[3], keys.is_empty()) {
        (OPEN, true) => {
            stream.write_all(&[ACCEPTED]).await?;
            Ok((Conn::new(stream, None), role))
        }
        (OPEN, false) => {
            let why = "this server requires RPC authenticated with the gossip key; \
                       start the agent with the cluster's -encrypt key";
            refuse(stream, why.into()).await
        }
        (KEYED, true) => {
            let why = "this server has no gossip key; the caller's -encrypt does not match";
            refuse(stream, why.into()).await
        }
        (KEYED, false) => {
            let wanted = &hello[4..4 + KEY_ID];
            let mut key = None;
            for k in &keys {
                if key_id(k)? == wanted {
                    key = Some(k);
                    break;
                }
            }
            let Some(key) = key else {
                let why = "no key in this server's gossip keyring matches the caller's \
                           primary key; check -encrypt or `mesh keyring -list`";
                return refuse(stream, why.into()).await;
            };
            let server_nonce = random::<NONCE>()?;
            let auth = auth_key(key)?;
            let mac = hmac::sign(&auth, &transcript(b"server", &hello, &server_nonce));
            let reply = [&[ACCEPTED][..], &server_nonce, mac.as_ref()].concat();
            stream.write_all(&reply).await?;
            let mut caller_mac = [0u8; MAC];
            stream.read_exact(&mut caller_mac).await?;
            hmac::verify(
                &auth,
                &transcript(b"client", &hello, &server_nonce),
                &caller_mac,
            )
            .map_err(|_| {
                WireError::Auth("the caller did not prove it holds the gossip key".into())
            })?;
            let sealing = sealing(key, &hello, &server_nonce, Side::Server)?;
            Ok((Conn::new(stream, Some(sealing)), role))
        }
        (mode, _) => refuse(stream, format!("unknown RPC mode {mode}")).await,
    }
}

/// Tells the caller why it is refused, and reports it.
async fn refuse<T>(mut stream: Stream, why: String) -> Result<T, WireError> {
    let reason = &why.as_bytes()[..why.len().min(255)];
    let msg = [&[REFUSED, reason.len() as u8][..], reason].concat();
    let _ = stream.write_all(&msg).await;
    Err(WireError::Refused(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Opens a connection between a caller with `caller` keys and a server
    /// with `server` keys; each side's outcome.
    async fn handshake(
        caller: Vec<Vec<u8>>,
        server: Vec<Vec<u8>>,
    ) -> (Result<Conn, WireError>, Result<(Conn, Role), WireError>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let caller_keys = RpcAuth::from(RpcKeys::new(caller));
        let server_keys = RpcAuth::from(RpcKeys::new(server));
        let dial = async {
            let stream = TcpStream::connect(addr).await.unwrap();
            open(stream, Role::Client, &caller_keys).await
        };
        let answer = async {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, &server_keys).await
        };
        tokio::join!(dial, answer)
    }

    #[tokio::test]
    async fn a_shared_key_opens_a_sealed_connection_that_carries_frames() {
        let (a, b) = (vec![1u8; 32], vec![2u8; 16]);
        // The server holds the caller's primary key as its second key.
        let (caller, server) = handshake(vec![a.clone(), b.clone()], vec![b, a]).await;
        let (mut caller, (mut server, role)) = (caller.unwrap(), server.unwrap());
        assert_eq!(role, Role::Client);
        caller.send(&"ping").await.unwrap();
        assert_eq!(server.recv::<String>().await.unwrap(), "ping");
        server.send(&"pong").await.unwrap();
        assert_eq!(caller.recv::<String>().await.unwrap(), "pong");
    }

    #[tokio::test]
    async fn a_caller_without_the_key_is_refused_with_the_reason() {
        let key = vec![7u8; 32];
        let (caller, server) = handshake(vec![], vec![key.clone()]).await;
        let err = caller.err().unwrap();
        assert!(
            matches!(&err, WireError::Refused(r) if r.contains("-encrypt")),
            "{err}"
        );
        assert!(matches!(server.err().unwrap(), WireError::Refused(_)));

        let (caller, server) = handshake(vec![vec![8u8; 32]], vec![key.clone()]).await;
        let err = caller.err().unwrap();
        assert!(
            matches!(&err, WireError::Refused(r) if r.contains("keyring")),
            "{err}"
        );
        assert!(server.is_err());

        let (caller, server) = handshake(vec![key], vec![]).await;
        assert!(matches!(caller.err().unwrap(), WireError::Refused(_)));
        assert!(server.is_err());

        let (caller, server) = handshake(vec![], vec![]).await;
        assert!(caller.is_ok() && server.is_ok(), "open on both sides");
    }

    #[tokio::test]
    async fn a_caller_that_only_copies_the_key_id_cannot_finish() {
        // A stranger replays a real caller's hello (key id and nonce) but
        // cannot compute the MAC of the server's fresh nonce.
        let key = vec![5u8; 32];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = RpcAuth::from(RpcKeys::new(vec![key.clone()]));
        let forger = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut hello = [0u8; HELLO];
            hello[..4].copy_from_slice(&[PROTOCOL_MARKER, VERSION, 1, KEYED]);
            hello[4..4 + KEY_ID].copy_from_slice(&key_id(&key).unwrap());
            s.write_all(&hello).await.unwrap();
            let mut reply = [0u8; 1 + NONCE + MAC];
            s.read_exact(&mut reply).await.unwrap();
            s.write_all(&[0u8; MAC]).await.unwrap();
            s
        };
        let answer = async {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream, &keys).await
        };
        let (_s, answered) = tokio::join!(forger, answer);
        let err = answered.err().unwrap();
        assert!(matches!(err, WireError::Auth(_)), "{err}");
    }

    #[test]
    fn keys_follow_the_live_keyring_once_it_runs() {
        let keys = RpcKeys::new(vec![vec![1u8; 16]]);
        assert!(keys.is_keyed());
        keys.follow(|| vec![vec![2u8; 16], vec![1u8; 16]]);
        assert_eq!(keys.current()[0], vec![2u8; 16]);
        assert_eq!(format!("{keys:?}"), "RpcKeys(2 keys)", "no key in Debug");
        assert!(!RpcKeys::default().is_keyed());
    }
}
