//! The HTTP API's connection limit: Consul's `limits.http_max_conns_per_client`
//! (200 by default) counts the connections one client IP holds open; one
//! more is answered 429 and closed, and a slot frees when one closes.

use crate::support::{eventually, Agent};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Consul's default `limits.http_max_conns_per_client`.
const LIMIT: usize = 200;

/// Sends a GET on `s` (kept open) and returns the status line.
async fn status_line(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .expect("write the request");
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("a response within 10 s")
        .expect("read the response");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_client_past_200_connections_is_refused_until_one_closes() {
    let a = Agent::start(&[]);
    let mut open = Vec::with_capacity(LIMIT);
    for _ in 0..LIMIT {
        open.push(TcpStream::connect(a.http).await.expect("connect"));
    }
    // The last of the 200 is served, so all 200 were admitted (the agent
    // accepts in order) and are held idle.
    let last = open.last_mut().unwrap();
    assert_eq!(status_line(last, "/v1/status/leader").await, "HTTP/1.1 200");

    // The 201st: Consul's 429, then closed.
    let mut over = TcpStream::connect(a.http).await.expect("connect");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), over.read_to_end(&mut answer))
        .await
        .expect("the 201st connection closed within 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("too many concurrent connections"),
        "{answer}"
    );

    // Close ten; a new connection is served once the agent sees them go.
    open.truncate(LIMIT - 10);
    eventually(
        Duration::from_secs(10),
        "a new connection served",
        || async {
            let mut s = TcpStream::connect(a.http).await.ok()?;
            let line = tokio::time::timeout(Duration::from_secs(2), async {
                s.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = [0u8; 12];
                s.read_exact(&mut buf).await.ok()?;
                Some(buf)
            })
            .await
            .ok()??;
            (&line == b"HTTP/1.1 200").then_some(())
        },
    )
    .await;
    // The idle ones are still open and usable.
    assert_eq!(
        status_line(&mut open[0], "/v1/status/leader").await,
        "HTTP/1.1 200"
    );
}
