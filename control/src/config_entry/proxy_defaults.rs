//! `proxy-defaults`: settings for every proxy, in the one entry named
//! `global`. Its opaque `Config` carries the mesh-wide default protocol
//! (`Config.protocol`) that services without a `service-defaults`
//! protocol speak.

use super::service_defaults::{
    check_modes, check_protocol, MeshGatewayConfig, TransparentProxyConfig,
};
use super::{FieldError, KindSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only name a `proxy-defaults` entry may have.
pub const GLOBAL: &str = "global";

/// A `proxy-defaults` entry (without the shared envelope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProxyDefaults {
    /// Opaque proxy settings (`protocol`, `local_connect_timeout_ms`,
    /// ...), keys as written.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    /// `""`, `direct` or `transparent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Transparent proxy settings.
    #[serde(default, skip_serializing_if = "TransparentProxyConfig::is_default")]
    pub transparent_proxy: TransparentProxyConfig,
    /// Mesh gateway use.
    #[serde(default, skip_serializing_if = "MeshGatewayConfig::is_default")]
    pub mesh_gateway: MeshGatewayConfig,
}

impl ProxyDefaults {
    /// The default protocol, `Config.protocol` lower-cased, empty if unset.
    pub fn protocol(&self) -> String {
        self.config
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

impl KindSpec for ProxyDefaults {
    const KIND: &'static str = super::kind::PROXY_DEFAULTS;

    fn validate(&self, name: &str) -> Result<(), FieldError> {
        if name != GLOBAL {
            return Err(FieldError::new(
                "Name",
                format!("invalid name ({name:?}), only \"global\" is supported"),
            ));
        }
        match self.config.get("protocol") {
            None | Some(Value::Null) => {}
            Some(Value::String(p)) => check_protocol("Config.protocol", &p.to_ascii_lowercase())?,
            Some(other) => {
                return Err(FieldError::new(
                    "Config.protocol",
                    format!("must be a string, not {other}"),
                ))
            }
        }
        check_modes(&self.mode, &self.mesh_gateway)
    }
}
