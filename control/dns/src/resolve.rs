//! Turning a question into answer sections, as Consul's DNS server does.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use crate::config::DnsConfig;
use crate::names::{self, Lookup, Zone};
use crate::records;
use crate::{Catalog, ServiceInstance};

/// How many CNAME hops inside our own zones are followed (Consul's
/// `maxRecursionLevelDefault`).
const MAX_CNAME_DEPTH: u8 = 3;

/// Records added when following a CNAME for a client without EDNS0
/// (Consul's `maxRecurseRecords`).
const MAX_CNAME_RECORDS: usize = 5;

/// The name of the service every server registers; NS records name its nodes.
const SERVER_SERVICE: &str = "consul";

/// The sections of a response.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    /// NOERROR or NXDOMAIN.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section.
    pub authority: Vec<Record>,
    /// The additional section (without the OPT record).
    pub additional: Vec<Record>,
}

/// What one query needs to resolve names.
pub(crate) struct Resolver<'a> {
    /// The server's (normalized) settings.
    pub config: &'a DnsConfig,
    /// Every zone served.
    pub zones: &'a [Zone],
    /// The catalog asked.
    pub catalog: &'a dyn Catalog,
    /// Whether the client sent EDNS0 (lifts the CNAME record cap).
    pub edns: bool,
}

/// How a service instance is reached.
enum Target<'i> {
    /// Through its node's IP address.
    Node(IpAddr),
    /// Through an IP address of its own.
    Addr(IpAddr),
    /// Through a hostname (an external service).
    Host(&'i str),
}

impl Resolver<'_> {
    /// Answers `qtype` for `qname`, which lies in `zone` with `labels` left
    /// of it. Negative answers carry the zone's SOA in the authority section.
    pub fn resolve(
        &self,
        zone: &Zone,
        qname: &Name,
        labels: &[String],
        qtype: RecordType,
    ) -> Reply {
        let mut reply = self.lookup(zone, qname, labels, qtype, MAX_CNAME_DEPTH);
        if reply.answers.is_empty() && reply.authority.is_empty() {
            // NXDOMAIN, or NODATA per RFC 2308: the SOA tells caches how long
            // to remember the absence.
            reply
                .authority
                .push(records::soa(&zone.name, &self.config.soa));
        }
        reply
    }

    fn lookup(
        &self,
        zone: &Zone,
        qname: &Name,
        labels: &[String],
        qtype: RecordType,
        depth: u8,
    ) -> Reply {
        // SOA and NS questions are about the zone whatever name they carry,
        // as in Consul.
        match qtype {
            RecordType::SOA => {
                let (ns, glue) = self.name_servers(zone);
                return Reply {
                    answers: vec![records::soa(&zone.name, &self.config.soa)],
                    authority: ns,
                    additional: glue,
                    ..Reply::default()
                };
            }
            RecordType::NS => {
                let (ns, glue) = self.name_servers(zone);
                return Reply {
                    answers: ns,
                    additional: glue,
                    ..Reply::default()
                };
            }
            _ => {}
        }
        match names::parse(labels, qtype) {
            Lookup::Empty { apex: true } if qtype == RecordType::ANY => {
                let (ns, glue) = self.name_servers(zone);
                let mut answers = vec![records::soa(&zone.name, &self.config.soa)];
                answers.extend(ns);
                Reply {
                    answers,
                    additional: glue,
                    ..Reply::default()
                }
            }
            Lookup::Empty { .. } => Reply::default(),
            Lookup::Service { dc, name, tag } => {
                self.service(zone, qname, qtype, dc, &name, tag.as_deref(), false, depth)
            }
            Lookup::Connect { dc, name } => {
                self.service(zone, qname, qtype, dc, &name, None, true, depth)
            }
            Lookup::Node { dc, name } => self.node(qname, qtype, dc, &name, depth),
            Lookup::Addr(ip) => {
                let record = records::address(qname.clone(), self.config.node_ttl, ip);
                if wants(qtype, ip) {
                    Reply {
                        answers: vec![record],
                        ..Reply::default()
                    }
                } else {
                    // Consul hands the address over in the additional section.
                    Reply {
                        additional: vec![record],
                        ..Reply::default()
                    }
                }
            }
            Lookup::NotFound => not_found(),
        }
    }

    /// The datacenter a query names, spelled as the catalog spells it;
    /// `None` if the catalog does not know it.
    fn datacenter(&self, dc: Option<String>) -> Option<String> {
        match dc {
            None => Some(self.config.datacenter.clone()),
            Some(dc) if dc.eq_ignore_ascii_case(&self.config.datacenter) => {
                Some(self.config.datacenter.clone())
            }
            Some(dc) => self
                .catalog
                .datacenters()
                .into_iter()
                .find(|known| known.eq_ignore_ascii_case(&dc)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn service(
        &self,
        zone: &Zone,
        qname: &Name,
        qtype: RecordType,
        dc: Option<String>,
        name: &str,
        tag: Option<&str>,
        connect: bool,
        depth: u8,
    ) -> Reply {
        let Some(dc) = self.datacenter(dc) else {
            return not_found();
        };
        let mut instances = if connect {
            self.catalog.connect_instances(&dc, name)
        } else {
            self.catalog.service_instances(&dc, name, tag)
        };
        if instances.is_empty() {
            return not_found();
        }
        instances.shuffle(&mut rand::thread_rng());
        if qtype == RecordType::SRV {
            self.service_srv(zone, qname, &dc, &instances, depth)
        } else {
            self.service_addresses(qname, qtype, &instances, depth)
        }
    }

    /// SRV answers; the additional section resolves each target.
    fn service_srv(
        &self,
        zone: &Zone,
        qname: &Name,
        dc: &str,
        instances: &[ServiceInstance],
        depth: u8,
    ) -> Reply {
        let ttl = self.config.service_ttl;
        let mut reply = Reply::default();
        let mut seen = HashSet::with_capacity(instances.len());
        let mut resolved_targets = HashSet::with_capacity(instances.len());
        let mut nodes_with_meta = HashSet::new();
        for instance in instances {
            // One answer per node, address and port, as Consul.
            if !seen.insert((
                instance.node.as_str(),
                instance.service_address.as_str(),
                instance.port,
            )) {
                continue;
            }
            let node_name = records::node_name(&instance.node, dc, &zone.name);
            let (target, extra) = match target(instance, qname) {
                Some(Target::Node(ip)) => {
                    let Some(name) = node_name.clone() else {
                        continue;
                    };
                    let extra = vec![records::address(name.clone(), ttl, ip)];
                    (name, extra)
                }
                Some(Target::Addr(ip)) => {
                    let Some(name) = records::addr_name(ip, dc, &zone.name) else {
                        continue;
                    };
                    let extra = vec![records::address(name.clone(), ttl, ip)];
                    (name, extra)
                }
                Some(Target::Host(host)) => {
                    let Some(name) = records::host_name(host) else {
                        continue;
                    };
                    let extra = self.follow_cname(&name, ttl, depth);
                    (name, extra)
                }
                None => continue,
            };
            reply.answers.push(records::srv(
                qname.clone(),
                ttl,
                instance.port,
                target.clone(),
            ));
            if resolved_targets.insert(target) {
                reply.additional.extend(extra);
            }
            if self.config.node_meta_txt
                && !instance.node_meta.is_empty()
                && nodes_with_meta.insert(instance.node.as_str())
            {
                if let Some(name) = node_name {
                    reply
                        .additional
                        .extend(records::meta_txt(&name, ttl, &instance.node_meta));
                }
            }
        }
        reply
    }

    /// A/AAAA answers named after the question; a CNAME when the only
    /// addresses are hostnames.
    fn service_addresses(
        &self,
        qname: &Name,
        qtype: RecordType,
        instances: &[ServiceInstance],
        depth: u8,
    ) -> Reply {
        let ttl = self.config.service_ttl;
        let limit = self.config.a_record_limit;
        let mut reply = Reply::default();
        let mut seen = HashSet::with_capacity(instances.len());
        let mut first_cname: Option<Vec<Record>> = None;
        for instance in instances {
            match target(instance, qname) {
                Some(Target::Node(ip) | Target::Addr(ip)) => {
                    if !wants(qtype, ip) || !seen.insert(ip) {
                        continue;
                    }
                    reply.answers.push(records::address(qname.clone(), ttl, ip));
                    if limit > 0 && reply.answers.len() >= limit {
                        break;
                    }
                }
                Some(Target::Host(host)) if first_cname.is_none() => {
                    if let Some(target) = records::host_name(host) {
                        let mut chain = vec![records::cname(qname.clone(), ttl, target.clone())];
                        chain.extend(self.follow_cname(&target, ttl, depth));
                        first_cname = Some(chain);
                    }
                }
                Some(Target::Host(_)) | None => {}
            }
        }
        // Consul answers with a CNAME only when no instance has an address.
        if reply.answers.is_empty() {
            if let Some(chain) = first_cname {
                reply.answers = chain;
            }
        }
        reply
    }

    fn node(
        &self,
        qname: &Name,
        qtype: RecordType,
        dc: Option<String>,
        name: &str,
        depth: u8,
    ) -> Reply {
        let Some(dc) = self.datacenter(dc) else {
            return not_found();
        };
        let Some(node) = self.catalog.node(&dc, name) else {
            return not_found();
        };
        let mut reply = Reply::default();
        if !matches!(
            qtype,
            RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::TXT
        ) {
            return reply;
        }
        let ttl = self.config.node_ttl;
        if qtype != RecordType::TXT {
            match node.address.trim().parse::<IpAddr>() {
                Ok(ip) if wants(qtype, ip) => {
                    reply.answers.push(records::address(qname.clone(), ttl, ip));
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(target) = records::host_name(&node.address) {
                        reply
                            .answers
                            .push(records::cname(qname.clone(), ttl, target.clone()));
                        reply.answers.extend(self.follow_cname(&target, ttl, depth));
                    }
                }
            }
        }
        if !node.meta.is_empty() {
            let txt = records::meta_txt(qname, ttl, &node.meta);
            if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                reply.answers.extend(txt);
            } else if self.config.node_meta_txt {
                reply.additional.extend(txt);
            }
        }
        reply
    }

    /// Records for a CNAME target inside one of our zones (resolved as an
    /// ANY query, at most `depth` hops); nothing for names elsewhere, since
    /// mesh has no recursors.
    fn follow_cname(&self, target: &Name, ttl: u32, depth: u8) -> Vec<Record> {
        if depth == 0 {
            return Vec::new();
        }
        let Some((zone, labels)) = names::locate(self.zones, target) else {
            return Vec::new();
        };
        let reply = self.lookup(zone, target, &labels, RecordType::ANY, depth - 1);
        let cap = if self.edns {
            usize::MAX
        } else {
            MAX_CNAME_RECORDS
        };
        reply
            .answers
            .into_iter()
            .filter(|r| {
                matches!(
                    r.record_type(),
                    RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::TXT
                )
            })
            .take(cap)
            .map(|mut r| {
                r.set_ttl(ttl);
                r
            })
            .collect()
    }

    /// NS records naming up to three servers of the local datacenter, with
    /// their addresses as glue; this agent itself when the catalog lists no
    /// servers.
    fn name_servers(&self, zone: &Zone) -> (Vec<Record>, Vec<Record>) {
        let ttl = self.config.node_ttl;
        let dc = &self.config.datacenter;
        let mut servers = self.catalog.service_instances(dc, SERVER_SERVICE, None);
        servers.shuffle(&mut rand::thread_rng());
        let candidates = servers
            .iter()
            .map(|s| {
                (
                    s.node.as_str(),
                    s.node_address.trim().parse::<IpAddr>().ok(),
                )
            })
            .chain(std::iter::once((
                self.config.node_name.as_str(),
                Some(self.config.server_address),
            )));
        let (mut ns, mut glue) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for (i, (node, ip)) in candidates.enumerate() {
            // The agent itself stands in only for an empty server list.
            if i == servers.len() && !ns.is_empty() {
                break;
            }
            if !valid_node_label(node) {
                continue;
            }
            let lower = node.to_ascii_lowercase();
            let Some(name) = records::node_name(&lower, &dc.to_ascii_lowercase(), &zone.name)
            else {
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            ns.push(records::ns(&zone.name, ttl, name.clone()));
            if let Some(ip) = ip {
                glue.push(records::address(name, ttl, ip));
            }
            if ns.len() >= 3 {
                break;
            }
        }
        (ns, glue)
    }
}

/// Whether an address answers a question of type `qtype`.
fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::ANY => true,
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        _ => false,
    }
}

/// How `instance` is reached, following Consul: the service address when
/// set, else the node's; a hostname service address equal to the question
/// itself falls back to the node's IP.
fn target<'i>(instance: &'i ServiceInstance, qname: &Name) -> Option<Target<'i>> {
    let service = instance.service_address.trim();
    let node = instance.node_address.trim();
    let node_ip = node.parse::<IpAddr>().ok();
    if service.is_empty() {
        return match node_ip {
            Some(ip) => Some(Target::Node(ip)),
            None if node.is_empty() => None,
            None => Some(Target::Host(node)),
        };
    }
    if let Ok(ip) = service.parse::<IpAddr>() {
        return Some(if node_ip == Some(ip) {
            Target::Node(ip)
        } else {
            Target::Addr(ip)
        });
    }
    if let Some(ip) = node_ip {
        if records::host_name(service).is_some_and(|name| &name == qname) {
            return Some(Target::Node(ip));
        }
    }
    Some(Target::Host(service))
}

/// Consul skips servers whose node name is not a plain DNS label in NS
/// answers (`InvalidNameRe`).
fn valid_node_label(node: &str) -> bool {
    !node.is_empty() && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn not_found() -> Reply {
    Reply {
        rcode: ResponseCode::NXDomain,
        ..Reply::default()
    }
}

/// The names SRV answers point at, for keeping the additional section in
/// step with trimmed answers.
pub(crate) fn srv_target(record: &Record) -> Option<&Name> {
    match record.data() {
        RData::SRV(srv) => Some(srv.target()),
        _ => None,
    }
}
