//! The DNS server: one query answered as a pure function, and the UDP and
//! TCP loops around it.

use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::config::DnsConfig;
use crate::names::{self, Zone};
use crate::resolve::Resolver;
use crate::truncate::{self, Limits};
use crate::Catalog;

/// Size of a DNS message on UDP without EDNS0 (RFC 1035).
const CLASSIC_UDP_SIZE: usize = 512;

/// Largest UDP response sent whatever the client advertises: 64 KiB less
/// the IP and UDP headers (Consul's `maxUDPDatagramSize`).
const MAX_UDP_SIZE: usize = 65535 - 68;

/// Largest message TCP framing can carry.
const MAX_TCP_SIZE: usize = 65535;

/// Consul never returns more than this many answers to a UDP client without
/// EDNS0, whatever `udp_answer_limit` says (`maxUDPAnswerLimit`).
const MAX_UDP_ANSWER_LIMIT: usize = 8;

/// Consecutive UDP receive errors after which `serve` gives up.
const MAX_UDP_ERRORS: u32 = 100;

/// Pause after a failed TCP accept (out of file descriptors, say), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The agent's DNS interface: answers questions about the catalog.
pub struct DnsServer {
    config: DnsConfig,
    zones: Vec<Zone>,
    catalog: Arc<dyn Catalog>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// A server answering for `config.domain` (and `config.alt_domain`) from
    /// `catalog`. The domains are normalized; an unusable one falls back to
    /// `consul.` (check with [`DnsConfig::validate`] first to report it).
    pub fn new(config: DnsConfig, catalog: Arc<dyn Catalog>) -> Self {
        let config = config.normalized();
        let zones = std::iter::once(config.domain.as_str())
            .chain(config.alt_domain.as_deref())
            .filter_map(Zone::new)
            .collect();
        Self {
            config,
            zones,
            catalog,
        }
    }

    /// The settings in force (domains normalized).
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Answers one query message: wire bytes in, wire bytes out.
    ///
    /// `max_size` is what the transport carries: 65535 for TCP; for UDP the
    /// payload limit, 512 unless known better. A UDP query with EDNS0 is
    /// answered within the payload size it advertises instead (at least
    /// 512). Without EDNS0 on UDP, at most `udp_answer_limit` answers are
    /// returned, as in Consul.
    ///
    /// Never panics on hostile input: a message that cannot be parsed gets
    /// FORMERR if its header can be read; unreadable input and messages that
    /// are themselves responses get `None` (no reply).
    pub fn answer(&self, query: &[u8], max_size: usize) -> Option<Vec<u8>> {
        let header = Header::read(&mut BinDecoder::new(query)).ok()?;
        if header.message_type() == MessageType::Response {
            return None;
        }
        if header.op_code() != OpCode::Query {
            return Some(error_reply(&header, ResponseCode::NotImp));
        }
        // The message shapes a query may take (as miekg/dns accepts them);
        // this also bounds what decoding allocates.
        if header.query_count() != 1
            || header.answer_count() > 1
            || header.name_server_count() > 1
            || header.additional_count() > 2
        {
            return Some(error_reply(&header, ResponseCode::FormErr));
        }
        // Decoding is hickory's; a panic in it must not take the server down.
        let decoded = panic::catch_unwind(AssertUnwindSafe(|| Message::from_vec(query)));
        let Ok(Ok(request)) = decoded else {
            return Some(error_reply(&header, ResponseCode::FormErr));
        };
        let reply = self.respond(&request, max_size);
        match reply {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::warn!(%err, "DNS response could not be encoded");
                Some(error_reply(&header, ResponseCode::ServFail))
            }
        }
    }

    fn respond(
        &self,
        request: &Message,
        max_size: usize,
    ) -> Result<Vec<u8>, hickory_proto::ProtoError> {
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(request.recursion_desired())
            .set_checking_disabled(request.checking_disabled());
        // Echo the question as asked: resolvers that randomize the case of
        // names (dns-0x20) check it.
        let Some(question) = request.query().cloned() else {
            response.set_response_code(ResponseCode::FormErr);
            return response.to_vec();
        };
        response.add_query(question.clone());

        let client_edns = request.extensions().as_ref();
        if let Some(edns) = client_edns {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(CLASSIC_UDP_SIZE as u16));
            response.set_edns(ours);
            if edns.version() > 0 {
                response.set_response_code(ResponseCode::BADVERS);
                return response.to_vec();
            }
        }

        let qname = question.name();
        let qtype = question.query_type();
        match names::locate(&self.zones, qname) {
            // Not ours, and mesh has no recursors: refuse, as Consul does.
            None => {
                response.set_response_code(ResponseCode::Refused);
            }
            Some(_) if matches!(qtype, RecordType::AXFR | RecordType::IXFR) => {
                response
                    .set_authoritative(true)
                    .set_response_code(ResponseCode::NotImp);
            }
            Some((zone, labels)) => {
                let resolver = Resolver {
                    config: &self.config,
                    zones: &self.zones,
                    catalog: self.catalog.as_ref(),
                    edns: client_edns.is_some(),
                };
                let reply = resolver.resolve(zone, qname, &labels, qtype);
                response
                    .set_authoritative(true)
                    .set_response_code(reply.rcode);
                *response.answers_mut() = reply.answers;
                *response.name_servers_mut() = reply.authority;
                *response.additionals_mut() = reply.additional;
            }
        }

        let limits = if max_size >= MAX_TCP_SIZE {
            Limits {
                max_size: MAX_TCP_SIZE,
                max_answers: None,
                truncate_on_limit: false,
            }
        } else {
            let max_size = match client_edns {
                Some(edns) => usize::from(edns.max_payload()).clamp(CLASSIC_UDP_SIZE, MAX_UDP_SIZE),
                None => max_size.clamp(CLASSIC_UDP_SIZE, MAX_UDP_SIZE),
            };
            // Consul limits the answer count only for classic 512-byte clients.
            let max_answers = (max_size == CLASSIC_UDP_SIZE)
                .then(|| self.config.udp_answer_limit.clamp(1, MAX_UDP_ANSWER_LIMIT));
            Limits {
                max_size,
                max_answers,
                truncate_on_limit: self.config.enable_truncate,
            }
        };
        truncate::encode(&mut response, limits)
    }

    /// Serves on an already-bound UDP socket and TCP listener until the
    /// future is dropped (which also closes every open TCP connection).
    ///
    /// UDP queries are answered inline, in arrival order; each TCP connection
    /// gets a task of its own, answering its queries (2-byte length framing)
    /// one after another until the client closes it or stays idle for
    /// `tcp_idle_timeout`.
    pub async fn serve(self: Arc<Self>, udp: UdpSocket, tcp: TcpListener) -> io::Result<()> {
        tokio::try_join!(self.clone().serve_udp(udp), self.serve_tcp(tcp))?;
        Ok(())
    }

    async fn serve_udp(self: Arc<Self>, socket: UdpSocket) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_TCP_SIZE];
        let mut errors = 0;
        loop {
            let (len, peer) = match socket.recv_from(&mut buf).await {
                Ok(received) => {
                    errors = 0;
                    received
                }
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one client, not the socket.
                Err(err) => {
                    errors += 1;
                    if errors >= MAX_UDP_ERRORS {
                        return Err(err);
                    }
                    tracing::debug!(%err, "DNS UDP receive failed");
                    continue;
                }
            };
            let Some(response) = self.answer(&buf[..len], CLASSIC_UDP_SIZE) else {
                continue;
            };
            if let Err(err) = socket.send_to(&response, peer).await {
                tracing::debug!(%err, %peer, "DNS UDP send failed");
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        // Connections live in this set, so dropping the future ends them.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= self.config.tcp_max_connections {
                            tracing::debug!(%peer, "too many DNS TCP connections; closing");
                            continue;
                        }
                        connections.spawn(self.clone().serve_connection(stream, peer));
                    }
                    Err(err) => {
                        tracing::warn!(%err, "DNS TCP accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    async fn serve_connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let idle = self.config.tcp_idle_timeout;
        let io_timeout = self.config.tcp_io_timeout;
        let mut query = Vec::new();
        let mut out = Vec::new();
        loop {
            let mut len = [0u8; 2];
            match timeout(idle, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                // Closed, failed or idle: the connection is done.
                _ => return,
            }
            let len = usize::from(u16::from_be_bytes(len));
            if len == 0 {
                return;
            }
            query.resize(len, 0);
            match timeout(io_timeout, stream.read_exact(&mut query)).await {
                Ok(Ok(_)) => {}
                _ => {
                    tracing::debug!(%peer, "DNS TCP query not read in time");
                    return;
                }
            }
            let Some(response) = self.answer(&query, MAX_TCP_SIZE) else {
                continue;
            };
            let Ok(response_len) = u16::try_from(response.len()) else {
                return;
            };
            // One write, so the length and the message leave in one segment.
            out.clear();
            out.extend_from_slice(&response_len.to_be_bytes());
            out.extend_from_slice(&response);
            match timeout(io_timeout, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

/// A header-only reply: FORMERR, NOTIMP or SERVFAIL.
fn error_reply(header: &Header, rcode: ResponseCode) -> Vec<u8> {
    let mut reply = Message::error_msg(header.id(), header.op_code(), rcode);
    reply.set_recursion_desired(header.recursion_desired());
    // Encoding a header-only message cannot fail; an empty reply would only
    // make the client wait for its timeout.
    reply.to_vec().unwrap_or_default()
}
