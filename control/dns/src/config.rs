//! Settings of the DNS interface, named after Consul's `domain`, `alt_domain`
//! and `dns_config` options.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::Error;

/// The timers of the zone's SOA record (Consul's `dns_config.soa`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoaConfig {
    /// Seconds a secondary waits before refreshing the zone (3600).
    pub refresh: u32,
    /// Seconds a secondary waits before retrying a failed refresh (600).
    pub retry: u32,
    /// Seconds after which a secondary stops answering for the zone (86400).
    pub expire: u32,
    /// Negative-caching TTL, also the TTL of the SOA record itself (0).
    pub min_ttl: u32,
}

impl Default for SoaConfig {
    fn default() -> Self {
        Self {
            refresh: 3600,
            retry: 600,
            expire: 86400,
            min_ttl: 0,
        }
    }
}

/// Settings of the DNS interface.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The domain served, `consul.` by default. Normalized to lowercase with a
    /// trailing dot when the server is built.
    pub domain: String,
    /// A second domain answered like `domain` (Consul's `alt_domain`); answers
    /// name targets in the domain the question used.
    pub alt_domain: Option<String>,
    /// The local datacenter: names without a datacenter label look here.
    pub datacenter: String,
    /// This agent's node name; names the NS record when the catalog lists no
    /// `consul` server instances.
    pub node_name: String,
    /// TTL in seconds of node records (`dns_config.node_ttl`, 0).
    pub node_ttl: u32,
    /// TTL in seconds of service records (`dns_config.service_ttl`, 0).
    pub service_ttl: u32,
    /// Most answers in a UDP response to a client without EDNS0
    /// (`dns_config.udp_answer_limit`, 3; at most 8 as in Consul).
    pub udp_answer_limit: usize,
    /// Most A/AAAA answers in any service response; 0 means no limit
    /// (`dns_config.a_record_limit`).
    pub a_record_limit: usize,
    /// Set the TC bit when `udp_answer_limit` cut answers, so clients retry
    /// over TCP (`dns_config.enable_truncate`, false). Responses cut to fit
    /// the size limit always carry TC.
    pub enable_truncate: bool,
    /// Add the node's metadata as TXT records to the additional section of
    /// node and SRV answers (`dns_config.enable_additional_node_meta_txt`,
    /// true). TXT and ANY node queries answer it regardless.
    pub node_meta_txt: bool,
    /// The zone's SOA timers.
    pub soa: SoaConfig,
    /// This agent's address: glue for the NS record named by `node_name`.
    pub server_address: IpAddr,
    /// How long a TCP connection may wait for its next query before it is
    /// closed.
    pub tcp_idle_timeout: Duration,
    /// How long reading one query's bytes, or writing one response, may take
    /// on TCP.
    pub tcp_io_timeout: Duration,
    /// Most TCP connections served at once; one more sheds the longest idle
    /// (or, if none is idle, the longest busy) to make room.
    pub tcp_max_connections: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            domain: "consul.".to_owned(),
            alt_domain: None,
            datacenter: "dc1".to_owned(),
            node_name: String::new(),
            node_ttl: 0,
            service_ttl: 0,
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_truncate: false,
            node_meta_txt: true,
            soa: SoaConfig::default(),
            server_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tcp_idle_timeout: Duration::from_secs(8),
            tcp_io_timeout: Duration::from_secs(2),
            tcp_max_connections: 1024,
        }
    }
}

impl DnsConfig {
    /// Checks that the settings can be served, naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        check_domain("domain", &self.domain)?;
        if let Some(alt) = &self.alt_domain {
            check_domain("alt_domain", alt)?;
        }
        if self.datacenter.trim().is_empty() {
            return Err(invalid("datacenter", "must not be empty"));
        }
        if self.udp_answer_limit == 0 {
            return Err(invalid("udp_answer_limit", "must be at least 1"));
        }
        if self.tcp_max_connections == 0 {
            return Err(invalid("tcp_max_connections", "must be at least 1"));
        }
        if self.tcp_idle_timeout.is_zero() || self.tcp_io_timeout.is_zero() {
            return Err(invalid("tcp_idle_timeout", "timeouts must be positive"));
        }
        Ok(())
    }

    /// The same settings with domains in canonical form (lowercase, trailing
    /// dot); an unusable domain falls back to Consul's default `consul.`.
    pub(crate) fn normalized(mut self) -> Self {
        self.domain = match check_domain("domain", &self.domain) {
            Ok(()) => normalize_domain(&self.domain),
            Err(err) => {
                tracing::warn!(%err, "serving DNS for consul. instead");
                "consul.".to_owned()
            }
        };
        self.alt_domain =
            self.alt_domain
                .as_deref()
                .and_then(|alt| match check_domain("alt_domain", alt) {
                    Ok(()) => Some(normalize_domain(alt)),
                    Err(err) => {
                        tracing::warn!(%err, "ignoring alt_domain");
                        None
                    }
                });
        self.udp_answer_limit = self.udp_answer_limit.max(1);
        self.tcp_max_connections = self.tcp_max_connections.max(1);
        self
    }
}

/// Lowercase, no leading dots, one trailing dot: `Consul` → `consul.`.
pub(crate) fn normalize_domain(domain: &str) -> String {
    let trimmed = domain.trim().trim_start_matches('.').trim_end_matches('.');
    let mut out = trimmed.to_ascii_lowercase();
    out.push('.');
    out
}

fn check_domain(field: &'static str, domain: &str) -> Result<(), Error> {
    let normalized = normalize_domain(domain);
    let body = &normalized[..normalized.len() - 1];
    if body.is_empty() {
        return Err(invalid(field, "must name a domain, not the root"));
    }
    if normalized.len() > 253 {
        return Err(invalid(field, "is longer than 253 characters"));
    }
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                field,
                format!("label {label:?} must be 1 to 63 characters"),
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                field,
                format!("label {label:?} may hold only letters, digits, '-' and '_'"),
            ));
        }
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized() {
        assert_eq!(normalize_domain("Consul"), "consul.");
        assert_eq!(normalize_domain(".Mesh.Example."), "mesh.example.");
        let cfg = DnsConfig {
            domain: "MESH".into(),
            alt_domain: Some("bad domain".into()),
            ..DnsConfig::default()
        }
        .normalized();
        assert_eq!(cfg.domain, "mesh.");
        assert_eq!(cfg.alt_domain, None);
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(DnsConfig::default().validate().is_ok());
        let err = DnsConfig {
            domain: ".".into(),
            ..DnsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.is_invalid_config());
        assert!(err.to_string().contains("domain"), "{err}");
        let err = DnsConfig {
            udp_answer_limit: 0,
            ..DnsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("udp_answer_limit"), "{err}");
    }
}
