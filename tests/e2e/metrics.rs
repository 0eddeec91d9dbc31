//! `/v1/agent/metrics`: the agent's own metrics, JSON and Prometheus text.

use crate::support::{eventually, Agent};
use std::time::Duration;

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_agent_reports_raft_http_blocking_and_checks() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/kv/m/one", "1").await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"api","Port":1,"Check":{"TTL":"30s"}}"#,
    )
    .await;
    // A blocking query parked while the metrics are read.
    let index = a.get("/v1/kv/m/one").await.index;
    let parked = {
        let (client, url) = (
            a.client.clone(),
            format!("{}/v1/kv/m/one?index={index}&wait=30s", a.base),
        );
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };

    let text = eventually(
        Duration::from_secs(10),
        "the parked query counted",
        || async {
            let r = a.get("/v1/agent/metrics?format=prometheus").await;
            assert_eq!(r.status, 200);
            assert!(r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"));
            (sample(&r.text, "mesh_blocking_queries_parked") == Some(1.0)).then_some(r.text)
        },
    )
    .await;
    assert!(
        sample(&text, "mesh_raft_applies_total").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        sample(&text, "mesh_raft_applied_index").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(sample(&text, "mesh_raft_leader"), Some(1.0));
    assert_eq!(
        sample(&text, "mesh_memberlist_health_score"),
        Some(0.0),
        "a lone healthy agent: {text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"mesh_http_requests_total{method="PUT",path="/v1/kv/{*key}",code_class="2xx"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("mesh_raft_apply_seconds_bucket"), "{text}");
    assert_eq!(
        sample(&text, r#"mesh_health_checks{state="critical"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"mesh_health_checks{state="passing"}"#),
        Some(1.0),
        "serfHealth"
    );

    // The blocking query wakes and leaves the gauge.
    a.put_ok("/v1/kv/m/one", "2").await;
    assert_eq!(parked.await.unwrap().unwrap(), 200);
    let r = a.get("/v1/agent/metrics?format=prometheus").await;
    assert_eq!(sample(&r.text, "mesh_blocking_queries_parked"), Some(0.0));

    // Consul's JSON summary by default.
    let v = a.get("/v1/agent/metrics").await.json();
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names("Counters").contains(&"mesh.raft.applies".to_string()),
        "{v}"
    );
    assert!(
        names("Gauges").contains(&"mesh.raft.leader".to_string()),
        "{v}"
    );
    assert!(
        names("Samples").contains(&"mesh.raft.apply.seconds".to_string()),
        "{v}"
    );
    assert!(v["Timestamp"].is_string());

    let bad = a.get("/v1/agent/metrics?format=xml").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("xml"), "{}", bad.text);
}
