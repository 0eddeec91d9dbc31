//! Gossip encryption: the keyring, sealing and opening of packets, and the
//! key format of `consul keygen` (standard base64 of 16, 24 or 32 bytes).
//!
//! A sealed packet is `1 | nonce (12 bytes) | AES-GCM(ciphertext + tag)`, the
//! version byte as associated data. Without keys a packet is `0 | plaintext`.
//! Opening tries every installed key, so a key being rotated in still works.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;

use crate::error::GossipError;

type Aes192Gcm = AesGcm<Aes192, U12>;

/// Version byte of a plaintext packet (no keys configured).
pub(crate) const PLAIN: u8 = 0;
/// Version byte of an AES-GCM packet.
pub(crate) const SEALED: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes an encrypted packet adds to its payload.
pub(crate) const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Parses a key in `consul keygen` format: standard base64 of 16, 24 or 32
/// bytes (AES-128, AES-192 or AES-256).
pub fn parse_key(base64: &str) -> Result<Vec<u8>, GossipError> {
    let key = STANDARD.decode(base64.trim()).map_err(|e| {
        GossipError::InvalidKey(format!(
            "not standard base64 ({e}); generate one with `mesh keygen`"
        ))
    })?;
    check_key_len(&key).map_err(GossipError::InvalidKey)?;
    Ok(key)
}

/// A new random 32-byte key in `consul keygen` format.
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    encode_key(&key)
}

/// The `consul keygen` form (standard base64) of a key.
pub fn encode_key(key: &[u8]) -> String {
    STANDARD.encode(key)
}

/// Checks that `key` has an AES key size.
pub(crate) fn check_key_len(key: &[u8]) -> Result<(), String> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(format!(
            "decodes to {n} bytes; a key must be 16, 24 or 32 bytes (AES-128/192/256)"
        )),
    }
}

#[derive(Clone)]
enum Cipher {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Result<Cipher, GossipError> {
        let bad = |_| GossipError::InvalidKey("wrong key length".into());
        Ok(match key.len() {
            16 => Cipher::A128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            24 => Cipher::A192(Box::new(Aes192Gcm::new_from_slice(key).map_err(bad)?)),
            32 => Cipher::A256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
            n => {
                return Err(GossipError::InvalidKey(format!(
                    "{n} bytes; a key must be 16, 24 or 32 bytes"
                )));
            }
        })
    }

    fn encrypt(&self, nonce: &[u8; NONCE_LEN], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        match self {
            Cipher::A128(c) => c.encrypt(nonce, payload).ok(),
            Cipher::A192(c) => c.encrypt(nonce, payload).ok(),
            Cipher::A256(c) => c.encrypt(nonce, payload).ok(),
        }
    }

    fn decrypt(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        match self {
            Cipher::A128(c) => c.decrypt(nonce, payload).ok(),
            Cipher::A192(c) => c.decrypt(nonce, payload).ok(),
            Cipher::A256(c) => c.decrypt(nonce, payload).ok(),
        }
    }
}

/// Why a packet could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("empty or truncated packet")]
    Malformed,
    #[error("unknown packet version {0}")]
    Version(u8),
    #[error("no installed key could decrypt the message")]
    NoKeyDecrypts,
    #[error("the message is encrypted but encryption is not configured here")]
    NoKeys,
    #[error("the message is not encrypted but encryption is configured here")]
    Unencrypted,
}

impl OpenError {
    /// True if the problem is about keys rather than a garbled packet.
    pub(crate) fn is_key_problem(&self) -> bool {
        matches!(
            self,
            OpenError::NoKeyDecrypts | OpenError::NoKeys | OpenError::Unencrypted
        )
    }
}

/// The installed keys; the first is primary and encrypts.
#[derive(Clone, Default)]
pub(crate) struct Keyring {
    keys: Vec<(Vec<u8>, Cipher)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// A keyring holding `keys`, the first primary.
    pub(crate) fn new(keys: &[Vec<u8>]) -> Result<Keyring, GossipError> {
        let mut ring = Keyring::default();
        for key in keys {
            ring.install(key)?;
        }
        Ok(ring)
    }

    /// True if encryption is enabled.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The keys, primary first.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.iter().map(|(k, _)| k.as_slice())
    }

    /// Adds a key (as secondary unless the ring was empty); installing a
    /// present key is a no-op.
    pub(crate) fn install(&mut self, key: &[u8]) -> Result<(), GossipError> {
        if self.keys.iter().any(|(k, _)| k == key) {
            return Ok(());
        }
        let cipher = Cipher::new(key)?;
        self.keys.push((key.to_vec(), cipher));
        Ok(())
    }

    /// Makes an installed key primary.
    pub(crate) fn use_key(&mut self, key: &[u8]) -> Result<(), GossipError> {
        let Some(i) = self.keys.iter().position(|(k, _)| k == key) else {
            return Err(GossipError::Keyring(
                "the key is not installed; install it first".into(),
            ));
        };
        let entry = self.keys.remove(i);
        self.keys.insert(0, entry);
        Ok(())
    }

    /// Removes a secondary key; the primary key cannot be removed.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Result<(), GossipError> {
        match self.keys.iter().position(|(k, _)| k == key) {
            Some(0) => Err(GossipError::Keyring(
                "removing the primary key is not allowed; make another key primary with use first"
                    .into(),
            )),
            Some(i) => {
                self.keys.remove(i);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Seals `payload` with the primary key, or frames it as plaintext when
    /// encryption is off.
    pub(crate) fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let Some((_, cipher)) = self.keys.first() else {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(payload);
            return out;
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = [SEALED];
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: payload,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.push(SEALED);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a packet made by [`Keyring::seal`] on this or another node.
    pub(crate) fn open(&self, data: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = data.split_first().ok_or(OpenError::Malformed)?;
        match version {
            PLAIN if self.is_enabled() => Err(OpenError::Unencrypted),
            PLAIN => Ok(rest.to_vec()),
            SEALED if !self.is_enabled() => Err(OpenError::NoKeys),
            SEALED => {
                if rest.len() < NONCE_LEN + TAG_LEN {
                    return Err(OpenError::Malformed);
                }
                let (nonce, ct) = rest.split_at(NONCE_LEN);
                let aad = [SEALED];
                self.keys
                    .iter()
                    .find_map(|(_, c)| c.decrypt(nonce, Payload { msg: ct, aad: &aad }))
                    .ok_or(OpenError::NoKeyDecrypts)
            }
            v => Err(OpenError::Version(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_roundtrip_and_sizes() {
        let k = generate_key();
        assert_eq!(parse_key(&k).unwrap().len(), 32);
        for n in [16, 24, 32] {
            assert_eq!(parse_key(&encode_key(&vec![7; n])).unwrap().len(), n);
        }
        let err = parse_key(&encode_key(&[1; 10])).unwrap_err().to_string();
        assert!(
            err.contains("10 bytes") && err.contains("16, 24 or 32"),
            "{err}"
        );
        let err = parse_key("not base64!").unwrap_err().to_string();
        assert!(err.contains("base64"), "{err}");
    }

    #[test]
    fn seal_open_with_every_key_size_and_rotation() {
        for n in [16, 24, 32] {
            let ring = Keyring::new(&[vec![1; n]]).unwrap();
            let sealed = ring.seal(b"hello");
            assert_eq!(sealed.len(), 5 + OVERHEAD);
            assert_eq!(ring.open(&sealed).unwrap(), b"hello");
        }
        let old = Keyring::new(&[vec![1; 32]]).unwrap();
        let mut both = Keyring::new(&[vec![2; 16], vec![1; 32]]).unwrap();
        assert_eq!(both.open(&old.seal(b"x")).unwrap(), b"x");
        assert_eq!(old.open(&both.seal(b"y")), Err(OpenError::NoKeyDecrypts));
        both.use_key(&[1; 32]).unwrap();
        assert_eq!(old.open(&both.seal(b"z")).unwrap(), b"z");
        assert!(both.remove(&[1; 32]).is_err(), "primary cannot be removed");
        both.remove(&[2; 16]).unwrap();
        assert_eq!(both.keys().count(), 1);
    }

    #[test]
    fn mismatched_modes_and_garbage_are_errors() {
        let plain = Keyring::default();
        let keyed = Keyring::new(&[vec![3; 32]]).unwrap();
        assert_eq!(keyed.open(&plain.seal(b"a")), Err(OpenError::Unencrypted));
        assert_eq!(plain.open(&keyed.seal(b"a")), Err(OpenError::NoKeys));
        assert_eq!(keyed.open(&[]), Err(OpenError::Malformed));
        assert_eq!(keyed.open(&[SEALED, 1, 2]), Err(OpenError::Malformed));
        assert_eq!(keyed.open(&[9, 1, 2]), Err(OpenError::Version(9)));
        let mut tampered = keyed.seal(b"abc");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(keyed.open(&tampered), Err(OpenError::NoKeyDecrypts));
    }
}
