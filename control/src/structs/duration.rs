//! Durations as Consul writes them: Go duration strings ("10s", "1m30s",
//! "250ms") on input, and either strings or nanosecond integers on output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Parses a Go-style duration string such as `"10s"`, `"1m30s"`, `"1.5h"` or
/// `"250ms"`. A bare number is taken as nanoseconds, as Go's JSON decoding of a
/// `time.Duration` does.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if let Ok(nanos) = s.parse::<u64>() {
        return Ok(Duration::from_nanos(nanos));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
        if num_len == 0 {
            return Err(format!("time: invalid duration {text:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("time: invalid duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("time: invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration as Go's `time.Duration.String()` does, e.g. `"1m30s"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let nanos = d.as_nanos();
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_float(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_float(nanos as f64 / 1e6));
    }
    let secs = d.as_secs();
    let frac = d.subsec_nanos();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sec_part = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{}s", trim_float(s as f64 + frac as f64 / 1e9))
    };
    match (h, m) {
        (0, 0) => sec_part,
        (0, m) => format!("{m}m{sec_part}"),
        (h, m) => format!("{h}h{m}m{sec_part}"),
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A duration that reads from a Go duration string or a nanosecond integer and
/// writes back the string form (as Consul does for `Interval`, `TTL`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConsulDuration(pub Duration);

impl ConsulDuration {
    /// True when the duration is zero (unset).
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl Serialize for ConsulDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConsulDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Nanos(u64),
            Float(f64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(t) => parse_duration(&t)
                .map(ConsulDuration)
                .map_err(serde::de::Error::custom),
            Raw::Nanos(n) => Ok(ConsulDuration(Duration::from_nanos(n))),
            Raw::Float(f) if f >= 0.0 && f.is_finite() => {
                Ok(ConsulDuration(Duration::from_nanos(f as u64)))
            }
            Raw::Float(f) => Err(serde::de::Error::custom(format!("invalid duration {f}"))),
        }
    }
}

/// Serializes a duration as integer nanoseconds (Consul's `LockDelay`).
pub mod nanos {
    use super::ConsulDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes nanoseconds.
    pub fn serialize<S: Serializer>(d: &ConsulDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.0.as_nanos() as u64)
    }

    /// Reads a string or nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ConsulDuration, D::Error> {
        ConsulDuration::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("15000000000").unwrap(),
            Duration::from_secs(15)
        );
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
