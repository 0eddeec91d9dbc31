//! Compiled HTTP conditions: one [`RequestMatcher`] per [`HttpMatch`], shared
//! by routes (which requests take a route) and L7 permissions (which
//! requests an intention decides).
//!
//! Compiling checks the conditions once (regexes build, header names are
//! valid, at most one path condition) and names the bad field; matching a
//! request is then allocation-free except for query strings with escapes.

use std::borrow::Cow;

use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Request};
use regex::Regex;

use crate::chain::{HeaderMatch, HttpMatch, QueryParamMatch};
use crate::ProxyError;

/// An [`HttpMatch`] ready to test requests.
#[derive(Clone, Debug)]
pub(crate) struct RequestMatcher {
    path: Option<PathMatch>,
    headers: Vec<HeaderCondition>,
    query: Vec<QueryCondition>,
    methods: Vec<Method>,
}

/// The path condition of a match; rewrites need to know which one matched.
#[derive(Clone, Debug)]
pub(crate) enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// The whole path matches (the regex is anchored at both ends).
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct HeaderCondition {
    name: HeaderName,
    test: ValueTest,
    invert: bool,
}

#[derive(Clone, Debug)]
struct QueryCondition {
    name: String,
    test: ValueTest,
}

/// What a header or query parameter value must be.
#[derive(Clone, Debug)]
enum ValueTest {
    Present,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

/// The error for `field`.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ProxyError {
    ProxyError::InvalidConfig {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Compiles `pattern` so that it must match the whole input.
pub(crate) fn full_regex(pattern: &str, field: &str) -> Result<Regex, ProxyError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| invalid(field, format!("bad regular expression {pattern:?}: {e}")))
}

// === impl RequestMatcher ===

impl RequestMatcher {
    /// Compiles `m`; `field` is its place in the config (e.g.
    /// `Upstreams[0].Chain.Routes[1].Match`), for errors.
    pub(crate) fn compile(m: &HttpMatch, field: &str) -> Result<Self, ProxyError> {
        let paths = [
            m.path_exact.clone().map(PathMatch::Exact),
            m.path_prefix.clone().map(PathMatch::Prefix),
            m.path_regex
                .as_deref()
                .map(|re| full_regex(re, &format!("{field}.PathRegex")))
                .transpose()?
                .map(PathMatch::Regex),
        ];
        let mut paths = paths.into_iter().flatten();
        let path = paths.next();
        if paths.next().is_some() {
            return Err(invalid(
                field,
                "only one of PathExact, PathPrefix and PathRegex may be set",
            ));
        }
        let headers = m
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderCondition::compile(h, &format!("{field}.Header[{i}]")))
            .collect::<Result<_, _>>()?;
        let query = m
            .query_param
            .iter()
            .enumerate()
            .map(|(i, q)| QueryCondition::compile(q, &format!("{field}.QueryParam[{i}]")))
            .collect::<Result<_, _>>()?;
        let methods = m
            .methods
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid(format!("{field}.Methods[{i}]"), "not an HTTP method"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path,
            headers,
            query,
            methods,
        })
    }

    /// Whether every condition holds for `req`.
    pub(crate) fn matches<B>(&self, req: &Request<B>) -> bool {
        let uri = req.uri();
        if let Some(path) = &self.path {
            if !path.matches(uri.path()) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(req.headers())) {
            return false;
        }
        self.query
            .iter()
            .all(|q| q.matches(uri.query().unwrap_or_default()))
    }

    /// The path condition, if there is one.
    pub(crate) fn path(&self) -> Option<&PathMatch> {
        self.path.as_ref()
    }
}

// === impl PathMatch ===

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(want) => path == want,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

// === impl HeaderCondition ===

impl HeaderCondition {
    fn compile(h: &HeaderMatch, field: &str) -> Result<Self, ProxyError> {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("{field}.Name"), "not a valid header name"))?;
        let test = ValueTest::compile(
            field,
            h.present,
            [
                ("Exact", h.exact.as_deref()),
                ("Prefix", h.prefix.as_deref()),
                ("Suffix", h.suffix.as_deref()),
                ("Regex", h.regex.as_deref()),
            ],
        )?;
        Ok(Self {
            name,
            test,
            invert: h.invert,
        })
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let held = match (values.next(), values.next()) {
            (None, _) => false,
            (Some(only), None) => self.test.matches(&String::from_utf8_lossy(only.as_bytes())),
            // Several values are matched as one, comma-joined (as Envoy
            // does).
            (Some(first), Some(second)) => {
                let joined = [first, second]
                    .into_iter()
                    .chain(values)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(",");
                self.test.matches(&joined)
            }
        };
        held != self.invert
    }
}

// === impl QueryCondition ===

impl QueryCondition {
    fn compile(q: &QueryParamMatch, field: &str) -> Result<Self, ProxyError> {
        if q.name.is_empty() {
            return Err(invalid(format!("{field}.Name"), "must not be empty"));
        }
        let test = ValueTest::compile(
            field,
            q.present,
            [("Exact", q.exact.as_deref()), ("Regex", q.regex.as_deref())],
        )?;
        Ok(Self {
            name: q.name.clone(),
            test,
        })
    }

    fn matches(&self, query: &str) -> bool {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .any(|(name, value)| {
                percent_decode(name) == self.name && self.test.matches(&percent_decode(value))
            })
    }
}

// === impl ValueTest ===

impl ValueTest {
    /// The one test among `present` and `tests` that is set.
    fn compile<const N: usize>(
        field: &str,
        present: bool,
        tests: [(&str, Option<&str>); N],
    ) -> Result<Self, ProxyError> {
        let one_of = || {
            let kinds: Vec<&str> = tests.iter().map(|(kind, _)| *kind).collect();
            invalid(
                field,
                format!("exactly one of Present, {} must be set", kinds.join(", ")),
            )
        };
        let mut set = tests.iter().filter_map(|(kind, v)| Some((*kind, (*v)?)));
        let test = match (present, set.next()) {
            (true, None) => ValueTest::Present,
            (false, Some(("Exact", v))) => ValueTest::Exact(v.to_owned()),
            (false, Some(("Prefix", v))) => ValueTest::Prefix(v.to_owned()),
            (false, Some(("Suffix", v))) => ValueTest::Suffix(v.to_owned()),
            (false, Some((_, v))) => ValueTest::Regex(full_regex(v, &format!("{field}.Regex"))?),
            _ => return Err(one_of()),
        };
        if set.next().is_some() {
            return Err(one_of());
        }
        Ok(test)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueTest::Present => true,
            ValueTest::Exact(want) => value == want,
            ValueTest::Prefix(prefix) => value.starts_with(prefix.as_str()),
            ValueTest::Suffix(suffix) => value.ends_with(suffix.as_str()),
            ValueTest::Regex(re) => re.is_match(value),
        }
    }
}

/// Decodes `%XX` escapes; anything malformed stays as it is.
fn percent_decode(input: &str) -> Cow<'_, str> {
    if !input.contains('%') {
        return Cow::Borrowed(input);
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let (hi, lo) = (hex(hi).unwrap_or(0), hex(lo).unwrap_or(0));
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::HeaderMatch;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn compile(m: HttpMatch) -> RequestMatcher {
        RequestMatcher::compile(&m, "Match").unwrap()
    }

    #[test]
    fn paths_methods_headers_and_query_params() {
        let empty = compile(HttpMatch::default());
        assert!(empty.matches(&req("GET", "/anything", &[])));

        let m = compile(HttpMatch {
            path_prefix: Some("/api/".into()),
            methods: vec!["get".into(), "POST".into()],
            ..HttpMatch::default()
        });
        assert!(m.matches(&req("POST", "/api/users", &[])));
        assert!(!m.matches(&req("DELETE", "/api/users", &[])));
        assert!(!m.matches(&req("GET", "/apix", &[])));

        let m = compile(HttpMatch {
            path_regex: Some("/v[0-9]+/items".into()),
            ..HttpMatch::default()
        });
        assert!(m.matches(&req("GET", "/v12/items", &[])));
        // Anchored: a match inside the path is not enough.
        assert!(!m.matches(&req("GET", "/x/v1/items/y", &[])));

        let header = |h: HeaderMatch| {
            compile(HttpMatch {
                header: vec![HeaderMatch {
                    name: "X-Version".into(),
                    ..h
                }],
                ..HttpMatch::default()
            })
        };
        let exact = header(HeaderMatch {
            exact: Some("2".into()),
            ..HeaderMatch::default()
        });
        assert!(exact.matches(&req("GET", "/", &[("x-version", "2")])));
        assert!(!exact.matches(&req("GET", "/", &[("x-version", "3")])));
        assert!(!exact.matches(&req("GET", "/", &[])));
        let absent = header(HeaderMatch {
            present: true,
            invert: true,
            ..HeaderMatch::default()
        });
        assert!(absent.matches(&req("GET", "/", &[])));
        assert!(!absent.matches(&req("GET", "/", &[("x-version", "")])));
        let suffix = header(HeaderMatch {
            suffix: Some("-beta".into()),
            ..HeaderMatch::default()
        });
        assert!(suffix.matches(&req("GET", "/", &[("x-version", "2-beta")])));

        let m = compile(HttpMatch {
            query_param: vec![QueryParamMatch {
                name: "env".into(),
                exact: Some("qa one".into()),
                ..QueryParamMatch::default()
            }],
            ..HttpMatch::default()
        });
        assert!(m.matches(&req("GET", "/?a=1&env=qa%20one", &[])));
        assert!(!m.matches(&req("GET", "/?env=prod", &[])));
        assert!(!m.matches(&req("GET", "/", &[])));
    }

    #[test]
    fn bad_conditions_name_their_field() {
        let field_of = |m: HttpMatch| match RequestMatcher::compile(&m, "M") {
            Err(ProxyError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(
            field_of(HttpMatch {
                path_regex: Some("(".into()),
                ..HttpMatch::default()
            }),
            "M.PathRegex"
        );
        assert_eq!(
            field_of(HttpMatch {
                header: vec![HeaderMatch {
                    name: "x".into(),
                    exact: Some("a".into()),
                    regex: Some("b".into()),
                    ..HeaderMatch::default()
                }],
                ..HttpMatch::default()
            }),
            "M.Header[0]"
        );
        assert_eq!(
            field_of(HttpMatch {
                header: vec![HeaderMatch {
                    name: "bad name".into(),
                    present: true,
                    ..HeaderMatch::default()
                }],
                ..HttpMatch::default()
            }),
            "M.Header[0].Name"
        );
        assert_eq!(
            field_of(HttpMatch {
                path_exact: Some("/a".into()),
                path_prefix: Some("/".into()),
                ..HttpMatch::default()
            }),
            "M"
        );
    }

    #[test]
    fn percent_decoding_tolerates_garbage() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
