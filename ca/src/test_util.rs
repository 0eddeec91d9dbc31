//! Fixtures for the unit tests: CAs, leaves and an in-memory TLS pipe.

use std::time::{Duration, SystemTime};

use rustls::{ClientConnection, ServerConnection};

use crate::{generate_csr, CaConfiguration, ConsulProvider, IssuedCert, Provider, SpiffeId};

/// The cluster ID of the test CA.
pub(crate) const CLUSTER: &str = "11111111-2222-3333-4444-555555555555";
/// Its trust domain.
pub(crate) const TD: &str = "11111111-2222-3333-4444-555555555555.consul";
/// The default leaf lifetime.
pub(crate) const TTL: Duration = Duration::from_secs(72 * 3600);

/// A CA for `cluster` with a fresh active root.
pub(crate) fn ca_for(cluster: &str) -> ConsulProvider {
    let provider = ConsulProvider::new(&CaConfiguration::new(cluster)).unwrap();
    let (root, key) = provider.generate_root(SystemTime::now()).unwrap();
    provider.with_active_root(root, &key).unwrap()
}

/// A CA for [`CLUSTER`].
pub(crate) fn ca() -> ConsulProvider {
    ca_for(CLUSTER)
}

/// The service identity `name` in dc1 of `ca`'s trust domain.
pub(crate) fn service_id(ca: &ConsulProvider, name: &str) -> SpiffeId {
    SpiffeId::service(ca.trust_domain(), "default", "dc1", name).unwrap()
}

/// A leaf for `service` signed by `ca` at `now` for `ttl`, with its key.
pub(crate) fn leaf_at(
    ca: &ConsulProvider,
    service: &str,
    ttl: Duration,
    now: SystemTime,
) -> (IssuedCert, String) {
    let (csr, key) = generate_csr(&service_id(ca, service)).unwrap();
    (ca.sign(&csr, ttl, now).unwrap(), key)
}

/// A leaf for `service` signed by `ca` now.
pub(crate) fn leaf(ca: &ConsulProvider, service: &str) -> (IssuedCert, String) {
    leaf_at(ca, service, TTL, SystemTime::now())
}

/// PEM-encodes `der` under `label`.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Which end of a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Runs a handshake between `client` and `server` over in-memory buffers,
/// then sends one message each way. Returns the side that failed first.
pub(crate) fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), (Side, rustls::Error)> {
    use std::io::{Read, Write};

    for _ in 0..32 {
        let moved = pump(client, server)?;
        if !moved && !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        panic!("handshake did not finish");
    }
    client.writer().write_all(b"ping").unwrap();
    server.writer().write_all(b"pong").unwrap();
    pump(client, server)?;
    pump(client, server)?;
    let mut buf = [0u8; 4];
    server.reader().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    client.reader().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    Ok(())
}

/// Moves pending TLS records both ways once; whether anything moved.
fn pump(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<bool, (Side, rustls::Error)> {
    let mut moved = false;
    let mut buf = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() {
        moved = true;
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server
                .process_new_packets()
                .map_err(|e| (Side::Server, e))?;
        }
    }
    buf.clear();
    while server.wants_write() {
        server.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() {
        moved = true;
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client
                .process_new_packets()
                .map_err(|e| (Side::Client, e))?;
        }
    }
    Ok(moved)
}
