//! Parsing query names into lookups, following Consul's `agent/dns` router:
//! the rightmost kind label (`service`, `node`, `addr`, ...) splits the name
//! into the query parts on its left and the locality on its right.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{Name, RecordType};

/// A domain served, in canonical (lowercase) form.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    /// The zone apex as a name, e.g. `consul.`.
    pub name: Name,
    /// The apex's labels, lowercase, leftmost first.
    labels: Vec<Vec<u8>>,
}

impl Zone {
    /// A zone for a normalized domain such as `consul.`; `None` if it is not a
    /// valid name.
    pub fn new(domain: &str) -> Option<Self> {
        let name = Name::from_ascii(domain).ok()?;
        let labels: Vec<Vec<u8>> = name.iter().map(<[u8]>::to_ascii_lowercase).collect();
        if labels.is_empty() {
            return None;
        }
        Some(Self { name, labels })
    }

    /// The labels of `qname` left of this zone, lowercased, if `qname` is in
    /// this zone.
    pub fn relative_labels(&self, qname: &Name) -> Option<Vec<String>> {
        let labels: Vec<&[u8]> = qname.iter().collect();
        let rest = labels.len().checked_sub(self.labels.len())?;
        let in_zone = labels[rest..]
            .iter()
            .zip(&self.labels)
            .all(|(q, z)| q.eq_ignore_ascii_case(z));
        in_zone.then(|| {
            labels[..rest]
                .iter()
                .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
                .collect()
        })
    }
}

/// The zone `qname` falls in (the most specific one) and its labels left of
/// it.
pub(crate) fn locate<'z>(zones: &'z [Zone], qname: &Name) -> Option<(&'z Zone, Vec<String>)> {
    zones
        .iter()
        .filter_map(|zone| zone.relative_labels(qname).map(|rest| (zone, rest)))
        .max_by_key(|(zone, _)| zone.labels.len())
}

/// What a query name asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The zone apex, or a name that exists only because names exist below
    /// it (`service.consul.`): it has no records of its own.
    Empty {
        /// Whether this is the apex itself.
        apex: bool,
    },
    /// Instances of a service: `[tag.]name.service[.dc]` or
    /// `_name._tag.service[.dc]`.
    Service {
        /// The datacenter label, if given.
        dc: Option<String>,
        /// The service name.
        name: String,
        /// Only instances carrying this tag.
        tag: Option<String>,
    },
    /// A node: `name.node[.dc]`.
    Node {
        /// The datacenter label, if given.
        dc: Option<String>,
        /// The node name (dots allowed).
        name: String,
    },
    /// The Connect proxies of a service: `name.connect[.dc]`.
    Connect {
        /// The datacenter label, if given.
        dc: Option<String>,
        /// The destination service name.
        name: String,
    },
    /// An address spelled in hex: `c0a80001.addr[.dc]`.
    Addr(IpAddr),
    /// A name that does not exist (including Consul forms mesh does not serve:
    /// prepared queries, `ingress`, `virtual`, peers).
    NotFound,
}

/// Parses the labels left of the zone (lowercase, leftmost first).
pub(crate) fn parse(labels: &[String], qtype: RecordType) -> Lookup {
    if labels.is_empty() {
        return Lookup::Empty { apex: true };
    }
    // The rightmost kind label wins. An SRV query may leave out `service`
    // when it uses the RFC 2782 form (`_web._tcp.consul.`), as in Consul.
    let mut found = None;
    for (i, label) in labels.iter().enumerate().rev() {
        match label.as_str() {
            "service" | "node" | "addr" | "query" | "connect" | "ingress" | "virtual" => {
                found = Some((label.as_str(), &labels[..i], &labels[i + 1..]));
                break;
            }
            _ if qtype == RecordType::SRV && label.starts_with('_') => {
                found = Some(("service", &labels[..=i], &labels[i + 1..]));
                break;
            }
            _ => {}
        }
    }
    let Some((kind, parts, suffixes)) = found else {
        return Lookup::NotFound;
    };
    let Some(dc) = locality(suffixes) else {
        return Lookup::NotFound;
    };
    if parts.is_empty() {
        return Lookup::Empty { apex: false };
    }
    match kind {
        "service" => service(parts, dc),
        "node" => Lookup::Node {
            dc,
            name: parts.join("."),
        },
        "connect" => match parts {
            [name] => Lookup::Connect {
                dc,
                name: name.clone(),
            },
            _ => Lookup::NotFound,
        },
        "addr" => match parts {
            [hex] => decode_addr(hex).map_or(Lookup::NotFound, Lookup::Addr),
            _ => Lookup::NotFound,
        },
        _ => Lookup::NotFound,
    }
}

/// The datacenter named right of the kind label: nothing, `dc1` or
/// `dc1.dc`. `None` when the suffix is not a datacenter (peers, partitions).
fn locality(suffixes: &[String]) -> Option<Option<String>> {
    match suffixes {
        [] => Some(None),
        [dc] => Some(Some(dc.clone())),
        [dc, kind] if kind == "dc" => Some(Some(dc.clone())),
        _ => None,
    }
}

fn service(parts: &[String], dc: Option<String>) -> Lookup {
    // RFC 2782: _name._tag; `_tcp` is the default protocol and filters nothing.
    if let [name, tag] = parts {
        if let (Some(name), Some(tag)) = (name.strip_prefix('_'), tag.strip_prefix('_')) {
            let tag = (!tag.is_empty() && tag != "tcp").then(|| tag.to_owned());
            return Lookup::Service {
                dc,
                name: name.to_owned(),
                tag,
            };
        }
    }
    // tag[.more].name: the tag may itself hold dots.
    let Some((name, tag)) = parts.split_last() else {
        return Lookup::NotFound;
    };
    Lookup::Service {
        dc,
        name: name.clone(),
        tag: (!tag.is_empty()).then(|| tag.join(".")),
    }
}

/// `c0a80001` → 192.168.0.1; 32 hex digits → an IPv6 address.
fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes = decode_hex(hex)?;
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let pairs = hex.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    pairs
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<String> {
        name.split('.')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn svc(dc: Option<&str>, name: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service {
            dc: dc.map(str::to_owned),
            name: name.to_owned(),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn service_forms() {
        let a = RecordType::A;
        assert_eq!(parse(&labels("web.service"), a), svc(None, "web", None));
        assert_eq!(
            parse(&labels("web.service.dc2"), a),
            svc(Some("dc2"), "web", None)
        );
        assert_eq!(
            parse(&labels("web.service.dc2.dc"), a),
            svc(Some("dc2"), "web", None)
        );
        assert_eq!(
            parse(&labels("v1.primary.web.service"), a),
            svc(None, "web", Some("v1.primary"))
        );
        assert_eq!(
            parse(&labels("_web._tcp.service"), RecordType::SRV),
            svc(None, "web", None)
        );
        assert_eq!(
            parse(&labels("_web._udp.service"), RecordType::SRV),
            svc(None, "web", Some("udp"))
        );
        assert_eq!(
            parse(&labels("_web._tcp.dc2"), RecordType::SRV),
            svc(Some("dc2"), "web", None)
        );
        assert_eq!(parse(&labels("_web._tcp.dc2"), a), Lookup::NotFound);
        assert_eq!(
            parse(&labels("web.service.a.b.c"), a),
            Lookup::NotFound,
            "too many locality labels"
        );
    }

    #[test]
    fn other_forms() {
        let a = RecordType::A;
        assert_eq!(
            parse(&labels("db.local.node.dc1"), a),
            Lookup::Node {
                dc: Some("dc1".into()),
                name: "db.local".into()
            }
        );
        assert_eq!(
            parse(&labels("7f000001.addr.dc1"), a),
            Lookup::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse(&labels("20010db8000000000000000000000001.addr"), a),
            Lookup::Addr("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse(&labels("7f0000.addr"), a), Lookup::NotFound);
        assert_eq!(parse(&labels("zz000001.addr"), a), Lookup::NotFound);
        assert_eq!(parse(&labels("q.query"), a), Lookup::NotFound);
        assert_eq!(
            parse(&labels("web.connect.dc2"), a),
            Lookup::Connect {
                dc: Some("dc2".into()),
                name: "web".into()
            }
        );
        assert_eq!(parse(&labels("a.web.connect"), a), Lookup::NotFound);
        assert_eq!(parse(&labels("nothing"), a), Lookup::NotFound);
        assert_eq!(parse(&[], a), Lookup::Empty { apex: true });
        assert_eq!(parse(&labels("service"), a), Lookup::Empty { apex: false });
    }

    #[test]
    fn zones_match_case_insensitively() {
        let zones = [
            Zone::new("consul.").unwrap(),
            Zone::new("mesh.example.").unwrap(),
        ];
        let qname = Name::from_ascii("Web.Service.CONSUL.").unwrap();
        let (zone, rest) = locate(&zones, &qname).unwrap();
        assert_eq!(zone.name, Name::from_ascii("consul.").unwrap());
        assert_eq!(rest, ["web", "service"]);
        let qname = Name::from_ascii("db.node.Mesh.Example.").unwrap();
        assert_eq!(locate(&zones, &qname).unwrap().1, ["db", "node"]);
        assert!(locate(&zones, &Name::from_ascii("example.com.").unwrap()).is_none());
        assert!(locate(&zones, &Name::root()).is_none());
    }
}
