//! Behaviour tests: queries built with hickory, answered by `DnsServer::answer`
//! against a fake catalog, decoded and checked as a client would.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::{Rng, SeedableRng};

use crate::{Catalog, DnsConfig, DnsServer, NodeRecord, ServiceInstance};

// === fake catalog ===

#[derive(Default)]
struct FakeCatalog {
    /// (dc, service, tags, instance)
    services: Vec<(String, String, Vec<String>, ServiceInstance)>,
    /// (dc, node)
    nodes: Vec<(String, NodeRecord)>,
}

impl FakeCatalog {
    fn service(mut self, dc: &str, name: &str, tags: &[&str], instance: ServiceInstance) -> Self {
        self.services.push((
            dc.into(),
            name.into(),
            tags.iter().map(|t| t.to_string()).collect(),
            instance,
        ));
        self
    }

    fn node(mut self, dc: &str, name: &str, address: &str, meta: &[(&str, &str)]) -> Self {
        self.nodes.push((
            dc.into(),
            NodeRecord {
                name: name.into(),
                address: address.into(),
                meta: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        ));
        self
    }
}

impl Catalog for FakeCatalog {
    fn datacenters(&self) -> Vec<String> {
        vec!["dc1".into(), "dc2".into()]
    }

    fn service_instances(&self, dc: &str, name: &str, tag: Option<&str>) -> Vec<ServiceInstance> {
        self.services
            .iter()
            .filter(|(d, n, tags, _)| {
                d == dc
                    && n.eq_ignore_ascii_case(name)
                    && tag.is_none_or(|tag| tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
            })
            .map(|(_, _, _, instance)| instance.clone())
            .collect()
    }

    fn connect_instances(&self, dc: &str, name: &str) -> Vec<ServiceInstance> {
        self.service_instances(dc, &format!("{name}-sidecar-proxy"), None)
    }

    fn node(&self, dc: &str, name: &str) -> Option<NodeRecord> {
        self.nodes
            .iter()
            .find(|(d, n)| d == dc && n.name.eq_ignore_ascii_case(name))
            .map(|(_, n)| n.clone())
    }
}

fn instance(node: &str, node_address: &str, service_address: &str, port: u16) -> ServiceInstance {
    ServiceInstance {
        node: node.into(),
        node_address: node_address.into(),
        service_address: service_address.into(),
        port,
        node_meta: BTreeMap::new(),
    }
}

/// web: two instances on IPv4 nodes (one tagged primary), one with its own
/// address; db: IPv6; ext: a hostname; dc2 has its own web.
fn catalog() -> FakeCatalog {
    let mut with_meta = instance("node1", "10.0.0.1", "", 8080);
    with_meta.node_meta.insert("rack".into(), "r1".into());
    FakeCatalog::default()
        .service("dc1", "web", &["primary"], with_meta)
        .service(
            "dc1",
            "web",
            &["secondary"],
            instance("node2", "10.0.0.2", "", 8080),
        )
        .service(
            "dc1",
            "web",
            &[],
            instance("node3", "10.0.0.3", "192.168.1.3", 9090),
        )
        .service("dc1", "db", &[], instance("node4", "2001:db8::4", "", 5432))
        .service(
            "dc1",
            "ext",
            &[],
            instance("node5", "10.0.0.5", "db.example.com", 443),
        )
        .service(
            "dc1",
            "alias",
            &[],
            instance("node1", "10.0.0.1", "web.service.consul", 80),
        )
        .service(
            "dc1",
            "udpsvc",
            &["udp"],
            instance("node1", "10.0.0.1", "", 53),
        )
        .service(
            "dc1",
            "consul",
            &[],
            instance("server1", "10.0.0.100", "", 8300),
        )
        .service("dc2", "web", &[], instance("far1", "10.2.0.1", "", 80))
        .service(
            "dc1",
            "web-sidecar-proxy",
            &[],
            instance("node1", "10.0.0.1", "", 21000),
        )
        .node(
            "dc1",
            "node1",
            "10.0.0.1",
            &[("rack", "r1"), ("rfc1035-x", "raw")],
        )
        .node("dc1", "node4", "2001:db8::4", &[])
        .node("dc1", "alias-node", "host.example.com", &[])
        .node("dc2", "far1", "10.2.0.1", &[])
}

fn server_with(config: DnsConfig, catalog: FakeCatalog) -> DnsServer {
    DnsServer::new(config, Arc::new(catalog))
}

fn server() -> DnsServer {
    server_with(DnsConfig::default(), catalog())
}

// === query helpers ===

fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(0x4d53)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

fn ask_with(
    server: &DnsServer,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
    max: usize,
) -> Message {
    let bytes = server
        .answer(&query_bytes(name, qtype, edns), max)
        .expect("a reply");
    assert!(
        bytes.len() <= max.max(edns.map_or(0, usize::from)).max(512),
        "reply of {} bytes",
        bytes.len()
    );
    let msg = Message::from_vec(&bytes).expect("a well-formed reply");
    assert_eq!(msg.id(), 0x4d53);
    assert_eq!(msg.message_type(), MessageType::Response);
    msg
}

fn ask(server: &DnsServer, name: &str, qtype: RecordType) -> Message {
    ask_with(server, name, qtype, None, 512)
}

fn ips(records: &[Record]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn assert_soa_authority(msg: &Message, zone: &str) {
    let [soa] = msg.name_servers() else {
        panic!("expected one SOA in authority: {msg}")
    };
    let RData::SOA(data) = soa.data() else {
        panic!("not an SOA: {soa}")
    };
    assert_eq!(soa.name(), &name(zone));
    assert_eq!(data.mname(), &name(&format!("ns.{zone}")));
    assert_eq!(data.rname(), &name(&format!("hostmaster.{zone}")));
    assert_eq!(data.refresh(), 3600);
    assert_eq!(data.retry(), 600);
    assert_eq!(data.expire(), 86400);
    assert_eq!(data.minimum(), 0);
}

// === service lookups ===

#[test]
fn service_a_lists_healthy_instances() {
    let msg = ask(&server(), "web.service.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert!(msg.authoritative());
    assert!(msg.recursion_desired());
    assert!(!msg.recursion_available());
    assert_eq!(
        ips(msg.answers()),
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("192.168.1.3")]
    );
    assert!(msg
        .answers()
        .iter()
        .all(|r| r.name() == &name("web.service.consul.")));
    assert!(msg.answers().iter().all(|r| r.ttl() == 0));
}

#[test]
fn service_answers_are_shuffled() {
    let server = server();
    let firsts: std::collections::HashSet<IpAddr> = (0..64)
        .map(|_| ips(&ask(&server, "web.service.consul.", RecordType::A).answers()[..1])[0])
        .collect();
    assert!(firsts.len() > 1, "always the same first answer");
}

#[test]
fn service_srv_targets_nodes_and_addresses() {
    let msg = ask(&server(), "web.service.consul.", RecordType::SRV);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert_eq!(msg.answers().len(), 3);
    let mut targets = BTreeMap::new();
    for record in msg.answers() {
        let RData::SRV(srv) = record.data() else {
            panic!("not SRV: {record}")
        };
        assert_eq!(record.name(), &name("web.service.consul."));
        assert_eq!((srv.priority(), srv.weight()), (1, 1));
        targets.insert(srv.target().to_ascii(), srv.port());
    }
    assert_eq!(
        targets,
        BTreeMap::from([
            ("node1.node.dc1.consul.".to_owned(), 8080),
            ("node2.node.dc1.consul.".to_owned(), 8080),
            ("c0a80103.addr.dc1.consul.".to_owned(), 9090),
        ])
    );
    // Each target resolves in the additional section.
    let additional: BTreeMap<String, IpAddr> = msg
        .additionals()
        .iter()
        .filter_map(|r| {
            ips(std::slice::from_ref(r))
                .first()
                .map(|ip| (r.name().to_ascii(), *ip))
        })
        .collect();
    assert_eq!(additional["node1.node.dc1.consul."], ip("10.0.0.1"));
    assert_eq!(additional["node2.node.dc1.consul."], ip("10.0.0.2"));
    assert_eq!(additional["c0a80103.addr.dc1.consul."], ip("192.168.1.3"));
    // node1's metadata rides along as TXT.
    let txt: Vec<_> = msg
        .additionals()
        .iter()
        .filter(|r| r.record_type() == RecordType::TXT)
        .collect();
    assert_eq!(txt.len(), 1);
    assert_eq!(txt[0].name(), &name("node1.node.dc1.consul."));
    assert_eq!(txt[0].data().to_string(), "rack=r1");
}

#[test]
fn tag_filters_instances() {
    let server = server();
    let msg = ask(&server, "primary.web.service.consul.", RecordType::A);
    assert_eq!(ips(msg.answers()), [ip("10.0.0.1")]);
    let msg = ask(&server, "PRIMARY.web.service.consul.", RecordType::A);
    assert_eq!(ips(msg.answers()), [ip("10.0.0.1")]);
    let msg = ask(&server, "nosuchtag.web.service.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::NXDomain);
    assert_soa_authority(&msg, "consul.");
}

#[test]
fn rfc2782_form() {
    let server = server();
    // `_tcp` filters nothing.
    let msg = ask(&server, "_web._tcp.service.consul.", RecordType::SRV);
    assert_eq!(msg.answers().len(), 3);
    assert_eq!(msg.answers()[0].name(), &name("_web._tcp.service.consul."));
    // Any other protocol label is a tag, as in Consul.
    let msg = ask(&server, "_web._secondary.service.consul.", RecordType::SRV);
    assert_eq!(msg.answers().len(), 1);
    let msg = ask(&server, "_udpsvc._udp.service.consul.", RecordType::SRV);
    assert_eq!(msg.answers().len(), 1);
    let msg = ask(&server, "_web._udp.service.consul.", RecordType::SRV);
    assert_eq!(msg.response_code(), ResponseCode::NXDomain);
    // SRV questions may leave out `service` and name a datacenter.
    let msg = ask(&server, "_web._tcp.dc2.consul.", RecordType::SRV);
    let [srv] = msg.answers() else {
        panic!("{msg}")
    };
    let RData::SRV(srv) = srv.data() else {
        panic!()
    };
    assert_eq!(srv.target(), &name("far1.node.dc2.consul."));
}

#[test]
fn datacenter_labels() {
    let server = server();
    for qname in [
        "web.service.dc2.consul.",
        "web.service.dc2.dc.consul.",
        "web.service.DC2.consul.",
    ] {
        let msg = ask(&server, qname, RecordType::A);
        assert_eq!(ips(msg.answers()), [ip("10.2.0.1")], "{qname}");
    }
    let msg = ask(&server, "web.service.dc9.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::NXDomain);
    assert_soa_authority(&msg, "consul.");
}

#[test]
fn ipv6_instances_answer_aaaa() {
    let server = server();
    let msg = ask(&server, "db.service.consul.", RecordType::AAAA);
    assert_eq!(ips(msg.answers()), [ip("2001:db8::4")]);
    // An A question for an IPv6-only service: the name exists, no data.
    let msg = ask(&server, "db.service.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert!(msg.answers().is_empty());
    assert_soa_authority(&msg, "consul.");
    // SRV additional holds the AAAA.
    let msg = ask(&server, "db.service.consul.", RecordType::SRV);
    assert_eq!(ips(msg.additionals()), [ip("2001:db8::4")]);
}

#[test]
fn any_returns_every_address() {
    let msg = ask(&server(), "web.service.consul.", RecordType::ANY);
    assert_eq!(msg.answers().len(), 3);
}

#[test]
fn hostname_addresses_answer_cname() {
    let server = server();
    let msg = ask(&server, "ext.service.consul.", RecordType::A);
    let [cname] = msg.answers() else {
        panic!("{msg}")
    };
    let RData::CNAME(target) = cname.data() else {
        panic!("{cname}")
    };
    assert_eq!(target.0, name("db.example.com."));
    let msg = ask(&server, "ext.service.consul.", RecordType::SRV);
    let [srv] = msg.answers() else {
        panic!("{msg}")
    };
    let RData::SRV(srv) = srv.data() else {
        panic!()
    };
    assert_eq!(srv.target(), &name("db.example.com."));
    assert_eq!(srv.port(), 443);
    // A CNAME into our own zone is followed (over TCP: on UDP the chain
    // counts against udp_answer_limit).
    let msg = ask_with(&server, "alias.service.consul.", RecordType::A, None, 65535);
    assert_eq!(msg.answers()[0].record_type(), RecordType::CNAME);
    assert_eq!(
        ips(msg.answers()),
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("192.168.1.3")]
    );
}

#[test]
fn connect_names_answer_with_the_proxies() {
    let msg = ask(&server(), "web.connect.consul.", RecordType::SRV);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    let ports: Vec<u16> = msg
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(srv) => Some(srv.port()),
            _ => None,
        })
        .collect();
    assert_eq!(ports, vec![21000]);
}

#[test]
fn names_are_case_insensitive_and_echoed() {
    let msg = ask(&server(), "WEB.Service.CONSUL.", RecordType::A);
    assert_eq!(msg.answers().len(), 3);
    assert_eq!(msg.queries()[0].name().to_ascii(), "WEB.Service.CONSUL.");
    assert_eq!(msg.answers()[0].name().to_ascii(), "WEB.Service.CONSUL.");
}

#[test]
fn unknown_names_get_nxdomain_with_soa() {
    let server = server();
    for qname in [
        "nosuch.service.consul.",
        "nosuch.node.consul.",
        "whatever.consul.",
        "q.query.consul.",
        "nosuch.connect.consul.",
        "web.service.a.b.consul.",
    ] {
        let msg = ask(&server, qname, RecordType::A);
        assert_eq!(msg.response_code(), ResponseCode::NXDomain, "{qname}");
        assert!(msg.authoritative());
        assert!(msg.answers().is_empty());
        assert_soa_authority(&msg, "consul.");
    }
}

#[test]
fn names_without_records_get_nodata() {
    let server = server();
    for (qname, qtype) in [
        ("consul.", RecordType::A),
        ("service.consul.", RecordType::A),
        ("web.service.consul.", RecordType::MX),
        ("node1.node.consul.", RecordType::SRV),
    ] {
        let msg = ask(&server, qname, qtype);
        assert_eq!(msg.response_code(), ResponseCode::NoError, "{qname}");
        assert!(msg.answers().is_empty(), "{qname}");
        assert_soa_authority(&msg, "consul.");
    }
}

// === node and addr lookups ===

#[test]
fn node_lookup() {
    let server = server();
    let msg = ask(&server, "node1.node.consul.", RecordType::A);
    assert_eq!(ips(msg.answers()), [ip("10.0.0.1")]);
    assert_eq!(msg.answers()[0].name(), &name("node1.node.consul."));
    // Metadata in the additional section (enable_additional_node_meta_txt).
    let txt: Vec<String> = msg
        .additionals()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    assert_eq!(txt, ["rack=r1", "raw"]);

    let msg = ask(&server, "node1.node.dc1.consul.", RecordType::TXT);
    assert_eq!(msg.answers().len(), 2);
    assert!(msg
        .answers()
        .iter()
        .all(|r| r.record_type() == RecordType::TXT));

    let msg = ask(&server, "node1.node.consul.", RecordType::ANY);
    assert_eq!(msg.answers().len(), 3);

    let msg = ask(&server, "node4.node.consul.", RecordType::AAAA);
    assert_eq!(ips(msg.answers()), [ip("2001:db8::4")]);

    let msg = ask(&server, "far1.node.dc2.consul.", RecordType::A);
    assert_eq!(ips(msg.answers()), [ip("10.2.0.1")]);

    let msg = ask(&server, "alias-node.node.consul.", RecordType::A);
    let RData::CNAME(target) = msg.answers()[0].data() else {
        panic!("{msg}")
    };
    assert_eq!(target.0, name("host.example.com."));

    let config = DnsConfig {
        node_meta_txt: false,
        ..DnsConfig::default()
    };
    let msg = ask(
        &server_with(config, catalog()),
        "node1.node.consul.",
        RecordType::A,
    );
    assert!(msg.additionals().is_empty());
}

#[test]
fn addr_lookup() {
    let server = server();
    let msg = ask(&server, "c0a80103.addr.dc1.consul.", RecordType::A);
    assert_eq!(ips(msg.answers()), [ip("192.168.1.3")]);
    let msg = ask(
        &server,
        "20010db8000000000000000000000004.addr.consul.",
        RecordType::AAAA,
    );
    assert_eq!(ips(msg.answers()), [ip("2001:db8::4")]);
    let msg = ask(&server, "nothex00.addr.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::NXDomain);
}

// === zone apex ===

#[test]
fn soa_and_ns_at_the_apex() {
    let server = server();
    let msg = ask(&server, "consul.", RecordType::SOA);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    let [soa] = msg.answers() else {
        panic!("{msg}")
    };
    assert_eq!(soa.record_type(), RecordType::SOA);
    let ns_names: Vec<String> = msg
        .name_servers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    assert_eq!(ns_names, ["server1.node.dc1.consul."]);
    assert_eq!(ips(msg.additionals()), [ip("10.0.0.100")]);

    let msg = ask(&server, "CONSUL.", RecordType::NS);
    let [ns] = msg.answers() else { panic!("{msg}") };
    assert_eq!(ns.name(), &name("consul."));
    let RData::NS(target) = ns.data() else {
        panic!()
    };
    assert_eq!(target.0, name("server1.node.dc1.consul."));
    assert_eq!(
        msg.additionals()[0].name(),
        &name("server1.node.dc1.consul.")
    );
}

#[test]
fn ns_falls_back_to_this_agent() {
    let config = DnsConfig {
        node_name: "agent-1".into(),
        server_address: IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        ..DnsConfig::default()
    };
    let server = server_with(config, FakeCatalog::default());
    let msg = ask(&server, "consul.", RecordType::NS);
    let [ns] = msg.answers() else { panic!("{msg}") };
    assert_eq!(ns.data().to_string(), "agent-1.node.dc1.consul.");
    assert_eq!(ips(msg.additionals()), [ip("10.9.9.9")]);
}

#[test]
fn custom_and_alt_domains() {
    let config = DnsConfig {
        domain: "Mesh".into(),
        alt_domain: Some("mesh.example".into()),
        ..DnsConfig::default()
    };
    let server = server_with(config, catalog());
    let msg = ask(&server, "web.service.mesh.", RecordType::A);
    assert_eq!(msg.answers().len(), 3);
    let msg = ask(&server, "web.service.mesh.example.", RecordType::SRV);
    let targets: Vec<String> = msg
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(srv) => Some(srv.target().to_ascii()),
            _ => None,
        })
        .collect();
    assert!(
        targets.iter().all(|t| t.ends_with(".dc1.mesh.example.")),
        "{targets:?}"
    );
    let msg = ask(&server, "nosuch.service.mesh.example.", RecordType::A);
    assert_soa_authority(&msg, "mesh.example.");
    let msg = ask(&server, "web.service.consul.", RecordType::A);
    assert_eq!(msg.response_code(), ResponseCode::Refused);
}

#[test]
fn outside_the_domain_is_refused() {
    let server = server();
    for qname in ["example.com.", ".", "1.0.0.127.in-addr.arpa."] {
        let msg = ask(&server, qname, RecordType::A);
        assert_eq!(msg.response_code(), ResponseCode::Refused, "{qname}");
        assert!(!msg.authoritative());
        assert!(msg.answers().is_empty());
    }
}

#[test]
fn zone_transfers_are_not_implemented() {
    let msg = ask(&server(), "consul.", RecordType::AXFR);
    assert_eq!(msg.response_code(), ResponseCode::NotImp);
}

// === EDNS0 and truncation ===

fn many(count: u16) -> FakeCatalog {
    (0..count).fold(FakeCatalog::default(), |cat, i| {
        let node = format!("node-with-a-longish-name-{i}");
        let address = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        cat.service("dc1", "big", &[], instance(&node, &address, "", 8000 + i))
    })
}

#[test]
fn classic_udp_gets_udp_answer_limit() {
    let server = server_with(DnsConfig::default(), many(20));
    let msg = ask(&server, "big.service.consul.", RecordType::A);
    assert_eq!(msg.answers().len(), 3);
    assert!(!msg.truncated(), "Consul sets TC only with enable_truncate");
    let msg = ask(&server, "big.service.consul.", RecordType::SRV);
    assert_eq!(msg.answers().len(), 3);
    // The additional section follows the kept answers only.
    assert_eq!(msg.additionals().len(), 3);
    let targets: Vec<&Name> = msg
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(srv) => Some(srv.target()),
            _ => None,
        })
        .collect();
    assert!(msg
        .additionals()
        .iter()
        .all(|r| targets.contains(&r.name())));

    let config = DnsConfig {
        enable_truncate: true,
        udp_answer_limit: 5,
        ..DnsConfig::default()
    };
    let server = server_with(config, many(20));
    let msg = ask(&server, "big.service.consul.", RecordType::A);
    assert_eq!(msg.answers().len(), 5);
    assert!(msg.truncated());
}

#[test]
fn edns_lifts_the_answer_limit_and_truncates_by_size() {
    let server = server_with(DnsConfig::default(), many(500));
    let msg = ask_with(
        &server,
        "big.service.consul.",
        RecordType::A,
        Some(4096),
        512,
    );
    assert!(msg.answers().len() > 100, "{} answers", msg.answers().len());
    assert!(msg.truncated(), "500 A records do not fit in 4096 bytes");
    let edns = msg.extensions().as_ref().expect("OPT echoed");
    assert_eq!(edns.max_payload(), 4096);

    let msg = ask_with(
        &server,
        "big.service.consul.",
        RecordType::SRV,
        Some(1232),
        512,
    );
    assert!(msg.truncated());
    assert!(msg.answers().len() > 3);
    assert_eq!(msg.additionals().len(), msg.answers().len());

    // Small sets fit without TC, with the OPT echoed.
    let msg = ask_with(
        &self::server(),
        "web.service.consul.",
        RecordType::SRV,
        Some(1232),
        512,
    );
    assert!(!msg.truncated());
    assert_eq!(msg.answers().len(), 3);
    assert!(msg.extensions().is_some());
}

#[test]
fn tcp_carries_everything() {
    let server = server_with(DnsConfig::default(), many(500));
    let msg = ask_with(&server, "big.service.consul.", RecordType::SRV, None, 65535);
    assert_eq!(msg.answers().len(), 500);
    assert_eq!(msg.additionals().len(), 500);
    assert!(!msg.truncated());
}

#[test]
fn unsupported_edns_version_gets_badvers() {
    let mut msg = Message::from_vec(&query_bytes(
        "web.service.consul.",
        RecordType::A,
        Some(1232),
    ))
    .unwrap();
    msg.extensions_mut().as_mut().unwrap().set_version(1);
    let reply = server().answer(&msg.to_vec().unwrap(), 512).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
    assert_eq!(
        u16::from(reply.response_code()),
        u16::from(ResponseCode::BADVERS)
    );
}

// === hostile input ===

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let server = server();
    assert_eq!(server.answer(&[], 512), None);
    assert_eq!(server.answer(&[1, 2, 3], 512), None);

    // A header that promises a question it does not carry.
    let mut bytes = query_bytes("web.service.consul.", RecordType::A, None);
    bytes.truncate(14);
    let reply = Message::from_vec(&server.answer(&bytes, 512).unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::FormErr);
    assert_eq!(reply.id(), 0x4d53);

    // Two questions.
    let mut msg =
        Message::from_vec(&query_bytes("web.service.consul.", RecordType::A, None)).unwrap();
    msg.add_query(Query::query(name("db.service.consul."), RecordType::A));
    let reply = Message::from_vec(&server.answer(&msg.to_vec().unwrap(), 512).unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::FormErr);

    // Other opcodes.
    let mut msg =
        Message::from_vec(&query_bytes("web.service.consul.", RecordType::A, None)).unwrap();
    msg.set_op_code(OpCode::Update);
    let reply = Message::from_vec(&server.answer(&msg.to_vec().unwrap(), 512).unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NotImp);

    // Responses are never answered (no reflection loops).
    let mut msg =
        Message::from_vec(&query_bytes("web.service.consul.", RecordType::A, None)).unwrap();
    msg.set_message_type(MessageType::Response);
    assert_eq!(server.answer(&msg.to_vec().unwrap(), 512), None);
}

#[test]
fn garbage_never_panics() {
    let server = server();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d657368);
    let seeds: Vec<Vec<u8>> = [
        ("web.service.consul.", RecordType::SRV, Some(1232)),
        ("_web._tcp.service.dc2.consul.", RecordType::SRV, None),
        ("node1.node.consul.", RecordType::ANY, Some(4096)),
        ("consul.", RecordType::SOA, None),
        ("c0a80103.addr.dc1.consul.", RecordType::A, None),
    ]
    .iter()
    .map(|(n, t, e)| query_bytes(n, *t, *e))
    .collect();
    for seed in &seeds {
        // Every prefix.
        for len in 0..=seed.len() {
            check_reply(&server, &seed[..len]);
        }
    }
    for _ in 0..20_000 {
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        let mut bytes = seed.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = rng.gen();
        }
        // Keep it a query most of the time so decoding gets exercised.
        if rng.gen_bool(0.9) {
            bytes[2] &= 0x07;
        }
        if rng.gen_bool(0.2) {
            bytes.truncate(rng.gen_range(0..bytes.len()));
        }
        check_reply(&server, &bytes);
    }
    for _ in 0..2_000 {
        let len = rng.gen_range(0..600);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        check_reply(&server, &bytes);
    }
}

/// Whatever comes back must itself be a well-formed response.
fn check_reply(server: &DnsServer, bytes: &[u8]) {
    for max in [512, 65535] {
        if let Some(reply) = server.answer(bytes, max) {
            let limit = if max == 65535 { 65535 } else { 65535 - 68 };
            assert!(reply.len() <= limit);
            let msg = Message::from_vec(&reply).expect("replies decode");
            assert_eq!(msg.message_type(), MessageType::Response);
        }
    }
}

// === sockets ===

#[tokio::test]
async fn serves_udp_and_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    let server = Arc::new(server_with(DnsConfig::default(), many(20)));
    let serving = tokio::spawn(server.serve(udp, tcp));

    let deadline = std::time::Duration::from_secs(5);

    // UDP, no EDNS: the answer limit applies.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(
            &query_bytes("big.service.consul.", RecordType::A, None),
            udp_addr,
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(deadline, client.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .unwrap();
    let msg = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(msg.answers().len(), 3);

    // TCP: two queries on one connection, everything answered.
    let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
    for (qname, expected) in [("big.service.consul.", 20), ("web.service.consul.", 0)] {
        let query = query_bytes(qname, RecordType::SRV, None);
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(deadline, stream.read_exact(&mut len))
            .await
            .expect("TCP reply in time")
            .unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).await.unwrap();
        let msg = Message::from_vec(&reply).unwrap();
        assert_eq!(msg.answers().len(), expected, "{qname}");
        if expected == 0 {
            assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        }
    }

    serving.abort();
    let _ = serving.await;
    // The listener is gone with the future.
    assert!(TcpStream::connect(tcp_addr).await.is_err());
}

/// Serves `many(20)` on TCP under `limits` (UDP bound but unused).
async fn serve_tcp_with(
    limits: crate::transport::TcpLimits,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = Arc::new(server_with(DnsConfig::default(), many(20)));
    let serving = tokio::spawn(crate::transport::serve(server, limits, udp, tcp));
    (addr, serving)
}

/// Asks `qname` over a new TCP connection; the reply, if one comes in time.
async fn tcp_ask(addr: std::net::SocketAddr, qname: &str) -> Option<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let query = query_bytes(qname, RecordType::SRV, None);
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).await.ok()?;
        Message::from_vec(&reply).ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// True once the server has closed `stream` (EOF or reset), within 5 s.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf));
    matches!(read.await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn a_flood_of_idle_and_stalled_tcp_connections_cannot_lock_out_a_new_client() {
    use tokio::io::AsyncWriteExt;
    // Timeouts far longer than the test: only shedding can make room.
    let limits = crate::transport::TcpLimits {
        max_connections: 16,
        idle_timeout: std::time::Duration::from_secs(600),
        io_timeout: std::time::Duration::from_secs(600),
    };
    let (addr, serving) = serve_tcp_with(limits).await;

    // Connections that send nothing, half a length prefix, or a length
    // prefix and no message, then stall.
    let mut flood = Vec::new();
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => stream.write_all(&[0]).await.unwrap(),
            _ => stream.write_all(&[0, 40]).await.unwrap(),
        }
        flood.push(stream);
    }
    let msg = tcp_ask(addr, "big.service.consul.")
        .await
        .expect("a new client is answered despite the flood");
    assert_eq!(msg.answers().len(), 20);
    // And again: the limit keeps shedding, it does not fill up.
    assert!(tcp_ask(addr, "big.service.consul.").await.is_some());
    // The oldest connection, idle since it connected, was shed.
    assert!(closed_by_server(&mut flood[0]).await);

    serving.abort();
}

#[tokio::test]
async fn a_tcp_query_begun_and_stalled_is_closed_in_io_time_not_idle_time() {
    use tokio::io::AsyncWriteExt;
    let limits = crate::transport::TcpLimits {
        max_connections: 16,
        idle_timeout: std::time::Duration::from_secs(600),
        io_timeout: std::time::Duration::from_millis(100),
    };
    let (addr, serving) = serve_tcp_with(limits).await;
    // One byte of a length prefix, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0]).await.unwrap();
    assert!(closed_by_server(&mut stalled).await);
    // A length prefix without its message.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0, 40]).await.unwrap();
    assert!(closed_by_server(&mut stalled).await);
    // A client that keeps its queries whole is served as before.
    assert!(tcp_ask(addr, "web.service.consul.").await.is_some());
    serving.abort();
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let limits = crate::transport::TcpLimits {
        max_connections: 16,
        idle_timeout: std::time::Duration::from_millis(100),
        io_timeout: std::time::Duration::from_secs(600),
    };
    let (addr, serving) = serve_tcp_with(limits).await;
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut idle).await);
    serving.abort();
}
