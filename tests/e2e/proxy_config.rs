//! The config stream the agent pushes to proxies
//! (`/v1/agent/connect/proxy-config`), read as a proxy reads it.

use crate::support::{write_file, Agent};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// An open config stream.
pub(crate) struct ConfigStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl ConfigStream {
    pub(crate) async fn open(a: &Agent, path: &str) -> ConfigStream {
        let resp = a
            .client
            .get(format!("{}{path}", a.base))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        ConfigStream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next config line, skipping heartbeats; panics after `WAIT`.
    pub(crate) async fn next(&mut self) -> Value {
        let read = async {
            loop {
                if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        return serde_json::from_slice::<Value>(&line).expect("a JSON line");
                    }
                    continue;
                }
                let chunk = self.resp.chunk().await.expect("read").expect("stream open");
                self.buf.extend_from_slice(&chunk);
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("a new config version in time")
    }

    /// Reads versions until `pred` holds for one; returns it.
    pub(crate) async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            loop {
                let v = self.next().await;
                if pred(&v) {
                    return v;
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no config with {what}"))
    }
}

#[tokio::test]
async fn a_sidecar_gets_its_config_and_every_change() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "socat.json",
        r#"{"service":{"name":"socat","port":8181,"connect":{"sidecar_service":{"port":21555,
            "proxy":{"upstreams":[{"destination_name":"db","local_bind_port":9191}]}}}}}"#,
    );
    let config_dir = format!("-config-dir={}", dir.path().display());
    let a = Agent::start(&[config_dir.as_str()]);

    let mut s = ConfigStream::open(
        &a,
        "/v1/agent/connect/proxy-config/socat-sidecar-proxy?bind_address=127.0.0.1",
    )
    .await;
    let first = s.next().await;
    assert_eq!(first["Version"], 1);
    assert_eq!(first["Service"], "socat");
    assert_eq!(first["Datacenter"], "dc1");
    assert_eq!(
        first["DefaultAllow"], true,
        "allow by default with ACLs off"
    );
    assert_eq!(first["PublicListener"]["Bind"], "127.0.0.1:21555");
    assert_eq!(first["PublicListener"]["LocalApp"], "127.0.0.1:8181");
    assert_eq!(first["Upstreams"][0]["Destination"], "db");
    assert_eq!(first["Upstreams"][0]["Bind"], "127.0.0.1:9191");
    assert_eq!(first["Upstreams"][0]["Endpoints"], serde_json::json!([]));
    let roots = a.get("/v1/agent/connect/ca/roots").await.json();
    assert_eq!(first["TrustDomain"], roots["TrustDomain"]);
    assert_eq!(first["RootsPEM"][0], roots["Roots"][0]["RootCert"]);
    let leaf = a.get("/v1/agent/connect/ca/leaf/socat").await.json();
    assert_eq!(
        first["LeafCertPEM"], leaf["CertPEM"],
        "the agent's cached leaf"
    );

    // An intention naming the service arrives as a new version.
    a.cli_ok(&["intention", "create", "-deny", "web", "socat"]);
    let denied = s
        .until("the deny", |v| {
            v["Intentions"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    assert!(denied["Version"].as_u64().unwrap() > 1);
    assert_eq!(
        denied["Intentions"],
        serde_json::json!([{"Source": "web", "Allow": false, "Precedence": 9}])
    );

    // A healthy instance of the upstream's proxy becomes an endpoint.
    let db = serde_json::json!({"Name": "db-sidecar-proxy", "Kind": "connect-proxy",
        "Port": 21999, "Address": "10.1.2.3",
        "Proxy": {"DestinationServiceName": "db", "LocalServicePort": 5432}});
    a.put_ok("/v1/agent/service/register", &db.to_string())
        .await;
    let with_db = s
        .until("db's endpoint", |v| {
            v["Upstreams"][0]["Endpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(
        with_db["Upstreams"][0]["Endpoints"],
        serde_json::json!(["10.1.2.3:21999"])
    );

    // A CA rotation brings a second root and a leaf signed by the new one.
    a.set_ca_config(r#"{"Provider":"consul","Config":{"RootCertTTL":"43000h"}}"#);
    let rotated = s
        .until("the new root and a leaf it signed", |v| {
            v["RootsPEM"].as_array().is_some_and(|r| r.len() == 2)
                && v["LeafCertPEM"] != first["LeafCertPEM"]
        })
        .await;
    assert!(rotated["Version"].as_u64() > with_db["Version"].as_u64());

    // Removing the registration ends the stream.
    a.put_ok("/v1/agent/service/deregister/socat-sidecar-proxy", "")
        .await;
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = s.resp.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends with its registration");
}

#[tokio::test]
async fn a_client_only_proxy_and_bad_requests() {
    let a = Agent::start(&[]);
    let mut s = ConfigStream::open(
        &a,
        "/v1/agent/connect/proxy-config?service=web&upstream=socat%3A127.0.0.1%3A9191",
    )
    .await;
    let first = s.next().await;
    assert_eq!(first["Service"], "web");
    assert!(first.get("PublicListener").is_none_or(Value::is_null));
    assert_eq!(first["Upstreams"][0]["Bind"], "127.0.0.1:9191");

    for (path, status, says) in [
        (
            "/v1/agent/connect/proxy-config/nope",
            404,
            "unknown proxy service ID",
        ),
        ("/v1/agent/connect/proxy-config", 400, "'service'"),
        (
            "/v1/agent/connect/proxy-config?service=web&upstream=socat",
            400,
            "DEST:IP:PORT",
        ),
        (
            "/v1/agent/connect/proxy-config?service=web&bind_address=x",
            400,
            "bind_address",
        ),
    ] {
        let r = a.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.text.contains(says), "{path}: {}", r.text);
    }
    // A plain service is not a proxy.
    a.put_ok("/v1/agent/service/register", r#"{"Name":"plain","Port":1}"#)
        .await;
    let r = a.get("/v1/agent/connect/proxy-config/plain").await;
    assert_eq!(r.status, 400);
    assert!(r.text.contains("connect-proxy"), "{}", r.text);
}

#[tokio::test]
async fn default_intention_policy_deny_reaches_the_api_and_the_proxies() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "policy.hcl",
        r#"default_intention_policy = "deny""#,
    );
    let config_dir = format!("-config-dir={}", dir.path().display());
    let a = Agent::start(&[config_dir.as_str()]);

    let check = a
        .get("/v1/connect/intentions/check?source=web&destination=db")
        .await;
    assert_eq!(check.json()["Allowed"], false);
    let mut s = ConfigStream::open(&a, "/v1/agent/connect/proxy-config?service=db").await;
    assert_eq!(s.next().await["DefaultAllow"], false);

    a.cli_ok(&["intention", "create", "-allow", "web", "db"]);
    let check = a
        .get("/v1/connect/intentions/check?source=web&destination=db")
        .await;
    assert_eq!(check.json()["Allowed"], true);

    // A bad value is refused at start, naming the setting.
    write_file(
        dir.path(),
        "policy.hcl",
        r#"default_intention_policy = "maybe""#,
    );
    let mut agent = std::process::Command::new(crate::support::mesh_bin())
        .args([
            "agent",
            "-dev",
            config_dir.as_str(),
            "-http-port=0",
            "-dns-port=0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while agent.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = agent.kill();
            panic!("the agent started with a bad default_intention_policy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = agent.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default_intention_policy"), "{err}");
}
