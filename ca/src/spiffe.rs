//! SPIFFE identities in Consul's shape.
//!
//! A service is `spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`;
//! a CA signs as `spiffe://<trust-domain>`. The trust domain is
//! `<cluster-id>.consul` (Consul `agent/connect/uri_service.go`,
//! `uri_signing.go`).

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

/// A SPIFFE ID: either a service identity or a CA's signing identity.
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
struct Workload {
    namespace: String,
    datacenter: String,
    service: String,
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
            workload: Some(Workload {
                namespace,
                datacenter,
                service,
            }),
        })
    }

    /// The signing identity of a CA for `trust_domain`: `spiffe://<trust-domain>`.
    pub fn signing(trust_domain: &str) -> Result<Self, CaError> {
        Ok(Self {
            trust_domain: check_trust_domain(trust_domain, trust_domain)?,
            workload: None,
        })
    }

    /// Parses a SPIFFE URI. Only service and signing IDs are accepted; any
    /// other input (another scheme, a query, agent IDs, a trailing slash,
    /// bad percent-encoding) is an error, never a panic.
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
        let ["ns", namespace, "dc", datacenter, "svc", service] = segments.as_slice() else {
            return Err(invalid(
                "the path must be /ns/<namespace>/dc/<datacenter>/svc/<service>",
            ));
        };
        let namespace = decode_segment(namespace, input)?;
        let datacenter = decode_segment(datacenter, input)?;
        let service = decode_segment(service, input)?;
        Ok(Self {
            trust_domain,
            workload: Some(Workload {
                namespace,
                datacenter,
                service,
            }),
        })
    }

    /// The URI form, e.g. `spiffe://<td>/ns/default/dc/dc1/svc/web`.
    /// Characters outside RFC 3986's unreserved set are percent-encoded, so
    /// `SpiffeId::parse(&id.uri()) == Ok(id)`.
    pub fn uri(&self) -> String {
        match &self.workload {
            None => format!("spiffe://{}", self.trust_domain),
            Some(w) => format!(
                "spiffe://{}/ns/{}/dc/{}/svc/{}",
                self.trust_domain,
                encode_segment(&w.namespace),
                encode_segment(&w.datacenter),
                encode_segment(&w.service),
            ),
        }
    }

    /// The trust domain, lower-case, e.g. `<cluster-id>.consul`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether this is a service identity.
    pub fn is_service(&self) -> bool {
        self.workload.is_some()
    }

    /// Whether this is a CA's signing identity.
    pub fn is_signing(&self) -> bool {
        self.workload.is_none()
    }

    /// The namespace of a service identity.
    pub fn namespace(&self) -> Option<&str> {
        self.workload.as_ref().map(|w| w.namespace.as_str())
    }

    /// The datacenter of a service identity.
    pub fn datacenter(&self) -> Option<&str> {
        self.workload.as_ref().map(|w| w.datacenter.as_str())
    }

    /// The service name of a service identity.
    pub fn service_name(&self) -> Option<&str> {
        self.workload.as_ref().map(|w| w.service.as_str())
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
            "spiffe://td.consul/agent/client/dc/dc1/id/node1",
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
