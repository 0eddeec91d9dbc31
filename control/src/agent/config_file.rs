//! Config files (`-config-file`, `-config-dir`): JSON or HCL, with `service`,
//! `services`, `check` and `checks` blocks and agent settings.
//!
//! A file that does not parse, or a definition with a bad field, is reported
//! with the file's path and the field; nothing from a broken load is applied.

use super::definition::{CheckDefinition, ServiceDefinition};
use crate::structs::keys::normalize;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Agent settings a config file may carry (Consul's snake_case names).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileSettings {
    /// `datacenter`.
    pub datacenter: Option<String>,
    /// `node_name`.
    pub node_name: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<String>,
    /// `server`.
    pub server: Option<bool>,
    /// `bootstrap`.
    pub bootstrap: Option<bool>,
    /// `bootstrap_expect`.
    pub bootstrap_expect: Option<u32>,
    /// `enable_script_checks`.
    pub enable_script_checks: Option<bool>,
    /// `default_intention_policy`: `allow`, `deny`, or empty for the ACL
    /// default (allow while ACLs are off).
    pub default_intention_policy: Option<String>,
    /// `bind_addr`.
    pub bind_addr: Option<String>,
    /// `client_addr`.
    pub client_addr: Option<String>,
    /// `advertise_addr`.
    pub advertise_addr: Option<String>,
    /// `domain`.
    pub domain: Option<String>,
    /// `log_level`.
    pub log_level: Option<String>,
    /// `node_meta`.
    pub node_meta: Option<BTreeMap<String, String>>,
    /// `ports { http, dns, server, serf_lan }`.
    pub ports: Option<FilePorts>,
    /// `raft_snapshot_threshold`: log entries between snapshots.
    pub raft_snapshot_threshold: Option<u64>,
    /// `encrypt`: the gossip key, base64.
    pub encrypt: Option<String>,
    /// `retry_join`: agents to join, retried until one answers.
    pub retry_join: Option<Vec<String>>,
    /// `retry_interval`: time between retry-join attempts, e.g. `30s`.
    pub retry_interval: Option<String>,
    /// `rejoin_after_leave`.
    pub rejoin_after_leave: Option<bool>,
    /// `reconnect_timeout`: how long failed members are remembered, e.g. `72h`.
    pub reconnect_timeout: Option<String>,
    /// `limits { ... }`.
    pub limits: Option<FileLimits>,
    /// `tls { defaults { ... } internal_rpc { ... } https { ... } }`.
    pub tls: Option<FileTls>,
    /// The older top-level TLS keys (`ca_file`, `verify_incoming`, ...),
    /// which `tls.defaults` and `tls.internal_rpc` override.
    #[serde(flatten)]
    pub legacy_tls: FileTlsSettings,
    /// `verify_incoming_rpc`: the older key for the RPC port's
    /// `verify_incoming` alone.
    pub verify_incoming_rpc: Option<bool>,
    /// `verify_incoming_https`: the older key for the HTTPS port's
    /// `verify_incoming` alone.
    pub verify_incoming_https: Option<bool>,
    /// `auto_encrypt { tls, allow_tls }`.
    pub auto_encrypt: Option<FileAutoEncrypt>,
}

/// The `auto_encrypt` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileAutoEncrypt {
    /// A client agent gets its RPC certificate from the servers.
    #[serde(rename = "TLS", alias = "Tls")]
    pub tls: Option<bool>,
    /// A server signs client agents' RPC certificates.
    #[serde(rename = "AllowTLS", alias = "AllowTls")]
    pub allow_tls: Option<bool>,
}

/// The `tls` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileTls {
    /// Settings every interface starts from.
    pub defaults: Option<FileTlsSettings>,
    /// The server RPC port's.
    pub internal_rpc: Option<FileTlsSettings>,
    /// The HTTPS API's.
    pub https: Option<FileTlsSettings>,
    /// The gRPC port's.
    pub grpc: Option<FileTlsSettings>,
}

/// One interface's TLS settings (and the older top-level keys).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileTlsSettings {
    /// `ca_file`.
    pub ca_file: Option<String>,
    /// `ca_path`.
    pub ca_path: Option<String>,
    /// `cert_file`.
    pub cert_file: Option<String>,
    /// `key_file`.
    pub key_file: Option<String>,
    /// `verify_incoming`.
    pub verify_incoming: Option<bool>,
    /// `verify_outgoing`.
    pub verify_outgoing: Option<bool>,
    /// `verify_server_hostname`.
    pub verify_server_hostname: Option<bool>,
    /// `tls_min_version` (e.g. `TLSv1_2`).
    #[serde(rename = "TLSMinVersion", alias = "TlsMinVersion")]
    pub tls_min_version: Option<String>,
    /// `tls_cipher_suites`.
    #[serde(rename = "TLSCipherSuites", alias = "TlsCipherSuites")]
    pub tls_cipher_suites: Option<String>,
}

impl FileTlsSettings {
    /// These settings with `over`'s set fields in their place.
    pub fn overridden_by(&self, over: &FileTlsSettings) -> FileTlsSettings {
        fn pick<T: Clone>(base: &Option<T>, over: &Option<T>) -> Option<T> {
            over.clone().or_else(|| base.clone())
        }
        FileTlsSettings {
            ca_file: pick(&self.ca_file, &over.ca_file),
            ca_path: pick(&self.ca_path, &over.ca_path),
            cert_file: pick(&self.cert_file, &over.cert_file),
            key_file: pick(&self.key_file, &over.key_file),
            verify_incoming: pick(&self.verify_incoming, &over.verify_incoming),
            verify_outgoing: pick(&self.verify_outgoing, &over.verify_outgoing),
            verify_server_hostname: pick(
                &self.verify_server_hostname,
                &over.verify_server_hostname,
            ),
            tls_min_version: pick(&self.tls_min_version, &over.tls_min_version),
            tls_cipher_suites: pick(&self.tls_cipher_suites, &over.tls_cipher_suites),
        }
    }

    /// The server RPC port's settings: the top-level keys (with
    /// `verify_incoming_rpc`), then `tls.defaults`, then `tls.internal_rpc`.
    pub fn internal_rpc(file: &FileSettings) -> FileTlsSettings {
        let layers = file.tls.as_ref().map(|t| (&t.defaults, &t.internal_rpc));
        Self::layered(&file.legacy_tls, file.verify_incoming_rpc, layers)
    }

    /// The HTTPS port's settings: the top-level keys (with
    /// `verify_incoming_https`), then `tls.defaults`, then `tls.https`.
    pub fn https(file: &FileSettings) -> FileTlsSettings {
        let layers = file.tls.as_ref().map(|t| (&t.defaults, &t.https));
        Self::layered(&file.legacy_tls, file.verify_incoming_https, layers)
    }

    fn layered(
        legacy: &FileTlsSettings,
        verify_incoming: Option<bool>,
        layers: Option<(&Option<FileTlsSettings>, &Option<FileTlsSettings>)>,
    ) -> FileTlsSettings {
        let mut out = legacy.clone();
        out.verify_incoming = verify_incoming.or(out.verify_incoming);
        if let Some((defaults, interface)) = layers {
            for layer in [defaults, interface].into_iter().flatten() {
                out = out.overridden_by(layer);
            }
        }
        out
    }
}

/// The `limits` block (the connection limits of Consul's).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileLimits {
    /// `rpc_max_conns_per_client`: RPC connections one address may hold.
    pub rpc_max_conns_per_client: Option<usize>,
    /// `rpc_handshake_timeout`: e.g. `5s`.
    pub rpc_handshake_timeout: Option<String>,
    /// `http_max_conns_per_client`: HTTP connections one address may hold.
    pub http_max_conns_per_client: Option<usize>,
}

/// The `ports` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FilePorts {
    /// HTTP API port; -1 turns plain HTTP off.
    pub http: Option<i32>,
    /// HTTPS API port; -1 (the default) is off.
    pub https: Option<i32>,
    /// DNS port.
    #[serde(rename = "DNS")]
    pub dns: Option<u16>,
    /// Server RPC port.
    pub server: Option<u16>,
    /// LAN gossip port.
    pub serf_lan: Option<u16>,
}

/// Everything loaded from the config paths.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    /// Service definitions, in file order.
    pub services: Vec<ServiceDefinition>,
    /// Node-level check definitions.
    pub checks: Vec<CheckDefinition>,
    /// Agent settings, later files overriding earlier ones.
    pub settings: FileSettings,
}

const SETTINGS_KEYS: &[&str] = &[
    "Datacenter",
    "NodeName",
    "DataDir",
    "Server",
    "Bootstrap",
    "BootstrapExpect",
    "EnableScriptChecks",
    "DefaultIntentionPolicy",
    "BindAddr",
    "ClientAddr",
    "AdvertiseAddr",
    "Domain",
    "LogLevel",
    "NodeMeta",
    "Ports",
    "RaftSnapshotThreshold",
    "Encrypt",
    "RetryJoin",
    "RetryInterval",
    "RejoinAfterLeave",
    "ReconnectTimeout",
    "Limits",
    "Tls",
    "CaFile",
    "CaPath",
    "CertFile",
    "KeyFile",
    "VerifyIncoming",
    "VerifyOutgoing",
    "VerifyServerHostname",
    "VerifyIncomingRpc",
    "VerifyIncomingHttps",
    "TlsMinVersion",
    "TlsCipherSuites",
    "AutoEncrypt",
];

/// The files a path names: itself, or a directory's `.json` and `.hcl`
/// files in name order.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json") | Some("hcl")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses one file into JSON with canonical keys.
pub fn parse_file(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = if path.extension().and_then(|e| e.to_str()) == Some("hcl") {
        crate::structs::hcl::from_str(&text)
            .map_err(|e| format!("{}: invalid HCL: {e}", path.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?
    };
    if !value.is_object() {
        return Err(format!("{}: top level must be an object", path.display()));
    }
    Ok(normalize(value))
}

/// One or many: a block given once is an object, given twice an array.
fn many(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Loads every file under `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<LoadedConfig, String> {
    let mut out = LoadedConfig::default();
    let mut settings = serde_json::Map::new();
    for p in paths {
        for file in files_of(p)? {
            let Value::Object(top) = parse_file(&file)? else {
                continue;
            };
            let at = |what: &str, e: String| format!("{}: {what}: {e}", file.display());
            for (key, value) in top {
                match key.as_str() {
                    "Service" | "Services" => {
                        for v in many(value) {
                            let s =
                                ServiceDefinition::from_json(v).map_err(|e| at("service", e))?;
                            out.services.push(s);
                        }
                    }
                    "Check" | "Checks" => {
                        for v in many(value) {
                            let c = CheckDefinition::from_json(v).map_err(|e| at("check", e))?;
                            out.checks.push(c);
                        }
                    }
                    k if SETTINGS_KEYS.contains(&k) => {
                        settings.insert(key, value);
                    }
                    other => {
                        tracing::warn!(file = %file.display(), key = other, "ignoring unsupported config key");
                    }
                }
            }
        }
    }
    out.settings = serde_json::from_value(Value::Object(settings))
        .map_err(|e| format!("agent settings: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mesh-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tls_settings_layer_top_level_then_defaults_then_internal_rpc() {
        let d = tempdir("tls");
        write(
            &d,
            "tls.hcl",
            r#"
            ca_file         = "/old/ca.pem"
            verify_outgoing = false
            tls {
              defaults {
                ca_file         = "/etc/mesh/ca.pem"
                cert_file       = "/etc/mesh/server.pem"
                key_file        = "/etc/mesh/server-key.pem"
                verify_incoming = true
                verify_outgoing = true
              }
              internal_rpc {
                verify_server_hostname = true
              }
            }
            limits {
              rpc_max_conns_per_client = 7
              rpc_handshake_timeout    = "2s"
            }
            "#,
        );
        let cfg = load_paths(std::slice::from_ref(&d)).unwrap().settings;
        assert_eq!(cfg.legacy_tls.ca_file.as_deref(), Some("/old/ca.pem"));
        let rpc = FileTlsSettings::internal_rpc(&cfg);
        assert_eq!(rpc.ca_file.as_deref(), Some("/etc/mesh/ca.pem"));
        assert_eq!(rpc.key_file.as_deref(), Some("/etc/mesh/server-key.pem"));
        assert_eq!(
            (
                rpc.verify_incoming,
                rpc.verify_outgoing,
                rpc.verify_server_hostname
            ),
            (Some(true), Some(true), Some(true))
        );
        let limits = cfg.limits.unwrap();
        assert_eq!(limits.rpc_max_conns_per_client, Some(7));
        assert_eq!(limits.rpc_handshake_timeout.as_deref(), Some("2s"));
    }

    #[test]
    fn older_keys_auto_encrypt_and_tls_versions_are_read() {
        let d = tempdir("legacy-tls");
        write(
            &d,
            "client.json",
            r#"{"verify_incoming_rpc": true, "verify_incoming_https": false,
                "verify_incoming": true, "tls_min_version": "tls13",
                "tls_cipher_suites": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "auto_encrypt": {"tls": true, "allow_tls": false}}"#,
        );
        let cfg = load_paths(std::slice::from_ref(&d)).unwrap().settings;
        let rpc = FileTlsSettings::internal_rpc(&cfg);
        let https = FileTlsSettings::https(&cfg);
        assert_eq!(
            (rpc.verify_incoming, https.verify_incoming),
            (Some(true), Some(false))
        );
        assert_eq!(rpc.tls_min_version.as_deref(), Some("tls13"));
        assert!(https.tls_cipher_suites.is_some());
        let auto = cfg.auto_encrypt.unwrap();
        assert_eq!((auto.tls, auto.allow_tls), (Some(true), Some(false)));
    }

    #[test]
    fn loads_json_and_hcl_from_a_directory() {
        let d = tempdir("dir");
        write(
            &d,
            "socat.json",
            r#"{"service": {"name": "socat", "port": 8181, "connect": {"sidecar_service": {}}}}"#,
        );
        write(
            &d,
            "web.hcl",
            r#"
            datacenter = "east"
            service {
              name = "web"
              port = 80
              tags = ["v1"]
              check {
                id       = "web-ttl"
                ttl      = "30s"
              }
            }
            service {
              name = "api"
              port = 81
            }
            "#,
        );
        write(&d, "ignored.txt", "not config");
        let cfg = load_paths(std::slice::from_ref(&d)).unwrap();
        let names: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["socat", "web", "api"]);
        assert_eq!(cfg.services[1].check.as_ref().unwrap().id, "web-ttl");
        assert_eq!(cfg.settings.datacenter.as_deref(), Some("east"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let d = tempdir("bad");
        let f = write(
            &d,
            "bad.json",
            r#"{"service": {"name": "x", "port": "eighty"}}"#,
        );
        let err = load_paths(&[f]).unwrap_err();
        assert!(err.contains("bad.json"), "{err}");
        assert!(err.contains("Port"), "{err}");
        let f = write(&d, "broken.hcl", "service { name = ");
        let err = load_paths(&[f]).unwrap_err();
        assert!(err.contains("broken.hcl") && err.contains("HCL"), "{err}");
        let f = write(&d, "typo.json", r#"{"service": {"name": "x", "prot": 1}}"#);
        let err = load_paths(&[f]).unwrap_err();
        assert!(err.contains("Prot"), "{err}");
        std::fs::remove_dir_all(d).unwrap();
    }
}
