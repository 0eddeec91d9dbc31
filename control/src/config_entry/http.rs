//! The HTTP pieces routers, splitters and L7 intentions share: request
//! matches (`Match.HTTP`, `Permissions[].HTTP`) and header changes
//! (`RequestHeaders`, `ResponseHeaders`), with Consul's checks.
//!
//! The types are the proxy's own ([`mesh_proxy::HttpMatch`] and friends):
//! they have Consul's field names, so an entry's match reaches the proxy as
//! written.

use super::FieldError;
pub use mesh_proxy::{HeaderChanges, HeaderMatch, HttpMatch, QueryParamMatch};

/// The methods a match may name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

fn drop_empty(value: &mut Option<String>) {
    if value.as_deref() == Some("") {
        *value = None;
    }
}

/// Puts a match in canonical form: an empty string is unset (as in
/// Consul, where `""` means omitted) and methods are upper case.
pub fn normalize_match(m: &mut HttpMatch) {
    for value in [&mut m.path_exact, &mut m.path_prefix, &mut m.path_regex] {
        drop_empty(value);
    }
    for h in &mut m.header {
        for value in [&mut h.exact, &mut h.prefix, &mut h.suffix, &mut h.regex] {
            drop_empty(value);
        }
    }
    for q in &mut m.query_param {
        for value in [&mut q.exact, &mut q.regex] {
            drop_empty(value);
        }
    }
    for method in &mut m.methods {
        *method = method.to_ascii_uppercase();
    }
}

/// Checks that `re` compiles as the proxy will compile it.
pub fn check_regex(field: &str, re: &str) -> Result<(), FieldError> {
    match regex::Regex::new(re) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let why = text.lines().last().unwrap_or_default().trim();
            Err(FieldError::new(
                field,
                format!("invalid regular expression {re:?}: {why}"),
            ))
        }
    }
}

/// How many of `present` and the given strings are set.
fn count_set(present: bool, values: &[&Option<String>]) -> usize {
    usize::from(present) + values.iter().filter(|v| v.is_some()).count()
}

fn check_path(field: &str, path: &Option<String>) -> Result<(), FieldError> {
    match path {
        Some(p) if !p.starts_with('/') => Err(FieldError::new(
            field,
            format!("doesn't start with '/': {p:?}"),
        )),
        _ => Ok(()),
    }
}

/// Checks a (normalized) match, naming fields relative to it. Query
/// parameter conditions are refused unless `query_params` (L7 intentions
/// have none).
pub fn check_match(m: &HttpMatch, query_params: bool) -> Result<(), FieldError> {
    check_path("PathExact", &m.path_exact)?;
    check_path("PathPrefix", &m.path_prefix)?;
    if let Some(re) = &m.path_regex {
        check_regex("PathRegex", re)?;
    }
    if count_set(false, &[&m.path_exact, &m.path_prefix, &m.path_regex]) > 1 {
        return Err(FieldError::new(
            "",
            "should only contain at most one of PathExact, PathPrefix, or PathRegex",
        ));
    }
    for (i, h) in m.header.iter().enumerate() {
        let field = format!("Header[{i}]");
        if h.name.is_empty() {
            return Err(FieldError::new(field, "missing required Name field"));
        }
        if count_set(h.present, &[&h.exact, &h.prefix, &h.suffix, &h.regex]) != 1 {
            return Err(FieldError::new(
                field,
                "should only contain one of Present, Exact, Prefix, Suffix, or Regex",
            ));
        }
        if let Some(re) = &h.regex {
            check_regex(&format!("{field}.Regex"), re)?;
        }
    }
    if !query_params && !m.query_param.is_empty() {
        return Err(FieldError::new("QueryParam", "is not supported here"));
    }
    for (i, q) in m.query_param.iter().enumerate() {
        let field = format!("QueryParam[{i}]");
        if q.name.is_empty() {
            return Err(FieldError::new(field, "missing required Name field"));
        }
        if count_set(q.present, &[&q.exact, &q.regex]) != 1 {
            return Err(FieldError::new(
                field,
                "should only contain one of Present, Exact, or Regex",
            ));
        }
        if let Some(re) = &q.regex {
            check_regex(&format!("{field}.Regex"), re)?;
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            return Err(FieldError::new(
                "Methods",
                format!("contains an invalid method {method:?}"),
            ));
        }
        if m.methods[..i].contains(method) {
            return Err(FieldError::new(
                "Methods",
                format!("contains {method:?} more than once"),
            ));
        }
    }
    Ok(())
}

/// True for a valid header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks header changes: names are header names and values carry no line
/// breaks.
pub fn check_header_changes(h: &HeaderChanges) -> Result<(), FieldError> {
    for (op, map) in [("Add", &h.add), ("Set", &h.set)] {
        for (name, value) in map {
            if !is_header_name(name) {
                return Err(FieldError::new(
                    format!("{op}[{name:?}]"),
                    "is not a valid header name",
                ));
            }
            if value.contains(['\r', '\n', '\0']) {
                return Err(FieldError::new(
                    format!("{op}[{name:?}]"),
                    "value must not contain line breaks",
                ));
            }
        }
    }
    for (i, name) in h.remove.iter().enumerate() {
        if !is_header_name(name) {
            return Err(FieldError::new(
                format!("Remove[{i}]"),
                format!("{name:?} is not a valid header name"),
            ));
        }
    }
    Ok(())
}

/// Checks optional request and response header changes under `prefix`.
pub fn check_header_pair(
    prefix: &str,
    request: &HeaderChanges,
    response: &HeaderChanges,
) -> Result<(), FieldError> {
    check_header_changes(request).map_err(|e| e.within(&join(prefix, "RequestHeaders")))?;
    check_header_changes(response).map_err(|e| e.within(&join(prefix, "ResponseHeaders")))
}

/// `prefix.field`, or `field` at the top.
pub(crate) fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            ..HeaderMatch::default()
        }
    }

    #[test]
    fn matches_are_checked_as_consul_does() {
        let mut m = HttpMatch {
            path_prefix: Some("/api".into()),
            path_exact: Some(String::new()),
            methods: vec!["get".into()],
            ..HttpMatch::default()
        };
        normalize_match(&mut m);
        assert_eq!(m.path_exact, None);
        assert_eq!(m.methods, vec!["GET"]);
        check_match(&m, true).unwrap();

        let field = |m: HttpMatch| check_match(&m, true).unwrap_err();
        let both = HttpMatch {
            path_prefix: Some("/a".into()),
            path_regex: Some("/b.*".into()),
            ..HttpMatch::default()
        };
        assert!(field(both).reason.contains("at most one"));
        let relative = HttpMatch {
            path_exact: Some("api".into()),
            ..HttpMatch::default()
        };
        assert_eq!(field(relative).field, "PathExact");
        let bad_re = HttpMatch {
            path_regex: Some("/(".into()),
            ..HttpMatch::default()
        };
        let e = field(bad_re);
        assert_eq!(e.field, "PathRegex");
        assert!(e.reason.contains("unclosed group"), "{e}");
        let no_condition = HttpMatch {
            header: vec![header("x-debug")],
            ..HttpMatch::default()
        };
        assert_eq!(field(no_condition).field, "Header[0]");
        let two_conditions = HttpMatch {
            header: vec![HeaderMatch {
                present: true,
                exact: Some("1".into()),
                ..header("x-debug")
            }],
            ..HttpMatch::default()
        };
        assert_eq!(field(two_conditions).field, "Header[0]");
        let bad_method = HttpMatch {
            methods: vec!["FETCH".into()],
            ..HttpMatch::default()
        };
        assert_eq!(field(bad_method).field, "Methods");
        let twice = HttpMatch {
            methods: vec!["GET".into(), "GET".into()],
            ..HttpMatch::default()
        };
        assert!(field(twice).reason.contains("more than once"));
        let query = HttpMatch {
            query_param: vec![QueryParamMatch {
                name: "q".into(),
                ..QueryParamMatch::default()
            }],
            ..HttpMatch::default()
        };
        assert_eq!(field(query.clone()).field, "QueryParam[0]");
        assert_eq!(check_match(&query, false).unwrap_err().field, "QueryParam");
    }

    #[test]
    fn header_changes_need_header_names() {
        let mut h = HeaderChanges::default();
        h.set.insert("x-Version".into(), "2".into());
        h.remove.push("x-debug".into());
        check_header_changes(&h).unwrap();
        h.add.insert("bad name".into(), "1".into());
        assert_eq!(
            check_header_changes(&h).unwrap_err().field,
            "Add[\"bad name\"]"
        );
        let e = check_header_pair("Splits[0]", &h, &HeaderChanges::default()).unwrap_err();
        assert_eq!(e.field, "Splits[0].RequestHeaders.Add[\"bad name\"]");
    }
}
