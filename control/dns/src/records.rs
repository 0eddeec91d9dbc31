//! Building resource records and the names Consul gives their targets.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};

use crate::config::SoaConfig;

/// The zone's SOA: `ns.<zone>`, `hostmaster.<zone>`, serial = unix time; its
/// TTL is the negative-caching TTL, as in Consul.
pub(crate) fn soa(zone: &Name, cfg: &SoaConfig) -> Record {
    let prefixed = |label: &str| {
        Name::from_labels([label.as_bytes()])
            .and_then(|name| name.append_name(zone))
            .unwrap_or_else(|_| zone.clone())
    };
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let timer = |secs: u32| i32::try_from(secs).unwrap_or(i32::MAX);
    let rdata = SOA::new(
        prefixed("ns"),
        prefixed("hostmaster"),
        serial,
        timer(cfg.refresh),
        timer(cfg.retry),
        timer(cfg.expire),
        cfg.min_ttl,
    );
    Record::from_rdata(zone.clone(), cfg.min_ttl, RData::SOA(rdata))
}

/// An NS record for the zone naming `server`.
pub(crate) fn ns(zone: &Name, ttl: u32, server: Name) -> Record {
    Record::from_rdata(zone.clone(), ttl, RData::NS(NS(server)))
}

/// An A or AAAA record, as the address family requires.
pub(crate) fn address(name: Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

/// An SRV record with Consul's priority and default weight (1 and 1).
pub(crate) fn srv(name: Name, ttl: u32, port: u16, target: Name) -> Record {
    Record::from_rdata(name, ttl, RData::SRV(SRV::new(1, 1, port, target)))
}

/// A CNAME record.
pub(crate) fn cname(name: Name, ttl: u32, target: Name) -> Record {
    Record::from_rdata(name, ttl, RData::CNAME(CNAME(target)))
}

/// One TXT record per metadata entry, encoded as Consul does: `key=value`
/// per RFC 1464, or the bare value for keys starting with `rfc1035-`.
pub(crate) fn meta_txt(name: &Name, ttl: u32, meta: &BTreeMap<String, String>) -> Vec<Record> {
    meta.iter()
        .map(|(key, value)| {
            let text = if key.to_ascii_lowercase().starts_with("rfc1035-") {
                value.clone()
            } else {
                rfc1464(key, value)
            };
            // A character-string holds at most 255 bytes; longer text is
            // split over several strings of the same record.
            let chunks: Vec<&[u8]> = if text.is_empty() {
                vec![&[][..]]
            } else {
                text.as_bytes().chunks(255).collect()
            };
            Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::from_bytes(chunks)))
        })
        .collect()
}

/// RFC 1464 `key=value`, with backquotes escaping `=`, backquotes and the
/// key's leading and trailing spaces.
fn rfc1464(key: &str, value: &str) -> String {
    let key = key.replace('`', "``").replace('=', "`=");
    let leading = key.len() - key.trim_start_matches(' ').len();
    let key = format!("{}{}", "` ".repeat(leading), &key[leading..]);
    let trailing = key.len() - key.trim_end_matches(' ').len();
    let key = format!("{}{}", &key[..key.len() - trailing], "` ".repeat(trailing));
    format!("{key}={}", value.replace('`', "``"))
}

/// `<node>.node.<dc>.<zone>`: the canonical name of a node. `None` when the
/// node's name cannot be a DNS name.
pub(crate) fn node_name(node: &str, dc: &str, zone: &Name) -> Option<Name> {
    let labels = node.split('.').chain(["node", dc]);
    under_zone(labels, zone)
}

/// `<hex>.addr.<dc>.<zone>`: the name Consul gives an address that is not a
/// node's, so SRV targets always resolve.
pub(crate) fn addr_name(ip: IpAddr, dc: &str, zone: &Name) -> Option<Name> {
    let hex: String = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    under_zone([hex.as_str(), "addr", dc], zone)
}

/// A hostname from the catalog (an external service's address) as a fully
/// qualified name.
pub(crate) fn host_name(host: &str) -> Option<Name> {
    let mut name = Name::from_ascii(host.trim()).ok()?;
    if name.is_root() {
        return None;
    }
    name.set_fqdn(true);
    Some(name)
}

fn under_zone<'a>(labels: impl IntoIterator<Item = &'a str>, zone: &Name) -> Option<Name> {
    let labels: Vec<&[u8]> = labels.into_iter().map(str::as_bytes).collect();
    if labels.iter().any(|label| label.is_empty()) {
        return None;
    }
    Name::from_labels(labels).ok()?.append_name(zone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1464_escapes_like_consul() {
        assert_eq!(rfc1464("key", "value"), "key=value");
        assert_eq!(rfc1464("a=b", "c`d"), "a`=b=c``d");
        assert_eq!(rfc1464("  k ", "v"), "` ` k` =v");
    }

    #[test]
    fn target_names() {
        let zone = Name::from_ascii("consul.").unwrap();
        assert_eq!(
            node_name("web-1", "dc1", &zone).unwrap().to_ascii(),
            "web-1.node.dc1.consul."
        );
        assert_eq!(node_name("", "dc1", &zone), None);
        assert_eq!(node_name(&"x".repeat(64), "dc1", &zone), None);
        assert_eq!(
            addr_name("10.1.2.3".parse().unwrap(), "dc1", &zone)
                .unwrap()
                .to_ascii(),
            "0a010203.addr.dc1.consul."
        );
        assert_eq!(
            addr_name("2001:db8::1".parse().unwrap(), "dc1", &zone)
                .unwrap()
                .to_ascii(),
            "20010db8000000000000000000000001.addr.dc1.consul."
        );
        assert_eq!(
            host_name("db.example.com").unwrap().to_ascii(),
            "db.example.com."
        );
    }

    #[test]
    fn long_txt_is_split() {
        let zone = Name::from_ascii("n.node.dc1.consul.").unwrap();
        let meta = BTreeMap::from([("k".to_owned(), "v".repeat(600))]);
        let records = meta_txt(&zone, 0, &meta);
        let RData::TXT(txt) = records[0].data() else {
            panic!("not TXT")
        };
        assert_eq!(txt.txt_data().len(), 3);
    }
}
