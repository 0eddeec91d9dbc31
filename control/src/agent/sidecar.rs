//! `connect.sidecar_service {}`: the sidecar proxy registration a service
//! definition implies, with Consul's defaults (ID `<id>-sidecar-proxy`, kind
//! `connect-proxy`, a port from 21000–21255, the parent's tags and meta, a
//! TCP check on the proxy and an alias check of the parent).

use super::definition::{CheckDefinition, ServiceDefinition};
use crate::structs::{kind, ConsulDuration};
use serde_json::{json, Value};
use std::time::Duration;

/// The range sidecar ports are taken from (Consul's `sidecar_min_port` and
/// `sidecar_max_port`).
pub const SIDECAR_PORTS: std::ops::RangeInclusive<u16> = 21000..=21255;

/// The ID of the sidecar a service with ID `parent_id` gets.
pub fn sidecar_id(parent_id: &str) -> String {
    format!("{parent_id}-sidecar-proxy")
}

/// True when the definition asks for a sidecar.
pub fn wants_sidecar(def: &ServiceDefinition) -> bool {
    def.connect
        .as_ref()
        .and_then(|c| c.get("SidecarService"))
        .is_some_and(|s| !s.is_null())
}

/// The sidecar registration `parent` implies, or `None` if it asks for none.
/// `taken` lists ports other local sidecars use.
pub fn sidecar_for(
    parent: &ServiceDefinition,
    taken: &[u16],
) -> Result<Option<ServiceDefinition>, String> {
    if !wants_sidecar(parent) {
        return Ok(None);
    }
    let raw = parent
        .connect
        .as_ref()
        .and_then(|c| c.get("SidecarService"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut sc = ServiceDefinition::from_json(raw).map_err(|e| format!("sidecar_service: {e}"))?;
    sc.id = sidecar_id(&parent.id);
    if sc.name.is_empty() {
        sc.name = format!("{}-sidecar-proxy", parent.name);
    }
    sc.kind = kind::CONNECT_PROXY.to_string();
    if sc.tags.is_empty() {
        sc.tags = parent.tags.clone();
    }
    if sc.meta.is_empty() {
        sc.meta = parent.meta.clone();
    }
    if sc.port == 0 {
        sc.port = SIDECAR_PORTS
            .clone()
            .find(|p| !taken.contains(p))
            .ok_or("sidecar_service: no port left in 21000-21255")?;
    }
    let mut proxy = match sc.proxy.take() {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    proxy.insert("DestinationServiceName".into(), json!(parent.name));
    proxy.insert("DestinationServiceID".into(), json!(parent.id));
    proxy
        .entry("LocalServiceAddress")
        .or_insert(json!("127.0.0.1"));
    proxy
        .entry("LocalServicePort")
        .or_insert(json!(parent.port));
    proxy.entry("Upstreams").or_insert(json!([]));
    sc.proxy = Some(Value::Object(proxy));
    if sc.check.is_none() && sc.checks.is_empty() {
        let address = if sc.address.is_empty() {
            "127.0.0.1"
        } else {
            sc.address.as_str()
        };
        sc.checks = vec![
            CheckDefinition {
                name: "Connect Sidecar Listening".into(),
                tcp: format!("{address}:{}", sc.port),
                interval: Some(ConsulDuration(Duration::from_secs(10))),
                ..Default::default()
            },
            CheckDefinition {
                name: format!("Connect Sidecar Aliasing {}", parent.id),
                alias_service: parent.id.clone(),
                ..Default::default()
            },
        ];
    }
    Ok(Some(sc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> ServiceDefinition {
        let mut p = ServiceDefinition::from_json(json!({
            "name": "socat", "port": 8181, "tags": ["a"],
            "connect": {"sidecar_service": {"proxy": {"upstreams": [
                {"destination_name": "db", "local_bind_port": 9191}]}}}
        }))
        .unwrap();
        p.validate().unwrap();
        p
    }

    #[test]
    fn consul_defaults() {
        let sc = sidecar_for(&parent(), &[21000]).unwrap().unwrap();
        assert_eq!(sc.id, "socat-sidecar-proxy");
        assert_eq!(sc.name, "socat-sidecar-proxy");
        assert_eq!(sc.kind, "connect-proxy");
        assert_eq!(sc.port, 21001);
        assert_eq!(sc.tags, vec!["a"]);
        let proxy = sc.proxy.unwrap();
        assert_eq!(proxy["DestinationServiceName"], "socat");
        assert_eq!(proxy["LocalServicePort"], 8181);
        assert_eq!(proxy["Upstreams"][0]["DestinationName"], "db");
        assert_eq!(proxy["Upstreams"][0]["LocalBindPort"], 9191);
        assert_eq!(sc.checks.len(), 2);
        assert_eq!(sc.checks[0].tcp, "127.0.0.1:21001");
        assert_eq!(sc.checks[1].alias_service, "socat");
    }

    #[test]
    fn no_sidecar_no_registration() {
        let mut p = parent();
        p.connect = None;
        assert!(sidecar_for(&p, &[]).unwrap().is_none());
        let all: Vec<u16> = SIDECAR_PORTS.collect();
        assert!(sidecar_for(&parent(), &all).is_err());
    }
}
