//! A client agent's side of auto_encrypt: before it sends anything else to
//! the servers, it asks one for its RPC certificate (a CSR for its agent
//! SPIFFE ID, signed by the Connect CA; the key never leaves the agent),
//! dials with it from then on, and renews it halfway through its life.
//!
//! The request travels over TLS that checks the server against `ca_file`
//! (and its name with `verify_server_hostname`), and over the keyed
//! handshake when the agent has a gossip key; the server lets a caller
//! without a certificate send this one request and nothing else.

use crate::rpc::link::ServerLink;
use crate::tls::RpcTls;
use mesh_ca::SpiffeId;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The trust domain a client agent's CSR names: it cannot know the
/// cluster's before it is enrolled, and the servers sign the agent's
/// identity into their own (as Consul's agents do).
const PLACEHOLDER_TRUST_DOMAIN: &str = "dummy.trustdomain";

/// How long to wait between attempts while no server signs.
const RETRY: Duration = Duration::from_secs(2);

/// Who is enrolling, and through what.
#[derive(Clone)]
pub struct Enrollment {
    /// The agent's link to the servers.
    pub link: ServerLink,
    /// The agent's RPC TLS, which takes the certificate.
    pub tls: Arc<RpcTls>,
    /// The agent's node name.
    pub node: String,
    /// Its datacenter.
    pub datacenter: String,
}

impl Enrollment {
    /// Asks the servers for a certificate until one signs, and dials with
    /// it; returns when it stops being valid.
    pub async fn enroll(&self) -> SystemTime {
        loop {
            match self.try_enroll().await {
                Ok(valid_before) => return valid_before,
                Err(e) => {
                    tracing::warn!(error = %e, "auto_encrypt: no RPC certificate yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// One request for a certificate; when it is signed, new connections
    /// use it.
    async fn try_enroll(&self) -> Result<SystemTime, String> {
        let id = SpiffeId::agent(PLACEHOLDER_TRUST_DOMAIN, &self.datacenter, &self.node)
            .map_err(|e| e.to_string())?;
        let (csr, key) = mesh_ca::generate_csr(&id).map_err(|e| e.to_string())?;
        let cert = self
            .link
            .sign_agent(csr, &self.node, &self.datacenter)
            .await
            .map_err(|e| e.to_string())?;
        self.tls.use_issued(&cert.cert_pem, &key)?;
        self.link.reconnect();
        tracing::info!(
            agent = %cert.agent_uri,
            valid_before = ?cert.valid_before,
            "auto_encrypt: using the RPC certificate the servers issued"
        );
        Ok(cert.valid_before)
    }

    /// Renews the certificate halfway to `valid_before`, then again for
    /// each new one, until the task is dropped.
    pub async fn keep_renewed(self, mut valid_before: SystemTime) {
        loop {
            let left = valid_before
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(left / 2).await;
            valid_before = self.enroll().await;
        }
    }
}
