//! DNS queries as the UDP and TCP listeners hand them to
//! `DnsServer::answer`, over the control plane's own catalog view
//! (`StoreCatalog`) of a small store: web (three instances, one with its
//! own address, tags, node meta), db on IPv6, a hostname-addressed service
//! and a Connect sidecar. Any bytes get no reply or a reply that decodes,
//! is a response with the query's ID, and fits the transport: at most 512
//! bytes on classic UDP (or the EDNS payload the query advertised), at most
//! 65535 on TCP.
#![no_main]

use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use mesh_control::dns::StoreCatalog;
use mesh_control::raft::Command;
use mesh_control::state::Store;
use mesh_control::structs::RegisterRequest;
use mesh_dns::{DnsConfig, DnsServer};
use serde_json::json;

fn server() -> &'static DnsServer {
    static SERVER: OnceLock<DnsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let store = Arc::new(Store::default());
        let registrations = [
            json!({"Node": "node1", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"},
                   "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary"], "Port": 8080}}),
            json!({"Node": "node2", "Address": "10.0.0.2",
                   "Service": {"ID": "web-2", "Service": "web", "Tags": ["secondary"], "Port": 8080,
                               "Address": "192.168.1.2"}}),
            json!({"Node": "node3", "Address": "10.0.0.3",
                   "Service": {"ID": "web-3", "Service": "web", "Port": 9090},
                   "Check": {"CheckID": "web-3-down", "ServiceID": "web-3", "Status": "critical"}}),
            json!({"Node": "node4", "Address": "2001:db8::4",
                   "Service": {"ID": "db", "Service": "db", "Port": 5432}}),
            json!({"Node": "node5", "Address": "10.0.0.5",
                   "Service": {"ID": "ext", "Service": "ext", "Port": 443, "Address": "db.example.com"}}),
            json!({"Node": "node1", "Address": "10.0.0.1",
                   "Service": {"ID": "web-sidecar-proxy", "Service": "web-sidecar-proxy",
                               "Kind": "connect-proxy", "Port": 21000,
                               "Proxy": {"DestinationServiceName": "web"}}}),
        ];
        for (i, r) in registrations.into_iter().enumerate() {
            let mut req: RegisterRequest = serde_json::from_value(r).expect("a fixture");
            req.datacenter = "dc1".into();
            let cmd = Command::Register {
                req: Box::new(req),
                now_ms: 0,
            };
            store.write(|d, c| cmd.apply(i as u64 + 1, d, c));
        }
        let config = DnsConfig {
            node_name: "server1".into(),
            alt_domain: Some("mesh.".into()),
            ..DnsConfig::default()
        };
        DnsServer::new(config, Arc::new(StoreCatalog::new(store, "dc1".into())))
    })
}

fuzz_target!(|data: &[u8]| {
    let advertised = Message::from_vec(data).ok().and_then(|m| {
        m.extensions()
            .as_ref()
            .map(|e| usize::from(e.max_payload()))
    });
    for (transport, limit) in [(512, advertised.unwrap_or(512).max(512)), (65535, 65535)] {
        let Some(reply) = server().answer(data, transport) else {
            continue;
        };
        assert!(
            reply.len() <= limit,
            "a {}-byte reply on a {transport}-byte transport",
            reply.len()
        );
        let msg = Message::from_vec(&reply).expect("the reply decodes");
        assert_eq!(msg.message_type(), MessageType::Response);
        assert_eq!(msg.id(), u16::from_be_bytes([data[0], data[1]]));
    }
});
