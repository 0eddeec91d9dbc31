//! The certificate checks of the agent's own TLS: a server's certificate
//! as a caller checks it ([`ServerVerifier`]), and a caller's as a server
//! checks it on the RPC port ([`RpcClientVerifier`]: the operator's CA, and
//! with auto_encrypt the Connect CA's client agent certificates).

use mesh_ca::SharedRoots;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;

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

/// Checks an RPC caller's certificate on a server: it must chain to the
/// operator's CA (`ca_file`/`ca_path`), or, when the server hands out
/// auto_encrypt certificates, be a client agent's certificate from the
/// Connect CA (roots followed as they rotate). A service's leaf from the
/// Connect CA is refused: it names no agent.
///
/// A certificate is optional unless `mandatory`; what a caller without one
/// may do is the handshake's decision ([`super::RpcTls::admit`]).
#[derive(Debug)]
pub struct RpcClientVerifier {
    operator: Option<Arc<dyn ClientCertVerifier>>,
    connect: Option<SharedRoots>,
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl RpcClientVerifier {
    /// A verifier trusting `operator` roots (when not empty) and, when
    /// given, client agent certificates chaining to `connect`.
    pub fn new(
        operator: Arc<RootCertStore>,
        connect: Option<SharedRoots>,
        mandatory: bool,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<RpcClientVerifier>, String> {
        let operator = match operator.is_empty() {
            true => None,
            false => Some(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    operator,
                    provider.clone(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls: client verifier: {e}"))?,
            ),
        };
        Ok(Arc::new(RpcClientVerifier {
            operator,
            connect,
            mandatory,
            algs: provider.signature_verification_algorithms,
        }))
    }
}

impl ClientCertVerifier for RpcClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.operator.is_some() || self.connect.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would name only one of the two CAs; send none, so a client
        // agent presents whichever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let by_operator = match &self.operator {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match (by_operator, &self.connect) {
            (Ok(ok), _) => Ok(ok),
            (Err(refused), None) => Err(refused),
            (Err(refused), Some(connect)) => {
                match mesh_ca::verify_agent(&connect.load(), end_entity, intermediates, now) {
                    Ok(_) => Ok(ClientCertVerified::assertion()),
                    // A certificate of neither CA: report the operator
                    // CA's refusal, the one an operator configured.
                    Err(_) => Err(refused),
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
