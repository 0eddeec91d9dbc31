//! `-config-dir`, `mesh reload` and SIGHUP.

use crate::support::{eventually, write_file, Agent};
use serde_json::json;
use std::time::Duration;

fn ids(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    out.sort();
    out
}

#[tokio::test]
async fn config_dir_services_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "socat.json",
        r#"{"service": {"name": "socat", "port": 8181, "connect": {"sidecar_service": {}}}}"#,
    );
    write_file(
        dir.path(),
        "web.hcl",
        r#"
        service {
          name = "web"
          port = 80
          tags = ["v1"]
          check {
            id  = "web-ttl"
            ttl = "30s"
          }
        }
        "#,
    );
    let config_dir = format!("-config-dir={}", dir.path().display());
    let mut a = Agent::start(&[config_dir.as_str()]);
    assert_eq!(
        ids(&a.get("/v1/agent/services").await.json()),
        vec!["socat", "socat-sidecar-proxy", "web"]
    );
    let socat = a.get("/v1/agent/service/socat").await.json();
    assert_eq!(socat["Connect"], json!({"SidecarService": {}}));
    assert_eq!(
        a.get("/v1/agent/checks").await.json()["web-ttl"]["Status"],
        "critical"
    );

    // Change a service, add one, remove one; reload through the CLI.
    std::fs::remove_file(dir.path().join("socat.json")).unwrap();
    write_file(
        dir.path(),
        "web.hcl",
        "service {\n  name = \"web\"\n  port = 80\n  tags = [\"v2\"]\n}\n",
    );
    write_file(
        dir.path(),
        "db.json",
        r#"{"services": [{"name": "db", "port": 5432}]}"#,
    );
    a.cli_ok(&["reload"]);
    assert_eq!(
        ids(&a.get("/v1/agent/services").await.json()),
        vec!["db", "web"]
    );
    assert_eq!(
        a.get("/v1/catalog/service/web").await.json()[0]["ServiceTags"],
        json!(["v2"])
    );
    assert_eq!(a.get("/v1/catalog/service/socat").await.text, "[]");
    assert_eq!(
        a.get("/v1/catalog/service/socat-sidecar-proxy").await.text,
        "[]"
    );
    assert_eq!(
        a.get("/v1/catalog/service/socat-sidecar-proxy").await.text,
        "[]"
    );
    assert_eq!(a.get("/v1/agent/checks").await.json(), json!({}));

    // A broken file is reported with its path, and the old config stays.
    write_file(
        dir.path(),
        "broken.json",
        r#"{"service": {"name": "x", "port": "eighty"}}"#,
    );
    let out = a.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.json"), "{err}");
    assert!(err.contains("Port"), "the field is named: {err}");
    assert_eq!(
        ids(&a.get("/v1/agent/services").await.json()),
        vec!["db", "web"]
    );

    // SIGHUP reloads too.
    std::fs::remove_file(dir.path().join("broken.json")).unwrap();
    std::fs::remove_file(dir.path().join("db.json")).unwrap();
    a.signal("HUP");
    eventually(Duration::from_secs(10), "SIGHUP reload", || async {
        (ids(&a.get("/v1/agent/services").await.json()) == vec!["web"]).then_some(())
    })
    .await;

    // `mesh leave` stops the agent.
    let out = a.cli(&["leave"]);
    assert!(out.status.success());
    assert!(
        a.wait_exit(Duration::from_secs(10)).is_some(),
        "agent exited after leave"
    );
}

#[test]
fn a_broken_config_dir_stops_the_agent_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "bad.hcl", "service { name = ");
    let out = std::process::Command::new(crate::support::mesh_bin())
        .args(["agent", "-dev", "-http-port=0", "-dns-port=0"])
        .arg(format!("-config-dir={}", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.hcl"), "{err}");
}
