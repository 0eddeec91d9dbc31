//! The socat walk-through: an echo service behind its sidecar, a client
//! proxy for `web`, mTLS between them, and intentions deciding.

use crate::support::{
    echo, echo_server, eventually, free_port, instance, round_trip, write_file, Agent, MeshProcess,
    PROXY_WAIT,
};
use std::time::Duration;
use tokio::net::TcpStream;

#[tokio::test]
async fn bytes_cross_the_mesh_and_intentions_decide() {
    let echo_addr = echo_server().await;
    let sidecar_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "socat.json",
        &format!(
            r#"{{"service":{{"name":"socat","port":{},"connect":{{"sidecar_service":{{"port":{sidecar_port}}}}}}}}}"#,
            echo_addr.port()
        ),
    );
    let config_dir = format!("-config-dir={}", dir.path().display());
    let a = Agent::start(&["-enable-script-checks", config_dir.as_str()]);

    let sidecar = MeshProcess::spawn(
        &a,
        &[
            "proxy",
            "-sidecar-for",
            "socat",
            "-bind-address",
            "127.0.0.1",
        ],
    );
    assert_eq!(
        sidecar.wait_line("Public listener:", PROXY_WAIT),
        format!("127.0.0.1:{sidecar_port}")
    );
    let web = MeshProcess::spawn(&a, &["proxy", "-service", "web", "-upstream", "socat:0"]);
    let upstream = web.wait_line("Upstream socat:", PROXY_WAIT);

    // The sidecar's TCP check passes now that it listens: it is a healthy endpoint.
    let got = eventually(PROXY_WAIT, "an echo through the mesh", || async {
        round_trip(&upstream, b"hello mesh\n").await
    })
    .await;
    assert_eq!(got, b"hello mesh\n");

    // Keep one connection open across the deny.
    let mut open = TcpStream::connect(&upstream).await.unwrap();
    assert_eq!(
        echo(&mut open, b"before").await.as_deref(),
        Some(&b"before"[..])
    );

    let out = a.cli(&["intention", "create", "-deny", "web", "socat"]);
    assert!(out.status.success());
    eventually(PROXY_WAIT, "the deny to take effect", || async {
        round_trip(&upstream, b"x").await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        echo(&mut open, b"still here").await.as_deref(),
        Some(&b"still here"[..]),
        "an established connection survives the new deny"
    );

    assert!(a
        .cli(&["intention", "delete", "web", "socat"])
        .status
        .success());
    let back = eventually(PROXY_WAIT, "the allow to return", || async {
        round_trip(&upstream, b"restored").await
    })
    .await;
    assert_eq!(back, b"restored");

    // A plaintext client on the public listener gets nothing back.
    let plain = round_trip(
        &format!("127.0.0.1:{sidecar_port}"),
        b"GET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert!(plain.is_none(), "plaintext is refused: {plain:?}");

    // A registration change reaches the running sidecar: a new upstream.
    let added = free_port();
    let reg = serde_json::json!({"name": "socat", "port": echo_addr.port(),
        "connect": {"sidecar_service": {"port": sidecar_port, "proxy": {"upstreams": [
            {"destination_name": "socat", "local_bind_port": added}]}}}});
    a.put_ok("/v1/agent/service/register", &reg.to_string())
        .await;
    let via_new = eventually(PROXY_WAIT, "the new upstream listener", || async {
        round_trip(&format!("127.0.0.1:{added}"), b"new upstream").await
    })
    .await;
    assert_eq!(via_new, b"new upstream");

    assert_eq!(
        web.terminate(PROXY_WAIT).and_then(|s| s.code()),
        Some(0),
        "graceful exit on SIGTERM"
    );
    drop(sidecar);
}

#[tokio::test]
async fn a_proxy_without_a_registration_says_so() {
    let a = Agent::start(&[]);
    let out = a.cli(&["proxy", "-sidecar-for", "nothing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sidecar proxy is registered"));
    let out = a.cli(&["proxy", "-service", "web", "-upstream", "bad"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-upstream"));
}

#[tokio::test]
async fn traffic_survives_a_lost_instance_and_a_root_rotation() {
    let a = Agent::start(&[]);
    let (one, _) = instance(&a, "echo", "echo-1", echo_server().await).await;
    let (two, _) = instance(&a, "echo", "echo-2", echo_server().await).await;
    eventually(PROXY_WAIT, "both sidecars healthy", || async {
        let v = a.get("/v1/health/connect/echo?passing").await.json();
        (v.as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let web = MeshProcess::spawn(&a, &["proxy", "-service", "web", "-upstream", "echo:0"]);
    let upstream = web.wait_line("Upstream echo:", PROXY_WAIT);
    eventually(PROXY_WAIT, "an echo", || async {
        round_trip(&upstream, b"up").await
    })
    .await;

    // One instance's sidecar dies: the connect fails over to the other, even
    // before its health check notices.
    drop(one);
    for i in 0..20u8 {
        let msg = [b'a' + i; 16];
        assert_eq!(
            round_trip(&upstream, &msg).await.as_deref(),
            Some(&msg[..]),
            "connection {i} after losing an instance"
        );
    }

    // A steady stream of connections while the root rotates: none fails.
    let before = a.get("/v1/connect/ca/roots").await.json()["ActiveRootID"].clone();
    let stream = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut ok = 0u32;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            while tokio::time::Instant::now() < deadline {
                match round_trip(&upstream, b"steady").await {
                    Some(b) if b == b"steady" => ok += 1,
                    other => return Err(format!("failed after {ok} good: {other:?}")),
                }
            }
            Ok(ok)
        })
    };
    a.set_ca_config(r#"{"Provider":"consul","Config":{"RootCertTTL":"43000h"}}"#);
    let after = a.get("/v1/connect/ca/roots").await.json()["ActiveRootID"].clone();
    assert_ne!(before, after, "the root rotated");
    let good = stream
        .await
        .unwrap()
        .expect("no connection failed during the rotation");
    assert!(good > 10, "only {good} connections ran");
    // And after it.
    assert_eq!(
        round_trip(&upstream, b"after").await.as_deref(),
        Some(&b"after"[..])
    );
    drop(two);
}

#[tokio::test]
async fn proxies_ride_out_an_agent_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = format!("-data-dir={}", data.path().display());
    let http_port = format!("-http-port={}", free_port());
    let args = [
        "-server",
        "-bootstrap",
        data_dir.as_str(),
        http_port.as_str(),
        "-node=restarting",
    ];
    let mut a = Agent::start(&args);
    let (_sidecar, _) = instance(&a, "echo", "echo-1", echo_server().await).await;
    let web = MeshProcess::spawn(&a, &["proxy", "-service", "web", "-upstream", "echo:0"]);
    let upstream = web.wait_line("Upstream echo:", PROXY_WAIT);
    eventually(PROXY_WAIT, "an echo", || async {
        round_trip(&upstream, b"up").await
    })
    .await;

    // Without their agent the proxies keep serving the last config.
    a.kill9();
    for i in 0..5u8 {
        let msg = [b'k' + i; 8];
        assert_eq!(
            round_trip(&upstream, &msg).await.as_deref(),
            Some(&msg[..]),
            "connection {i} with the agent down"
        );
    }

    // The agent comes back where the proxies expect it; they reopen their
    // config streams, so an intention written now reaches them.
    let b = Agent::start(&args);
    let healthy = || async {
        let v = b.get("/v1/health/connect/echo?passing").await.json();
        (v.as_array().unwrap().len() == 1).then_some(())
    };
    eventually(PROXY_WAIT, "the sidecar healthy again", healthy).await;
    eventually(PROXY_WAIT, "an echo after the restart", || async {
        round_trip(&upstream, b"back").await
    })
    .await;
    b.cli_ok(&["intention", "create", "-deny", "web", "echo"]);
    eventually(PROXY_WAIT, "the deny to reach the sidecar", || async {
        round_trip(&upstream, b"x").await.is_none().then_some(())
    })
    .await;
    healthy()
        .await
        .expect("refused by the intention, not for want of a healthy endpoint");
    b.cli_ok(&["intention", "delete", "web", "echo"]);
    eventually(PROXY_WAIT, "the allow to return", || async {
        round_trip(&upstream, b"again").await
    })
    .await;
}
