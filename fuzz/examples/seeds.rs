//! Writes the hand-made seed corpus under `fuzz/corpus/<target>/`: real
//! RPC frames and Raft commands serialized from mesh's own types, HTTP
//! write bodies, config files in JSON and HCL, filter expressions, DNS
//! queries built with hickory-proto and CSRs made by `mesh_ca`.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! CSRs and their keys are new on every run; the rest is the same.

use std::path::{Path, PathBuf};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use mesh_ca::{generate_csr, SpiffeId};
use mesh_control::config_entry::intentions::Action;
use mesh_control::raft::{Command, ServerNode};
use mesh_control::rpc::{HttpExchange, Request};
use mesh_control::state::TxnOp;
use mesh_control::structs::{DeregisterRequest, DirEntry, KvOp, RegisterRequest, Session};
use serde_json::{json, Value};

const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(corpus(target).join(name), bytes).expect("seed written");
}

fn json_of<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid fixture")
}

fn register() -> Value {
    json!({
        "Datacenter": "dc1", "Node": "node1", "Address": "10.0.0.1",
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary", "v1"], "Port": 8080,
                    "Meta": {"version": "v1"}},
        "Check": {"CheckID": "service:web-1", "Name": "web alive", "ServiceID": "web-1",
                  "Status": "passing"}
    })
}

fn txn() -> Value {
    json!([
        {"KV": {"Verb": "set", "Key": "app/config", "Value": "aGVsbG8=", "Flags": 7}},
        {"KV": {"Verb": "cas", "Key": "app/lock", "Value": "", "Index": 0}},
        {"KV": {"Verb": "get-tree", "Key": "app/"}},
        {"KV": {"Verb": "check-not-exists", "Key": "app/missing"}},
        {"KV": {"Verb": "delete", "Key": "app/old"}}
    ])
}

fn config_entries() -> Vec<(&'static str, Value)> {
    vec![
        (
            "service_defaults.json",
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
        ),
        (
            "service_router.json",
            json!({
                "Kind": "service-router", "Name": "web",
                "Routes": [{"Match": {"HTTP": {"PathPrefix": "/admin", "Header": [{"Name": "x-debug", "Present": true}]}},
                            "Destination": {"Service": "admin", "PrefixRewrite": "/"}}]
            }),
        ),
        (
            "service_splitter.json",
            json!({
                "Kind": "service-splitter", "Name": "web",
                "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]
            }),
        ),
        (
            "service_resolver.json",
            json!({
                "Kind": "service-resolver", "Name": "web", "DefaultSubset": "v1",
                "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}},
                "Failover": {"*": {"Service": "web-backup"}}
            }),
        ),
        (
            "service_intentions.json",
            json!({
                "Kind": "service-intentions", "Name": "db",
                "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}]
            }),
        ),
        (
            "proxy_defaults.json",
            json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "tcp"}}),
        ),
    ]
}

fn dns_query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(0x1234)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg.to_vec().expect("encodable")
}

fn csr(service: &str) -> String {
    let id = SpiffeId::service(TRUST_DOMAIN, "default", "dc1", service).expect("an id");
    generate_csr(&id).expect("a CSR").0
}

fn main() {
    // rpc_request: frames a client agent or a server sends.
    let reg: RegisterRequest = from(register());
    let requests = [
        (
            "apply_register.json",
            Request::Apply(Command::Register {
                req: Box::new(reg.clone()),
                now_ms: 1,
            }),
        ),
        (
            "apply_kv.json",
            Request::Apply(Command::Kv {
                op: KvOp::Set,
                entry: DirEntry {
                    key: "a".into(),
                    value: Some(b"1".to_vec()),
                    ..DirEntry::default()
                },
                now_ms: 1,
            }),
        ),
        (
            "http_catalog.json",
            Request::Http(HttpExchange {
                head: "GET".into(),
                uri: "/v1/catalog/service/web?filter=Service.Port%20%3D%3D%208080".into(),
                headers: vec![("x-consul-token".into(), "t".into())],
                body: Vec::new(),
            }),
        ),
        (
            "http_absolute.json",
            Request::Http(HttpExchange {
                head: "PUT".into(),
                uri: "http://127.0.0.1:8500/v1/kv/app/config?cas=0".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"hello".to_vec(),
            }),
        ),
        (
            "http_agent.json",
            Request::Http(HttpExchange {
                head: "GET".into(),
                uri: "/v1/agent/self".into(),
                ..HttpExchange::default()
            }),
        ),
        (
            "dns.json",
            Request::Dns {
                query: dns_query("web.service.consul.", RecordType::SRV, None),
                max_size: 512,
            },
        ),
        (
            "sign_leaf.json",
            Request::SignLeaf {
                csr: "-----BEGIN CERTIFICATE REQUEST-----\n".into(),
                service: "web".into(),
                datacenter: "dc1".into(),
            },
        ),
        (
            "node_record.json",
            Request::NodeRecord {
                node: "node1".into(),
            },
        ),
        (
            "add_voter.json",
            Request::AddVoter {
                id: 2,
                node: ServerNode {
                    addr: "10.0.0.2:8300".into(),
                    name: "s2".into(),
                    node_id: String::new(),
                },
            },
        ),
        (
            "session_renew.json",
            Request::SessionRenew {
                id: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
                ttl_ms: 10_000,
            },
        ),
    ];
    for (name, req) in &requests {
        write("rpc_request", name, json_of(req));
    }
    write(
        "rpc_request",
        "read_index.json",
        json_of(&Request::ReadIndex),
    );

    // raft_command: entries as the log holds them.
    let session: Session = from(json!({
        "ID": "adf4238a-882b-9ddc-4a9d-5b6758e4159e", "Name": "lock", "Node": "node1",
        "LockDelay": 15_000_000_000u64, "Behavior": "release", "TTL": "", "NodeChecks": ["serfHealth"]
    }));
    let ops: Vec<TxnOp> = from(txn());
    let entry = mesh_control::config_entry::parse(config_entries()[2].1.clone()).expect("an entry");
    let commands = [
        (
            "register.json",
            Command::Register {
                req: Box::new(reg.clone()),
                now_ms: 1,
            },
        ),
        (
            "deregister.json",
            Command::Deregister {
                req: from::<DeregisterRequest>(json!({"Node": "node1", "ServiceID": "web-1"})),
                now_ms: 2,
            },
        ),
        (
            "txn.json",
            Command::Txn {
                ops: ops.clone(),
                now_ms: 3,
            },
        ),
        (
            "batch.json",
            Command::Batch(vec![
                Command::Register {
                    req: Box::new(reg.clone()),
                    now_ms: 1,
                },
                Command::SessionCreate { session },
                Command::Kv {
                    op: KvOp::Lock,
                    entry: DirEntry {
                        key: "lock".into(),
                        session: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
                        ..DirEntry::default()
                    },
                    now_ms: 4,
                },
                Command::SessionDestroy {
                    id: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
                    now_ms: 5,
                },
            ]),
        ),
        (
            "config_set.json",
            Command::ConfigEntrySet {
                entry,
                cas: Some(0),
            },
        ),
        (
            "intention.json",
            Command::IntentionUpsert {
                source: "web".into(),
                destination: "db".into(),
                action: Some(Action::Allow),
                permissions: Vec::new(),
                description: "seed".into(),
            },
        ),
        ("reap.json", Command::KvReapTombstones { up_to: 3 }),
    ];
    for (name, cmd) in &commands {
        write("raft_command", name, json_of(cmd));
    }

    // write_body: what the HTTP write endpoints are sent.
    write("write_body", "catalog_register.json", json_of(&register()));
    write(
        "write_body",
        "catalog_deregister.json",
        json_of(&json!({"Node": "node1", "CheckID": "service:web-1"})),
    );
    write("write_body", "txn.json", json_of(&txn()));
    for (name, entry) in config_entries() {
        write("write_body", name, json_of(&entry));
    }
    write(
        "write_body",
        "agent_service.json",
        json_of(&json!({
            "name": "web", "port": 8080, "tags": ["v1"], "meta": {"version": "v1"},
            "check": {"http": "http://localhost:8080/health", "interval": "10s"},
            "connect": {"sidecar_service": {}}
        })),
    );
    write(
        "write_body",
        "agent_check.json",
        json_of(&json!({"Name": "mem", "TTL": "30s", "Notes": "seed"})),
    );

    // config_file: -config-file contents, JSON and HCL.
    write(
        "config_file",
        "agent.json",
        json_of(&json!({
            "datacenter": "dc1", "node_name": "node1", "server": true, "bootstrap_expect": 1,
            "ports": {"http": 8500, "dns": 8600}, "retry_join": ["10.0.0.2"],
            "limits": {"rpc_max_conns_per_client": 100, "rpc_handshake_timeout": "5s"}
        })),
    );
    write(
        "config_file",
        "service.json",
        json_of(&json!({"service": {
            "name": "web", "port": 8080, "tags": ["v1"],
            "checks": [{"tcp": "localhost:8080", "interval": "10s"}, {"ttl": "30s"}]
        }})),
    );
    write(
        "config_file",
        "service.hcl",
        r#"service {
  name = "web"
  port = 8080
  tags = ["v1", "primary"]
  meta = { version = "v1" }
  check {
    http     = "http://localhost:8080/health"
    interval = "10s"
  }
}
"#,
    );
    write(
        "config_file",
        "agent.hcl",
        r#"datacenter = "dc1"
node_name  = "node1"
server     = true
ports {
  http = 8500
}
# a comment
checks = [
  { name = "disk", args = ["/bin/true"], interval = "30s" },
]
"#,
    );
    write(
        "config_file",
        "router.hcl",
        r#"Kind = "service-router"
Name = "web"
Routes = [
  {
    Match { HTTP { PathPrefix = "/admin" } }
    Destination { Service = "admin" }
  },
]
"#,
    );

    // filter: filter= expressions.
    for (i, expr) in [
        r#"Service.Meta.version == v1 and "x" in Tags"#,
        r#"Checks.Status != "passing" or not (Service.Port == 8080)"#,
        r#"Node.Meta["foo-bar"] is not empty and Service.Tags contains primary"#,
        r#"Service.Service matches `^web-[0-9]+$` and "/Node/Meta/rack" == r1"#,
        r#"Checks.0.Status == critical and Score == -0.5 and Service.EnableTagOverride == false"#,
        r#"Service.Weights.Passing == 0x1 and Node.Address not matches "^10\\." and Big == 18446744073709551615"#,
    ]
    .iter()
    .enumerate()
    {
        write("filter", &format!("expr{i}"), expr);
    }

    // dns_query: queries as the listeners receive them.
    write(
        "dns_query",
        "web_srv",
        dns_query("web.service.consul.", RecordType::SRV, None),
    );
    write(
        "dns_query",
        "primary_web_a_edns",
        dns_query("primary.web.service.dc1.consul.", RecordType::A, Some(4096)),
    );
    write(
        "dns_query",
        "rfc2782_srv",
        dns_query("_web._tcp.service.consul.", RecordType::SRV, None),
    );
    write(
        "dns_query",
        "node_any",
        dns_query("node1.node.consul.", RecordType::ANY, None),
    );
    write(
        "dns_query",
        "connect_srv",
        dns_query("web.connect.mesh.", RecordType::SRV, Some(1232)),
    );
    write(
        "dns_query",
        "db_aaaa",
        dns_query("db.service.consul.", RecordType::AAAA, None),
    );
    write(
        "dns_query",
        "soa",
        dns_query("consul.", RecordType::SOA, None),
    );

    // csr: leaf CSRs in the fuzz CA's trust domain, and one from elsewhere.
    write("csr", "web.pem", csr("web"));
    write("csr", "long_name.pem", csr(&"a".repeat(80)));
    let other = SpiffeId::service(
        "99999999-0000-0000-0000-000000000000.consul",
        "default",
        "dc2",
        "db",
    )
    .expect("an id");
    write(
        "csr",
        "other_domain.pem",
        generate_csr(&other).expect("a CSR").0,
    );
}
