//! The DNS server: one query answered as a pure function from the catalog
//! (the UDP and TCP loops around it are in [`crate::transport`]).

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::net::{TcpListener, UdpSocket};

use crate::config::DnsConfig;
use crate::names::{self, Zone};
use crate::resolve::Resolver;
use crate::transport::{Answer, AnswerFuture, TcpLimits, CLASSIC_UDP_SIZE, MAX_TCP_SIZE};
use crate::truncate::{self, Limits};
use crate::Catalog;

/// Largest UDP response sent whatever the client advertises: 64 KiB less
/// the IP and UDP headers (Consul's `maxUDPDatagramSize`).
const MAX_UDP_SIZE: usize = 65535 - 68;

/// Consul never returns more than this many answers to a UDP client without
/// EDNS0, whatever `udp_answer_limit` says (`maxUDPAnswerLimit`).
const MAX_UDP_ANSWER_LIMIT: usize = 8;

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
    /// future is dropped; see [`crate::transport::serve`].
    pub async fn serve(self: Arc<Self>, udp: UdpSocket, tcp: TcpListener) -> io::Result<()> {
        let limits = TcpLimits::from(&self.config);
        crate::transport::serve(self, limits, udp, tcp).await
    }
}

impl Answer for DnsServer {
    fn answer(&self, query: Vec<u8>, max_size: usize) -> AnswerFuture<'_> {
        Box::pin(std::future::ready(DnsServer::answer(
            self, &query, max_size,
        )))
    }
}

/// SERVFAIL for `query`, for an answerer that could not get an answer (a
/// client agent that reached no server); `None` if its header is unreadable
/// or it is itself a response.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    (header.message_type() == MessageType::Query)
        .then(|| error_reply(&header, ResponseCode::ServFail))
}

/// A header-only reply: FORMERR, NOTIMP or SERVFAIL.
fn error_reply(header: &Header, rcode: ResponseCode) -> Vec<u8> {
    let mut reply = Message::error_msg(header.id(), header.op_code(), rcode);
    reply.set_recursion_desired(header.recursion_desired());
    // Encoding a header-only message cannot fail; an empty reply would only
    // make the client wait for its timeout.
    reply.to_vec().unwrap_or_default()
}
