//! Connect through a client agent: sidecars and client proxies ask the
//! client agent on their machine, which holds no state. Its leaves are
//! signed by a server from a CSR (the key never leaves the client), and its
//! proxies' configs follow the servers' state through long polls.

use crate::support::{
    client_agent, echo_server, eventually, instance, round_trip, Agent, MeshProcess, PROXY_WAIT,
};
use mesh_ca::{verify_leaf, TrustedRoots};
use serde_json::Value;
use std::time::SystemTime;

/// The PEM of the servers' active root.
async fn active_root(server: &Agent) -> String {
    let roots = server.get("/v1/connect/ca/roots").await.json();
    let active = &roots["ActiveRootID"];
    roots["Roots"]
        .as_array()
        .and_then(|all| all.iter().find(|r| &r["ID"] == active))
        .and_then(|r| r["RootCert"].as_str())
        .expect("an active root")
        .to_string()
}

/// Whether the leaf (an `IssuedCert` in JSON) chains to `root` alone.
fn signed_by(leaf: &Value, root: &str) -> bool {
    let roots = TrustedRoots::from_pem(root).expect("root PEM");
    let cert = leaf["CertPEM"].as_str().unwrap_or_default();
    verify_leaf(&roots, cert, SystemTime::now()).is_ok()
}

#[tokio::test]
async fn sidecars_on_a_client_agent_carry_mtls_and_follow_the_servers() {
    let server = Agent::start(&["-node=s1"]);
    let dir = tempfile::tempdir().unwrap();
    let client = client_agent("c1", dir.path(), &server).await;

    // The client's leaf: signed by the servers' CA for this service, with a
    // key made on the client.
    let leaf = client.get("/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(leaf.status, 200, "{}", leaf.text);
    let leaf = leaf.json();
    assert_eq!(
        leaf["ServiceURI"]
            .as_str()
            .map(|u| u.ends_with("/dc1/svc/web")),
        Some(true),
        "{leaf}"
    );
    assert!(leaf["PrivateKeyPEM"]
        .as_str()
        .is_some_and(|k| k.contains("PRIVATE KEY")));
    let active = active_root(&server).await;
    assert!(
        signed_by(&leaf, &active),
        "the leaf chains to the active root"
    );

    // A sidecar and a client proxy, both on the client agent.
    let (sidecar, _) = instance(&client, "socat", "socat-1", echo_server().await).await;
    eventually(
        PROXY_WAIT,
        "the sidecar healthy in the servers' catalog",
        || async {
            let v = server.get("/v1/health/connect/socat?passing").await.json();
            (v.as_array().map(Vec::len) == Some(1)).then_some(())
        },
    )
    .await;
    let web = MeshProcess::spawn(
        &client,
        &["proxy", "-service", "web", "-upstream", "socat:0"],
    );
    let upstream = web.wait_line("Upstream socat:", PROXY_WAIT);
    let got = eventually(PROXY_WAIT, "an echo through the mesh", || async {
        round_trip(&upstream, b"via the client agent").await
    })
    .await;
    assert_eq!(got, b"via the client agent");

    // An intention written on the server reaches both proxies through the
    // client agent's long polls.
    server.cli_ok(&["intention", "create", "-deny", "web", "socat"]);
    eventually(PROXY_WAIT, "the deny to take effect", || async {
        round_trip(&upstream, b"x").await.is_none().then_some(())
    })
    .await;
    server.cli_ok(&["intention", "delete", "web", "socat"]);
    let back = eventually(PROXY_WAIT, "the allow to return", || async {
        round_trip(&upstream, b"restored").await
    })
    .await;
    assert_eq!(back, b"restored");

    // A root rotation on the servers: the client re-issues its leaves under
    // the new root and traffic keeps flowing.
    server.set_ca_config(r#"{"Provider":"consul","Config":{"RootCertTTL":"43000h"}}"#);
    let rotated = active_root(&server).await;
    assert!(!signed_by(&leaf, &rotated), "the root rotated");
    eventually(
        PROXY_WAIT,
        "a leaf re-issued under the new root",
        || async {
            let now = client.get("/v1/agent/connect/ca/leaf/web").await.json();
            signed_by(&now, &rotated).then_some(())
        },
    )
    .await;
    let after = eventually(PROXY_WAIT, "an echo after the rotation", || async {
        round_trip(&upstream, b"after rotation").await
    })
    .await;
    assert_eq!(after, b"after rotation");
    drop((web, sidecar));
}
