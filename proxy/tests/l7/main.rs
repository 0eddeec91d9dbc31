//! L7 end to end on loopback: HTTP backends behind `api` sidecars (HTTP
//! public listeners) and a `web` proxy whose `api` upstream follows a
//! discovery chain.

// The CA and config fixtures of the L4 suite; not all of them are used here.
#[allow(dead_code)]
#[path = "../l4/support.rs"]
mod l4;
mod support;

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proxy::{
    HeaderChanges, HeaderMatch, HttpMatch, Permission, Protocol, Proxy, ProxyConfig, Route, Split,
};
use support::*;
use tokio::net::TcpStream;

use crate::l4::{closed_port, step, wait_until, Ca};

/// The `api` service in two subsets, one instance each, and `web` in front.
struct TwoSubsets {
    ca: Ca,
    v1: Instance,
    v2: Instance,
    app: App,
}

impl TwoSubsets {
    async fn start() -> Self {
        let ca = Ca::new();
        let v1 = Instance::start(&ca, "api", "v1", Protocol::Http).await;
        let v2 = Instance::start(&ca, "api", "v2", Protocol::Http).await;
        Self {
            ca,
            v1,
            v2,
            app: App::new(),
        }
    }

    fn targets(&self) -> Vec<(String, mesh_proxy::Target)> {
        vec![
            target("api", "v1", vec![self.v1.public()]),
            target("api", "v2", vec![self.v2.public()]),
        ]
    }

    /// One catch-all route split `v1_weight` / rest between the subsets.
    fn split_chain(&self, v1_weight: u32) -> mesh_proxy::Chain {
        let route = Route {
            splits: vec![
                split(v1_weight, &target_id("api", "v1")),
                split(10_000 - v1_weight, &target_id("api", "v2")),
            ],
            ..Route::default()
        };
        chain(vec![route], self.targets())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_lands_within_two_percent() {
    let mesh = TwoSubsets::start().await;
    let web = web(&mesh.ca, mesh.split_chain(9000)).await;
    let upstream = web.upstream_addr("api").unwrap();

    const TOTAL: u64 = 10_000;
    const WORKERS: u64 = 16;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let app = mesh.app.clone();
            tokio::spawn(async move {
                for _ in 0..TOTAL / WORKERS {
                    let reply = app.get(upstream, "/").await;
                    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
                }
            })
        })
        .collect();
    // 10,000 requests through two debug-built proxies take a while; the
    // deadline only catches a hang.
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(180), worker)
            .await
            .expect("the requests finished")
            .unwrap();
    }
    let (v1, v2) = (mesh.v1.backend.hits(), mesh.v2.backend.hits());
    assert_eq!(v1 + v2, TOTAL);
    // ±2% of all requests around 10%.
    assert!((800..=1200).contains(&v2), "v1 {v1}, v2 {v2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_header_routes_pick_their_target() {
    let mesh = TwoSubsets::start().await;
    let (v1, v2) = (target_id("api", "v1"), target_id("api", "v2"));
    let canary = HttpMatch {
        header: vec![HeaderMatch {
            name: "x-canary".into(),
            exact: Some("yes".into()),
            ..HeaderMatch::default()
        }],
        ..HttpMatch::default()
    };
    let admin = HttpMatch {
        path_prefix: Some("/admin".into()),
        ..HttpMatch::default()
    };
    let routes = vec![
        route_to(canary, &v2),
        route_to(admin, &v2),
        route_to(HttpMatch::default(), &v1),
    ];
    let web = web(&mesh.ca, chain(routes, mesh.targets())).await;
    let upstream = web.upstream_addr("api").unwrap();

    assert_eq!(mesh.app.get(upstream, "/users").await.body, "v1");
    assert_eq!(mesh.app.get(upstream, "/admin/users").await.body, "v2");
    let canary = Request::get(format!("http://{upstream}/users"))
        .header("x-canary", "yes")
        .body(Full::default())
        .unwrap();
    assert_eq!(mesh.app.send(canary).await.body, "v2");
    let not_canary = Request::get(format!("http://{upstream}/users"))
        .header("x-canary", "no")
        .body(Full::default())
        .unwrap();
    assert_eq!(mesh.app.send(not_canary).await.body, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_rewrite_and_header_changes_apply() {
    let mesh = TwoSubsets::start().await;
    let changes = |set: &str, add: &str, remove: &str| HeaderChanges {
        set: [(set.to_string(), "set".to_string())].into(),
        add: [(add.to_string(), "added".to_string())].into(),
        remove: vec![remove.into()],
    };
    let route = Route {
        r#match: HttpMatch {
            path_prefix: Some("/api/".into()),
            ..HttpMatch::default()
        },
        prefix_rewrite: Some("/".into()),
        request_headers: changes("x-route-set", "x-route-add", "x-secret"),
        response_headers: changes("x-resp-set", "x-resp-add", "x-backend"),
        splits: vec![Split {
            request_headers: changes("x-split-set", "x-split-add", "x-other"),
            ..split(10_000, &target_id("api", "v1"))
        }],
        ..Route::default()
    };
    let web = web(&mesh.ca, chain(vec![route], mesh.targets())).await;
    let upstream = web.upstream_addr("api").unwrap();

    let req = Request::get(format!("http://{upstream}/api/users?page=2"))
        .header("x-secret", "hunter2")
        .header("x-other", "gone")
        .header("x-route-set", "from the app")
        .header("x-route-add", "from the app")
        .body(Full::default())
        .unwrap();
    let reply = mesh.app.send(req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-resp-set"], "set");
    assert_eq!(reply.headers["x-resp-add"], "added");
    assert!(!reply.headers.contains_key("x-backend"));

    let seen = mesh.v1.backend.last_seen();
    assert_eq!(seen.path, "/users?page=2");
    assert!(!seen.headers.contains_key("x-secret"));
    assert!(!seen.headers.contains_key("x-other"));
    assert_eq!(seen.headers["x-route-set"], "set");
    assert_eq!(seen.headers["x-split-set"], "set");
    let added: Vec<_> = seen.headers.get_all("x-route-add").iter().collect();
    assert_eq!(added, ["from the app", "added"]);
    assert_eq!(seen.headers["host"], upstream.to_string());
}

/// One target with two instances: `bad` (answering `mode`) and `good`.
struct Pair {
    ca: Ca,
    bad: Instance,
    good: Instance,
    app: App,
}

impl Pair {
    async fn start(bad_mode: Mode) -> Self {
        let ca = Ca::new();
        let bad = Instance::start(&ca, "api", "bad", Protocol::Http).await;
        bad.backend.set_mode(bad_mode);
        let good = Instance::start(&ca, "api", "good", Protocol::Http).await;
        Self {
            ca,
            bad,
            good,
            app: App::new(),
        }
    }

    fn chain(&self, first: std::net::SocketAddr, route: Route) -> mesh_proxy::Chain {
        let id = target_id("api", "");
        chain(
            vec![Route {
                splits: vec![split(10_000, &id)],
                ..route
            }],
            vec![target("api", "", vec![first, self.good.public()])],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_503_succeeds_on_another_endpoint() {
    let pair = Pair::start(Mode::Status(503)).await;
    let route = Route {
        num_retries: 2,
        retry_on_status_codes: vec![503],
        ..Route::default()
    };
    let web = web(&pair.ca, pair.chain(pair.bad.public(), route)).await;
    let upstream = web.upstream_addr("api").unwrap();
    for _ in 0..4 {
        let reply = pair.app.get(upstream, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "good");
    }
    assert!(pair.bad.backend.hits() >= 1, "round robin never tried bad");
    assert_eq!(pair.good.backend.hits(), 4);

    // A small body is kept and sent again.
    for _ in 0..2 {
        let post = Request::post(format!("http://{upstream}/orders"))
            .body(Full::new(Bytes::from_static(b"{\"item\": 1}")))
            .unwrap();
        let reply = pair.app.send(post).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "good")
        );
    }
    assert_eq!(pair.good.backend.hits(), 6);
    let metrics = web.metrics_text();
    let retries = sample(
        &metrics,
        "mesh_proxy_request_retries_total{direction=\"outbound\",upstream=\"api\",service=\"api\",subset=\"\",route=\"0\"}",
    );
    assert_eq!(retries, Some(pair.bad.backend.hits() as f64), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_connect_failure_reaches_a_live_endpoint() {
    let pair = Pair::start(Mode::Ok).await;
    let down = closed_port().await;
    let retrying = Route {
        num_retries: 1,
        retry_on_connect_failure: true,
        ..Route::default()
    };
    let web = web(&pair.ca, pair.chain(down, retrying)).await;
    let upstream = web.upstream_addr("api").unwrap();
    for _ in 0..4 {
        assert_eq!(pair.app.get(upstream, "/").await.status, StatusCode::OK);
    }
    assert_eq!(pair.good.backend.hits(), 4);

    // Without the retry, the down endpoint's turn answers 503.
    web.update(with_chain(&web, pair.chain(down, Route::default())))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(pair.app.get(upstream, "/").await.status);
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE) && statuses.contains(&StatusCode::OK),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_answers_504() {
    let mesh = TwoSubsets::start().await;
    mesh.v1
        .backend
        .set_mode(Mode::Slow(Duration::from_secs(30)));
    let route = Route {
        request_timeout: Some(Duration::from_millis(200)),
        ..route_to(HttpMatch::default(), &target_id("api", "v1"))
    };
    let web = web(&mesh.ca, chain(vec![route], mesh.targets())).await;
    let upstream = web.upstream_addr("api").unwrap();
    let reply = mesh.app.get(upstream, "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let metrics = web.metrics_text();
    assert_eq!(
        sample(
            &metrics,
            "mesh_proxy_request_timeouts_total{direction=\"outbound\",upstream=\"api\",service=\"api\",subset=\"v1\",route=\"0\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_serves_when_the_primary_has_no_endpoints() {
    let mesh = TwoSubsets::start().await;
    let (v1, v2) = (target_id("api", "v1"), target_id("api", "v2"));
    let mut targets = mesh.targets();
    targets[1].1.endpoints.clear();
    targets[1].1.failover = vec![v1.clone()];
    let web = web(
        &mesh.ca,
        chain(vec![route_to(HttpMatch::default(), &v2)], targets),
    )
    .await;
    let upstream = web.upstream_addr("api").unwrap();
    assert_eq!(mesh.app.get(upstream, "/").await.body, "v1");

    // With nothing left: 503.
    let mut targets = mesh.targets();
    targets[0].1.endpoints.clear();
    targets[1].1.endpoints.clear();
    targets[1].1.failover = vec![v1];
    web.update(with_chain(
        &web,
        chain(vec![route_to(HttpMatch::default(), &v2)], targets),
    ))
    .await
    .unwrap();
    let reply = mesh.app.get(upstream, "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "no healthy upstream\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_endpoint() {
    let pair = Pair::start(Mode::Status(500)).await;
    let web = web(&pair.ca, pair.chain(pair.bad.public(), Route::default())).await;
    let upstream = web.upstream_addr("api").unwrap();
    // Round robin alternates until the fifth 500 ejects `bad`.
    let mut errors = 0;
    for _ in 0..20 {
        if pair.app.get(upstream, "/").await.status != StatusCode::OK {
            errors += 1;
        }
    }
    assert_eq!(errors, 5);
    assert_eq!(pair.bad.backend.hits(), 5);
    assert_eq!(pair.good.backend.hits(), 15);
    let metrics = web.metrics_text();
    let ejections = format!(
        "mesh_proxy_outlier_ejections_total{{upstream=\"api\",service=\"api\",endpoint=\"{}\"}}",
        pair.bad.public()
    );
    assert_eq!(sample(&metrics, &ejections), Some(1.0), "{metrics}");
}

/// `api` allows `web` only under `/public`, by default denies.
async fn l7_permissions(mesh: &TwoSubsets) {
    let permission = Permission {
        allow: true,
        http: HttpMatch {
            path_prefix: Some("/public".into()),
            ..HttpMatch::default()
        },
    };
    let sidecar = &mesh.v1.sidecar;
    let config = sidecar.config();
    sidecar
        .update(ProxyConfig {
            version: config.version + 1,
            default_allow: false,
            intentions: vec![allow_rule("web", vec![permission])],
            ..(*config).clone()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l7_deny_answers_403_and_an_allowed_path_passes() {
    let mesh = TwoSubsets::start().await;
    l7_permissions(&mesh).await;
    let v1 = target_id("api", "v1");
    let web = web(
        &mesh.ca,
        chain(vec![route_to(HttpMatch::default(), &v1)], mesh.targets()),
    )
    .await;
    let upstream = web.upstream_addr("api").unwrap();

    let allowed = mesh.app.get(upstream, "/public/index.html").await;
    assert_eq!(allowed.status, StatusCode::OK);
    let denied = mesh.app.get(upstream, "/private").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(mesh.v1.backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_end_to_end() {
    let ca = Ca::new();
    // The app behind `api` speaks HTTP/2 too.
    let api = Instance::start(&ca, "api", "h2", Protocol::Http2).await;
    let id = target_id("api", "");
    let web = web(
        &ca,
        chain(
            vec![route_to(HttpMatch::default(), &id)],
            vec![target("api", "", vec![api.public()])],
        ),
    )
    .await;
    let upstream = web.upstream_addr("api").unwrap();

    let stream = step(TcpStream::connect(upstream)).await.unwrap().unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::post(format!("http://api.internal/grpc.Service/Call{i}"))
            .version(Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let response = step(sender.send_request(req)).await.unwrap().unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        let reply = reply(response).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "h2");
    }
    let seen = api.backend.last_seen();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.path, "/grpc.Service/Call2");
    assert_eq!(seen.headers["host"], "api.internal");
    assert_eq!(seen.headers["te"], "trailers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_update_switches_the_split_on_an_open_connection() {
    let mesh = TwoSubsets::start().await;
    let web = web(&mesh.ca, mesh.split_chain(10_000)).await;
    let mut conn = KeepAlive::open(web.upstream_addr("api").unwrap()).await;
    assert_eq!(conn.get("/").await.body, "v1");

    web.update(with_chain(&web, mesh.split_chain(0)))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/").await.body, "v2");
    }
    assert_eq!(web.stats().outbound.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let mesh = TwoSubsets::start().await;
    let web = web(&mesh.ca, mesh.split_chain(10_000)).await;
    let mut conn = KeepAlive::open(web.upstream_addr("api").unwrap()).await;
    assert_eq!(conn.get("/").await.body, "v1");
    // Well within the drain time, nothing is left to cut.
    let cut = step(web.shutdown(Duration::from_secs(60))).await.unwrap();
    assert_eq!(cut, 0);
    // The sidecar's side of the pooled mesh connection closes too.
    let sidecar = mesh.v1.sidecar;
    wait_until("the mesh connection was closed", || {
        sidecar.open_connections() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_denials_with_their_labels() {
    let mesh = TwoSubsets::start().await;
    l7_permissions(&mesh).await;
    let web = web(&mesh.ca, mesh.split_chain(10_000)).await;
    let upstream = web.upstream_addr("api").unwrap();
    for _ in 0..3 {
        mesh.app.get(upstream, "/public").await;
    }
    mesh.app.get(upstream, "/private").await;

    let text = scrape(&mesh.app, &web).await;
    let series = |code: &str| {
        format!(
            "mesh_proxy_requests_total{{direction=\"outbound\",upstream=\"api\",service=\"api\",subset=\"v1\",route=\"0\",code_class=\"{code}\"}}"
        )
    };
    assert_eq!(sample(&text, &series("2xx")), Some(3.0), "{text}");
    assert_eq!(sample(&text, &series("4xx")), Some(1.0), "{text}");
    let latency = "mesh_proxy_request_duration_seconds_count{direction=\"outbound\",upstream=\"api\",service=\"api\",subset=\"v1\",route=\"0\"}";
    assert_eq!(sample(&text, latency), Some(4.0), "{text}");
    assert_eq!(
        sample(&text, "mesh_proxy_config_version"),
        Some(web.config().version as f64)
    );
    let expiry = sample(&text, "mesh_proxy_leaf_cert_expiry_timestamp_seconds").unwrap();
    assert!(expiry > 0.0, "{text}");

    let api = &mesh.v1.sidecar;
    let text = scrape(&mesh.app, api).await;
    assert_eq!(
        sample(
            &text,
            "mesh_proxy_intention_denials_total{direction=\"inbound\",layer=\"l7\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mesh_proxy_requests_total{direction=\"inbound\",upstream=\"\",service=\"api\",subset=\"\",route=\"\",code_class=\"4xx\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // The metrics listener moves with the config.
    let old = api.metrics_addr().unwrap();
    let config = api.config();
    api.update(ProxyConfig {
        version: config.version + 1,
        metrics_bind: Some("127.0.0.2:0".parse().unwrap()),
        ..(*config).clone()
    })
    .await
    .unwrap();
    assert_ne!(api.metrics_addr(), Some(old));
    scrape(&mesh.app, api).await;
    wait_until("the old metrics listener closed", || {
        std::net::TcpStream::connect(old).is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_answer_not_a_crash() {
    let mesh = TwoSubsets::start().await;
    let web = web(&mesh.ca, mesh.split_chain(10_000)).await;
    let upstream = web.upstream_addr("api").unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n"[..],
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut stream = step(TcpStream::connect(upstream)).await.unwrap().unwrap();
        let _ = stream.write_all(garbage).await;
        let mut answer = Vec::new();
        let _ = step(stream.read_to_end(&mut answer)).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 "), "{text}");
    }
    // And the proxy still serves.
    assert_eq!(mesh.app.get(upstream, "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chain_is_refused_naming_the_field() {
    let mesh = TwoSubsets::start().await;
    let mut bad = mesh.split_chain(9000);
    bad.routes[0].splits[1].weight = 500;
    let err = Proxy::start(web_config(&mesh.ca, bad)).await.unwrap_err();
    assert!(err.is_invalid_config(), "{err}");
    assert!(
        err.to_string()
            .contains("Upstreams[0].Chain.Routes[0].Splits"),
        "{err}"
    );
}
