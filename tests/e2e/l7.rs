//! L7 traffic through the real binary: config entries written with
//! `mesh config write` steer HTTP requests between subsets, retry, and
//! L7 intentions answer 403 — all reaching proxies that are already
//! running.

use crate::support::{
    eventually, free_port, instance_of, write_file, Agent, MeshProcess, PROXY_WAIT,
};
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

/// An HTTP/1.1 backend named `name`: every answer carries `X-Backend: name`
/// and the status currently in `status`.
async fn backend(name: &'static str, status: Arc<AtomicU16>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let status = status.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let code = status.load(Ordering::Relaxed);
                let path = req.uri().path().to_string();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(code)
                            .header("x-backend", name)
                            .header("x-path", path)
                            .body(Full::new(Bytes::from_static(name.as_bytes())))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc);
                let _ = conn.await;
            });
        }
    });
    addr
}

/// An agent, `billing` in subsets v1 and v2 behind their sidecars, and a
/// `web` proxy with `billing` as upstream.
struct L7Mesh {
    agent: Agent,
    dir: tempfile::TempDir,
    upstream: String,
    /// The status each backend answers with, by subset.
    status: BTreeMap<&'static str, Arc<AtomicU16>>,
    _procs: Vec<MeshProcess>,
}

impl L7Mesh {
    async fn start() -> L7Mesh {
        let agent = Agent::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let mesh = L7Mesh {
            agent,
            dir,
            upstream: String::new(),
            status: BTreeMap::new(),
            _procs: Vec::new(),
        };
        mesh.write(
            "defaults.hcl",
            r#"Kind = "service-defaults"
Name = "billing"
Protocol = "http""#,
        );
        mesh.write(
            "resolver.hcl",
            r#"Kind = "service-resolver"
Name = "billing"
DefaultSubset = "v1"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  v2 = { Filter = "Service.Meta.version == v2" }
}"#,
        );
        let mut mesh = mesh;
        for version in ["v1", "v2"] {
            let status = Arc::new(AtomicU16::new(200));
            let addr = backend(version, status.clone()).await;
            let reg = serde_json::json!({"name": "billing", "id": format!("billing-{version}"),
                "port": addr.port(), "meta": {"version": version}});
            let (proc, _) = instance_of(&mesh.agent, reg).await;
            mesh._procs.push(proc);
            mesh.status.insert(version, status);
        }
        let web = MeshProcess::spawn(
            &mesh.agent,
            &[
                "proxy",
                "-service",
                "web",
                "-upstream",
                &format!("billing:{}", free_port()),
            ],
        );
        mesh.upstream = web.wait_line("Upstream billing:", PROXY_WAIT);
        mesh._procs.push(web);
        let agent = &mesh.agent;
        eventually(PROXY_WAIT, "both billing sidecars healthy", || async {
            let v = agent.get("/v1/health/connect/billing?passing").await.json();
            (v.as_array().unwrap().len() == 2).then_some(())
        })
        .await;
        mesh
    }

    /// Writes a config entry file and applies it with `mesh config write`.
    fn write(&self, name: &str, hcl: &str) {
        let file = write_file(self.dir.path(), name, hcl);
        self.agent
            .cli_ok(&["config", "write", &file.display().to_string()]);
    }

    /// Sends one request through web's upstream; returns the status and
    /// the backend that answered (`-` if none said).
    async fn send(
        &self,
        client: &reqwest::Client,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Option<(u16, String)> {
        let mut req = client.get(format!("http://{}{path}", self.upstream));
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = req.send().await.ok()?;
        let backend = resp
            .headers()
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        Some((resp.status().as_u16(), backend))
    }

    /// Polls until `path` (with `header`) is answered by `backend`.
    async fn until_backend(&self, path: &str, header: Option<(&str, &str)>, backend: &str) {
        let client = reqwest::Client::new();
        eventually(
            PROXY_WAIT,
            &format!("{path} answered by {backend}"),
            || async {
                let (status, by) = self.send(&client, path, header).await?;
                (status == 200 && by == backend).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_90_10_split_written_to_running_proxies_holds_over_10000_requests() {
    let mesh = L7Mesh::start().await;
    // With no splitter the resolver's default subset answers.
    mesh.until_backend("/", None, "v1").await;

    mesh.write(
        "splitter.hcl",
        r#"Kind = "service-splitter"
Name = "billing"
Splits = [
  { Weight = 10, ServiceSubset = "v2" },
  { Weight = 90, ServiceSubset = "v1" },
]"#,
    );
    mesh.until_backend("/", None, "v2").await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let total = 10_000;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let results: Vec<_> = futures_util::stream::iter(0..total)
        .map(|_| mesh.send(&client, "/", None))
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        let (status, by) = r.expect("every request answered");
        assert_eq!(status, 200);
        *counts.entry(by).or_default() += 1;
    }
    let v2 = f64::from(counts.get("v2").copied().unwrap_or(0)) / f64::from(total);
    assert!(
        (0.08..=0.12).contains(&v2),
        "v2 got {:.2}% of {total} requests, want 10% ± 2%: {counts:?}",
        v2 * 100.0
    );
    assert_eq!(counts.values().sum::<u32>(), total);
}

#[tokio::test]
async fn routes_by_path_and_header_pick_subsets() {
    let mesh = L7Mesh::start().await;
    mesh.write(
        "router.hcl",
        r#"Kind = "service-router"
Name = "billing"
Routes = [
  {
    Match { HTTP { PathPrefix = "/v2/" } }
    Destination { ServiceSubset = "v2", PrefixRewrite = "/" }
  },
  {
    Match { HTTP { Header = [{ Name = "x-canary", Exact = "1" }] } }
    Destination { ServiceSubset = "v2" }
  },
]"#,
    );
    mesh.until_backend("/v2/invoices", None, "v2").await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(
            mesh.send(&client, "/invoices", None).await,
            Some((200, "v1".into()))
        );
        assert_eq!(
            mesh.send(&client, "/invoices", Some(("x-canary", "1")))
                .await,
            Some((200, "v2".into()))
        );
        assert_eq!(
            mesh.send(&client, "/v2/invoices", None).await,
            Some((200, "v2".into()))
        );
    }
    // PrefixRewrite reached the backend.
    let resp = client
        .get(format!("http://{}/v2/invoices", mesh.upstream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-path"], "/invoices");
}

#[tokio::test]
async fn a_503_is_retried_on_another_instance() {
    let mesh = L7Mesh::start().await;
    // One resolver subset holding both instances, so a retry has somewhere
    // else to go; v1's instance fails every request.
    mesh.write(
        "resolver.hcl",
        r#"Kind = "service-resolver"
Name = "billing""#,
    );
    mesh.write(
        "router.hcl",
        r#"Kind = "service-router"
Name = "billing"
Routes = [
  {
    Match { HTTP { PathPrefix = "/" } }
    Destination { NumRetries = 3, RetryOnStatusCodes = [503] }
  },
]"#,
    );
    mesh.until_backend("/", None, "v2").await;
    mesh.status["v1"].store(503, Ordering::Relaxed);
    let client = reqwest::Client::new();
    for i in 0..40 {
        assert_eq!(
            mesh.send(&client, "/", None).await,
            Some((200, "v2".into())),
            "request {i} retried past the 503"
        );
    }
}

#[tokio::test]
async fn an_l7_intention_denies_with_403() {
    let mesh = L7Mesh::start().await;
    mesh.until_backend("/", None, "v1").await;
    mesh.write(
        "intentions.hcl",
        r#"Kind = "service-intentions"
Name = "billing"
Sources = [
  {
    Name = "web"
    Permissions = [
      { Action = "deny", HTTP { PathPrefix = "/admin" } },
      { Action = "allow", HTTP { PathPrefix = "/" } },
    ]
  },
]"#,
    );
    let client = reqwest::Client::new();
    eventually(PROXY_WAIT, "the L7 deny", || async {
        let (status, _) = mesh.send(&client, "/admin/users", None).await?;
        (status == 403).then_some(())
    })
    .await;
    assert_eq!(
        mesh.send(&client, "/invoices", None).await,
        Some((200, "v1".into()))
    );
}
