//! Small helpers shared by the modules: hex, randomness, time, PEM and X.509
//! plumbing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::CaError;

/// Bytes as Consul's `HexString`: lower-case pairs joined by `:`.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A serial number as Consul's `EncodeSerialNumber`: the big-endian bytes of
/// the integer without leading zeros, colon-hex.
pub(crate) fn serial_hex(serial: u64) -> String {
    let bytes = serial.to_be_bytes();
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - 1);
    colon_hex(&bytes[first..])
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CaError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| CaError::Generate("the system random source failed".into()))?;
    Ok(buf)
}

/// A random positive serial number that fits Consul's `uint64` field.
pub(crate) fn random_serial() -> Result<u64, CaError> {
    loop {
        let serial = u64::from_be_bytes(random_bytes::<8>()?) & (u64::MAX >> 1);
        if serial != 0 {
            return Ok(serial);
        }
    }
}

/// `len` random characters from `[0-9a-z]`.
pub(crate) fn random_token(len: usize) -> Result<String, CaError> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let bytes = random_bytes::<32>()?;
    Ok(bytes
        .iter()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// `SystemTime` to `OffsetDateTime`, refusing times `time` cannot hold
/// instead of panicking as `From` would.
pub(crate) fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).ok(),
        Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::InvalidConfig {
            field: "now",
            reason: "time out of the range a certificate can hold".into(),
        })
}

/// Adds `d` to `t`, as an error rather than a panic on overflow.
pub(crate) fn checked_add(
    t: SystemTime,
    d: Duration,
    field: &'static str,
) -> Result<SystemTime, CaError> {
    t.checked_add(d).ok_or_else(|| CaError::InvalidConfig {
        field,
        reason: "duration overflows the clock".into(),
    })
}

/// Subtracts `d` from `t`, clamping at the epoch.
pub(crate) fn saturating_sub(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).unwrap_or(UNIX_EPOCH)
}

/// An X.509 time as `SystemTime`.
pub(crate) fn from_asn1(t: ASN1Time) -> SystemTime {
    let ts = t.timestamp();
    let magnitude = Duration::from_secs(ts.unsigned_abs());
    if ts >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// All `CERTIFICATE` blocks of a PEM document, in order. Other blocks (keys)
/// are skipped; no certificate at all is an error.
pub(crate) fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::InvalidPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CaError::InvalidPem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The kind of every PEM block of a document that rustls knows (certificates,
/// keys, CSRs, CRLs), in order.
pub(crate) fn pem_kinds(pem: &str) -> Result<Vec<SectionKind>, CaError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes())
        .map(|section| section.map(|(kind, _)| kind))
        .collect::<Result<_, _>>()
        .map_err(|e| CaError::InvalidPem(e.to_string()))
}

/// The first `CERTIFICATE` block of a PEM document.
pub(crate) fn parse_cert(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let mut certs = parse_certs(pem)?;
    Ok(certs.swap_remove(0))
}

/// A private key (PKCS#8, SEC1 or PKCS#1) from PEM.
pub(crate) fn parse_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, CaError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::InvalidKey(e.to_string()))
}

/// Parses DER as an X.509 certificate, refusing trailing bytes.
pub(crate) fn x509(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// The URI SANs of a certificate.
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, CaError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The subject key identifier of a certificate, if it has one.
pub(crate) fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        })
}

/// The certificate's subject as an rcgen name, keeping each value's string
/// type so that the encoding matches byte for byte (issuer and subject names
/// are compared that way during path building).
pub(crate) fn distinguished_name(
    name: &x509_parser::x509::X509Name<'_>,
) -> Result<rcgen::DistinguishedName, CaError> {
    use x509_parser::der_parser::asn1_rs::Tag;

    let bad = |what: &str| CaError::InvalidCertificate(format!("unsupported subject name: {what}"));
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(bad("empty or multi-valued RDN"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| bad("attribute OID too large"))?
            .collect();
        let ty = rcgen::DnType::from_oid(&oid);
        let value = attr.attr_value();
        let text = std::str::from_utf8(value.data).map_err(|_| bad("value is not UTF-8"))?;
        let value = match value.header.tag() {
            Tag::Utf8String => rcgen::DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => rcgen::DnValue::PrintableString(
                text.try_into().map_err(|_| bad("bad PrintableString"))?,
            ),
            Tag::Ia5String => {
                rcgen::DnValue::Ia5String(text.try_into().map_err(|_| bad("bad IA5String"))?)
            }
            _ => return Err(bad("unsupported string type")),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Serde for `SystemTime` as RFC 3339, the way Go encodes `time.Time`.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let odt = super::to_offset(*t).map_err(serde::ser::Error::custom)?;
        let text = odt.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        let odt = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        Ok(SystemTime::from(odt))
    }
}

/// Deserialises `null` (Go's nil slice) as an empty vector.
pub(crate) fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_consul() {
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x00]), "0a:ff:00");
        assert_eq!(colon_hex(&[]), "");
        assert_eq!(serial_hex(0x0102), "01:02");
        assert_eq!(serial_hex(7), "07");
        assert_eq!(serial_hex(0), "00");
    }

    #[test]
    fn serials_are_positive_and_vary() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert!(a > 0 && a <= i64::MAX as u64);
        assert_ne!(a, b);
        assert_eq!(random_token(8).unwrap().len(), 8);
    }

    #[test]
    fn time_conversion_refuses_out_of_range() {
        assert!(to_offset(UNIX_EPOCH).is_ok());
        let far = UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 86_400);
        assert!(to_offset(far).is_err());
    }

    #[test]
    fn pem_errors_are_typed() {
        assert!(matches!(
            parse_certs("garbage"),
            Err(CaError::InvalidPem(_))
        ));
        assert!(matches!(
            parse_certs("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Err(CaError::InvalidPem(_))
        ));
        assert!(matches!(
            parse_private_key("nope"),
            Err(CaError::InvalidKey(_))
        ));
    }
}
