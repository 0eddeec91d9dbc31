//! The Connect CA: roots, leaves, configuration and rotation.

use crate::support::{write_file, Agent};
use std::process::Command;
use std::time::Duration;

/// Verifies `leaf` (with its chain) against `root` with openssl, an
/// independent verifier.
fn openssl_verifies(dir: &std::path::Path, root: &str, chain: &str) -> bool {
    let root_file = write_file(dir, "root.pem", root);
    let certs: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----").collect();
    let leaf_file = write_file(dir, "leaf.pem", certs[0]);
    let untrusted = write_file(dir, "chain.pem", &certs[1..].concat());
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(&root_file);
    if certs.len() > 1 && !certs[1].trim().is_empty() {
        cmd.arg("-untrusted").arg(&untrusted);
    }
    let out = cmd.arg(&leaf_file).output().expect("openssl");
    out.status.success()
}

#[tokio::test]
async fn roots_leaves_and_rotation() {
    let a = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let roots = a.get("/v1/connect/ca/roots").await;
    let r = roots.json();
    let td = r["TrustDomain"].as_str().unwrap().to_string();
    assert!(td.ends_with(".consul"), "{td}");
    assert_eq!(r["Roots"].as_array().unwrap().len(), 1);
    assert_eq!(r["Roots"][0]["Active"], true);
    assert_eq!(r["ActiveRootID"], r["Roots"][0]["ID"]);
    let root1 = r["Roots"][0]["RootCert"].as_str().unwrap().to_string();
    assert_eq!(
        a.get("/v1/agent/connect/ca/roots").await.json()["ActiveRootID"],
        r["ActiveRootID"]
    );

    let leaf = a.get("/v1/agent/connect/ca/leaf/web").await;
    let l = leaf.json();
    assert_eq!(l["Service"], "web");
    assert_eq!(
        l["ServiceURI"],
        format!("spiffe://{td}/ns/default/dc/dc1/svc/web")
    );
    assert!(l["PrivateKeyPEM"].as_str().unwrap().contains("PRIVATE KEY"));
    let chain = l["CertPEM"].as_str().unwrap().to_string();
    assert!(
        openssl_verifies(dir.path(), &root1, &chain),
        "leaf chains to the root"
    );
    let again = a.get("/v1/agent/connect/ca/leaf/web").await.json();
    assert_eq!(again["SerialNumber"], l["SerialNumber"], "cached");

    let config = a.get("/v1/connect/ca/configuration").await.json();
    assert_eq!(config["Provider"], "consul");
    assert_eq!(config["Config"]["LeafCertTTL"], "72h");
    assert_eq!(
        format!("{}.consul", config["ClusterID"].as_str().unwrap()),
        td
    );

    // A blocking leaf query wakes when a rotation re-issues the leaf.
    let waiter = {
        let url = format!(
            "{}/v1/agent/connect/ca/leaf/web?index={}&wait=30s",
            a.base, leaf.index
        );
        let client = a.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    };
    a.set_ca_config(r#"{"Provider":"consul","Config":{"RootCertTTL":"43800h"}}"#);
    let r = a.get("/v1/connect/ca/roots").await.json();
    let roots = r["Roots"].as_array().unwrap();
    assert_eq!(roots.len(), 2, "the old root is kept while leaves rotate");
    let new = roots.iter().find(|x| x["Active"] == true).unwrap();
    assert_ne!(
        new["ID"],
        roots.iter().find(|x| x["Active"] == false).unwrap()["ID"]
    );
    assert_eq!(
        new["IntermediateCerts"].as_array().unwrap().len(),
        1,
        "cross-signed by the old root"
    );

    let body = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("leaf query woke")
        .unwrap();
    let rotated: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(rotated["SerialNumber"], l["SerialNumber"]);
    let new_chain = rotated["CertPEM"].as_str().unwrap();
    let new_root = new["RootCert"].as_str().unwrap();
    assert!(openssl_verifies(dir.path(), new_root, new_chain));
    // Proxies that still trust only the old root accept the new leaf through
    // the cross-signed intermediate it carries.
    assert!(openssl_verifies(dir.path(), &root1, new_chain));
    assert!(!openssl_verifies(
        dir.path(),
        &root1,
        new_chain
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .unwrap()
    ));

    let cfg = String::from_utf8_lossy(&a.cli(&["connect", "ca", "get-config"]).stdout).into_owned();
    assert!(cfg.contains("43800h"), "{cfg}");
    let bad = a
        .put("/v1/connect/ca/configuration", r#"{"Provider":"vault"}"#)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad = a
        .put(
            "/v1/connect/ca/configuration",
            r#"{"Provider":"consul","Config":{"LeafCertTTL":"soon"}}"#,
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
}

#[tokio::test]
async fn a_provided_root_rotates_in_once_and_its_key_stays_hidden() {
    use mesh_ca::{CaConfiguration, ConsulProvider, Provider};

    let a = Agent::start(&[]);
    let cluster_id = a.get("/v1/connect/ca/configuration").await.json()["ClusterID"]
        .as_str()
        .unwrap()
        .to_string();
    let own = || {
        ConsulProvider::new(&CaConfiguration::new(cluster_id.as_str()))
            .unwrap()
            .generate_root(std::time::SystemTime::now())
            .unwrap()
    };
    let (root, key) = own();
    let (_, other_key) = own();
    let key_body = key.private_key_pem.lines().nth(1).unwrap();
    let body = |cert: &str, key: &str| {
        serde_json::json!({"Provider": "consul",
            "Config": {"RootCert": cert, "PrivateKey": key}})
        .to_string()
    };
    let roots = || async { a.get("/v1/connect/ca/roots").await.json() };
    let before = roots().await;

    // Refused, with the field at fault, and nothing changes.
    for (bad, field) in [
        (
            body(&root.root_cert, &other_key.private_key_pem),
            "PrivateKey",
        ),
        (body(&root.root_cert, ""), "PrivateKey"),
        (body("not a certificate", &key.private_key_pem), "RootCert"),
    ] {
        let r = a.put("/v1/connect/ca/configuration", &bad).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.text.contains(field), "{field}: {}", r.text);
        assert!(!r.text.contains(key_body), "the key is echoed: {}", r.text);
    }
    assert_eq!(roots().await, before);

    a.put_ok(
        "/v1/connect/ca/configuration",
        &body(&root.root_cert, &key.private_key_pem),
    )
    .await;
    let after = roots().await;
    assert_eq!(after["ActiveRootID"], root.id.as_str());
    assert_eq!(after["Roots"].as_array().unwrap().len(), 2);
    let config = a.get("/v1/connect/ca/configuration").await;
    let shown = config.json();
    assert_eq!(
        shown["Config"]["PrivateKey"], "hidden",
        "as Consul redacts it"
    );
    assert_eq!(shown["Config"]["RootCert"], root.root_cert.as_str());
    assert!(!config.text.contains(key_body));

    // The same root again changes nothing.
    a.put_ok(
        "/v1/connect/ca/configuration",
        &body(&root.root_cert, &key.private_key_pem),
    )
    .await;
    assert_eq!(roots().await, after);
    assert_eq!(
        a.get("/v1/connect/ca/configuration").await.index,
        config.index
    );
}
