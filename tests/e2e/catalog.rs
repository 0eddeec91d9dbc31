//! `/v1/catalog`, filters, the agent's service endpoints and status.

use crate::support::Agent;
use serde_json::{json, Value};

fn names(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn register_query_and_deregister_through_the_catalog() {
    let a = Agent::start(&[]);
    let reg = json!({
        "Node": "ext-1", "Address": "10.1.2.3", "NodeMeta": {"rack": "r1"},
        "Service": {"Service": "db", "ID": "db-1", "Port": 5432, "Tags": ["primary", "v2"],
                    "Meta": {"version": "2.1"}},
        "Check": {"CheckID": "db-alive", "Name": "db alive", "Status": "passing", "ServiceID": "db-1"}
    });
    assert_eq!(
        a.put_ok("/v1/catalog/register", &reg.to_string())
            .await
            .text,
        "true"
    );
    let reg2 = json!({"Node": "ext-2", "Address": "10.1.2.4",
        "Service": {"Service": "db", "ID": "db-2", "Port": 5432, "Tags": ["replica"]}});
    a.put_ok("/v1/catalog/register", &reg2.to_string()).await;

    assert_eq!(
        a.get("/v1/catalog/datacenters").await.json(),
        json!(["dc1"])
    );
    let nodes = a.get("/v1/catalog/nodes").await.json();
    assert_eq!(names(&nodes, "Node"), vec!["ext-1", "ext-2", "test-node"]);
    let services = a.get("/v1/catalog/services").await.json();
    assert_eq!(services["db"], json!(["primary", "replica", "v2"]));
    assert!(
        services.get("consul").is_some(),
        "servers register the consul service"
    );

    let db = a.get("/v1/catalog/service/db").await;
    assert_eq!(names(&db.json(), "ServiceID"), vec!["db-1", "db-2"]);
    let primary = a.get("/v1/catalog/service/db?tag=primary").await.json();
    assert_eq!(names(&primary, "ServiceID"), vec!["db-1"]);
    assert_eq!(primary[0]["ServiceAddress"], "");
    assert_eq!(primary[0]["Address"], "10.1.2.3");
    assert_eq!(primary[0]["NodeMeta"]["rack"], "r1");

    let filtered = a
        .get("/v1/catalog/service/db?filter=ServiceMeta.version%20%3D%3D%20%222.1%22")
        .await
        .json();
    assert_eq!(names(&filtered, "ServiceID"), vec!["db-1"]);
    let bad = a
        .get("/v1/catalog/service/db?filter=ServiceMeta.version%20%3D%3D")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);

    let node = a.get("/v1/catalog/node/ext-1").await.json();
    assert_eq!(node["Node"]["Address"], "10.1.2.3");
    assert_eq!(node["Services"]["db-1"]["Port"], 5432);
    let ns = a.get("/v1/catalog/node-services/ext-1").await.json();
    assert_eq!(ns["Services"][0]["ID"], "db-1");

    let dereg = json!({"Node": "ext-1", "ServiceID": "db-1"});
    a.put_ok("/v1/catalog/deregister", &dereg.to_string()).await;
    let db = a.get("/v1/catalog/service/db").await.json();
    assert_eq!(names(&db, "ServiceID"), vec!["db-2"]);
    a.put_ok("/v1/catalog/deregister", r#"{"Node":"ext-2"}"#)
        .await;
    assert_eq!(a.get("/v1/catalog/service/db").await.text, "[]");
}

#[tokio::test]
async fn malformed_registrations_are_refused() {
    let a = Agent::start(&[]);
    let before = a.get("/v1/catalog/nodes").await;
    for body in [
        "{not json",
        r#"{"Address": "10.0.0.1"}"#,
        r#"{"Node": "x"}"#,
        r#"{"Node": "x", "Address": "10.0.0.1", "Service": {"Port": 1}}"#,
        r#"{"Node": "x", "Address": "10.0.0.1", "Check": {"CheckID": "c", "Status": "bogus"}}"#,
        r#"{"Node": "x", "Address": "10.0.0.1", "Service": {"Service": "s", "Port": 70000}}"#,
    ] {
        let r = a.put("/v1/catalog/register", body).await;
        assert_eq!(r.status, 400, "{body} -> {} {}", r.status, r.text);
        assert!(!r.text.is_empty());
    }
    let r = a
        .put(
            "/v1/catalog/register",
            r#"{"Node": "x", "Address": "10.0.0.1", "Service": {"Service": "s", "Port": "eighty"}}"#,
        )
        .await;
    assert!(
        r.text.contains("Service.Port"),
        "the field is named: {}",
        r.text
    );
    let after = a.get("/v1/catalog/nodes").await;
    assert_eq!(before.text, after.text);
    assert_eq!(before.index, after.index, "nothing was written");
    let r = a
        .put("/v1/agent/service/register", r#"{"Name":"x","Prot":80}"#)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("Prot"), "{}", r.text);
}

#[tokio::test]
async fn agent_services_and_status() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"name":"web","id":"web-1","port":8080,"tags":["v1"],"meta":{"team":"a"},
            "enable_tag_override":true}"#,
    )
    .await;
    let svcs = a.get("/v1/agent/services").await.json();
    assert_eq!(svcs["web-1"]["Service"], "web");
    assert_eq!(svcs["web-1"]["Meta"]["team"], "a");
    assert_eq!(svcs["web-1"]["EnableTagOverride"], true);
    let one = a.get("/v1/agent/service/web-1").await.json();
    assert!(one["ContentHash"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(a.get("/v1/agent/service/nope").await.status, 404);
    let filtered = a
        .get("/v1/agent/services?filter=Service%20%3D%3D%20other")
        .await
        .json();
    assert_eq!(filtered, json!({}));

    let cat = a.get("/v1/catalog/service/web").await.json();
    assert_eq!(cat[0]["ServiceTags"], json!(["v1"]));

    assert_eq!(
        a.put("/v1/agent/service/deregister/nope", "").await.status,
        404
    );
    a.put_ok("/v1/agent/service/deregister/web-1", "").await;
    assert_eq!(a.get("/v1/catalog/service/web").await.text, "[]");

    let leader = a.get("/v1/status/leader").await.json();
    assert!(
        leader.as_str().is_some_and(|l| l.starts_with("127.0.0.1:")),
        "{leader}"
    );
    assert_eq!(a.get("/v1/status/peers").await.json(), json!([leader]));
    let me = a.get("/v1/agent/self").await.json();
    assert_eq!(me["Config"]["NodeName"], "test-node");
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    let members = a.get("/v1/agent/members").await.json();
    assert_eq!(members[0]["Name"], "test-node");
    assert_eq!(members[0]["Status"], 1);
    assert_eq!(a.get("/v1/catalog/nodes?dc=elsewhere").await.status, 500);
}

#[tokio::test]
async fn ui_summaries() {
    let a = Agent::start(&[]);
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-1","Port":80,"Tags":["a"],"Check":{"TTL":"30s"}}"#,
    )
    .await;
    a.put_ok(
        "/v1/agent/service/register",
        r#"{"Name":"web","ID":"web-2","Port":81,"Tags":["b"]}"#,
    )
    .await;
    let services = a.get("/v1/internal/ui/services").await.json();
    let web = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == "web")
        .unwrap();
    assert_eq!(web["InstanceCount"], 2);
    assert_eq!(web["Tags"], json!(["a", "b"]));
    assert_eq!(web["ChecksCritical"], 1);
    assert_eq!(web["Nodes"], json!(["test-node"]));
    let nodes = a.get("/v1/internal/ui/nodes").await.json();
    assert_eq!(nodes[0]["Node"], "test-node");
    assert!(nodes[0]["Services"].as_array().unwrap().len() >= 2);
    assert!(nodes[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "serfHealth"));
}
