//! L7 fixtures: HTTP backends that record what reached them, sidecars in
//! front of them, a `web` proxy whose `api` upstream follows a chain, and
//! an HTTP client for the app side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_proxy::{
    Chain, HttpMatch, IntentionRule, Protocol, Proxy, ProxyConfig, PublicListener, Route, Split,
    Target, Upstream,
};
use tokio::net::{TcpListener, TcpStream};

use crate::l4::{any_port, sidecar, step, Ca};

/// What a backend answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// 200, with the backend's name as body.
    Ok,
    /// This status, with the name as body.
    Status(u16),
    /// 200, after this long.
    Slow(Duration),
}

/// What reached a backend.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub version: Version,
}

/// An HTTP/1.1 + HTTP/2 app on an ephemeral port.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub name: &'static str,
    hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Backend {
    pub async fn start(name: &'static str, mode: Mode) -> Self {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let backend = Self {
            addr: listener.local_addr().unwrap(),
            name,
            hits: Arc::default(),
            seen: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
        };
        let this = backend.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let this = this.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, hyper::Error>(this.answer(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        backend
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let path = req
            .uri()
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            path,
            headers: req.headers().clone(),
            version: req.version(),
        });
        let _ = req.into_body().collect().await;
        let mode = *self.mode.lock().unwrap();
        let status = match mode {
            Mode::Ok => 200,
            Mode::Status(code) => code,
            Mode::Slow(delay) => {
                tokio::time::sleep(delay).await;
                200
            }
        };
        Response::builder()
            .status(status)
            .header("x-backend", self.name)
            .body(Full::new(Bytes::from(self.name)))
            .unwrap()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request seen")
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// A backend and its L7 sidecar.
pub struct Instance {
    pub backend: Backend,
    pub sidecar: Proxy,
}

impl Instance {
    /// `name` (the backend's) behind a sidecar of `service` speaking
    /// `protocol`.
    pub async fn start(ca: &Ca, service: &str, name: &'static str, protocol: Protocol) -> Self {
        let backend = Backend::start(name, Mode::Ok).await;
        let mut config = sidecar(ca, service, backend.addr);
        config.public_listener = Some(PublicListener {
            protocol,
            ..config.public_listener.unwrap()
        });
        config.metrics_bind = Some(any_port());
        let sidecar = Proxy::start(config).await.unwrap();
        Self { backend, sidecar }
    }

    pub fn public(&self) -> SocketAddr {
        self.sidecar.public_addr().unwrap()
    }
}

// === chains ===

/// Consul's target ID of `subset` of `service` in dc1.
pub fn target_id(service: &str, subset: &str) -> String {
    if subset.is_empty() {
        format!("{service}.default.dc1")
    } else {
        format!("{subset}.{service}.default.dc1")
    }
}

pub fn target(service: &str, subset: &str, endpoints: Vec<SocketAddr>) -> (String, Target) {
    (
        target_id(service, subset),
        Target {
            service: service.into(),
            subset: subset.into(),
            endpoints,
            ..Target::default()
        },
    )
}

pub fn split(weight: u32, target: &str) -> Split {
    Split {
        weight,
        target: target.into(),
        ..Split::default()
    }
}

/// A route matching `m` that sends everything to `target`.
pub fn route_to(m: HttpMatch, target: &str) -> Route {
    Route {
        r#match: m,
        splits: vec![split(10_000, target)],
        ..Route::default()
    }
}

pub fn chain(routes: Vec<Route>, targets: Vec<(String, Target)>) -> Chain {
    Chain {
        routes,
        targets: targets.into_iter().collect(),
        ..Chain::default()
    }
}

/// A `web` proxy config whose `api` upstream (HTTP) follows `chain`, with
/// a metrics listener.
pub fn web_config(ca: &Ca, chain: Chain) -> ProxyConfig {
    ProxyConfig {
        upstreams: vec![Upstream {
            protocol: Protocol::Http,
            chain: Some(chain),
            ..Upstream::tcp("api", any_port(), vec![])
        }],
        metrics_bind: Some(any_port()),
        ..crate::l4::config(ca, "web", &ca.leaf("web"), vec![ca.root_pem()])
    }
}

pub async fn web(ca: &Ca, chain: Chain) -> Proxy {
    Proxy::start(web_config(ca, chain)).await.unwrap()
}

/// `proxy`'s running config with the next version and `chain` for `api`.
pub fn with_chain(proxy: &Proxy, chain: Chain) -> ProxyConfig {
    let mut config = (*proxy.config()).clone();
    config.version += 1;
    config.upstreams[0].chain = Some(chain);
    config
}

pub fn allow_rule(source: &str, permissions: Vec<mesh_proxy::Permission>) -> IntentionRule {
    IntentionRule {
        source: source.into(),
        allow: true,
        precedence: 9,
        permissions,
    }
}

// === the app side ===

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// The local app's HTTP/1.1 client, with keep-alive.
#[derive(Clone)]
pub struct App {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl App {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let response = step(self.client.request(req)).await.unwrap().unwrap();
        reply(response).await
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> Reply {
        self.send(get(addr, path)).await
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}

pub async fn reply(response: Response<Incoming>) -> Reply {
    let (head, body) = response.into_parts();
    let body = step(body.collect()).await.unwrap().unwrap().to_bytes();
    Reply {
        status: head.status,
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One HTTP/1.1 connection kept open across requests.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl KeepAlive {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = step(TcpStream::connect(addr)).await.unwrap().unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender, addr }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        step(self.sender.ready()).await.unwrap().unwrap();
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::default())
            .unwrap();
        let response = step(self.sender.send_request(req)).await.unwrap().unwrap();
        reply(response).await
    }
}

/// The text `proxy` serves at `/metrics`, fetched over HTTP.
pub async fn scrape(app: &App, proxy: &Proxy) -> String {
    let reply = app.get(proxy.metrics_addr().unwrap(), "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

/// The value of the sample `series` (name and labels as printed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
