use super::*;
use axum::routing::{get, put};
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Serves a small app under `limits` on an ephemeral port.
async fn start(limits: HttpLimits) -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "slow"
            }),
        )
        .route(
            "/body",
            put(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, limits, None));
    addr
}

fn short(max_conns_per_client: usize) -> HttpLimits {
    HttpLimits {
        max_conns_per_client,
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
    }
}

/// Writes `bytes`, then reads until the server closes (or 5 s pass).
async fn exchange(s: &mut TcpStream, bytes: &[u8]) -> String {
    s.write_all(bytes).await.unwrap();
    read_to_close(s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "still open after 5 s: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// One request on a connection of its own (closed after the response).
async fn request(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(&mut s, req.as_bytes()).await
}

#[tokio::test]
async fn a_partial_header_is_closed_by_the_header_timeout() {
    let addr = start(short(0)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let got = exchange(&mut s, b"GET /ok HTTP/1.1\r\nHost: x\r\n").await;
    let took = started.elapsed();
    assert!(!got.contains("200 OK"), "{got}");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    // A connection that says nothing at all is closed too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
    // A whole request is served.
    assert!(request(addr, "/ok").await.starts_with("HTTP/1.1 200 OK"));
}

#[tokio::test]
async fn a_handler_may_take_longer_than_the_header_timeout() {
    // As a blocking query does: the header timeout is only for headers.
    let addr = start(short(0)).await;
    let got = request(addr, "/slow").await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.ends_with("slow"), "{got}");
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_by_the_body_timeout() {
    let addr = start(short(0)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = b"PUT /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
    let started = Instant::now();
    let got = exchange(&mut s, head).await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("sent nothing for 300ms"), "{got}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A body that arrives is read.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let whole =
        b"PUT /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc";
    let got = exchange(&mut s, whole).await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK") && got.ends_with("\r\n3"),
        "{got}"
    );
}

#[tokio::test]
async fn connections_past_the_per_client_limit_get_429_until_one_closes() {
    let addr = start(short(2)).await;
    let first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    // The second is served, so both were admitted before the third.
    second
        .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 15];
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200 OK");

    let mut third = TcpStream::connect(addr).await.unwrap();
    let got = read_to_close(&mut third).await;
    assert!(
        got.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{got}"
    );
    assert!(got.ends_with("please rate limit your calls\n"), "{got}");
    let (_, body) = got.split_once("\r\n\r\n").unwrap();
    assert!(got.contains(&format!("Content-Length: {}\r\n", body.len())));

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = request(addr, "/ok").await;
        if got.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let addr = start(short(0)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    let got = exchange(
        &mut s,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.ends_with(&format!("\r\n{me}")), "{got}");
}
