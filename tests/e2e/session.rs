//! Sessions and the locks they hold.

use crate::support::{eventually, Agent};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn create(a: &Agent, body: &str) -> String {
    let r = a.put("/v1/session/create", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["ID"].as_str().unwrap().to_string()
}

fn holder(entry: &Value) -> Option<String> {
    entry[0]["Session"].as_str().map(str::to_string)
}

#[tokio::test]
async fn locks_are_exclusive_and_released_on_destroy() {
    let a = Agent::start(&[]);
    let s1 = create(&a, r#"{"Name":"one","LockDelay":"0s"}"#).await;
    let s2 = create(&a, r#"{"Name":"two"}"#).await;
    let info = a.get(&format!("/v1/session/info/{s1}")).await.json();
    assert_eq!(info[0]["Name"], "one");
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]));
    assert_eq!(
        a.get("/v1/session/list")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        a.get("/v1/session/node/test-node")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        a.put_ok(&format!("/v1/kv/leader?acquire={s1}"), "me")
            .await
            .text,
        "true"
    );
    assert_eq!(
        a.put_ok(&format!("/v1/kv/leader?acquire={s2}"), "you")
            .await
            .text,
        "false"
    );
    let e = a.get("/v1/kv/leader").await.json();
    assert_eq!(holder(&e).as_deref(), Some(s1.as_str()));
    assert_eq!(e[0]["LockIndex"], 1);
    assert_eq!(
        a.put_ok(&format!("/v1/kv/leader?release={s2}"), "")
            .await
            .text,
        "false"
    );

    a.put_ok(&format!("/v1/session/destroy/{s1}"), "").await;
    let e = a.get("/v1/kv/leader").await.json();
    assert_eq!(holder(&e), None, "destroy released the lock");
    assert_eq!(
        a.put_ok(&format!("/v1/kv/leader?acquire={s2}"), "you")
            .await
            .text,
        "true"
    );
    assert_eq!(a.get("/v1/kv/leader").await.json()[0]["LockIndex"], 2);

    let bogus = a
        .put(
            "/v1/kv/leader?acquire=00000000-0000-0000-0000-000000000000",
            "",
        )
        .await;
    assert_eq!(bogus.status, 500, "{}", bogus.text);
    assert_eq!(a.put("/v1/session/renew/nope", "").await.status, 404);
    assert_eq!(
        a.put("/v1/session/create", r#"{"TTL":"1s"}"#).await.status,
        400
    );
    assert_eq!(
        a.put("/v1/session/create", r#"{"Behavior":"explode"}"#)
            .await
            .status,
        400
    );
    assert_eq!(
        a.put("/v1/session/create", r#"{"Node":"ghost"}"#)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn delete_behavior_and_lock_delay() {
    let a = Agent::start(&[]);
    let s = create(&a, r#"{"Behavior":"delete","LockDelay":"2s"}"#).await;
    a.put_ok(&format!("/v1/kv/eph?acquire={s}"), "x").await;
    a.put_ok(&format!("/v1/session/destroy/{s}"), "").await;
    assert_eq!(
        a.get("/v1/kv/eph").await.status,
        404,
        "delete behavior removed the key"
    );

    let s = create(&a, r#"{"LockDelay":"2s"}"#).await;
    a.put_ok(&format!("/v1/kv/delayed?acquire={s}"), "x").await;
    a.put_ok(&format!("/v1/session/destroy/{s}"), "").await;
    let destroyed_at = Instant::now();
    let s2 = create(&a, "{}").await;
    assert_eq!(
        a.put_ok(&format!("/v1/kv/delayed?acquire={s2}"), "y")
            .await
            .text,
        "false"
    );
    eventually(Duration::from_secs(10), "lock delay to pass", || async {
        (a.put_ok(&format!("/v1/kv/delayed?acquire={s2}"), "y")
            .await
            .text
            == "true")
            .then_some(())
    })
    .await;
    assert!(destroyed_at.elapsed() >= Duration::from_millis(1900));
}

#[tokio::test]
async fn session_ttl_expiry_releases_its_lock() {
    let a = Agent::start(&[]);
    let s = create(&a, r#"{"TTL":"10s","LockDelay":"0s"}"#).await;
    assert_eq!(
        a.get(&format!("/v1/session/info/{s}")).await.json()[0]["TTL"],
        "10s"
    );
    a.put_ok(&format!("/v1/kv/ttl-lock?acquire={s}"), "held")
        .await;
    let renewed = a.put(&format!("/v1/session/renew/{s}"), "").await;
    assert_eq!(renewed.status, 200);
    let started = Instant::now();
    // Consul invalidates after twice the TTL without renewal.
    eventually(Duration::from_secs(40), "session TTL expiry", || async {
        (a.get(&format!("/v1/session/info/{s}")).await.text == "[]").then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "expired early: {:?}",
        started.elapsed()
    );
    assert_eq!(holder(&a.get("/v1/kv/ttl-lock").await.json()), None);
    assert_eq!(a.get("/v1/kv/ttl-lock?raw").await.text, "held");
}

#[tokio::test]
async fn a_failing_check_invalidates_its_sessions() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/check/register",
        r#"{"CheckID":"beat","Name":"beat","TTL":"30s","Status":"passing"}"#,
    )
    .await;
    let s = create(&a, r#"{"Checks":["serfHealth","beat"],"LockDelay":"0s"}"#).await;
    a.put_ok(&format!("/v1/kv/guarded?acquire={s}"), "x").await;
    a.put_ok("/v1/agent/check/fail/beat", "").await;
    eventually(Duration::from_secs(5), "session invalidation", || async {
        (a.get(&format!("/v1/session/info/{s}")).await.text == "[]").then_some(())
    })
    .await;
    assert_eq!(holder(&a.get("/v1/kv/guarded").await.json()), None);
    let r = a.put("/v1/session/create", r#"{"Checks":["beat"]}"#).await;
    assert_eq!(r.status, 400, "critical checks refuse new sessions");
}

#[tokio::test]
async fn deregistering_a_service_invalidates_sessions_on_its_checks() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"web","Check":{"CheckID":"web-ttl","TTL":"60s","Status":"passing"}}"#,
    )
    .await;
    let s = create(
        &a,
        r#"{"ServiceChecks":[{"ID":"web-ttl"}],"LockDelay":"0s"}"#,
    )
    .await;
    let info = a.get(&format!("/v1/session/info/{s}")).await.json();
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]));
    a.put_ok(&format!("/v1/kv/svclock?acquire={s}"), "x").await;
    a.put_ok("/v1/agent/service/deregister/web", "").await;
    assert_eq!(a.get(&format!("/v1/session/info/{s}")).await.text, "[]");
    assert_eq!(holder(&a.get("/v1/kv/svclock").await.json()), None);
}
