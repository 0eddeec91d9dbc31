//! The HTTP client the CLI (and `mesh proxy`) uses to talk to an agent, set
//! up as Consul's API client is.
//!
//! The address is `-http-addr`, else `MESH_HTTP_ADDR`, else
//! `CONSUL_HTTP_ADDR`, else `127.0.0.1:8500`; an `https://` prefix, or
//! `CONSUL_HTTP_SSL=true`, selects HTTPS (and `http://` never turns an
//! explicit `CONSUL_HTTP_SSL` off). The token comes from `-token`,
//! `MESH_HTTP_TOKEN` or `CONSUL_HTTP_TOKEN`.
//!
//! Over HTTPS the agent's certificate is checked against `-ca-file`
//! (`CONSUL_CACERT`), else every PEM file under `-ca-path`
//! (`CONSUL_CAPATH`), else the public web roots; `-client-cert` and
//! `-client-key` (`CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`) present a client
//! certificate; `-tls-server-name` (`CONSUL_TLS_SERVER_NAME`) is the name the
//! certificate must carry when it differs from the dialed host; and
//! `CONSUL_HTTP_SSL_VERIFY=false` skips the check. Flags win over the
//! environment.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mesh_control::tls::{ServerNameCheck, ServerVerifier};
use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Flags every command that talks to an agent takes.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpFlags {
    /// The agent's HTTP address (default 127.0.0.1:8500); `https://` selects
    /// HTTPS.
    #[arg(long = "http-addr", env = "MESH_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// The ACL token.
    #[arg(long, env = "MESH_HTTP_TOKEN")]
    pub token: Option<String>,
    /// The datacenter to ask (default: the agent's).
    #[arg(long)]
    pub datacenter: Option<String>,
    /// A PEM file of CA certificates that sign the agent's HTTPS certificate
    /// (else `CONSUL_CACERT`).
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM CA certificate files (else `CONSUL_CAPATH`); unused
    /// when a CA file is given.
    #[arg(long = "ca-path")]
    pub ca_path: Option<PathBuf>,
    /// A PEM client certificate to present, for agents with
    /// `verify_incoming` (else `CONSUL_CLIENT_CERT`).
    #[arg(long = "client-cert")]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of the client certificate (else
    /// `CONSUL_CLIENT_KEY`).
    #[arg(long = "client-key")]
    pub client_key: Option<PathBuf>,
    /// The name the agent's certificate must carry, when it is not the
    /// dialed host (else `CONSUL_TLS_SERVER_NAME`).
    #[arg(long = "tls-server-name")]
    pub tls_server_name: Option<String>,
}

/// How to reach the agent over HTTPS: the flags with the environment
/// filled in.
#[derive(Debug, Default)]
struct TlsSettings {
    ca_file: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    server_name: Option<String>,
    verify: bool,
}

/// A connection to an agent's HTTP API.
pub struct Client {
    base: String,
    /// With `-tls-server-name`: where requests go instead of `base`.
    sni: Option<Sni>,
    token: Option<String>,
    datacenter: Option<String>,
    /// The TLS setup for `https` addresses, shared by every HTTP client made.
    tls: Option<rustls::ClientConfig>,
    /// The CA the agent's certificate was checked against, for errors.
    ca_source: Option<PathBuf>,
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

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A boolean environment variable read as Go's `strconv.ParseBool` reads
/// it; a value it does not take is warned about and ignored, as Consul does.
fn env_bool(name: &str) -> Option<bool> {
    let v = env(name)?;
    match v.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => {
            eprintln!("[WARN] client: could not parse {name}: {v:?} is not a boolean");
            None
        }
    }
}

impl Client {
    /// A client for the flags' agent.
    pub fn new(flags: &HttpFlags) -> Result<Client> {
        let addr = flags
            .http_addr
            .clone()
            .or_else(|| env("CONSUL_HTTP_ADDR"))
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let addr = addr.trim_end_matches('/');
        let ssl = env_bool("CONSUL_HTTP_SSL").unwrap_or(false);
        let base = match addr.split_once("://") {
            Some(("https", rest)) => format!("https://{rest}"),
            // Never back to plain HTTP when TLS was asked for.
            Some(("http", rest)) if ssl => format!("https://{rest}"),
            Some(_) => addr.to_string(),
            None if ssl => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        let token = flags
            .token
            .clone()
            .or_else(|| env("CONSUL_HTTP_TOKEN"))
            .filter(|t| !t.is_empty());
        let settings = TlsSettings {
            ca_file: flags
                .ca_file
                .clone()
                .or_else(|| env("CONSUL_CACERT").map(PathBuf::from)),
            ca_path: flags
                .ca_path
                .clone()
                .or_else(|| env("CONSUL_CAPATH").map(PathBuf::from)),
            client_cert: flags
                .client_cert
                .clone()
                .or_else(|| env("CONSUL_CLIENT_CERT").map(PathBuf::from)),
            client_key: flags
                .client_key
                .clone()
                .or_else(|| env("CONSUL_CLIENT_KEY").map(PathBuf::from)),
            server_name: flags
                .tls_server_name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| env("CONSUL_TLS_SERVER_NAME")),
            verify: env_bool("CONSUL_HTTP_SSL_VERIFY").unwrap_or(true),
        };
        let (tls, ca_source) = if base.starts_with("https://") {
            let ca_source = settings
                .ca_file
                .clone()
                .or_else(|| settings.ca_path.clone());
            (Some(tls_config(&settings)?), ca_source)
        } else {
            (None, None)
        };
        let sni = match (&tls, &settings.server_name) {
            (Some(_), Some(name)) => Some(sni_base(&base, name)?),
            _ => None,
        };
        let mut client = Client {
            base,
            sni,
            token,
            datacenter: flags.datacenter.clone(),
            tls,
            ca_source,
            http: reqwest::Client::new(),
        };
        // Longer than the longest blocking query (10m plus jitter), so a
        // hung agent is noticed instead of waited on forever.
        client.http = client
            .builder()
            .timeout(std::time::Duration::from_secs(11 * 60))
            .build()
            .context("building the HTTP client")?;
        Ok(client)
    }

    /// An HTTP client builder with the agent's TLS setup.
    fn builder(&self) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder().tcp_keepalive(std::time::Duration::from_secs(30));
        if let Some(sni) = &self.sni {
            b = b.resolve_to_addrs(&sni.name, &sni.addrs);
        }
        match &self.tls {
            Some(tls) => b.use_preconfigured_tls(tls.clone()),
            None => b,
        }
    }

    /// The error for a request that got no response: the agent's address
    /// and the cause, naming the CA file when the agent's certificate did
    /// not verify.
    fn connect_error(&self, e: reqwest::Error) -> anyhow::Error {
        let mut cause = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !cause.contains(&text) {
                if !cause.is_empty() {
                    cause.push_str(": ");
                }
                cause.push_str(&text);
            }
            source = s.source();
        }
        let mut msg = format!("Error connecting to the agent at {}: {cause}", self.base);
        if cause.contains("UnknownIssuer") || cause.contains("invalid peer certificate") {
            match &self.ca_source {
                Some(ca) => msg.push_str(&format!(
                    " (the agent's certificate is not trusted by the CA in {})",
                    ca.display()
                )),
                None => msg.push_str(
                    " (the agent's certificate is not trusted; give its CA with -ca-file or CONSUL_CACERT)",
                ),
            }
        }
        anyhow!(msg)
    }

    /// A request to `path` (which may carry a query string) with the
    /// datacenter and token, on `http`.
    fn request(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let base = self.sni.as_ref().map_or(&self.base, |sni| &sni.base);
        let mut url = format!("{base}{path}");
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
        let http = self
            .builder()
            .read_timeout(idle)
            .build()
            .context("building the HTTP client")?;
        let resp = self
            .request(&http, Method::GET, path)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
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
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
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

/// Requests for `-tls-server-name`: sent to a base URL naming the server
/// name, which resolves to the agent's addresses, so TLS sends the name as
/// SNI (as Consul's Go client sets `ServerName`).
struct Sni {
    base: String,
    name: String,
    addrs: Vec<std::net::SocketAddr>,
}

/// The [`Sni`] for reaching `base` as `name`.
fn sni_base(base: &str, name: &str) -> Result<Sni> {
    let url = reqwest::Url::parse(base).with_context(|| format!("invalid address {base:?}"))?;
    let addrs = url
        .socket_addrs(|| Some(8501))
        .with_context(|| format!("resolving {base}"))?;
    let port = url.port_or_known_default().unwrap_or(8501);
    Ok(Sni {
        base: format!("https://{name}:{port}"),
        name: name.to_string(),
        addrs,
    })
}

/// The rustls setup for `settings`, with ring as the crypto provider.
fn tls_config(settings: &TlsSettings) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.verify {
        let roots = Arc::new(roots(settings)?);
        let names = match &settings.server_name {
            Some(name) => ServerNameCheck::Expect(
                ServerName::try_from(name.clone())
                    .map_err(|e| anyhow!("invalid -tls-server-name {name:?}: {e}"))?,
            ),
            None => ServerNameCheck::Dialed,
        };
        ServerVerifier::new(roots, provider.clone(), names)
            .map_err(|e| anyhow!("setting up TLS verification: {e}"))?
    } else {
        Arc::new(NoVerifier(provider))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "client certificate")?;
            let bytes = std::fs::read(key)
                .with_context(|| format!("Error reading client key {}", key.display()))?;
            let der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                anyhow!(
                    "Error loading client key {}: no PEM private key ({e})",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(certs, der).map_err(|e| {
                anyhow!(
                    "Error loading client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => bail!("-client-cert needs -client-key (or CONSUL_CLIENT_KEY)"),
        (None, Some(_)) => bail!("-client-key needs -client-cert (or CONSUL_CLIENT_CERT)"),
    }
}

/// The CAs the agent's certificate is checked against: the CA file, else
/// the files under the CA path, else the public web roots.
fn roots(settings: &TlsSettings) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let certs = if let Some(file) = &settings.ca_file {
        read_certs(file, "CA file")?
    } else if let Some(dir) = &settings.ca_path {
        let mut certs = Vec::new();
        ca_path_certs(dir, &mut certs)?;
        if certs.is_empty() {
            bail!(
                "Error loading CA path {}: no certificate files",
                dir.display()
            );
        }
        certs
    } else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    };
    for cert in certs {
        store
            .add(cert)
            .context("adding a CA certificate to the trust store")?;
    }
    Ok(store)
}

/// Every certificate in the files under `dir`, depth first; each file must
/// hold at least one, as Consul's CA path loader requires.
fn ca_path_certs(dir: &Path, out: &mut Vec<CertificateDer<'static>>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("Error reading CA path {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("Error reading CA path {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            ca_path_certs(&path, out)?;
        } else {
            out.extend(read_certs(&path, "file from CA path")?);
        }
    }
    Ok(())
}

/// The PEM certificates in `path`; `what` names it in errors.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("Error reading {what} {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("Error loading {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "Error loading {what} {}: no PEM certificates in it",
            path.display()
        );
    }
    Ok(certs)
}

/// Accepts any certificate (`CONSUL_HTTP_SSL_VERIFY=false`), still checking
/// the handshake signatures so the session is with the certificate's key.
#[derive(Debug)]
struct NoVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
