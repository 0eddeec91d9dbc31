//! `/v1/kv` and `/v1/txn`.

use crate::support::Agent;
use serde_json::json;

#[tokio::test]
async fn put_get_recurse_keys_and_delete() {
    let a = Agent::start(&[]);
    assert_eq!(
        a.put_ok("/v1/kv/app/config/a?flags=42", "one").await.text,
        "true"
    );
    a.put_ok("/v1/kv/app/config/b", "two").await;
    a.put_ok("/v1/kv/app/other", "three").await;

    let r = a.get("/v1/kv/app/config/a").await;
    assert_eq!(r.status, 200);
    let e = &r.json()[0];
    assert_eq!(e["Key"], "app/config/a");
    assert_eq!(e["Value"], "b25l"); // base64("one")
    assert_eq!(e["Flags"], 42);
    assert_eq!(r.index, e["ModifyIndex"].as_u64().unwrap());
    assert!(e.get("Session").is_none());

    assert_eq!(a.get("/v1/kv/app/config/a?raw").await.text, "one");

    let all = a.get("/v1/kv/app/?recurse").await.json();
    let keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["app/config/a", "app/config/b", "app/other"]);

    let keys = a.get("/v1/kv/app/?keys&separator=/").await.json();
    assert_eq!(keys, json!(["app/config/", "app/other"]));

    let missing = a.get("/v1/kv/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.index > 0, "404 still carries X-Consul-Index");

    assert_eq!(a.req("DELETE", "/v1/kv/app/other", None).await.text, "true");
    assert_eq!(a.get("/v1/kv/app/other").await.status, 404);
    assert_eq!(
        a.req("DELETE", "/v1/kv/app?recurse", None).await.text,
        "true"
    );
    assert_eq!(a.get("/v1/kv/app?recurse").await.status, 404);
}

#[tokio::test]
async fn cas_conflicts_return_false() {
    let a = Agent::start(&[]);
    assert_eq!(a.put_ok("/v1/kv/lock?cas=0", "first").await.text, "true");
    assert_eq!(a.put_ok("/v1/kv/lock?cas=0", "second").await.text, "false");
    let idx = a.get("/v1/kv/lock").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        a.put_ok(&format!("/v1/kv/lock?cas={}", idx + 100), "x")
            .await
            .text,
        "false"
    );
    assert_eq!(
        a.put_ok(&format!("/v1/kv/lock?cas={idx}"), "third")
            .await
            .text,
        "true"
    );
    assert_eq!(
        a.put_ok(&format!("/v1/kv/lock?cas={idx}"), "fourth")
            .await
            .text,
        "false"
    );
    assert_eq!(a.get("/v1/kv/lock?raw").await.text, "third");
    let r = a
        .req("DELETE", &format!("/v1/kv/lock?cas={idx}"), None)
        .await;
    assert_eq!(r.text, "false");
    assert_eq!(a.get("/v1/kv/lock?raw").await.text, "third");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let a = Agent::start(&[]);
    let r = a.put("/v1/kv/k?cas=notanumber", "v").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(a.get("/v1/kv/k").await.status, 404);
    assert_eq!(a.put("/v1/kv/", "v").await.status, 400);
    let big = "x".repeat(512 * 1024 + 1);
    assert_eq!(a.put("/v1/kv/big", &big).await.status, 413);
    assert_eq!(a.get("/v1/kv/big").await.status, 404);
    assert_eq!(a.req("POST", "/v1/kv/k", Some("v")).await.status, 405);
    let r = a.get("/v1/kv/k?index=abc").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn transactions_are_all_or_nothing() {
    let a = Agent::start(&[]);
    let ok = a
        .put(
            "/v1/txn",
            r#"[{"KV":{"Verb":"set","Key":"t/a","Value":"YQ=="}},
                {"KV":{"Verb":"set","Key":"t/b","Value":"Yg=="}},
                {"KV":{"Verb":"get","Key":"t/a"}}]"#,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let body = ok.json();
    assert_eq!(body["Errors"], json!(null));
    assert_eq!(body["Results"][2]["KV"]["Value"], "YQ==");

    let failed = a
        .put(
            "/v1/txn",
            r#"[{"KV":{"Verb":"set","Key":"t/c","Value":"Yw=="}},
                {"KV":{"Verb":"cas","Key":"t/a","Value":"eg==","Index":999999}}]"#,
        )
        .await;
    assert_eq!(failed.status, 409, "{}", failed.text);
    assert_eq!(failed.json()["Errors"][0]["OpIndex"], 1);
    assert_eq!(a.get("/v1/kv/t/c").await.status, 404, "rolled back");
    assert_eq!(a.get("/v1/kv/t/a?raw").await.text, "a");

    assert_eq!(a.put("/v1/txn", "[{").await.status, 400);
    assert_eq!(
        a.put("/v1/txn", r#"[{"KV":{"Verb":"explode","Key":"x"}}]"#)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn read_modes() {
    let a = Agent::start(&[]);
    a.put_ok("/v1/kv/mode", "v").await;
    for q in ["stale", "consistent", "stale=true"] {
        let r = a.get(&format!("/v1/kv/mode?{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text);
        assert_eq!(r.json()[0]["Key"], "mode");
    }
    assert_eq!(a.get("/v1/kv/mode?stale&consistent").await.status, 400);
}
