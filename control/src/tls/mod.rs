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
//! - `auto_encrypt`: a server with `allow_tls` signs client agents' RPC
//!   certificates with the Connect CA and accepts them (as client agents
//!   only); a client agent with `tls` asks for one over TLS before it
//!   sends anything else ([`crate::auto_encrypt`]).
//! - `tls_min_version` and `tls_cipher_suites` ([`versions`]).

mod verify;
mod versions;

pub use verify::{RpcClientVerifier, ServerNameCheck, ServerVerifier};
pub use versions::{suites, Suites};

use crate::rpc::handshake::Role;
use arc_swap::ArcSwap;
use mesh_ca::{SharedRoots, TrustedRoots};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Consul's TLS settings for one interface (`tls.defaults` merged with
/// `tls.internal_rpc` or `tls.https`, or the top-level keys).
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
    /// The lowest TLS version (`TLSv1_2`, `TLSv1_3`, ...).
    pub tls_min_version: Option<String>,
    /// The TLS 1.2 cipher suites, comma-separated (Go's names).
    pub tls_cipher_suites: Option<String>,
}

/// Consul's `auto_encrypt` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutoEncrypt {
    /// A client agent gets its RPC certificate from the servers.
    pub tls: bool,
    /// A server signs client agents' RPC certificates with the Connect CA
    /// and accepts them.
    pub allow_tls: bool,
}

impl TlsConfig {
    /// Whether any TLS is configured.
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some() || self.verify_outgoing || self.verify_incoming
    }

    /// Checks the combination, naming what is missing. A client agent with
    /// `auto_encrypt.tls` gets its certificate from the servers, so it
    /// needs no `cert_file`.
    pub fn validate(&self, auto: AutoEncrypt) -> Result<(), String> {
        let has_ca = self.ca_file.is_some() || self.ca_path.is_some();
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("tls: cert_file and key_file go together".into());
        }
        if (self.verify_incoming || self.verify_outgoing) && !has_ca {
            return Err("tls: verify_incoming and verify_outgoing need ca_file or ca_path".into());
        }
        if self.verify_incoming && self.cert_file.is_none() && !auto.tls {
            return Err("tls: verify_incoming needs cert_file and key_file".into());
        }
        if self.verify_server_hostname && !self.verify_outgoing {
            return Err("tls: verify_server_hostname needs verify_outgoing".into());
        }
        if auto.tls && !self.verify_outgoing {
            return Err(
                "auto_encrypt.tls needs TLS to the servers: set ca_file or ca_path \
                 (verify_outgoing)"
                    .into(),
            );
        }
        if auto.allow_tls && self.cert_file.is_none() {
            return Err(
                "auto_encrypt.allow_tls needs cert_file and key_file: a server \
                 presents its own certificate to the client agents it enrolls"
                    .into(),
            );
        }
        suites(
            self.tls_min_version.as_deref(),
            self.tls_cipher_suites.as_deref(),
        )
        .map(|_| ())
    }
}

/// A certificate chain and its key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The RPC port's TLS, built from a [`TlsConfig`]: what a server accepts
/// and how this agent dials. [`RpcTls::reload`] reads the files again;
/// connections already open keep the certificates they were opened with.
pub struct RpcTls {
    cfg: TlsConfig,
    auto: AutoEncrypt,
    live: ArcSwap<Endpoints>,
    server_name: ServerName<'static>,
    /// A server's copy of the Connect CA's roots (`auto_encrypt.allow_tls`).
    connect_roots: Option<SharedRoots>,
    /// The certificate the servers issued this client agent (auto_encrypt).
    issued: Mutex<Option<Identity>>,
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
            .field("auto_encrypt", &self.auto)
            .finish()
    }
}

impl RpcTls {
    /// Reads the files `cfg` names; errors name the file. `None` when no
    /// TLS is configured.
    pub fn build(
        cfg: &TlsConfig,
        auto: AutoEncrypt,
        datacenter: &str,
        domain: &str,
    ) -> Result<Option<RpcTls>, String> {
        if !cfg.is_enabled() && !auto.tls && !auto.allow_tls {
            return Ok(None);
        }
        cfg.validate(auto)?;
        let name = format!("server.{datacenter}.{}", domain.trim_end_matches('.'));
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("tls: {name:?} is not a DNS name: {e}"))?;
        let connect_roots = auto.allow_tls.then(SharedRoots::default);
        Ok(Some(RpcTls {
            live: ArcSwap::from_pointee(endpoints(cfg, connect_roots.as_ref(), None)?),
            cfg: cfg.clone(),
            auto,
            server_name,
            connect_roots,
            issued: Mutex::new(None),
        }))
    }

    /// Reads the certificate, key and CA files again (`mesh reload`,
    /// SIGHUP); on an error the certificates in use stay.
    pub fn reload(&self) -> Result<(), String> {
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let issued = issued.as_ref().map(|(c, k)| (c.clone(), k.clone_key()));
        let built = endpoints(&self.cfg, self.connect_roots.as_ref(), issued)?;
        self.live.store(Arc::new(built));
        Ok(())
    }

    /// Dials with the certificate the servers issued (auto_encrypt) from
    /// now on: `cert_pem` is the chain, `key_pem` its key.
    pub fn use_issued(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("auto_encrypt: the issued certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("auto_encrypt: the certificate's key: {e}"))?;
        let built = endpoints(
            &self.cfg,
            self.connect_roots.as_ref(),
            Some((certs.clone(), key.clone_key())),
        )?;
        *self.issued.lock().unwrap_or_else(|p| p.into_inner()) = Some((certs, key));
        self.live.store(Arc::new(built));
        Ok(())
    }

    /// Trusts client agent certificates chaining to these Connect CA roots
    /// from now on (a server with `auto_encrypt.allow_tls`, as its roots
    /// rotate).
    pub fn trust_connect_roots(&self, roots: TrustedRoots) {
        if let Some(shared) = &self.connect_roots {
            shared.store(roots);
        }
    }

    /// The `auto_encrypt` settings.
    pub fn auto_encrypt(&self) -> AutoEncrypt {
        self.auto
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

    /// What a TLS caller claiming `claimed` is let act as, given the chain
    /// it presented (none: no certificate):
    /// - a certificate from the Connect CA (auto_encrypt) is a client
    ///   agent's, never a server's;
    /// - a server must present the operator CA's certificate, naming
    ///   `server.<dc>.<domain>` with `verify_server_hostname`;
    /// - with `verify_incoming`, a caller without a certificate is a client
    ///   agent still enrolling ([`Role::Enrolling`]) when this server
    ///   allows auto_encrypt, and refused otherwise.
    pub fn admit(
        &self,
        claimed: Role,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<Role, String> {
        let leaf = chain.and_then(<[_]>::first);
        let is_agent = leaf
            .and_then(|l| mesh_ca::leaf_spiffe_id(l).ok())
            .is_some_and(|id| id.is_agent());
        let uncertified = leaf.is_none() && self.cfg.verify_incoming;
        match claimed {
            Role::Server if is_agent => Err(
                "an auto_encrypt certificate is a client agent's; a server presents its own \
                 cert_file certificate"
                    .into(),
            ),
            Role::Server if uncertified => {
                Err("a server must present a certificate from the CA (verify_incoming)".into())
            }
            Role::Server => self.may_act_as_server(leaf).map(|()| Role::Server),
            Role::Client | Role::Enrolling if uncertified && self.auto.allow_tls => {
                Ok(Role::Enrolling)
            }
            Role::Client | Role::Enrolling if uncertified => Err(
                "this server accepts only callers with a certificate from the CA \
                 (verify_incoming)"
                    .into(),
            ),
            Role::Client | Role::Enrolling => Ok(Role::Client),
        }
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

/// The RPC port's acceptor and connector from the files `cfg` names; a
/// client agent dials with `issued` (its auto_encrypt certificate) when it
/// has one, and a server accepts client agents' certificates chaining to
/// `connect` when given.
fn endpoints(
    cfg: &TlsConfig,
    connect: Option<&SharedRoots>,
    issued: Option<Identity>,
) -> Result<Endpoints, String> {
    let suites = suites(
        cfg.tls_min_version.as_deref(),
        cfg.tls_cipher_suites.as_deref(),
    )?;
    let roots = Arc::new(load_roots(cfg)?);
    let files = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => Some((load_certs(cert)?, load_key(key)?)),
        _ => None,
    };
    let acceptor = match &files {
        Some((certs, key)) => {
            let mandatory = cfg.verify_incoming && connect.is_none();
            let verifier = RpcClientVerifier::new(
                roots.clone(),
                connect.cloned(),
                mandatory,
                &suites.provider,
            )?;
            let config = server_config(certs, key, &suites, verifier)?;
            Some(TlsAcceptor::from(Arc::new(config)))
        }
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
    let verifier = ServerVerifier::new(roots, suites.provider.clone(), names)?;
    let builder = rustls::ClientConfig::builder_with_provider(suites.provider)
        .with_protocol_versions(suites.versions)
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match issued.or(files) {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("tls: the RPC certificate and key: {e}"))?,
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
    let suites = suites(
        cfg.tls_min_version.as_deref(),
        cfg.tls_cipher_suites.as_deref(),
    )?;
    let roots = Arc::new(load_roots(cfg)?);
    let verifier = RpcClientVerifier::new(roots, None, cfg.verify_incoming, &suites.provider)?;
    let mut config = server_config(&load_certs(cert)?, &load_key(key)?, &suites, verifier)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS server presenting `certs`, checking client certificates with
/// `verifier`.
fn server_config(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    suites: &Suites,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig, String> {
    rustls::ServerConfig::builder_with_provider(suites.provider.clone())
        .with_protocol_versions(suites.versions)
        .map_err(|e| format!("tls: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.to_vec(), key.clone_key())
        .map_err(|e| format!("tls: cert_file and key_file: {e}"))
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
            let err = cfg.validate(AutoEncrypt::default()).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(!TlsConfig::default().is_enabled());
        assert!(RpcTls::build(
            &TlsConfig::default(),
            AutoEncrypt::default(),
            "dc1",
            "consul"
        )
        .unwrap()
        .is_none());
        let missing = TlsConfig {
            verify_outgoing: true,
            ca_file: p("/nonexistent/ca.pem"),
            ..TlsConfig::default()
        };
        let err = RpcTls::build(&missing, AutoEncrypt::default(), "dc1", "consul").unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
