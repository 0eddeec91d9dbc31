//! Service and check definitions as the agent accepts them, from
//! `/v1/agent/service/register`, `/v1/agent/check/register` and config files.

use crate::structs::keys::normalize;
use crate::structs::{
    status, ConsulDuration, HealthCheck, HealthCheckDefinition, NodeService, ServiceAddress,
    Weights,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A service definition (Consul's `ServiceDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceDefinition {
    /// Instance ID; defaults to the name.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Kind: empty, `connect-proxy`, `mesh-gateway`, ...
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address; empty uses the node's.
    pub address: String,
    /// Tagged addresses.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Port.
    pub port: u16,
    /// Unix socket path (accepted, unused).
    pub socket_path: String,
    /// DNS weights.
    pub weights: Option<Weights>,
    /// Let catalog tag edits win.
    pub enable_tag_override: bool,
    /// One check.
    pub check: Option<CheckDefinition>,
    /// More checks.
    pub checks: Vec<CheckDefinition>,
    /// Connect settings, kept verbatim.
    pub connect: Option<serde_json::Value>,
    /// Proxy settings for `connect-proxy` kinds, kept verbatim.
    pub proxy: Option<serde_json::Value>,
    /// ACL token for this service.
    pub token: String,
    /// Namespace (accepted; always `default`).
    pub namespace: String,
    /// Locality (accepted, unused).
    pub locality: Option<serde_json::Value>,
}

/// A check definition (Consul's `CheckDefinition` / `CheckType`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CheckDefinition {
    /// Check ID; defaults to the name (or `service:<id>` inside a service).
    #[serde(rename = "ID", alias = "CheckID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// The service instance it belongs to.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Initial status.
    pub status: String,
    /// Interval between runs.
    pub interval: Option<ConsulDuration>,
    /// Timeout of one run.
    pub timeout: Option<ConsulDuration>,
    /// TTL of a TTL check.
    #[serde(rename = "TTL")]
    pub ttl: Option<ConsulDuration>,
    /// URL of an HTTP check.
    #[serde(rename = "HTTP")]
    pub http: String,
    /// HTTP method.
    pub method: String,
    /// HTTP headers.
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP body.
    pub body: String,
    /// Skip TLS verification.
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    /// TLS server name (accepted).
    #[serde(rename = "TLSServerName")]
    pub tls_server_name: String,
    /// Disable redirects (accepted).
    pub disable_redirects: bool,
    /// Address of a TCP check.
    #[serde(rename = "TCP")]
    pub tcp: String,
    /// Target of a gRPC check (`host:port[/service]`).
    #[serde(rename = "GRPC")]
    pub grpc: String,
    /// Use TLS for gRPC.
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// Command of a script check.
    pub args: Vec<String>,
    /// The local service an alias check mirrors.
    pub alias_service: String,
    /// The node an alias check mirrors (accepted; the local node is assumed).
    pub alias_node: String,
    /// Deregister the service after this long critical.
    pub deregister_critical_service_after: Option<ConsulDuration>,
    /// Consecutive successes before passing.
    pub success_before_passing: u32,
    /// Consecutive failures before warning.
    pub failures_before_warning: u32,
    /// Consecutive failures before critical.
    pub failures_before_critical: u32,
    /// Maximum output kept.
    pub output_max_size: usize,
    /// ACL token.
    pub token: String,
}

/// Decodes a definition; the error names the field's path (`Check.Interval`).
fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(normalize(value)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// The default cap on captured check output, as Consul.
pub const DEFAULT_OUTPUT_MAX_SIZE: usize = 4096;

/// How a check runs.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Updated by the application through the API within its TTL.
    Ttl(Duration),
    /// An HTTP request.
    Http,
    /// A TCP connect.
    Tcp,
    /// A gRPC health request.
    Grpc,
    /// A command.
    Script,
    /// Mirrors the health of another local service.
    Alias(String),
    /// Maintenance mode marker; never run.
    Maintenance,
}

impl CheckDefinition {
    /// Decodes a definition with keys in any of Consul's spellings.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        decode(value)
    }

    /// What kind of check this is, or why it is not a valid one.
    pub fn kind(&self, script_checks: bool) -> Result<CheckKind, String> {
        let interval = || -> Result<(), String> {
            match self.interval {
                Some(i) if !i.0.is_zero() => Ok(()),
                _ => Err(
                    "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks".into(),
                ),
            }
        };
        if !self.alias_service.is_empty() {
            return Ok(CheckKind::Alias(self.alias_service.clone()));
        }
        if let Some(ttl) = self.ttl.filter(|t| !t.is_zero()) {
            return Ok(CheckKind::Ttl(ttl.0));
        }
        if !self.http.is_empty() {
            interval()?;
            return Ok(CheckKind::Http);
        }
        if !self.tcp.is_empty() {
            interval()?;
            return Ok(CheckKind::Tcp);
        }
        if !self.grpc.is_empty() {
            interval()?;
            return Ok(CheckKind::Grpc);
        }
        if !self.args.is_empty() {
            if !script_checks {
                return Err("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true".into());
            }
            interval()?;
            return Ok(CheckKind::Script);
        }
        Err("Must provide TTL or Interval with a check type (HTTP, TCP, GRPC, Args)".into())
    }

    /// The `Type` Consul reports for this kind.
    pub fn type_name(kind: &CheckKind) -> &'static str {
        match kind {
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Grpc => "grpc",
            CheckKind::Script => "script",
            CheckKind::Alias(_) => "alias",
            CheckKind::Maintenance => "maintenance",
        }
    }

    /// The catalog record of this check on `node`.
    pub fn to_health_check(&self, node: &str, kind: &CheckKind) -> HealthCheck {
        let initial = if self.status.is_empty() {
            status::CRITICAL.to_string()
        } else {
            self.status.clone()
        };
        HealthCheck {
            node: node.to_string(),
            check_id: self.id.clone(),
            name: self.name.clone(),
            status: initial,
            notes: self.notes.clone(),
            output: String::new(),
            service_id: self.service_id.clone(),
            check_type: Self::type_name(kind).to_string(),
            definition: HealthCheckDefinition {
                http: self.http.clone(),
                tcp: self.tcp.clone(),
                grpc: self.grpc.clone(),
                interval: self.interval,
                timeout: self.timeout,
                deregister_critical_service_after: self.deregister_critical_service_after,
            },
            ..Default::default()
        }
    }
}

impl ServiceDefinition {
    /// Decodes a definition with keys in any of Consul's spellings.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        decode(value)
    }

    /// Fills defaults and checks the definition; names the bad field.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("Missing service name".into());
        }
        if self.id.is_empty() {
            self.id = self.name.clone();
        }
        if let Some(w) = self.weights {
            if w.passing < 1 {
                return Err("Passing must be greater than 0".into());
            }
        }
        Ok(())
    }

    /// The instance record for the catalog.
    pub fn to_node_service(&self, datacenter: &str) -> NodeService {
        NodeService {
            kind: self.kind.clone(),
            id: self.id.clone(),
            service: self.name.clone(),
            tags: self.tags.clone(),
            address: self.address.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            meta: self.meta.clone(),
            port: self.port,
            weights: self.weights.unwrap_or_default(),
            enable_tag_override: self.enable_tag_override,
            proxy: self.proxy.clone(),
            connect: self.connect.clone(),
            datacenter: datacenter.to_string(),
            raft: Default::default(),
        }
    }

    /// The service's checks, with IDs and service IDs filled in as Consul
    /// does (`service:<id>`, or `service:<id>:<n>` when there are several).
    pub fn check_definitions(&self) -> Vec<CheckDefinition> {
        let all: Vec<&CheckDefinition> = self.check.iter().chain(self.checks.iter()).collect();
        let many = all.len() > 1;
        all.into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c.service_id = self.id.clone();
                if c.id.is_empty() {
                    c.id = if many {
                        format!("service:{}:{}", self.id, i + 1)
                    } else {
                        format!("service:{}", self.id)
                    };
                }
                if c.name.is_empty() {
                    c.name = format!("Service '{}' check", self.name);
                }
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_config_file_spelling() {
        let mut s = ServiceDefinition::from_json(json!({
            "name": "socat", "port": 8181, "tags": ["a"],
            "enable_tag_override": true,
            "connect": {"sidecar_service": {}},
            "checks": [{"args": ["true"], "interval": "10s"}, {"ttl": "30s"}]
        }))
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.id, "socat");
        assert!(s.enable_tag_override);
        assert_eq!(s.connect.as_ref().unwrap()["SidecarService"], json!({}));
        let checks = s.check_definitions();
        assert_eq!(checks[0].id, "service:socat:1");
        assert_eq!(
            checks[1].kind(true).unwrap(),
            CheckKind::Ttl(Duration::from_secs(30))
        );
        assert!(checks[0].kind(false).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = ServiceDefinition::from_json(json!({"Name": "x", "Prot": 80})).unwrap_err();
        assert!(err.contains("Prot"), "{err}");
    }

    #[test]
    fn checks_need_a_kind_and_interval() {
        let c = CheckDefinition::from_json(json!({"HTTP": "http://x"})).unwrap();
        assert!(c.kind(false).unwrap_err().contains("Interval"));
        let c = CheckDefinition::from_json(json!({"Name": "x"})).unwrap();
        assert!(c.kind(false).is_err());
    }
}
