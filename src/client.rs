//! The HTTP client the CLI uses to talk to an agent: `-http-addr`, else
//! `MESH_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`, else `127.0.0.1:8500`; the token
//! from `-token`, `MESH_HTTP_TOKEN` or `CONSUL_HTTP_TOKEN`.

use anyhow::{bail, Context, Result};
use clap::Args;
use reqwest::{Method, StatusCode};

/// Flags every command that talks to an agent takes.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpFlags {
    /// The agent's HTTP address (default 127.0.0.1:8500).
    #[arg(long = "http-addr", env = "MESH_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// The ACL token.
    #[arg(long, env = "MESH_HTTP_TOKEN")]
    pub token: Option<String>,
    /// The datacenter to ask (default: the agent's).
    #[arg(long)]
    pub datacenter: Option<String>,
}

/// A connection to an agent's HTTP API.
pub struct Client {
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    http: reqwest::Client,
}

/// A response: status, body and `X-Consul-Index`.
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
    /// The `X-Consul-Index` header, if any.
    pub index: u64,
}

impl Reply {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).context("decoding the agent's response")
    }

    /// Fails unless the status is 2xx, with the agent's message.
    pub fn ok(self) -> Result<Reply> {
        if !self.status.is_success() {
            bail!(
                "Unexpected response code: {} ({})",
                self.status.as_u16(),
                String::from_utf8_lossy(&self.body).trim()
            );
        }
        Ok(self)
    }
}

impl Client {
    /// A client for the flags' agent.
    pub fn new(flags: &HttpFlags) -> Result<Client> {
        let addr = flags
            .http_addr
            .clone()
            .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let token = flags
            .token
            .clone()
            .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok())
            .filter(|t| !t.is_empty());
        Ok(Client {
            base,
            token,
            datacenter: flags.datacenter.clone(),
            // Longer than the longest blocking query (10m plus jitter), so a
            // hung agent is noticed instead of waited on forever.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(11 * 60))
                .tcp_keepalive(std::time::Duration::from_secs(30))
                .build()
                .context("building the HTTP client")?,
        })
    }

    /// A request to `path` (which may carry a query string) with the
    /// datacenter and token, on `http`.
    fn request(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let mut url = format!("{}{}", self.base, path);
        if let Some(dc) = &self.datacenter {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("dc=");
            url.push_str(dc);
        }
        let mut req = http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        req
    }

    /// Opens a streaming GET of `path`: no limit on the whole response, but
    /// a read that waits longer than `idle` fails. Fails unless the status
    /// is 2xx, with the agent's message.
    pub async fn stream(&self, path: &str, idle: std::time::Duration) -> Result<reqwest::Response> {
        let http = reqwest::Client::builder()
            .read_timeout(idle)
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let resp = self
            .request(&http, Method::GET, path)
            .send()
            .await
            .with_context(|| format!("Error connecting to the agent at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            bail!("Unexpected response code: {status} ({})", body.trim());
        }
        Ok(resp)
    }

    /// Sends a request; `path` may carry a query string.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let mut req = self.request(&self.http, method, path);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("Error connecting to the agent at {}", self.base))?;
        let status = resp.status();
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp
            .bytes()
            .await
            .context("reading the agent's response")?
            .to_vec();
        Ok(Reply {
            status,
            body,
            index,
        })
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    /// PUT `path` with `body`.
    pub async fn put(&self, path: &str, body: Vec<u8>) -> Result<Reply> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Result<Reply> {
        self.send(Method::DELETE, path, None).await
    }
}

/// Percent-encodes a KV key for a URL path, keeping `/`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
