//! Health checks run by the agent and the `/v1/health` endpoints.

use crate::support::{eventually, Agent};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// A tiny HTTP server answering every request with the current status code.
async fn status_server() -> (u16, Arc<AtomicU16>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = Arc::new(AtomicU16::new(200));
    let c = code.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let code = c.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = format!("status {code}");
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, code)
}

async fn check_status(a: &Agent, id: &str) -> Option<String> {
    let checks = a.get("/v1/agent/checks").await.json();
    checks[id]["Status"].as_str().map(str::to_string)
}

async fn catalog_status(a: &Agent, id: &str) -> Option<String> {
    let checks = a.get("/v1/health/state/any").await.json();
    checks
        .as_array()?
        .iter()
        .find(|c| c["CheckID"] == id)
        .and_then(|c| c["Status"].as_str().map(str::to_string))
}

async fn passing_ids(a: &Agent, service: &str) -> Vec<String> {
    let v = a
        .get(&format!("/v1/health/service/{service}?passing"))
        .await
        .json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["Service"]["ID"].as_str().unwrap().to_string())
        .collect()
}

async fn dns_a_count(a: &Agent, name: &str) -> usize {
    crate::dns::query(a.dns, name, hickory_proto::rr::RecordType::A)
        .await
        .answers()
        .len()
}

#[tokio::test]
async fn ttl_check_going_critical_leaves_passing_and_dns() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"api","ID":"api-1","Port":9000,"Check":{"CheckID":"api-ttl","TTL":"2s"}}"#,
    )
    .await;
    assert_eq!(
        check_status(&a, "api-ttl").await.as_deref(),
        Some("critical")
    );
    assert!(passing_ids(&a, "api").await.is_empty());
    assert_eq!(dns_a_count(&a, "api.service.consul.").await, 0);

    a.put_ok("/v1/agent/check/pass/api-ttl?note=all%20good", "")
        .await;
    assert_eq!(passing_ids(&a, "api").await, vec!["api-1"]);
    assert_eq!(dns_a_count(&a, "api.service.consul.").await, 1);
    let entry = &a.get("/v1/health/service/api").await.json()[0];
    let ttl = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "api-ttl")
        .unwrap();
    assert_eq!(ttl["Output"], "all good");

    // Not renewed: the TTL expires and the instance leaves ?passing and DNS.
    eventually(WAIT, "TTL expiry", || async {
        (catalog_status(&a, "api-ttl").await.as_deref() == Some("critical")).then_some(())
    })
    .await;
    assert!(passing_ids(&a, "api").await.is_empty());
    assert_eq!(dns_a_count(&a, "api.service.consul.").await, 0);
    let out = &a.get("/v1/health/checks/api").await.json()[0]["Output"];
    assert_eq!(out, "TTL expired");

    // A warning is still served by DNS but not by ?passing.
    a.put_ok("/v1/agent/check/warn/api-ttl", "").await;
    assert!(passing_ids(&a, "api").await.is_empty());
    assert_eq!(dns_a_count(&a, "api.service.consul.").await, 1);
    let r = a
        .put(
            "/v1/agent/check/update/api-ttl",
            r#"{"Status":"passing","Output":"ok"}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(passing_ids(&a, "api").await, vec!["api-1"]);
    assert_eq!(a.put("/v1/agent/check/pass/nope", "").await.status, 404);
    let r = a
        .put("/v1/agent/check/update/api-ttl", r#"{"Status":"sideways"}"#)
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn http_and_tcp_checks_follow_the_target() {
    let (port, code) = status_server().await;
    let a = Agent::start(&[]);
    let reg = json!({
        "Name": "web", "Port": port,
        "Checks": [
            {"CheckID": "web-http", "HTTP": format!("http://127.0.0.1:{port}/health"), "Interval": "200ms"},
            {"CheckID": "web-tcp", "TCP": format!("127.0.0.1:{port}"), "Interval": "200ms"}
        ]
    });
    a.put_ok("/v1/agent/service/register", &reg.to_string())
        .await;
    eventually(WAIT, "http check passing", || async {
        (catalog_status(&a, "web-http").await.as_deref() == Some("passing")).then_some(())
    })
    .await;
    eventually(WAIT, "tcp check passing", || async {
        (catalog_status(&a, "web-tcp").await.as_deref() == Some("passing")).then_some(())
    })
    .await;
    code.store(429, Ordering::SeqCst);
    eventually(WAIT, "http check warning", || async {
        (catalog_status(&a, "web-http").await.as_deref() == Some("warning")).then_some(())
    })
    .await;
    let r = a.get("/v1/agent/health/service/name/web").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()[0]["AggregatedStatus"], "warning");
    code.store(503, Ordering::SeqCst);
    eventually(WAIT, "http check critical", || async {
        (catalog_status(&a, "web-http").await.as_deref() == Some("critical")).then_some(())
    })
    .await;
    assert_eq!(a.get("/v1/agent/health/service/name/web").await.status, 503);
    assert_eq!(
        a.get("/v1/agent/health/service/name/web?format=text")
            .await
            .text,
        "critical"
    );
    let checks = a.get("/v1/health/checks/web").await.json();
    let http: &Value = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "web-http")
        .unwrap();
    assert!(http["Output"].as_str().unwrap().contains("503"), "{http}");
    assert_eq!(
        a.get("/v1/agent/health/service/name/nope").await.status,
        404
    );
    let critical = a.get("/v1/health/state/critical").await.json();
    assert!(critical
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "web-http"));
    assert_eq!(a.get("/v1/health/state/bogus").await.status, 400);
}

#[tokio::test]
async fn script_checks_need_the_flag() {
    let a = Agent::start(&[]);
    let r = a
        .put(
            "/v1/agent/check/register",
            r#"{"Name":"script","Args":["true"],"Interval":"1s"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("Scripts are disabled"), "{}", r.text);

    let b = Agent::start(&["-enable-script-checks"]);
    b.put_ok(
        "/v1/agent/check/register",
        r#"{"ID":"warn-script","Name":"w","Args":["sh","-c","echo degraded; exit 1"],"Interval":"200ms"}"#,
    )
    .await;
    eventually(WAIT, "script check warning", || async {
        (catalog_status(&b, "warn-script").await.as_deref() == Some("warning")).then_some(())
    })
    .await;
    let checks = b.get("/v1/health/node/test-node").await.json();
    let c = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "warn-script")
        .unwrap();
    assert_eq!(c["Output"], "degraded\n");
    assert_eq!(c["Type"], "script");
}

#[tokio::test]
async fn maintenance_mode_takes_instances_out() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"svc","ID":"svc-1","Port":1}"#,
    )
    .await;
    assert_eq!(passing_ids(&a, "svc").await, vec!["svc-1"]);
    a.put_ok(
        "/v1/agent/service/maintenance/svc-1?enable=true&reason=upgrade",
        "",
    )
    .await;
    assert!(passing_ids(&a, "svc").await.is_empty());
    let checks = a.get("/v1/agent/checks").await.json();
    assert_eq!(checks["_service_maintenance:svc-1"]["Notes"], "upgrade");
    a.put_ok("/v1/agent/service/maintenance/svc-1?enable=false", "")
        .await;
    assert_eq!(passing_ids(&a, "svc").await, vec!["svc-1"]);
    a.put_ok("/v1/agent/maintenance?enable=true", "").await;
    assert!(passing_ids(&a, "svc").await.is_empty());
    a.put_ok("/v1/agent/maintenance?enable=false", "").await;
    assert_eq!(passing_ids(&a, "svc").await, vec!["svc-1"]);
    assert_eq!(a.put("/v1/agent/maintenance", "").await.status, 400);
}

#[tokio::test]
async fn critical_services_are_deregistered_after_the_limit() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"doomed","Port":1,"Check":{"TTL":"1s","DeregisterCriticalServiceAfter":"1s"}}"#,
    )
    .await;
    assert_eq!(
        a.get("/v1/catalog/service/doomed")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    eventually(WAIT, "deregistration", || async {
        (a.get("/v1/catalog/service/doomed").await.text == "[]").then_some(())
    })
    .await;
    assert_eq!(a.get("/v1/agent/services").await.json(), json!({}));
}
