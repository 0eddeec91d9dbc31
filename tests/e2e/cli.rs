//! The operator CLI against a running agent.

use crate::support::{mesh_bin, write_file, Agent};

#[tokio::test]
async fn kv_commands() {
    let a = Agent::start(&[]);
    assert_eq!(
        a.cli_ok(&["kv", "put", "cfg/a", "1"]),
        "Success! Data written to: cfg/a\n"
    );
    a.cli_ok(&["kv", "put", "-flags=7", "cfg/b", "2"]);
    assert_eq!(a.cli_ok(&["kv", "get", "cfg/a"]), "1\n");
    assert_eq!(
        a.cli_ok(&["kv", "get", "-recurse", "cfg"]),
        "cfg/a:1\ncfg/b:2\n"
    );
    assert_eq!(a.cli_ok(&["kv", "get", "-keys", "cfg/"]), "cfg/a\ncfg/b\n");
    let missing = a.cli(&["kv", "get", "cfg/zzz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No key exists at: cfg/zzz"));

    let cas = a.cli(&["kv", "put", "-cas", "-modify-index=1", "cfg/a", "x"]);
    assert!(!cas.status.success());
    assert!(String::from_utf8_lossy(&cas.stderr).contains("CAS failed"));

    let export = a.cli_ok(&["kv", "export", "cfg/"]);
    let exported: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(exported[1]["flags"], 7);
    a.cli_ok(&["kv", "delete", "-recurse", "cfg/"]);
    assert_eq!(a.get("/v1/kv/cfg?recurse").await.status, 404);

    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "export.json", &export);
    let import = a.cli_ok(&["kv", "import", &format!("@{}", file.display())]);
    assert!(import.contains("Imported: cfg/b"));
    assert_eq!(a.get("/v1/kv/cfg/b?raw").await.text, "2");
    assert_eq!(a.get("/v1/kv/cfg/b").await.json()[0]["Flags"], 7);
    assert_eq!(
        a.cli_ok(&["kv", "delete", "cfg/b"]),
        "Success! Deleted key: cfg/b\n"
    );
}

#[tokio::test]
async fn catalog_services_members_and_lock() {
    let a = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "svc.hcl",
        "service {\n  name = \"billing\"\n  port = 7000\n  tags = [\"blue\"]\n}\n",
    );
    let out = a.cli_ok(&["services", "register", &file.display().to_string()]);
    assert_eq!(out, "Registered service: billing\n");
    let services = a.cli_ok(&["catalog", "services", "-tags"]);
    assert!(services.contains("billing  blue"), "{services}");
    assert!(a.cli_ok(&["catalog", "nodes"]).contains("test-node"));
    assert_eq!(a.cli_ok(&["catalog", "datacenters"]), "dc1\n");
    assert!(a.cli_ok(&["members"]).contains("alive"));
    assert!(a.cli_ok(&["info"]).contains("node_name = test-node"));
    a.cli_ok(&["services", "deregister", "-id=billing"]);
    assert_eq!(a.get("/v1/catalog/service/billing").await.text, "[]");

    // `mesh lock` holds the lock while the child runs and passes its status.
    let out = a.cli(&["lock", "locks/job", "test -n \"$(ls /)\" && exit 7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = format!(
        "curl -s {}/v1/kv/locks/job/.lock | grep -q '\"Session\"'",
        a.base
    );
    let out = a.cli(&["lock", "locks/job", &probe]);
    assert!(
        out.status.success(),
        "the lock was held while the child ran"
    );
    let e = a.get("/v1/kv/locks/job/.lock").await.json();
    assert!(e[0].get("Session").is_none(), "released afterwards");
    assert_eq!(
        a.get("/v1/session/list").await.text,
        "[]",
        "session destroyed"
    );
}

#[test]
fn usage_errors_exit_64() {
    let out = std::process::Command::new(mesh_bin())
        .args(["agent", "-no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = std::process::Command::new(mesh_bin())
        .args(["agent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "no -data-dir and no -dev");
    assert!(String::from_utf8_lossy(&out.stderr).contains("data_dir"));
    let out = std::process::Command::new(mesh_bin())
        .args(["version"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Mesh v"));
}
