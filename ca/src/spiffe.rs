//! SPIFFE identities in Consul's shape.
//!
//! A service is `spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`;
//! a client agent (its auto_encrypt RPC certificate) is
//! `spiffe://<trust-domain>/agent/client/dc/<datacenter>/id/<node>`; a CA
//! signs as `spiffe://<trust-domain>`. The trust domain is
//! `<cluster-id>.consul` (Consul `agent/connect/uri_service.go`,
//! `uri_agent.go`, `uri_signing.go`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CaError;

/// The trust domain suffix Consul uses: `<cluster-id>.consul`.
pub const TRUST_DOMAIN_SUFFIX: &str = "consul";

/// The namespace every service lives in until namespaces exist.
pub const DEFAULT_NAMESPACE: &str = "default";

/// SPIFFE IDs longer than this are refused, as the SPIFFE spec allows.
const MAX_URI_LEN: usize = 2048;
/// A trust domain is a host name: at most 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// How much of a refused input an error message repeats.
const MAX_ECHO: usize = 200;

/// The trust domain of a cluster: `<cluster-id>.consul`, lower-cased.
pub fn trust_domain(cluster_id: &str) -> String {
    format!("{cluster_id}.{TRUST_DOMAIN_SUFFIX}").to_ascii_lowercase()
}

/// A SPIFFE ID: a service identity, a client agent's identity, or a CA's
/// signing identity.
///
/// Values are always valid: constructors and [`SpiffeId::parse`] check every
/// part, and the trust domain is kept lower-case. Serde reads and writes the
/// URI string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    workload: Option<Workload>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Workload {
    Service {
        namespace: String,
        datacenter: String,
        service: String,
    },
    Agent {
        datacenter: String,
        node: String,
    },
}

// === impl SpiffeId ===

impl SpiffeId {
    /// The identity of `service` in `namespace` and `datacenter` of
    /// `trust_domain`.
    pub fn service(
        trust_domain: &str,
        namespace: &str,
        datacenter: &str,
        service: &str,
    ) -> Result<Self, CaError> {
        let input = format!("{trust_domain}/ns/{namespace}/dc/{datacenter}/svc/{service}");
        let trust_domain = check_trust_domain(trust_domain, &input)?;
        let namespace = check_segment(namespace, "empty namespace", &input)?;
        let datacenter = check_segment(datacenter, "empty datacenter", &input)?;
        let service = check_segment(service, "empty service name", &input)?;
        Ok(Self {
            trust_domain,
            workload: Some(Workload::Service {
                namespace,
                datacenter,
                service,
            }),
        })
    }

    /// The identity of the client agent `node` in `datacenter` of
    /// `trust_domain`: what its auto_encrypt RPC certificate names.
    pub fn agent(trust_domain: &str, datacenter: &str, node: &str) -> Result<Self, CaError> {
        let input = format!("{trust_domain}/agent/client/dc/{datacenter}/id/{node}");
        let trust_domain = check_trust_domain(trust_domain, &input)?;
        let datacenter = check_segment(datacenter, "empty datacenter", &input)?;
        let node = check_segment(node, "empty node name", &input)?;
        Ok(Self {
            trust_domain,
            workload: Some(Workload::Agent { datacenter, node }),
        })
    }

    /// This identity in another trust domain (a client agent's CSR names a
    /// placeholder one: it cannot know the cluster's before it is signed).
    pub fn in_trust_domain(&self, trust_domain: &str) -> Result<Self, CaError> {
        Ok(Self {
            trust_domain: check_trust_domain(trust_domain, trust_domain)?,
            workload: self.workload.clone(),
        })
    }

    /// The signing identity of a CA for `trust_domain`: `spiffe://<trust-domain>`.
    pub fn signing(trust_domain: &str) -> Result<Self, CaError> {
        Ok(Self {
            trust_domain: check_trust_domain(trust_domain, trust_domain)?,
            workload: None,
        })
    }

    /// Parses a SPIFFE URI. Only service, client agent and signing IDs are
    /// accepted; any other input (another scheme, a query, a server agent
    /// or partition path, a trailing slash, bad percent-encoding) is an
    /// error, never a panic.
    pub fn parse(input: &str) -> Result<Self, CaError> {
        let invalid = |reason| invalid(input, reason);
        if input.len() > MAX_URI_LEN {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = input
            .get(..9)
            .filter(|scheme| scheme.eq_ignore_ascii_case("spiffe://"))
            .and_then(|_| input.get(9..))
            .ok_or_else(|| invalid("the scheme must be spiffe://"))?;
        if rest.contains(['?', '#']) {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let trust_domain = check_trust_domain(authority, input)?;
        if path.is_empty() {
            return Ok(Self {
                trust_domain,
                workload: None,
            });
        }
        let segments: Vec<&str> = path[1..].split('/').collect();
        let workload = match segments.as_slice() {
            ["ns", namespace, "dc", datacenter, "svc", service] => Workload::Service {
                namespace: decode_segment(namespace, input)?,
                datacenter: decode_segment(datacenter, input)?,
                service: decode_segment(service, input)?,
            },
            ["agent", "client", "dc", datacenter, "id", node] => Workload::Agent {
                datacenter: decode_segment(datacenter, input)?,
                node: decode_segment(node, input)?,
            },
            _ => {
                return Err(invalid(
                    "the path must be /ns/<namespace>/dc/<datacenter>/svc/<service> \
                     or /agent/client/dc/<datacenter>/id/<node>",
                ))
            }
        };
        Ok(Self {
            trust_domain,
            workload: Some(workload),
        })
    }

    /// The URI form, e.g. `spiffe://<td>/ns/default/dc/dc1/svc/web`.
    /// Characters outside RFC 3986's unreserved set are percent-encoded, so
    /// `SpiffeId::parse(&id.uri()) == Ok(id)`.
    pub fn uri(&self) -> String {
        match &self.workload {
            None => format!("spiffe://{}", self.trust_domain),
            Some(Workload::Service {
                namespace,
                datacenter,
                service,
            }) => format!(
                "spiffe://{}/ns/{}/dc/{}/svc/{}",
                self.trust_domain,
                encode_segment(namespace),
                encode_segment(datacenter),
                encode_segment(service),
            ),
            Some(Workload::Agent { datacenter, node }) => format!(
                "spiffe://{}/agent/client/dc/{}/id/{}",
                self.trust_domain,
                encode_segment(datacenter),
                encode_segment(node),
            ),
        }
    }

    /// The trust domain, lower-case, e.g. `<cluster-id>.consul`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether this is a service identity.
    pub fn is_service(&self) -> bool {
        matches!(self.workload, Some(Workload::Service { .. }))
    }

    /// Whether this is a client agent's identity.
    pub fn is_agent(&self) -> bool {
        matches!(self.workload, Some(Workload::Agent { .. }))
    }

    /// Whether this is a CA's signing identity.
    pub fn is_signing(&self) -> bool {
        self.workload.is_none()
    }

    /// The namespace of a service identity.
    pub fn namespace(&self) -> Option<&str> {
        match &self.workload {
            Some(Workload::Service { namespace, .. }) => Some(namespace),
            _ => None,
        }
    }

    /// The datacenter of a service or client agent identity.
    pub fn datacenter(&self) -> Option<&str> {
        match &self.workload {
            Some(Workload::Service { datacenter, .. } | Workload::Agent { datacenter, .. }) => {
                Some(datacenter)
            }
            None => None,
        }
    }

    /// The service name of a service identity.
    pub fn service_name(&self) -> Option<&str> {
        match &self.workload {
            Some(Workload::Service { service, .. }) => Some(service),
            _ => None,
        }
    }

    /// The node name of a client agent identity.
    pub fn agent_node(&self) -> Option<&str> {
        match &self.workload {
            Some(Workload::Agent { node, .. }) => Some(node),
            _ => None,
        }
    }

    /// Whether a CA signing for this identity's trust domain may sign `other`
    /// (same trust domain, compared without case).
    pub fn can_sign(&self, other: &SpiffeId) -> bool {
        self.is_signing() && self.trust_domain == other.trust_domain
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&self.uri()).finish()
    }
}

impl FromStr for SpiffeId {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.uri())
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let uri = String::deserialize(deserializer)?;
        Self::parse(&uri).map_err(serde::de::Error::custom)
    }
}

// === helpers ===

fn invalid(input: &str, reason: &'static str) -> CaError {
    CaError::InvalidSpiffeId {
        input: input.chars().take(MAX_ECHO).collect(),
        reason,
    }
}

/// A trust domain is a host name without port or user info: ASCII letters,
/// digits, `.`, `-` and `_`. It is kept lower-case.
fn check_trust_domain(trust_domain: &str, input: &str) -> Result<String, CaError> {
    if trust_domain.is_empty() {
        return Err(invalid(input, "empty trust domain"));
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(invalid(input, "trust domain longer than 255 bytes"));
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(invalid(
            input,
            "the trust domain may hold only letters, digits, '.', '-' and '_'",
        ));
    }
    Ok(trust_domain.to_ascii_lowercase())
}

/// A decoded path segment: not empty, no `/`, no control characters.
fn check_segment(segment: &str, empty: &'static str, input: &str) -> Result<String, CaError> {
    if segment.is_empty() {
        return Err(invalid(input, empty));
    }
    if segment.contains('/') {
        return Err(invalid(input, "a path segment may not contain '/'"));
    }
    if segment.chars().any(char::is_control) {
        return Err(invalid(
            input,
            "a path segment may not contain control characters",
        ));
    }
    Ok(segment.to_owned())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may hold unencoded (RFC 3986 `pchar` less `%`).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn decode_segment(raw: &str, input: &str) -> Result<String, CaError> {
    if raw.is_empty() {
        return Err(invalid(input, "empty path segment"));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid(input, "bad percent-encoding"))?;
                out.push(hex);
                i += 3;
            }
            b if is_pchar(b) => {
                out.push(b);
                i += 1;
            }
            _ => {
                return Err(invalid(
                    input,
                    "a path segment holds a character that must be percent-encoded",
                ))
            }
        }
    }
    let decoded = String::from_utf8(out)
        .map_err(|_| invalid(input, "a path segment is not UTF-8 once decoded"))?;
    check_segment(&decoded, "empty path segment", input)
}

fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "11111111-2222-3333-4444-555555555555.consul";

    #[test]
    fn service_uri_matches_consul_shape() {
        let id = SpiffeId::service(TD, "default", "dc1", "web").unwrap();
        assert_eq!(id.uri(), format!("spiffe://{TD}/ns/default/dc/dc1/svc/web"));
        assert_eq!(id.to_string(), id.uri());
        assert_eq!(id.service_name(), Some("web"));
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(id.datacenter(), Some("dc1"));
        assert!(id.is_service());
    }

    #[test]
    fn agent_uri_matches_consul_shape_and_is_not_a_service() {
        let id = SpiffeId::agent(TD, "dc1", "node-1").unwrap();
        assert_eq!(
            id.uri(),
            format!("spiffe://{TD}/agent/client/dc/dc1/id/node-1")
        );
        assert!(id.is_agent() && !id.is_service() && !id.is_signing());
        assert_eq!(id.agent_node(), Some("node-1"));
        assert_eq!(id.datacenter(), Some("dc1"));
        assert_eq!((id.service_name(), id.namespace()), (None, None));
        assert_eq!(SpiffeId::parse(&id.uri()).unwrap(), id);
        let moved = id.in_trust_domain("other.consul").unwrap();
        assert_eq!(moved.trust_domain(), "other.consul");
        assert_eq!(moved.agent_node(), Some("node-1"));
        assert!(SpiffeId::agent(TD, "dc1", "").is_err());
        assert!(SpiffeId::agent(TD, "", "n").is_err());
    }

    #[test]
    fn trust_domain_is_cluster_id_dot_consul() {
        assert_eq!(
            trust_domain("11111111-2222-3333-4444-555555555555"),
            TD.to_string()
        );
        let signing = SpiffeId::signing(&trust_domain("ABC")).unwrap();
        assert_eq!(signing.uri(), "spiffe://abc.consul");
        assert!(signing.is_signing());
        assert_eq!(signing.service_name(), None);
    }

    #[test]
    fn parse_round_trips() {
        for uri in [
            format!("spiffe://{TD}/ns/default/dc/dc1/svc/web"),
            format!("spiffe://{TD}/ns/default/dc/dc-2/svc/my_svc.v1"),
            format!("spiffe://{TD}/ns/default/dc/dc1/svc/a%20b"),
            format!("spiffe://{TD}"),
        ] {
            let id = SpiffeId::parse(&uri).unwrap();
            assert_eq!(id.uri(), uri);
            assert_eq!(SpiffeId::parse(&id.uri()).unwrap(), id);
        }
    }

    #[test]
    fn parse_decodes_and_normalises() {
        let id = SpiffeId::parse("SPIFFE://Example.Consul/ns/default/dc/dc1/svc/a%2Bb").unwrap();
        assert_eq!(id.trust_domain(), "example.consul");
        assert_eq!(id.service_name(), Some("a+b"));
        // '+' is not unreserved, so the canonical form encodes it.
        assert_eq!(
            id.uri(),
            "spiffe://example.consul/ns/default/dc/dc1/svc/a%2Bb"
        );
        let raw = SpiffeId::parse("spiffe://example.consul/ns/default/dc/dc1/svc/a+b").unwrap();
        assert_eq!(raw, id);
    }

    #[test]
    fn parse_rejects_hostile_input() {
        let long = format!("spiffe://{TD}/ns/default/dc/dc1/svc/{}", "a".repeat(3000));
        let cases = [
            "",
            "spiffe",
            "spiffe:/",
            "spiffe://",
            "spiffe:///ns/default/dc/dc1/svc/web",
            "https://td.consul/ns/default/dc/dc1/svc/web",
            "spiffe://td.consul/",
            "spiffe://td.consul/ns/default/dc/dc1/svc/web/",
            "spiffe://td.consul/ns/default/dc/dc1/svc/",
            "spiffe://td.consul/ns//dc/dc1/svc/web",
            "spiffe://td.consul/ns/default/dc/dc1",
            "spiffe://td.consul/agent/server/dc/dc1/id/node1",
            "spiffe://td.consul/agent/client/dc/dc1/id/",
            "spiffe://td.consul/agent/client/dc/dc1/id/a/b",
            "spiffe://td.consul/ap/part/ns/default/dc/dc1/svc/web",
            "spiffe://td.consul/ns/default/dc/dc1/svc/web?x=1",
            "spiffe://td.consul/ns/default/dc/dc1/svc/web#frag",
            "spiffe://user@td.consul/ns/default/dc/dc1/svc/web",
            "spiffe://td.consul:8080/ns/default/dc/dc1/svc/web",
            "spiffe://td.consul/ns/default/dc/dc1/svc/we b",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%4",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%zz",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%2F",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%00",
            "spiffe://td.consul/ns/default/dc/dc1/svc/%ff",
            "spiffe://tö.consul/ns/default/dc/dc1/svc/web",
            "spiffé://td.consul",
            "spiffe://td.consul/ns/default/dc/dc1/svc/wéb",
            "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}é",
            long.as_str(),
        ];
        for case in cases {
            let err = SpiffeId::parse(case).unwrap_err();
            assert!(err.is_invalid_spiffe_id(), "{case:?}: {err}");
            assert!(err.is_invalid_input());
        }
    }

    #[test]
    fn parse_never_panics_on_any_prefix() {
        let uri = format!("spiffe://{TD}/ns/déf%41ult/dc/dc1/svc/wé%b");
        for end in 0..=uri.len() {
            if let Some(prefix) = uri.get(..end) {
                let _ = SpiffeId::parse(prefix);
            }
        }
    }

    #[test]
    fn constructors_validate() {
        assert!(SpiffeId::service(TD, "default", "dc1", "").is_err());
        assert!(SpiffeId::service(TD, "default", "dc1", "a/b").is_err());
        assert!(SpiffeId::service(TD, "", "dc1", "web").is_err());
        assert!(SpiffeId::service("bad domain", "default", "dc1", "web").is_err());
        assert!(SpiffeId::signing("").is_err());
        let odd = SpiffeId::service(TD, "default", "dc1", "a b/").unwrap_err();
        assert!(odd.is_invalid_spiffe_id());
    }

    #[test]
    fn serde_is_the_uri_string() {
        let id = SpiffeId::service(TD, "default", "dc1", "web").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.uri()));
        let back: SpiffeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SpiffeId>("\"http://x\"").is_err());
    }

    #[test]
    fn can_sign_only_its_trust_domain() {
        let ca = SpiffeId::signing(TD).unwrap();
        let ours = SpiffeId::service(TD, "default", "dc1", "web").unwrap();
        let theirs = SpiffeId::service("other.consul", "default", "dc1", "web").unwrap();
        assert!(ca.can_sign(&ours));
        assert!(!ca.can_sign(&theirs));
        assert!(!ours.can_sign(&ours));
    }
}
