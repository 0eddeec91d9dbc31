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
    let m = crate::dns::query(
        a.dns,
        "socat.connect.consul.",
        hickory_proto::rr::RecordType::SRV,
    )
    .await;
    let ports = crate::dns::srv_ports(&m);
    assert_eq!(ports, vec![proxy_port], "DNS answers with the proxy");
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

#[tokio::test]
async fn intentions_through_the_api_and_the_cli() {
    let a = Agent::start(&[]);
    let check = |src: &'static str, dst: &'static str| {
        let a = &a;
        async move {
            a.get(&format!(
                "/v1/connect/intentions/check?source={src}&destination={dst}"
            ))
            .await
            .json()["Allowed"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(
        check("web", "socat").await,
        "allowed by default with ACLs off"
    );

    let out = a.cli_ok(&["intention", "create", "-deny", "web", "socat"]);
    assert_eq!(out, "Created: web => socat (deny)\n");
    assert!(!check("web", "socat").await);
    assert!(check("api", "socat").await);
    let again = a.cli(&["intention", "create", "-deny", "web", "socat"]);
    assert!(!again.status.success(), "exists without -replace");

    let denied = a.cli(&["intention", "check", "web", "socat"]);
    assert_eq!(denied.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "Denied\n");

    // A wildcard deny loses to the exact allow; precedence as Consul.
    a.put_ok(
        "/v1/connect/intentions/exact?source=*&destination=socat",
        r#"{"Action":"deny"}"#,
    )
    .await;
    a.put_ok(
        "/v1/connect/intentions/exact?source=api&destination=socat",
        r#"{"Action":"allow","Description":"api may"}"#,
    )
    .await;
    assert!(check("api", "socat").await);
    assert!(!check("other", "socat").await);
    let m = a
        .get("/v1/connect/intentions/match?by=destination&name=socat")
        .await
        .json();
    let order: Vec<(String, i64)> = m["socat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["SourceName"].as_str().unwrap().to_string(),
                i["Precedence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![("api".into(), 9), ("web".into(), 9), ("*".into(), 8)]
    );

    let one = a
        .get("/v1/connect/intentions/exact?source=api&destination=socat")
        .await
        .json();
    assert_eq!(one["Description"], "api may");
    assert_eq!(one["Action"], "allow");
    assert_eq!(
        a.get("/v1/connect/intentions/exact?source=x&destination=y")
            .await
            .status,
        404
    );

    let authz = a
        .req(
            "POST",
            "/v1/agent/connect/authorize",
            Some(r#"{"Target":"socat","ClientCertURI":"spiffe://1111.consul/ns/default/dc/dc1/svc/web"}"#),
        )
        .await
        .json();
    assert_eq!(authz["Authorized"], false);
    assert!(authz["Reason"].as_str().unwrap().contains("web => socat"));

    // They are stored as a service-intentions config entry.
    let entry = a.get("/v1/config/service-intentions/socat").await.json();
    assert_eq!(entry["Kind"], "service-intentions");
    assert_eq!(entry["Sources"].as_array().unwrap().len(), 3);

    assert!(a
        .cli(&["intention", "delete", "web", "socat"])
        .status
        .success());
    assert!(check("api", "socat").await);
    assert!(
        !check("web", "socat").await,
        "the wildcard deny now decides"
    );
    let list = String::from_utf8_lossy(&a.cli(&["intention", "list"]).stdout).into_owned();
    assert!(list.contains("api") && !list.contains("web"), "{list}");

    let bad = a
        .put(
            "/v1/connect/intentions/exact?source=a&destination=b",
            r#"{"Action":"maybe"}"#,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        a.put(
            "/v1/connect/intentions/exact?source=a",
            r#"{"Action":"allow"}"#
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn config_entries_from_hcl_files() {
    let a = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = crate::support::write_file(
        dir.path(),
        "intentions.hcl",
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  {\n    Name   = \"web\"\n    Action = \"allow\"\n  },\n  {\n    Name   = \"*\"\n    Action = \"deny\"\n  }\n]\n",
    );
    let out = a.cli_ok(&["config", "write", &file.display().to_string()]);
    assert_eq!(out, "Config entry written: service-intentions/db\n");
    let read = a.cli(&[
        "config",
        "read",
        "-kind",
        "service-intentions",
        "-name",
        "db",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(v["Sources"][1]["Precedence"], 8);
    assert_eq!(
        String::from_utf8_lossy(
            &a.cli(&["config", "list", "-kind", "service-intentions"])
                .stdout
        ),
        "db\n"
    );
    let idx = v["ModifyIndex"].as_u64().unwrap();
    let body = r#"{"Kind":"service-intentions","Name":"db","Sources":[]}"#;
    assert_eq!(
        a.put(&format!("/v1/config?cas={}", idx + 1), body)
            .await
            .text,
        "false"
    );
    assert_eq!(
        a.put(&format!("/v1/config?cas={idx}"), body).await.text,
        "true"
    );

    let bad = crate::support::write_file(
        dir.path(),
        "bad.hcl",
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  {\n    Name   = \"web\"\n    Action = \"perhaps\"\n  }\n]\n",
    );
    let out = a.cli(&["config", "write", &bad.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("perhaps"));
    assert_eq!(
        a.put("/v1/config", r#"{"Kind":"nonsense","Name":"x"}"#)
            .await
            .status,
        400
    );
    assert_eq!(a.get("/v1/config/nonsense").await.status, 400);
    assert!(a
        .cli(&[
            "config",
            "delete",
            "-kind",
            "service-intentions",
            "-name",
            "db"
        ])
        .status
        .success());
    assert_eq!(a.get("/v1/config/service-intentions/db").await.status, 404);
}

#[tokio::test]
async fn legacy_intentions_by_id() {
    let a = Agent::start(&[]);
    let created = a
        .req(
            "POST",
            "/v1/connect/intentions",
            Some(
                r#"{"SourceName":"web","DestinationName":"db","SourceType":"consul",
                "Action":"deny","Description":"no","Meta":{"team":"a"}}"#,
            ),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json()["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let got = a.get(&format!("/v1/connect/intentions/{id}")).await;
    assert_eq!(got.status, 200);
    let got = got.json();
    assert_eq!(got["ID"], id.as_str());
    assert_eq!(got["SourceName"], "web");
    assert_eq!(got["Action"], "deny");
    assert_eq!(got["Meta"]["team"], "a");
    // It is an ordinary intention too: by name, in the config entry, and it decides.
    let exact = a
        .get("/v1/connect/intentions/exact?source=web&destination=db")
        .await;
    assert_eq!(exact.json()["ID"], id.as_str());
    let entry = a.get("/v1/config/service-intentions/db").await.json();
    assert_eq!(entry["Sources"][0]["LegacyID"], id.as_str());
    let check = a
        .get("/v1/connect/intentions/check?source=web&destination=db")
        .await;
    assert_eq!(check.json()["Allowed"], false);

    // The same pair again is refused and changes nothing.
    let dup = a
        .req(
            "POST",
            "/v1/connect/intentions",
            Some(r#"{"SourceName":"web","DestinationName":"db","Action":"allow"}"#),
        )
        .await;
    assert_eq!(dup.status, 400);
    assert!(dup.text.contains("duplicate intention"), "{}", dup.text);
    // Bad bodies name the problem.
    for (body, says) in [
        (r#"{"DestinationName":"db","Action":"allow"}"#, "SourceName"),
        (r#"{"SourceName":"x","DestinationName":"db"}"#, "Action"),
        (
            r#"{"SourceName":"x","DestinationName":"db","Action":"allow","Meta":{"n":1}}"#,
            "Meta",
        ),
        ("{", "decode"),
    ] {
        let r = a.req("POST", "/v1/connect/intentions", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }

    // Update by ID, moving it to another destination.
    let upd = a
        .req(
            "PUT",
            &format!("/v1/connect/intentions/{id}"),
            Some(r#"{"SourceName":"web","DestinationName":"cache","Action":"allow"}"#),
        )
        .await;
    assert_eq!(upd.status, 200, "{}", upd.text);
    let got = a.get(&format!("/v1/connect/intentions/{id}")).await.json();
    assert_eq!(got["DestinationName"], "cache");
    assert_eq!(got["Action"], "allow");
    assert_eq!(a.get("/v1/config/service-intentions/db").await.status, 404);

    // The CLI shows and deletes it by ID.
    let shown = a.cli_ok(&["intention", "get", &id]);
    assert!(shown.contains("cache") && shown.contains(&id), "{shown}");
    a.cli_ok(&["intention", "delete", &id]);
    assert_eq!(
        a.get(&format!("/v1/connect/intentions/{id}")).await.status,
        404
    );
    let gone = a
        .req("DELETE", &format!("/v1/connect/intentions/{id}"), None)
        .await;
    assert_eq!(gone.status, 404);
    assert!(
        gone.text.contains("non-existent intention"),
        "{}",
        gone.text
    );
}
