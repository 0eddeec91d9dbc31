//! Connect registrations: sidecar services and the `/connect` endpoints.

use crate::support::{eventually, Agent};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn sidecar_service_registers_a_proxy_with_consul_defaults() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let a = Agent::start(&[]);
    let reg = json!({
        "name": "socat", "port": 8181, "tags": ["echo"],
        "connect": {"sidecar_service": {"port": proxy_port, "proxy": {"upstreams": [
            {"destination_name": "db", "local_bind_port": 9191}]}}}
    });
    a.put_ok("/v1/agent/service/register", &reg.to_string())
        .await;
    let sc = a.get("/v1/agent/service/socat-sidecar-proxy").await.json();
    assert_eq!(sc["Kind"], "connect-proxy");
    assert_eq!(sc["Service"], "socat-sidecar-proxy");
    assert_eq!(sc["Port"], proxy_port);
    assert_eq!(sc["Tags"], json!(["echo"]));
    assert_eq!(sc["Proxy"]["DestinationServiceName"], "socat");
    assert_eq!(sc["Proxy"]["DestinationServiceID"], "socat");
    assert_eq!(sc["Proxy"]["LocalServicePort"], 8181);
    assert_eq!(sc["Proxy"]["Upstreams"][0]["DestinationName"], "db");

    let checks = a.get("/v1/agent/checks").await.json();
    let alias = &checks["service:socat-sidecar-proxy:2"];
    assert_eq!(alias["Type"], "alias");
    assert_eq!(alias["Name"], "Connect Sidecar Aliasing socat");
    // The listener is up, so the TCP check passes; the parent has no checks,
    // so the alias passes too, and the proxy is healthy.
    eventually(Duration::from_secs(30), "healthy sidecar", || async {
        let v = a.get("/v1/health/connect/socat?passing").await.json();
        (v.as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    let catalog = a.get("/v1/catalog/connect/socat").await.json();
    assert_eq!(catalog[0]["ServiceID"], "socat-sidecar-proxy");
    assert_eq!(
        catalog[0]["ServiceProxy"]["DestinationServiceName"],
        "socat"
    );
    assert_eq!(a.get("/v1/catalog/connect/nope").await.text, "[]");

    // The alias follows the parent: a failing parent check fails the proxy.
    a.put_ok(
        "/v1/agent/check/register",
        r#"{"ID":"socat-ttl","Name":"socat ttl","TTL":"60s","ServiceID":"socat"}"#,
    )
    .await;
    eventually(Duration::from_secs(10), "alias critical", || async {
        let v = a.get("/v1/health/connect/socat?passing").await.json();
        v.as_array().unwrap().is_empty().then_some(())
    })
    .await;
    a.put_ok("/v1/agent/check/pass/socat-ttl", "").await;
    eventually(Duration::from_secs(10), "alias passing", || async {
        let v = a.get("/v1/health/connect/socat?passing").await.json();
        (v.as_array().unwrap().len() == 1).then_some(())
    })
    .await;

    // Deregistering the parent removes its sidecar.
    a.put_ok("/v1/agent/service/deregister/socat", "").await;
    assert_eq!(a.get("/v1/catalog/connect/socat").await.text, "[]");
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));
    drop(listener);
}

#[tokio::test]
async fn sidecar_ports_are_allocated_from_21000() {
    let a = Agent::start(&[]);
    for name in ["one", "two"] {
        let reg = json!({"name": name, "port": 1, "connect": {"sidecar_service": {}}});
        a.put_ok("/v1/agent/service/register", &reg.to_string())
            .await;
    }
    let svcs = a.get("/v1/agent/services").await.json();
    let mut ports = vec![
        svcs["one-sidecar-proxy"]["Port"].as_u64().unwrap(),
        svcs["two-sidecar-proxy"]["Port"].as_u64().unwrap(),
    ];
    ports.sort();
    assert_eq!(ports, vec![21000, 21001]);
    let checks = a.get("/v1/agent/checks").await.json();
    assert_eq!(
        checks["service:one-sidecar-proxy:1"]["Definition"]["TCP"],
        "127.0.0.1:21000"
    );
}
