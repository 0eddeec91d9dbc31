//! L4 mTLS end to end on loopback: an echo app behind a `socat` sidecar, and
//! a `web` sidecar whose upstream listener leads to it.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_proxy::{Proxy, ProxyConfig, ProxyError, Upstream};
use support::*;

/// An echo app, its `socat` sidecar and a `web` sidecar with an upstream to
/// it, all from one CA.
struct Mesh {
    ca: Ca,
    echo: SocketAddr,
    socat: Proxy,
    web: Proxy,
}

impl Mesh {
    async fn start() -> Self {
        let ca = Ca::new();
        let echo = echo_server().await;
        let socat = Proxy::start(sidecar(&ca, "socat", echo)).await.unwrap();
        let socat_addr = socat.public_addr().unwrap();
        let web = Proxy::start(client(&ca, "web", "socat", vec![socat_addr]))
            .await
            .unwrap();
        Self {
            ca,
            echo,
            socat,
            web,
        }
    }

    fn socat_public(&self) -> SocketAddr {
        self.socat.public_addr().unwrap()
    }

    fn upstream(&self) -> SocketAddr {
        self.web.upstream_addr("socat").unwrap()
    }

    /// The running config of `proxy` with the next version number.
    fn next(proxy: &Proxy) -> ProxyConfig {
        let config = proxy.config();
        ProxyConfig {
            version: config.version + 1,
            ..(*config).clone()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_through_both_sidecars() {
    let mesh = Mesh::start().await;
    echo_once(mesh.upstream(), b"hello through the mesh")
        .await
        .unwrap();

    // A bigger payload in both directions at once.
    let payload: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let mut conn = EchoConn::open(mesh.upstream()).await.unwrap();
    conn.echo(&payload).await.unwrap();
    assert!(conn.finish().await.unwrap().is_empty());

    wait_until("both sides counted the connections", || {
        mesh.socat.stats().inbound.established() == 2
            && mesh.web.stats().outbound.established() == 2
            && mesh.socat.open_connections() == 0
            && mesh.web.open_connections() == 0
    })
    .await;
    assert_eq!(mesh.socat.stats().inbound.failed(), 0);
    assert_eq!(mesh.socat.stats().inbound.denied(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_carries_through_tls() {
    let mesh = Mesh::start().await;
    let mut conn = EchoConn::open(mesh.upstream()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    conn.stream().write_all(b"last words").await.unwrap();
    // Our write half closes; the echo still answers and then closes.
    assert_eq!(conn.finish().await.unwrap(), b"last words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_intention_refuses_new_connections_and_spares_open_ones() {
    let mesh = Mesh::start().await;
    let mut open = EchoConn::open(mesh.upstream()).await.unwrap();
    open.echo(b"before").await.unwrap();

    mesh.socat
        .update(ProxyConfig {
            intentions: vec![rule("web", false, 9)],
            ..Mesh::next(&mesh.socat)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
    wait_until("socat counted the denial", || {
        mesh.socat.stats().inbound.denied() == 1
    })
    .await;
    open.echo(b"still here").await.unwrap();

    // A wildcard allow of lower precedence does not override the deny.
    mesh.socat
        .update(ProxyConfig {
            intentions: vec![rule("web", false, 9), rule("*", true, 8)],
            ..Mesh::next(&mesh.socat)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;

    // Allow restores new connections.
    mesh.socat
        .update(ProxyConfig {
            intentions: vec![rule("web", true, 9)],
            default_allow: false,
            ..Mesh::next(&mesh.socat)
        })
        .await
        .unwrap();
    echo_once(mesh.upstream(), b"allowed again").await.unwrap();
    open.echo(b"and still here").await.unwrap();
    assert_eq!(mesh.socat.stats().inbound.denied(), 2);

    // Default deny with no matching rule refuses.
    mesh.socat
        .update(ProxyConfig {
            intentions: vec![rule("api", true, 9)],
            default_allow: false,
            ..Mesh::next(&mesh.socat)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
    assert_eq!(open.finish().await.unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_from_another_ca_is_refused() {
    let mesh = Mesh::start().await;
    let rogue_ca = Ca::new();
    // The rogue trusts the real root (so it accepts socat) but presents a
    // leaf of its own CA, in the same trust domain.
    let rogue = Proxy::start(ProxyConfig {
        upstreams: vec![Upstream::tcp(
            "socat",
            any_port(),
            vec![mesh.socat_public()],
        )],
        ..config(
            &mesh.ca,
            "web",
            &rogue_ca.leaf("web"),
            vec![mesh.ca.root_pem()],
        )
    })
    .await
    .unwrap();
    assert_refused(rogue.upstream_addr("socat").unwrap()).await;
    wait_until("socat counted the failed handshake", || {
        mesh.socat.stats().inbound.failed() == 1
    })
    .await;
    assert_eq!(mesh.socat.stats().inbound.established(), 0);

    // The real web still gets through.
    echo_once(mesh.upstream(), b"real web").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_is_refused() {
    let mesh = Mesh::start().await;
    let mut conn = EchoConn::open(mesh.socat_public()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    // Best effort: the proxy may already have closed.
    let _ = conn.stream().write_all(b"GET / HTTP/1.0\r\n\r\n").await;
    let got = conn.closed_by_peer().await.unwrap();
    assert!(
        !got.windows(3).any(|w| w == b"GET"),
        "plaintext reached the app"
    );
    wait_until("socat counted the failed handshake", || {
        mesh.socat.stats().inbound.failed() == 1
    })
    .await;
    assert_eq!(mesh.socat.stats().inbound.established(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_leaf_is_refused() {
    let mesh = Mesh::start().await;
    let long_ago = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    let expired = mesh.ca.leaf_at("web", Duration::from_secs(3600), long_ago);
    mesh.web
        .update(ProxyConfig {
            leaf_cert_pem: expired.cert_pem,
            leaf_key_pem: expired.key_pem,
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
    wait_until("socat counted the failed handshake", || {
        mesh.socat.stats().inbound.failed() == 1
    })
    .await;
    assert_eq!(mesh.socat.stats().inbound.established(), 0);

    // A renewed leaf pushed by update works at once. (With the old key it
    // is refused: the pair must match.)
    let err = mesh
        .web
        .update(ProxyConfig {
            leaf_cert_pem: mesh.ca.leaf("web").cert_pem,
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap_err();
    assert!(err.is_invalid_config(), "{err}");
    let renewed = mesh.ca.leaf("web");
    mesh.web
        .update(ProxyConfig {
            leaf_cert_pem: renewed.cert_pem,
            leaf_key_pem: renewed.key_pem,
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    echo_once(mesh.upstream(), b"renewed").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_leaf_for_the_wrong_service_is_refused() {
    let mesh = Mesh::start().await;
    let db = Proxy::start(sidecar(&mesh.ca, "db", mesh.echo))
        .await
        .unwrap();
    // web's "socat" upstream now points at the db sidecar.
    mesh.web
        .update(ProxyConfig {
            upstreams: vec![Upstream::tcp(
                "socat",
                any_port(),
                vec![db.public_addr().unwrap()],
            )],
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
    wait_until("web counted the failed handshake", || {
        mesh.web.stats().outbound.failed() == 1
    })
    .await;
    assert_eq!(mesh.web.stats().outbound.established(), 0);
    assert_eq!(db.stats().inbound.established(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_is_skipped() {
    let mesh = Mesh::start().await;
    let second_echo = echo_server().await;
    let socat2 = Proxy::start(sidecar(&mesh.ca, "socat", second_echo))
        .await
        .unwrap();
    let down = closed_port().await;
    mesh.web
        .update(ProxyConfig {
            upstreams: vec![Upstream::tcp(
                "socat",
                any_port(),
                vec![down, mesh.socat_public(), socat2.public_addr().unwrap()],
            )],
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    for i in 0..6 {
        echo_once(mesh.upstream(), format!("try {i}").as_bytes())
            .await
            .unwrap();
    }
    // Round robin spread the load over both live endpoints.
    wait_until("both endpoints served", || {
        mesh.socat.stats().inbound.established() >= 2 && socat2.stats().inbound.established() >= 2
    })
    .await;
    assert_eq!(mesh.web.stats().outbound.failed(), 0);

    // With every endpoint down the connection is closed.
    mesh.web
        .update(ProxyConfig {
            upstreams: vec![Upstream::tcp("socat", any_port(), vec![down])],
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
    assert_eq!(mesh.web.stats().outbound.failed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_fails_no_connection() {
    let mesh = Mesh::start().await;
    let old = &mesh.ca;
    let mut open = EchoConn::open(mesh.upstream()).await.unwrap();
    open.echo(b"before rotation").await.unwrap();

    // Traffic the whole time: a fresh connection after another.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, done, addr) = (stop.clone(), done.clone(), mesh.upstream());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                echo_once(addr, b"during rotation").await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        })
    };
    let progress = |done: &AtomicU64| {
        let seen = done.load(Ordering::Relaxed);
        move |d: &AtomicU64| d.load(Ordering::Relaxed) >= seen + 3
    };

    let new = old.rotate();
    let both = vec![old.root_pem(), new.root_pem()];
    let steps: Vec<(&Proxy, &str, Vec<String>)> = vec![
        // Servers first, then clients: new leaves (chained through the
        // cross-signed root) and both roots.
        (&mesh.socat, "socat", both.clone()),
        (&mesh.web, "web", both),
        // Then the old root goes away.
        (&mesh.socat, "socat", vec![new.root_pem()]),
        (&mesh.web, "web", vec![new.root_pem()]),
    ];
    for (proxy, service, roots) in steps {
        let leaf = new.leaf(service);
        proxy
            .update(ProxyConfig {
                leaf_cert_pem: leaf.cert_pem,
                leaf_key_pem: leaf.key_pem,
                roots_pem: roots,
                ..Mesh::next(proxy)
            })
            .await
            .unwrap();
        let enough = progress(&done);
        wait_until("connections went through after the update", || {
            enough(&done) || traffic.is_finished()
        })
        .await;
        open.echo(b"mid rotation").await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    step(traffic).await.unwrap().unwrap().unwrap();
    assert_eq!(mesh.socat.stats().inbound.failed(), 0);
    assert_eq!(mesh.web.stats().outbound.failed(), 0);
    assert_eq!(open.finish().await.unwrap(), b"");

    // The old root is no longer trusted: a leaf of it is refused now.
    let stale = old.leaf("web");
    mesh.web
        .update(ProxyConfig {
            leaf_cert_pem: stale.cert_pem,
            leaf_key_pem: stale.key_pem,
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    assert_refused(mesh.upstream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_rebind_only_when_their_address_changes() {
    let mesh = Mesh::start().await;
    let upstream = mesh.upstream();
    let mut open = EchoConn::open(upstream).await.unwrap();
    open.echo(b"one").await.unwrap();

    // Unrelated change (timeouts, intentions): same listener.
    mesh.web
        .update(ProxyConfig {
            idle_timeout: Duration::from_secs(600),
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap();
    assert_eq!(mesh.upstream(), upstream);

    // A second upstream gets its own listener; the first stays.
    let db = Proxy::start(sidecar(&mesh.ca, "db", mesh.echo))
        .await
        .unwrap();
    let mut config = Mesh::next(&mesh.web);
    config.upstreams.push(Upstream::tcp(
        "db",
        any_port(),
        vec![db.public_addr().unwrap()],
    ));
    mesh.web.update(config).await.unwrap();
    assert_eq!(mesh.upstream(), upstream);
    let db_addr = mesh.web.upstream_addr("db").unwrap();
    echo_once(db_addr, b"to db").await.unwrap();

    // Moving the socat upstream to a new explicit port rebinds it.
    let moved = {
        let probe = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        probe.local_addr().unwrap()
    };
    let mut config = Mesh::next(&mesh.web);
    config.upstreams[0].bind = moved;
    mesh.web.update(config).await.unwrap();
    assert_eq!(mesh.upstream(), moved);
    echo_once(moved, b"moved").await.unwrap();
    assert!(echo_once(upstream, b"old address").await.is_err());

    // Removing the db upstream closes its listener.
    let mut config = Mesh::next(&mesh.web);
    config.upstreams.retain(|u| u.destination != "db");
    mesh.web.update(config).await.unwrap();
    assert!(mesh.web.upstream_addr("db").is_none());
    assert!(echo_once(db_addr, b"gone").await.is_err());

    // Renaming an upstream in place keeps the socket.
    let mut config = Mesh::next(&mesh.web);
    config.upstreams[0].destination = "db".into();
    config.upstreams[0].endpoints = vec![db.public_addr().unwrap()];
    mesh.web.update(config).await.unwrap();
    assert_eq!(mesh.web.upstream_addr("db"), Some(moved));
    assert!(mesh.web.upstream_addr("socat").is_none());
    echo_once(moved, b"renamed").await.unwrap();

    // Through it all the first connection kept working.
    open.echo(b"still one").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_updates_change_nothing() {
    let mesh = Mesh::start().await;
    let before = mesh.web.config();

    let err = mesh
        .web
        .update(ProxyConfig {
            version: 0,
            ..(*before).clone()
        })
        .await
        .unwrap_err();
    assert!(err.is_stale_version(), "{err}");

    let err = mesh
        .web
        .update(ProxyConfig {
            leaf_cert_pem: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
                .into(),
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap_err();
    assert!(err.is_invalid_config(), "{err}");

    // A leaf for another service than the config's.
    let err = mesh
        .web
        .update(ProxyConfig {
            service: "api".into(),
            ..Mesh::next(&mesh.web)
        })
        .await
        .unwrap_err();
    assert!(err.is_invalid_config(), "{err}");
    assert!(err.to_string().contains("LeafCertPEM"), "{err}");

    // A bind that fails names the address, and keeps the old listener.
    let taken = mesh.socat_public();
    let mut config = Mesh::next(&mesh.web);
    config.upstreams[0].bind = taken;
    config.intentions = vec![rule("*", false, 1)];
    let err = mesh.web.update(config).await.unwrap_err();
    assert!(err.is_bind(), "{err}");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");

    assert_eq!(*mesh.web.config(), *before);
    echo_once(mesh.upstream(), b"unchanged").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_names_the_address_it_cannot_bind() {
    let mesh = Mesh::start().await;
    let mut config = sidecar(&mesh.ca, "socat", mesh.echo);
    let taken = mesh.socat_public();
    config.public_listener.as_mut().unwrap().bind = taken;
    match Proxy::start(config).await {
        Err(ProxyError::Bind { addr, .. }) => assert_eq!(addr, taken),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_closes() {
    let mesh = Mesh::start().await;
    let Mesh { socat, web, .. } = mesh;
    let upstream = web.upstream_addr("socat").unwrap();

    // A connection that finishes within the drain time is not cut.
    let mut open = EchoConn::open(upstream).await.unwrap();
    open.echo(b"draining").await.unwrap();
    let shutdown = tokio::spawn(web.shutdown(Duration::from_secs(30)));
    // New connections are refused at once ...
    let refused = step(async {
        loop {
            if tokio::net::TcpStream::connect(upstream).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener stayed open");
    // ... while the open one still works, then finishes.
    open.echo(b"still draining").await.unwrap();
    assert_eq!(open.finish().await.unwrap(), b"");
    assert_eq!(step(shutdown).await.unwrap().unwrap(), 0);

    // A connection still open when the drain time ends is closed.
    let conn = EchoConn::open(socat.public_addr().unwrap()).await.unwrap();
    // (Plain TCP to the TLS listener: it waits in the handshake.)
    wait_until("socat saw the connection", || socat.open_connections() == 1).await;
    assert_eq!(socat.shutdown(Duration::from_millis(50)).await, 1);
    assert_eq!(conn.closed_by_peer().await.unwrap(), b"");
}
