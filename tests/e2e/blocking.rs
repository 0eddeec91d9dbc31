//! Blocking queries: `?index=N&wait=D` parks until the data changes.

use crate::support::Agent;
use std::time::{Duration, Instant};

#[tokio::test]
async fn kv_blocking_query_returns_soon_after_a_change_and_not_before() {
    let a = Agent::start(&[]);
    let idx = a.put_ok("/v1/kv/watched", "v1").await;
    assert_eq!(idx.text, "true");
    let index = a.get("/v1/kv/watched").await.index;

    let started = Instant::now();
    let path = format!("/v1/kv/watched?index={index}&wait=30s");
    let waiter = {
        let client = a.client.clone();
        let url = format!("{}{path}", a.base);
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (Instant::now(), r.text().await.unwrap())
        })
    };
    // An unrelated write must not wake it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.put_ok("/v1/kv/unrelated", "x").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "woke before its key changed");
    let changed_at = Instant::now();
    a.put_ok("/v1/kv/watched", "v2").await;
    let (returned_at, body) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("blocking query did not return after the change")
        .unwrap();
    assert!(returned_at >= changed_at);
    assert!(returned_at - changed_at < Duration::from_secs(1));
    assert!(body.contains("djI="), "{body}"); // base64("v2")
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn blocking_query_times_out_with_the_same_index() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/kv/still", "v").await;
    let index = a.get("/v1/kv/still").await.index;
    let started = Instant::now();
    let r = a.get(&format!("/v1/kv/still?index={index}&wait=1s")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.index, index);
    assert!(took >= Duration::from_secs(1), "returned after {took:?}");
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    assert_eq!(r.headers["X-Consul-KnownLeader"], "true");
    assert!(r.headers.contains_key("X-Consul-LastContact"));
}

#[tokio::test]
async fn health_blocking_query_wakes_on_registration() {
    let a = Agent::start(&[]);
    let r = a.get("/v1/health/service/late").await;
    assert_eq!(r.text, "[]");
    let index = r.index;
    let waiter = {
        let url = format!("{}/v1/health/service/late?index={index}&wait=30s", a.base);
        let client = a.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"late","Port":1234}"#,
    )
    .await;
    let body = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("did not wake")
        .unwrap();
    assert!(body.contains("\"Port\":1234"), "{body}");
}

#[tokio::test]
async fn agent_service_blocks_on_its_content_hash() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/agent/service/register", r#"{"Name":"hashy","Port":1}"#)
        .await;
    let first = a.get("/v1/agent/service/hashy").await;
    let hash = first.json()["ContentHash"].as_str().unwrap().to_string();
    assert_eq!(first.headers["X-Consul-ContentHash"], hash.as_str());

    let started = Instant::now();
    let same = a
        .get(&format!("/v1/agent/service/hashy?hash={hash}&wait=1s"))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(same.json()["ContentHash"], hash.as_str());

    let waiter = {
        let url = format!("{}/v1/agent/service/hashy?hash={hash}&wait=30s", a.base);
        let client = a.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    a.put_ok("/v1/agent/service/register", r#"{"Name":"hashy","Port":2}"#)
        .await;
    let body = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("did not wake")
        .unwrap();
    assert!(body.contains("\"Port\":2"), "{body}");
    assert!(!body.contains(&hash));
}

#[tokio::test]
async fn an_index_ahead_of_the_data_still_blocks() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/kv/ahead", "v").await;
    let started = Instant::now();
    let r = a.get("/v1/kv/ahead?index=100000&wait=1s").await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "blocked until the wait ran out"
    );
    assert!(r.index < 100000);
}
