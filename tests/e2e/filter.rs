//! `filter=` under hostile input: expensive patterns are refused, and the
//! accepted worst cases do not hold up the rest of the agent.

use crate::support::Agent;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Instances registered with a long meta value each.
const LONG_INSTANCES: usize = 6;

/// `ServiceMeta.x matches PATTERN`, `or`-ed this many times.
const TERMS: usize = 20;

/// Concurrent filtered reads of each endpoint.
const READERS: usize = 2;

/// `/v1/status/leader` must answer within this while filters run; before
/// filters ran off the async workers it waited seconds for them.
const PROMPT: Duration = Duration::from_secs(1);

/// A GET with `filter` as its `filter=` parameter: the status and body.
async fn filtered(a: &Agent, path: &str, filter: &str) -> (u16, String) {
    let resp = a
        .client
        .get(format!("{}{path}", a.base))
        .query(&[("filter", filter)])
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn or_terms(pattern: &str) -> String {
    vec![format!("ServiceMeta.x matches \"{pattern}\""); TERMS].join(" or ")
}

#[tokio::test]
async fn expensive_filters_are_refused_and_accepted_ones_do_not_stall_other_requests() {
    let a = Agent::start(&[]);

    // Counted repeats that expand too far are refused, naming the pattern.
    let (status, body) = filtered(&a, "/v1/catalog/service/web", &or_terms("(a{1000}|b)")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"(a{1000}|b)\""), "{body}");
    assert!(body.contains("too expensive"), "{body}");

    // Long values that a pattern just inside the limit is slow on: the
    // lazy DFA gives up on its nested repeats and the search simulates the
    // automaton over every byte.
    let long = "a".repeat(50_000);
    for i in 0..LONG_INSTANCES {
        let reg = json!({"Node": format!("long-{i}"), "Address": "10.0.0.1",
            "Service": {"Service": "web", "ID": format!("web-long-{i}"), "Meta": {"x": long}}});
        a.put_ok("/v1/catalog/register", &reg.to_string()).await;
    }
    let hit = json!({"Node": "hit", "Address": "10.0.0.2",
        "Service": {"Service": "web", "ID": "web-hit", "Tags": ["hit"], "Meta": {"x": "aX"}}});
    a.put_ok("/v1/catalog/register", &hit.to_string()).await;
    let expensive = or_terms("((a){1,51}){1,5}X");

    let done = std::cell::Cell::new(false);
    let readers = async {
        let mut readers = Vec::new();
        for path in ["/v1/catalog/service/web", "/v1/catalog/services"] {
            for _ in 0..READERS {
                readers.push(filtered(&a, path, &expensive));
            }
        }
        let started = Instant::now();
        let results = futures_util::future::join_all(readers).await;
        done.set(true);
        (results, started.elapsed())
    };
    // Probes `/v1/status/leader` while the filtered reads are in flight.
    let probes = async {
        let (mut slowest, mut count) = (Duration::ZERO, 0);
        while !done.get() {
            let asked = Instant::now();
            let leader = a.get("/v1/status/leader").await;
            assert_eq!(leader.status, 200, "{}", leader.text);
            slowest = slowest.max(asked.elapsed());
            count += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (slowest, count)
    };
    let ((results, filtering), (slowest, count)) = tokio::join!(readers, probes);
    eprintln!("filtered reads took {filtering:?}; {count} leader probes, slowest {slowest:?}");

    // The filtered reads themselves answer, and correctly.
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        let body: Value = serde_json::from_str(body).expect("JSON");
        if i < READERS {
            let ids: Vec<&str> = body
                .as_array()
                .expect("an array")
                .iter()
                .filter_map(|sn| sn["ServiceID"].as_str())
                .collect();
            assert_eq!(ids, ["web-hit"]);
        } else {
            assert_eq!(body, json!({"web": ["hit"]}));
        }
    }
    // The probes overlapped the reads, and none waited on them.
    assert!(
        count >= 3,
        "only {count} probes while filters ran for {filtering:?}"
    );
    assert!(
        slowest < PROMPT,
        "/v1/status/leader took {slowest:?} while filters ran ({filtering:?} in all)"
    );
}
