//! Starting agents and talking to them.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a proxy may take to start, or a change to reach it.
pub const PROXY_WAIT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn mesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mesh"))
}

/// A running agent process, killed on drop.
pub struct Agent {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The HTTP address.
    pub http: SocketAddr,
    /// The DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The LAN gossip port.
    pub serf_lan: u16,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

/// A response, read whole.
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `X-Consul-Index`.
    pub index: u64,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
}

impl Resp {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

impl Agent {
    /// Starts `mesh agent` with `args`, in `-dev` mode unless `-data-dir` is given.
    pub fn start(args: &[&str]) -> Agent {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("agent.log");
        let mut cmd = Command::new(mesh_bin());
        cmd.arg("agent");
        if !args.iter().any(|a| a.starts_with("-data-dir")) {
            cmd.arg("-dev");
        }
        // Ephemeral ports unless the test pins the HTTP port (to restart
        // an agent where its clients expect it).
        if !args.iter().any(|a| a.starts_with("-http-port")) {
            cmd.arg("-http-port=0");
        }
        cmd.arg("-dns-port=0");
        for flag in ["-server-port", "-serf-lan-port"] {
            if !args.iter().any(|a| a.starts_with(flag)) {
                cmd.arg(format!("{flag}=0"));
            }
        }
        if !args.iter().any(|a| a.starts_with("-node")) {
            cmd.arg("-node=test-node");
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("spawn mesh agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Client Addr:") || line.contains("Cluster Addr:") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("agent did not start (exited, or no address line within 60s); log:\n{log}");
            }
        };
        let cluster = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no Cluster Addr line after Client Addr");
        let serf_lan = port_after(&cluster, "LAN: ");
        let dns_port = port_after(&line, "DNS: ");
        // With plain HTTP off (-1), the API is reached over HTTPS.
        let (scheme, http_port) = match line.contains("(HTTP: -1") {
            true => ("https", port_after(&line, "HTTPS: ")),
            false => ("http", port_after(&line, "HTTP: ")),
        };
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        Agent {
            child,
            base: format!("{scheme}://{http}"),
            http,
            dns: format!("127.0.0.1:{dns_port}").parse().unwrap(),
            client: reqwest::Client::new(),
            serf_lan,
            log,
            _logdir: logdir,
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn req(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.client.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let index = headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let text = resp.text().await.unwrap_or_default();
        Resp {
            status,
            index,
            headers,
            text,
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None).await
    }

    /// PUT with a body.
    pub async fn put(&self, path: &str, body: &str) -> Resp {
        self.req("PUT", path, Some(body)).await
    }

    /// PUT that must succeed.
    pub async fn put_ok(&self, path: &str, body: &str) -> Resp {
        let r = self.put(path, body).await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text);
        r
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(mesh_bin())
            .args(args)
            .env("CONSUL_HTTP_ADDR", self.http.to_string())
            .env_remove("MESH_HTTP_ADDR")
            .output()
            .expect("run mesh")
    }

    /// Runs the CLI, requires it to succeed, and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "mesh {args:?}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies the CA configuration `json` the way an operator does: from a
    /// file, with `mesh connect ca set-config`.
    pub fn set_ca_config(&self, json: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write_file(dir.path(), "ca.json", json);
        self.cli_ok(&[
            "connect",
            "ca",
            "set-config",
            "-config-file",
            &file.display().to_string(),
        ]);
    }

    /// Kills the agent with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The agent's resident memory now and at its peak, in KiB (`VmRSS`
    /// and `VmHWM` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> (u64, u64) {
        (self.status_kib("VmRSS:"), self.status_kib("VmHWM:"))
    }

    /// A field of the agent's `/proc/PID/status` in KiB (`VmSize:`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status of the agent");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// The server RPC port, from `/v1/agent/self`.
    pub async fn server_port(&self) -> u16 {
        self.get("/v1/agent/self").await.json()["DebugConfig"]["ServerPort"]
            .as_u64()
            .expect("ServerPort") as u16
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_after(line: &str, marker: &str) -> u16 {
    let at = line
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {line}"))
        + marker.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("bad port in {line}"))
}

/// Polls `f` every 50ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `text` to `dir/name`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// Another `mesh` process (a proxy, say) whose stdout lines can be awaited.
pub struct MeshProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl MeshProcess {
    /// Runs `mesh args...` against `agent`.
    pub fn spawn(agent: &Agent, args: &[&str]) -> MeshProcess {
        let mut child = Command::new(mesh_bin())
            .args(args)
            .env("CONSUL_HTTP_ADDR", agent.http.to_string())
            .env_remove("MESH_HTTP_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mesh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        MeshProcess { child, lines }
    }

    /// The rest of the first stdout line containing `marker`, after it.
    pub fn wait_line(&self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        return line[at + marker.len()..].trim().to_string();
                    }
                }
                Err(_) => panic!("no line with {marker:?} within {timeout:?}"),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === traffic ===

/// A TCP echo server on an ephemeral port, serving until the test ends.
pub async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = sock.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A port that was free a moment ago, for a listener the binary binds.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `msg` on `stream` and reads the echo; `None` if the connection
/// closed or failed, or no echo came within five seconds.
pub async fn echo<S>(stream: &mut S, msg: &[u8]) -> Option<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf)
}

/// Connects to `addr` in plain TCP and [`echo`]es `msg`.
pub async fn round_trip(addr: &str, msg: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    echo(&mut s, msg).await
}

/// How long a client agent may take to join and appear in the catalog.
pub const JOIN_WAIT: Duration = Duration::from_secs(45);

/// Starts client agent `name` with its data in `dir`, joining the pool
/// through `server`, and waits until `server`'s catalog lists it.
pub async fn client_agent(name: &str, dir: &Path, server: &Agent) -> Agent {
    client_agent_with(name, dir, server, &[]).await
}

/// [`client_agent`] with `extra` flags.
pub async fn client_agent_with(name: &str, dir: &Path, server: &Agent, extra: &[&str]) -> Agent {
    let (node, data_dir) = (
        format!("-node={name}"),
        format!("-data-dir={}", dir.display()),
    );
    let join = format!("-retry-join=127.0.0.1:{}", server.serf_lan);
    let mut args = vec![node.as_str(), &data_dir, &join, "-retry-interval=200ms"];
    args.extend(extra);
    let client = Agent::start(&args);
    eventually(JOIN_WAIT, "the client agent in the catalog", || async {
        let node = server.get(&format!("/v1/catalog/node/{name}")).await.json();
        (node["Node"]["Node"] == name).then_some(())
    })
    .await;
    client
}

/// Registers `id` of service `name` on `echo`, with a sidecar on a free
/// port, and starts that sidecar; returns it and its public listener.
pub async fn instance(a: &Agent, name: &str, id: &str, echo: SocketAddr) -> (MeshProcess, String) {
    let reg = serde_json::json!({"name": name, "id": id, "port": echo.port()});
    instance_of(a, reg).await
}

/// Registers the service instance `reg` (a JSON registration with `id`)
/// with a sidecar on a free port, and starts that sidecar; returns it and
/// its public listener.
pub async fn instance_of(a: &Agent, mut reg: Value) -> (MeshProcess, String) {
    let port = free_port();
    reg["connect"] = serde_json::json!({"sidecar_service": {"port": port}});
    a.put_ok("/v1/agent/service/register", &reg.to_string())
        .await;
    let id = reg["id"].as_str().expect("the registration has an id");
    let p = MeshProcess::spawn(
        a,
        &["proxy", "-sidecar-for", id, "-bind-address", "127.0.0.1"],
    );
    let public = format!("127.0.0.1:{port}");
    assert_eq!(p.wait_line("Public listener:", PROXY_WAIT), public);
    (p, public)
}

/// How many blocking queries the agent has parked.
pub async fn parked_queries(a: &Agent) -> f64 {
    let r = a.get("/v1/agent/metrics?format=prometheus").await;
    r.text
        .lines()
        .find_map(|l| {
            l.strip_prefix("mesh_blocking_queries_parked ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
