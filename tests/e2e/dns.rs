//! The DNS interface, over UDP and TCP.

use crate::support::Agent;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

fn build(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// Sends one UDP query and decodes the answer.
pub async fn query(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&build(name, rtype), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// The ports of the SRV records an answer holds, in answer order.
pub fn srv_ports(m: &Message) -> Vec<u16> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some(s.port()),
            _ => None,
        })
        .collect()
}

async fn query_tcp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q = build(name, rtype);
    s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

async fn register(a: &Agent, id: &str, tags: &[&str], port: u16, address: &str) {
    let body = serde_json::json!({"Name": "web", "ID": id, "Tags": tags, "Port": port, "Address": address});
    a.put_ok("/v1/agent/service/register", &body.to_string())
        .await;
}

#[tokio::test]
async fn service_node_and_negative_answers() {
    let a = Agent::start(&["-node=dns-node"]);
    register(&a, "web-1", &["v1"], 8081, "").await;
    register(&a, "web-2", &["v2"], 8082, "127.0.0.2").await;

    let m = query(a.dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let mut ips: Vec<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    assert_eq!(ips, vec!["127.0.0.1", "127.0.0.2"]);

    let m = query(a.dns, "web.service.consul.", RecordType::SRV).await;
    let mut ports = srv_ports(&m);
    ports.sort();
    assert_eq!(ports, vec![8081, 8082]);
    assert!(m
        .additionals()
        .iter()
        .any(|r| matches!(r.data(), RData::A(_))));
    assert!(m.answers().iter().any(|r| match r.data() {
        RData::SRV(s) => s.target().to_ascii() == "dns-node.node.dc1.consul.",
        _ => false,
    }));

    let m = query(a.dns, "v2.web.service.consul.", RecordType::SRV).await;
    assert_eq!(m.answers().len(), 1);
    let m = query(a.dns, "_web._v1.service.consul.", RecordType::SRV).await;
    assert_eq!(m.answers().len(), 1);
    let m = query(a.dns, "web.service.dc1.consul.", RecordType::A).await;
    assert_eq!(m.answers().len(), 2);

    let m = query(a.dns, "dns-node.node.consul.", RecordType::A).await;
    assert_eq!(m.answers().len(), 1);

    let m = query(a.dns, "nope.service.consul.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m
        .name_servers()
        .iter()
        .any(|r| r.record_type() == RecordType::SOA));
    let m = query(a.dns, "consul.", RecordType::SOA).await;
    assert_eq!(m.answers()[0].record_type(), RecordType::SOA);

    let m = query_tcp(a.dns, "web.service.consul.", RecordType::SRV).await;
    assert_eq!(m.answers().len(), 2);
}

#[tokio::test]
async fn large_answers_truncate_on_udp_and_fit_on_tcp() {
    let a = Agent::start(&[]);
    for i in 0..40u16 {
        let body = serde_json::json!({"Name": "big", "ID": format!("big-{i}"), "Port": 9000 + i,
            "Address": format!("127.0.1.{}", i + 1)});
        a.put_ok("/v1/agent/service/register", &body.to_string())
            .await;
    }
    let udp = query(a.dns, "big.service.consul.", RecordType::SRV).await;
    assert!(udp.answers().len() < 40);
    let tcp = query_tcp(a.dns, "big.service.consul.", RecordType::SRV).await;
    assert_eq!(tcp.answers().len(), 40);
    assert!(!tcp.truncated());
}

#[tokio::test]
async fn hostile_packets_do_not_hurt_the_server() {
    let a = Agent::start(&[]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        &[0u8; 600],
    ] {
        sock.send_to(junk, a.dns).await.unwrap();
    }
    let m = query(a.dns, "test-node.node.consul.", RecordType::A).await;
    assert_eq!(m.answers().len(), 1, "still answering");
}

#[tokio::test]
async fn a_custom_domain_replaces_consul() {
    let a = Agent::start(&["-domain=mesh", "-node=dom"]);
    register(&a, "web-1", &[], 80, "").await;
    let m = query(a.dns, "web.service.mesh.", RecordType::A).await;
    assert_eq!(m.answers().len(), 1);
    let m = query(a.dns, "dom.node.mesh.", RecordType::A).await;
    assert_eq!(m.answers().len(), 1);
    let m = query(a.dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);
}
