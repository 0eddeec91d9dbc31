//! Agent TLS: the CA and certificates that `mesh tls ca create` and
//! `mesh tls cert create` make, in the shape of Consul's `consul tls`
//! commands (Consul's `tlsutil.GenerateCA` and `GenerateCert`).
//!
//! These secure the agents' own RPC, HTTPS and gRPC ports, not the service
//! mesh (that is the SPIFFE CA of the rest of this crate). Everything here is
//! pure: the caller passes `now` and gets PEM strings back; writing files is
//! the command's business.
//!
//! - The CA is self-signed with an ECDSA P-256 key, valid for `-days`
//!   (1825 by default), key usages certificate signing, CRL signing and
//!   digital signature, common name `Consul Agent CA <serial>`; with
//!   `-name-constraint` it may only certify names under `-domain`,
//!   `localhost` and any additional constraints.
//! - A certificate is signed by that CA for a fresh P-256 key, valid for
//!   `-days` (365 by default), key usages digital signature and key
//!   encipherment, with the SANs and extended key usages of its
//!   [`AgentCertKind`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData, SanType,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::util;
use crate::CaError;

/// How long a CA made by [`generate_agent_ca`] is valid by default, in days
/// (about five years), as `consul tls ca create`.
pub const DEFAULT_AGENT_CA_DAYS: i64 = 1825;

/// How long a certificate made by [`generate_agent_cert`] is valid by
/// default, in days, as `consul tls cert create`.
pub const DEFAULT_AGENT_CERT_DAYS: i64 = 365;

/// The DNS domain certificates are made for by default.
pub const DEFAULT_AGENT_DOMAIN: &str = "consul";

/// The datacenter certificates are made for by default.
pub const DEFAULT_AGENT_DATACENTER: &str = "dc1";

/// The common name of a CA when none is given is this, a space and the
/// serial number in decimal, as Consul names it.
pub const AGENT_CA_NAME_PREFIX: &str = "Consul Agent CA";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What `mesh tls ca create` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCaOptions {
    /// Days the CA is valid from now (`-days`).
    pub days: i64,
    /// The cluster's DNS domain (`-domain`): names the files, and is the
    /// permitted domain with `-name-constraint`.
    pub domain: String,
    /// Whether to add X.509 name constraints (`-name-constraint`).
    pub name_constraint: bool,
    /// More permitted DNS domains with `-name-constraint`
    /// (`-additional-name-constraint`).
    pub additional_name_constraints: Vec<String>,
    /// The CA's common name (`-common-name`); `None` gives
    /// `Consul Agent CA <serial>`.
    pub common_name: Option<String>,
    /// The cluster ID (`-cluster-id`): when set, the CA carries the URI SAN
    /// `spiffe://<cluster-id>.<domain>`.
    pub cluster_id: Option<String>,
}

impl Default for AgentCaOptions {
    fn default() -> Self {
        Self {
            days: DEFAULT_AGENT_CA_DAYS,
            domain: DEFAULT_AGENT_DOMAIN.to_owned(),
            name_constraint: false,
            additional_name_constraints: Vec::new(),
            common_name: None,
            cluster_id: None,
        }
    }
}

impl AgentCaOptions {
    /// The file names `consul tls ca create` writes for this domain:
    /// `(<domain>-agent-ca.pem, <domain>-agent-ca-key.pem)`.
    pub fn file_names(&self) -> (String, String) {
        agent_ca_file_names(&self.domain)
    }
}

/// The default CA certificate and key file names for `domain`:
/// `(<domain>-agent-ca.pem, <domain>-agent-ca-key.pem)`.
pub fn agent_ca_file_names(domain: &str) -> (String, String) {
    let domain = domain.trim_end_matches('.');
    (
        format!("{domain}-agent-ca.pem"),
        format!("{domain}-agent-ca-key.pem"),
    )
}

/// Which agent a certificate is for; each gets Consul's names and usages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentCertKind {
    /// A server (`-server`): DNS `server.<dc>.<domain>` (and
    /// `<node>.server.<dc>.<domain>` with `-node`) and `localhost`, IP
    /// `127.0.0.1`; server and client authentication.
    Server,
    /// A client agent (`-client`): DNS `client.<dc>.<domain>` and
    /// `localhost`, IP `127.0.0.1`; client and server authentication.
    Client,
    /// The CLI (`-cli`): DNS `cli.<dc>.<domain>` and `localhost`; client
    /// authentication only.
    Cli,
}

impl AgentCertKind {
    /// The word in names and file names: `server`, `client` or `cli`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Cli => "cli",
        }
    }
}

impl fmt::Display for AgentCertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `mesh tls cert create` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCertOptions {
    /// Server, client agent or CLI.
    pub kind: AgentCertKind,
    /// The datacenter (`-dc`).
    pub datacenter: String,
    /// The cluster's DNS domain (`-domain`).
    pub domain: String,
    /// Days the certificate is valid from now (`-days`).
    pub days: i64,
    /// The server's node name (`-node`), adding the DNS SAN
    /// `<node>.server.<dc>.<domain>`; servers only.
    pub node: Option<String>,
    /// More DNS SANs (`-additional-dnsname`), listed first as Consul does.
    pub additional_dns_names: Vec<String>,
    /// More IP SANs (`-additional-ipaddress`), listed first as Consul does.
    pub additional_ip_addresses: Vec<IpAddr>,
}

impl AgentCertOptions {
    /// Options for `kind` with Consul's defaults: `dc1`, `consul`, 365 days,
    /// nothing additional.
    pub fn new(kind: AgentCertKind) -> Self {
        Self {
            kind,
            datacenter: DEFAULT_AGENT_DATACENTER.to_owned(),
            domain: DEFAULT_AGENT_DOMAIN.to_owned(),
            days: DEFAULT_AGENT_CERT_DAYS,
            node: None,
            additional_dns_names: Vec::new(),
            additional_ip_addresses: Vec::new(),
        }
    }

    fn domain(&self) -> &str {
        self.domain.trim_end_matches('.')
    }

    /// The certificate's common name: `server.<dc>.<domain>`,
    /// `client.<dc>.<domain>` or `cli.<dc>.<domain>`.
    pub fn common_name(&self) -> String {
        format!("{}.{}.{}", self.kind, self.datacenter, self.domain())
    }

    /// The DNS SANs, in Consul's order: the additional names, then (servers
    /// with `-node`) `<node>.server.<dc>.<domain>`, the common name and
    /// `localhost`. Empty additional names are skipped and the others
    /// trimmed, as Consul does.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .additional_dns_names
            .iter()
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        if let (AgentCertKind::Server, Some(node)) = (self.kind, &self.node) {
            names.push(format!(
                "{node}.server.{}.{}",
                self.datacenter,
                self.domain()
            ));
        }
        names.push(self.common_name());
        names.push("localhost".to_owned());
        names
    }

    /// The IP SANs: the additional addresses, then `127.0.0.1` for servers
    /// and client agents (a CLI certificate is never served).
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        let mut ips = self.additional_ip_addresses.clone();
        if self.kind != AgentCertKind::Cli {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        ips
    }

    /// The extended key usages: server and client authentication for
    /// servers and client agents, client authentication for the CLI.
    pub fn extended_key_usages(&self) -> Vec<ExtendedKeyUsagePurpose> {
        match self.kind {
            AgentCertKind::Server => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            AgentCertKind::Client => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            AgentCertKind::Cli => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }

    /// The file name prefix: `<dc>-<kind>-<domain>`, e.g. `dc1-server-consul`.
    pub fn file_prefix(&self) -> String {
        format!("{}-{}-{}", self.datacenter, self.kind, self.domain())
    }

    /// The certificate and key file names for sequence number `n`:
    /// `(<prefix>-<n>.pem, <prefix>-<n>-key.pem)`.
    pub fn file_names(&self, n: u32) -> (String, String) {
        let prefix = self.file_prefix();
        (format!("{prefix}-{n}.pem"), format!("{prefix}-{n}-key.pem"))
    }

    /// Checks the options without making anything, as the command does
    /// before it reads the CA: `-days` positive, `-dc` one DNS label,
    /// `-domain` a DNS domain, `-node` only with servers, additional names
    /// DNS names. A failure is [`CaError::InvalidOption`] naming the flag.
    /// [`generate_agent_cert`] checks the same.
    pub fn validate(&self) -> Result<(), CaError> {
        check_days(self.days)?;
        check_label("-dc", &self.datacenter)?;
        check_domain("-domain", &self.domain)?;
        match (&self.node, self.kind) {
            (Some(_), AgentCertKind::Client | AgentCertKind::Cli) => {
                return Err(invalid("-node", "requires -server".into()))
            }
            (Some(node), AgentCertKind::Server) => check_label("-node", node)?,
            (None, _) => {}
        }
        for name in &self.additional_dns_names {
            let name = name.trim();
            if !name.is_empty() {
                check_dns_name("-additional-dnsname", name)?;
            }
        }
        Ok(())
    }
}

/// A PEM certificate and its PEM private key (PKCS#8, ECDSA P-256). `Debug`
/// does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentTlsPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for AgentTlsPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTlsPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a self-signed agent CA valid from `now` for `opts.days` days,
/// with a fresh ECDSA P-256 key. Bad options are [`CaError::InvalidOption`]
/// naming the flag.
pub fn generate_agent_ca(opts: &AgentCaOptions, now: SystemTime) -> Result<AgentTlsPair, CaError> {
    check_days(opts.days)?;
    check_domain("-domain", &opts.domain)?;
    let domain = opts.domain.trim_end_matches('.');
    let serial = random_serial()?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

    let mut params = CertificateParams::default();
    let common_name = match &opts.common_name {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        Some(_) => return Err(invalid("-common-name", "must not be empty".into())),
        None => format!("{AGENT_CA_NAME_PREFIX} {}", u128::from_be_bytes(serial)),
    };
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = ca_key_usages();
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = util::to_offset(now)?;
    params.not_after = not_after(now, opts.days)?;
    if let Some(cluster_id) = &opts.cluster_id {
        check_label("-cluster-id", cluster_id)?;
        let uri = format!("spiffe://{cluster_id}.{domain}");
        let uri = Ia5String::try_from(uri)
            .map_err(|e| invalid("-cluster-id", format!("not a valid URI: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    if opts.name_constraint {
        let mut permitted = Vec::new();
        for name in &opts.additional_name_constraints {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            check_dns_name("-additional-name-constraint", name)?;
            permitted.push(GeneralSubtree::DnsName(name.to_owned()));
        }
        permitted.push(GeneralSubtree::DnsName(domain.to_owned()));
        permitted.push(GeneralSubtree::DnsName("localhost".to_owned()));
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: Vec::new(),
        });
    }
    let cert = params.self_signed(&key)?;
    Ok(AgentTlsPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Generates a certificate for `opts` with a fresh ECDSA P-256 key, signed
/// by the agent CA in `ca_cert_pem` with its key `ca_key_pem` (PKCS#8, or
/// the SEC1 `EC PRIVATE KEY` Consul writes), valid from `now` for
/// `opts.days` days.
///
/// The CA must be a CA certificate and the key must be its key. Before
/// returning, the new certificate is verified against the CA with webpki
/// for its use (server authentication, or client authentication for the
/// CLI) and its common name, as Consul verifies what it made.
pub fn generate_agent_cert(
    opts: &AgentCertOptions,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    now: SystemTime,
) -> Result<AgentTlsPair, CaError> {
    opts.validate()?;
    let ca_der = util::parse_cert(ca_cert_pem)?;
    let ca_cert = util::x509(&ca_der)?;
    if !ca_cert.is_ca() {
        return Err(CaError::InvalidCertificate(
            "the CA file does not hold a CA certificate (basic constraints CA:TRUE)".into(),
        ));
    }
    let ca_key = parse_ca_key(ca_key_pem)?;
    if ca_cert.public_key().subject_public_key.data.as_ref() != ca_key.der_bytes() {
        return Err(CaError::InvalidKey(
            "the CA key does not belong to the CA certificate".into(),
        ));
    }
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = util::distinguished_name(ca_cert.subject())?;
    issuer_params.key_identifier_method = match util::subject_key_id(&ca_cert) {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::PreSpecified(key_id(&ca_key)),
    };
    issuer_params.key_usages = ca_key_usages();
    let issuer = Issuer::new(issuer_params, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let common_name = opts.common_name();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.clone());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = opts.extended_key_usages();
    params.subject_alt_names = opts
        .dns_names()
        .into_iter()
        .map(|name| {
            Ia5String::try_from(name)
                .map(SanType::DnsName)
                .map_err(|e| invalid("-additional-dnsname", e.to_string()))
        })
        .chain(
            opts.ip_addresses()
                .into_iter()
                .map(|ip| Ok(SanType::IpAddress(ip))),
        )
        .collect::<Result<_, _>>()?;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key));
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = util::to_offset(now)?;
    params.not_after = not_after(now, opts.days)?;
    let cert = params.signed_by(&key, &issuer)?;

    verify_issued(cert.der(), &ca_der, opts.kind, &common_name, now)?;
    Ok(AgentTlsPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Checks a freshly made certificate as a peer would: it chains to the CA
/// (name constraints included), for the usage of its kind, and servers and
/// client agents are valid for their common name.
fn verify_issued(
    cert_der: &CertificateDer<'_>,
    ca_der: &CertificateDer<'_>,
    kind: AgentCertKind,
    common_name: &str,
    now: SystemTime,
) -> Result<(), CaError> {
    let untrusted = |e: webpki::Error| {
        CaError::Untrusted(format!(
            "the new certificate does not verify against the CA: {e:?}"
        ))
    };
    let anchor = webpki::anchor_from_trusted_cert(ca_der).map_err(untrusted)?;
    let ee = webpki::EndEntityCert::try_from(cert_der).map_err(untrusted)?;
    let usage = match kind {
        AgentCertKind::Cli => webpki::KeyUsage::client_auth(),
        AgentCertKind::Server | AgentCertKind::Client => webpki::KeyUsage::server_auth(),
    };
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P256_SHA256],
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(since_epoch),
        usage,
        None,
        None,
    )
    .map_err(untrusted)?;
    let name = ServerName::try_from(common_name)
        .map_err(|e| invalid("-domain", format!("{common_name:?} is not a DNS name: {e}")))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(untrusted)
}

/// The CA's key: PKCS#8 or SEC1 (`EC PRIVATE KEY`), ECDSA P-256 only.
fn parse_ca_key(pem: &str) -> Result<KeyPair, CaError> {
    let unsupported = || {
        CaError::InvalidKey(
            "the CA key must be an ECDSA P-256 key (PKCS#8 \"PRIVATE KEY\" or \"EC PRIVATE KEY\")"
                .into(),
        )
    };
    let pkcs8 = match util::parse_private_key(pem)? {
        PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Sec1(der) => sec1_to_pkcs8(der.secret_sec1_der()),
        _ => return Err(unsupported()),
    };
    let key = KeyPair::try_from(pkcs8.as_slice()).map_err(|_| unsupported())?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(unsupported());
    }
    Ok(key)
}

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` for P-256
/// (RFC 5915 section 2, RFC 5208): ring reads only PKCS#8. A key of another
/// curve is refused by ring when its `parameters` name that curve.
fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }
    const ALGORITHM: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(ALGORITHM);
    body.push(0x04);
    der_length(&mut body, sec1.len());
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - first) as u8);
    out.extend_from_slice(&bytes[first..]);
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ]
}

/// The key identifier Consul uses: SHA-256 of the DER SubjectPublicKeyInfo.
fn key_id(key: &impl PublicKeyData) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info())
        .as_ref()
        .to_vec()
}

/// A random positive 128-bit serial number, as Consul's
/// `GenerateSerialNumber`.
fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    loop {
        SystemRandom::new()
            .fill(&mut serial)
            .map_err(|_| CaError::Generate("the system random source failed".into()))?;
        serial[0] &= 0x7f;
        if serial.iter().any(|&b| b != 0) {
            return Ok(serial);
        }
    }
}

fn not_after(now: SystemTime, days: i64) -> Result<time::OffsetDateTime, CaError> {
    let too_far = || {
        invalid(
            "-days",
            format!("{days} days from now is later than a certificate can hold"),
        )
    };
    let days = u32::try_from(days).map_err(|_| too_far())?;
    let end = now.checked_add(DAY * days).ok_or_else(too_far)?;
    util::to_offset(end).map_err(|_| too_far())
}

fn check_days(days: i64) -> Result<(), CaError> {
    if days < 1 {
        return Err(invalid(
            "-days",
            format!("must be a positive number of days, got {days}"),
        ));
    }
    Ok(())
}

/// A single DNS label: letters, digits, `-` and `_`, 1 to 63 characters.
fn check_label(option: &'static str, value: &str) -> Result<(), CaError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            option,
            format!(
                "{value:?} must be one DNS label (letters, digits, '-' or '_', 1 to 63 characters)"
            ),
        ))
    }
}

/// A domain: dot-separated labels, a trailing dot allowed.
fn check_domain(option: &'static str, value: &str) -> Result<(), CaError> {
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    if trimmed.is_empty() || trimmed.split('.').any(|l| check_label(option, l).is_err()) {
        return Err(invalid(
            option,
            format!("{value:?} is not a DNS domain (dot-separated labels of letters, digits, '-' or '_')"),
        ));
    }
    Ok(())
}

/// A DNS name for a SAN or name constraint: a domain, possibly starting with
/// a `*.` wildcard label.
fn check_dns_name(option: &'static str, value: &str) -> Result<(), CaError> {
    let rest = value.strip_prefix("*.").unwrap_or(value);
    check_domain(option, rest).map_err(|_| {
        invalid(
            option,
            format!(
                "{value:?} is not a DNS name (dot-separated labels, optionally starting with '*.')"
            ),
        )
    })
}

fn invalid(option: &'static str, reason: String) -> CaError {
    CaError::InvalidOption { option, reason }
}

#[cfg(test)]
mod tests;
