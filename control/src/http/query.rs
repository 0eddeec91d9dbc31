//! Query parameters as Consul reads them: flags by presence (`?recurse`),
//! `index`/`wait` for blocking, `stale`/`consistent`, `dc`, `filter`, `token`.

use super::ApiError;
use crate::structs::parse_duration;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::time::Duration;

/// The raw query string, decoded into name/value pairs.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> Params {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Params { pairs }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// True when `name` is present (with any value but `false`).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false" && v != "0")
    }

    /// `name` parsed as Go's `strconv.ParseBool` does; 400 if malformed.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid value for {name}: {v:?}"
            ))),
        }
    }

    /// `name` as an unsigned integer, 400 if malformed.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid {name}: {v:?}"))),
        }
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Served by the leader's state (the default).
    #[default]
    Default,
    /// Any server may answer, possibly behind.
    Stale,
    /// The leader confirms leadership before answering.
    Consistent,
}

/// The read options of a request (Consul's `QueryOptions`).
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Block until the result's index exceeds this.
    pub min_index: u64,
    /// How long to block at most.
    pub max_wait: Duration,
    /// The read mode.
    pub consistency: Consistency,
    /// A `filter=` expression.
    pub filter: Option<String>,
}

/// The default and the longest blocking wait, as Consul.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest wait a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

impl QueryOptions {
    /// Reads `index`, `wait`, `stale`, `consistent` and `filter`.
    pub fn from_params(p: &Params) -> Result<QueryOptions, ApiError> {
        let min_index = p.u64("index")?.unwrap_or(0);
        let max_wait = match p.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(w) => parse_duration(w)
                .map_err(|_| ApiError::bad_request(format!("Invalid wait time: {w:?}")))?,
        }
        .min(MAX_WAIT);
        let consistency = match (p.flag("stale"), p.flag("consistent")) {
            (true, true) => {
                return Err(ApiError::bad_request(
                    "Cannot specify ?stale with ?consistent, conflicting semantics.",
                ))
            }
            (true, false) => Consistency::Stale,
            (false, true) => Consistency::Consistent,
            _ => Consistency::Default,
        };
        let filter = p
            .get("filter")
            .filter(|f| !f.is_empty())
            .map(str::to_string);
        Ok(QueryOptions {
            min_index,
            max_wait,
            consistency,
            filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_values() {
        let p = Params::parse("recurse&keys=&separator=%2F&passing=false&tag=a&tag=b+c");
        assert!(p.flag("recurse"));
        assert!(p.flag("keys"));
        assert!(!p.flag("passing"));
        assert_eq!(p.get("separator"), Some("/"));
        assert_eq!(p.all("tag"), vec!["a", "b c"]);
        assert!(Params::parse("index=abc").u64("index").is_err());
        assert_eq!(Params::parse("x=%").get("x"), Some("%"));
        assert_eq!(Params::parse("x=%4").get("x"), Some("%4"));
    }

    #[test]
    fn wait_is_capped() {
        let o = QueryOptions::from_params(&Params::parse("index=5&wait=1h")).unwrap();
        assert_eq!(o.max_wait, MAX_WAIT);
        assert_eq!(o.min_index, 5);
        assert!(QueryOptions::from_params(&Params::parse("stale&consistent")).is_err());
        assert!(QueryOptions::from_params(&Params::parse("wait=soon")).is_err());
    }
}
