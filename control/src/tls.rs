//! The agent's own TLS, configured as Consul's `tls` block (and its older
//! top-level keys): the certificates servers and client agents present to
//! each other on the server RPC port, and how they check each other's.
//!
//! - With `cert_file` and `key_file` a server accepts TLS on its RPC port;
//!   with `verify_incoming` it accepts nothing else, and only callers whose
//!   certificate chains to `ca_file`/`ca_path`.
//! - With `verify_outgoing` an agent dials other servers over TLS and checks
//!   their certificate against the CA; with `verify_server_hostname` the
//!   certificate must also name `server.<datacenter>.<domain>`, and a caller
//!   asking for what only servers may ask must present such a certificate
//!   itself (so a client agent's certificate cannot make it a server).

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Consul's TLS settings for the server RPC port (`tls.defaults` merged with
/// `tls.internal_rpc`, or the top-level keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificates (PEM) peers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// A directory of CA certificates (PEM files).
    pub ca_path: Option<PathBuf>,
    /// This agent's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// This agent's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Accept only TLS callers with a certificate from the CA.
    pub verify_incoming: bool,
    /// Dial servers over TLS and check their certificate.
    pub verify_outgoing: bool,
    /// Servers' certificates must name `server.<datacenter>.<domain>`.
    pub verify_server_hostname: bool,
}

impl TlsConfig {
    /// Whether any TLS is configured.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some() || self.verify_outgoing || self.verify_incoming
    }

    /// Checks the combination, naming what is missing.
    pub fn validate(&self) -> Result<(), String> {
        let has_ca = self.ca_file.is_some() || self.ca_path.is_some();
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("tls: cert_file and key_file go together".into());
        }
        if (self.verify_incoming || self.verify_outgoing) && !has_ca {
            return Err("tls: verify_incoming and verify_outgoing need ca_file or ca_path".into());
        }
        if self.verify_incoming && self.cert_file.is_none() {
            return Err("tls: verify_incoming needs cert_file and key_file".into());
        }
        if self.verify_server_hostname && !self.verify_outgoing {
            return Err("tls: verify_server_hostname needs verify_outgoing".into());
        }
        Ok(())
    }
}

/// The RPC port's TLS, built from a [`TlsConfig`]: what a server accepts
/// and how this agent dials. [`RpcTls::reload`] reads the files again;
/// connections already open keep the certificates they were opened with.
pub struct RpcTls {
    cfg: TlsConfig,
    live: ArcSwap<Endpoints>,
    server_name: ServerName<'static>,
}

/// The acceptor and connector built from the files as last read.
struct Endpoints {
    acceptor: Option<TlsAcceptor>,
    connector: Option<TlsConnector>,
}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.live.load();
        f.debug_struct("RpcTls")
            .field("accepts", &live.acceptor.is_some())
            .field("dials", &live.connector.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl RpcTls {
    /// Reads the files `cfg` names; errors name the file. `None` when no
    /// TLS is configured.
    pub fn build(
        cfg: &TlsConfig,
        datacenter: &str,
        domain: &str,
    ) -> Result<Option<RpcTls>, String> {
        if !cfg.is_enabled() {
            return Ok(None);
        }
        cfg.validate()?;
        let name = format!("server.{datacenter}.{}", domain.trim_end_matches('.'));
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("tls: {name:?} is not a DNS name: {e}"))?;
        Ok(Some(RpcTls {
            live: ArcSwap::from_pointee(endpoints(cfg)?),
            cfg: cfg.clone(),
            server_name,
        }))
    }

    /// Reads the certificate, key and CA files again (`mesh reload`,
    /// SIGHUP); on an error the certificates in use stay.
    pub fn reload(&self) -> Result<(), String> {
        self.live.store(Arc::new(endpoints(&self.cfg)?));
        Ok(())
    }

    /// What a server accepts TLS with, if it has a certificate.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.live.load().acceptor.clone()
    }

    /// How this agent dials servers, with the name it expects, when
    /// `verify_outgoing` is set.
    pub fn connector(&self) -> Option<(TlsConnector, ServerName<'static>)> {
        Some((
            self.live.load().connector.clone()?,
            self.server_name.clone(),
        ))
    }

    /// Whether a server refuses callers that do not speak TLS.
    pub fn verify_incoming(&self) -> bool {
        self.cfg.verify_incoming
    }

    /// Whether a caller may ask what only servers may ask, given the
    /// certificate it presented (`None`: no TLS or no certificate).
    pub fn may_act_as_server(&self, peer: Option<&CertificateDer<'_>>) -> Result<(), String> {
        if !self.cfg.verify_server_hostname {
            return Ok(());
        }
        let Some(cert) = peer else {
            return Err(format!(
                "a server must present a TLS certificate for {:?} (verify_server_hostname)",
                self.server_name
            ));
        };
        let parsed = rustls::server::ParsedCertificate::try_from(cert)
            .map_err(|e| format!("the caller's certificate: {e}"))?;
        rustls::client::verify_server_name(&parsed, &self.server_name).map_err(|_| {
            format!(
                "the caller's certificate is not valid for {:?}; only servers' are (verify_server_hostname)",
                self.server_name
            )
        })
    }
}

/// The RPC port's acceptor and connector from the files `cfg` names.
fn endpoints(cfg: &TlsConfig) -> Result<Endpoints, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(load_roots(cfg)?);
    let identity = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => Some((load_certs(cert)?, load_key(key)?)),
        _ => None,
    };
    let acceptor = match &identity {
        Some((certs, key)) => Some(TlsAcceptor::from(Arc::new(server_config(
            cfg, &roots, certs, key, &provider,
        )?))),
        None => None,
    };
    if !cfg.verify_outgoing {
        return Ok(Endpoints {
            acceptor,
            connector: None,
        });
    }
    let names = match cfg.verify_server_hostname {
        true => ServerNameCheck::Dialed,
        false => ServerNameCheck::ChainOnly,
    };
    let verifier = ServerVerifier::new(roots, provider.clone(), names)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls: cert_file and key_file: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Endpoints {
        acceptor,
        connector: Some(TlsConnector::from(Arc::new(config))),
    })
}

/// The HTTPS API's acceptor (`tls.https`), read again on reload.
pub struct HttpsTls {
    cfg: TlsConfig,
    live: ArcSwap<TlsAcceptor>,
}

impl HttpsTls {
    /// Reads the files `cfg` names; errors name the file.
    pub fn build(cfg: &TlsConfig) -> Result<HttpsTls, String> {
        Ok(HttpsTls {
            live: ArcSwap::from_pointee(https_acceptor(cfg)?),
            cfg: cfg.clone(),
        })
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        self.live.store(Arc::new(https_acceptor(&self.cfg)?));
        Ok(())
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        (**self.live.load()).clone()
    }
}

/// The HTTPS API's acceptor (`tls.https`): `cert_file` and `key_file`
/// required; with `verify_incoming`, clients must present a certificate
/// from the CA.
fn https_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
        return Err("tls: the HTTPS port needs cert_file and key_file".into());
    };
    if cfg.verify_incoming && cfg.ca_file.is_none() && cfg.ca_path.is_none() {
        return Err("tls: verify_incoming on HTTPS needs ca_file or ca_path".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(load_roots(cfg)?);
    let mut config = server_config(cfg, &roots, &load_certs(cert)?, &load_key(key)?, &provider)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS server presenting `certs`; client certificates are checked
/// against `roots` when there are any, and required with `verify_incoming`.
fn server_config(
    cfg: &TlsConfig,
    roots: &Arc<RootCertStore>,
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        );
        let verifier = if cfg.verify_incoming {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| format!("tls: client verifier: {e}"))?,
        )
    };
    builder
        .with_single_cert(certs.to_vec(), key.clone_key())
        .map_err(|e| format!("tls: cert_file and key_file: {e}"))
}

/// How a server certificate's name is checked, once its chain holds.
#[derive(Debug, Clone)]
pub enum ServerNameCheck {
    /// The name dialed (or given to the connector).
    Dialed,
    /// This name, whatever was dialed (the CLI's `-tls-server-name`).
    Expect(ServerName<'static>),
    /// None: the chain alone (RPC without `verify_server_hostname`, as
    /// Consul).
    ChainOnly,
}

/// Checks a server's chain against a CA, then its name as
/// [`ServerNameCheck`] says.
#[derive(Debug)]
pub struct ServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    names: ServerNameCheck,
}

impl ServerVerifier {
    /// A verifier trusting `roots`.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        names: ServerNameCheck,
    ) -> Result<Arc<ServerVerifier>, String> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("tls: server verifier: {e}"))?;
        Ok(Arc::new(ServerVerifier { inner, names }))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        dialed: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.names {
            ServerNameCheck::Expect(name) => name,
            ServerNameCheck::Dialed | ServerNameCheck::ChainOnly => dialed,
        };
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if matches!(self.names, ServerNameCheck::ChainOnly) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls: {what} {}: {e}", path.display()))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "cert_file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls: cert_file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("tls: cert_file {}: no certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "key_file")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("tls: key_file {}: {e}", path.display()))
}

fn load_roots(cfg: &TlsConfig) -> Result<RootCertStore, String> {
    let mut files: Vec<PathBuf> = cfg.ca_file.iter().cloned().collect();
    if let Some(dir) = &cfg.ca_path {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("tls: ca_path {}: {e}", dir.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut roots = RootCertStore::empty();
    for file in files {
        let pem = read(&file, "CA")?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("tls: CA {}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("tls: CA {}: {e}", file.display()))?;
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_settings_are_refused_naming_what_is_missing() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cases = [
            (
                TlsConfig {
                    cert_file: p("c.pem"),
                    ..TlsConfig::default()
                },
                "cert_file and key_file",
            ),
            (
                TlsConfig {
                    verify_outgoing: true,
                    ..TlsConfig::default()
                },
                "ca_file",
            ),
            (
                TlsConfig {
                    verify_incoming: true,
                    ca_file: p("ca.pem"),
                    ..TlsConfig::default()
                },
                "verify_incoming needs cert_file",
            ),
            (
                TlsConfig {
                    verify_server_hostname: true,
                    ca_file: p("ca.pem"),
                    ..TlsConfig::default()
                },
                "verify_server_hostname needs verify_outgoing",
            ),
        ];
        for (cfg, why) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(!TlsConfig::default().is_enabled());
        assert!(RpcTls::build(&TlsConfig::default(), "dc1", "consul")
            .unwrap()
            .is_none());
        let missing = TlsConfig {
            verify_outgoing: true,
            ca_file: p("/nonexistent/ca.pem"),
            ..TlsConfig::default()
        };
        let err = RpcTls::build(&missing, "dc1", "consul").unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
