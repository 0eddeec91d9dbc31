//! Consul's `?filter=` expression language, evaluated over JSON.
//!
//! Consul's list endpoints take a filter written in HashiCorp's
//! [go-bexpr](https://github.com/hashicorp/go-bexpr) syntax and return only
//! the records it matches. This crate parses such an expression once
//! ([`Filter::parse`]) and tests records against it ([`Filter::matches`],
//! [`filter_values`]). Records are the `serde_json::Value` form of Consul's
//! API types, so selectors use Consul's JSON (PascalCase) field names.
//!
//! ```
//! use mesh_filter::{filter_values, Filter};
//! use serde_json::json;
//!
//! let filter = Filter::parse(r#"Meta.env == "qa" and "primary" in Tags"#)?;
//! let services = vec![
//!     json!({"ID": "redis1", "Tags": ["primary"], "Meta": {"env": "production"}}),
//!     json!({"ID": "redis3", "Tags": ["primary", "qa"], "Meta": {"env": "qa"}}),
//! ];
//! let kept = filter_values(&filter, services);
//! assert_eq!(kept.len(), 1);
//! assert_eq!(kept[0]["ID"], "redis3");
//! # Ok::<(), mesh_filter::FilterError>(())
//! ```
//!
//! # Syntax
//!
//! | form | meaning |
//! | --- | --- |
//! | `Sel == V`, `Sel != V` | equality, `V` converted to the field's type |
//! | `Sel is empty`, `Sel is not empty` | empty string, array or object, or not present |
//! | `V in Sel`, `V not in Sel` | array member, object key or substring |
//! | `Sel contains V`, `Sel not contains V` | the same as `in`, operands swapped |
//! | `Sel matches V`, `Sel not matches V` | regular-expression search in a string |
//! | `not E`, `E and E`, `E or E`, `( E )` | logic; `not` binds tightest, then `and`, then `or` |
//!
//! A selector (`Sel`) is a dotted path such as `Service.Meta.version`. A map
//! key that is not a plain name goes in brackets, `Meta["foo-bar"]`, and a
//! segment of digits indexes an array, `Checks.0.Status`. go-bexpr's
//! JSON-pointer form, a double-quoted `"/Meta/foo-bar"`, is accepted too.
//! Keys and field names match verbatim (case-sensitively).
//!
//! A value (`V`) is a double-quoted string with Go escapes (`"a\tb"`), a
//! backtick raw string (`` `^\d+$` ``), a number (`80`, `-0.5`) or a bare
//! word or path that stands for its own text (`qa`, `true`). Keywords are
//! case-sensitive and not reserved: `not in Tags` tests for the tag `not`.
//!
//! # Semantics
//!
//! As in go-bexpr, a value is kept as text and converted to the type of the
//! JSON value it is compared with: `Port == 80` and `Port == "80"` both match
//! the number 80; `EnableTagOverride == true` matches the boolean (Go's
//! `ParseBool` spellings: `1`, `t`, `true`, `True`, ...); integers accept Go's
//! `0x`/`0o`/`0b` prefixes. A value that does not convert is simply unequal.
//!
//! Where the selector finds nothing — a missing key, `null`, or a path that
//! runs past a string, number or bool — the match is "not present": `==`,
//! `in`, `contains`, `matches` and `is not empty` are false, and their
//! negations `!=`, `not in`, `not contains`, `not matches` and `is empty` are
//! true. (go-bexpr, knowing the Go type, rejects unknown *field names* when
//! the filter is created; over schemaless JSON that is not possible, so an
//! unknown field behaves like a missing map key.) Operators that go-bexpr
//! refuses for a type are false here and their negations true: `==` on an
//! array or object, `contains` on a number or bool, `matches` on anything
//! but a string.
//!
//! When a selector passes through an array before its last segment, the
//! match — operator, negation and all — is applied to every element and holds
//! if it holds for any of them (go-bexpr 0.1.2, which Consul uses). On a
//! `/health/service` entry `Checks.Status == "critical"` keeps services with
//! *some* critical check, and `Checks.Status != "passing"` keeps services
//! with *some* check that is not passing; an empty array matches nothing.
//!
//! # Limits
//!
//! Parsing never panics. Parentheses and `not`s may nest [`MAX_DEPTH`]
//! deep; `and`/`or` chains may be any length. Regular expressions are
//! compiled when the filter is parsed (an invalid one is a parse error), at
//! most [`MAX_REGEXES`] per filter, each at most [`MAX_REGEX_EXPANSION`]
//! characters and classes with its counted repetitions written out (so
//! `a{1000}` is refused) and at most 1 MiB once compiled. The
//! regex dialect is the `regex` crate's, which matches Go's RE2 syntax in
//! all common use.

mod ast;
mod error;
mod eval;
mod lexer;
mod literal;
mod parser;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

pub use crate::error::FilterError;

/// How deep parentheses and `not`s may nest in one filter.
pub const MAX_DEPTH: usize = 64;

/// How many `matches` / `not matches` operators one filter may hold.
pub const MAX_REGEXES: usize = 64;

/// How large one regular expression may be once its counted repetitions are
/// written out, in characters and classes: `[a-z]{1,63}` is 63 and passes,
/// `(a{1000}|b)` is 1001 and is refused.
///
/// A search costs up to this size times the length of the text searched (the
/// regex engines fall back to simulating the automaton when it is too large
/// to cache), so the limit bounds the work one `matches` does on a long
/// value. Go's RE2, which Consul uses, allows `{1000}`; 256 keeps DNS labels
/// (`{1,63}`), names up to 255 characters, UUIDs and addresses.
pub const MAX_REGEX_EXPANSION: usize = 256;

/// A parsed filter expression, ready to test records.
///
/// Parse once per request and test each record; a `Filter` is cheap to clone
/// and can be shared across threads.
#[derive(Clone, Debug)]
pub struct Filter {
    source: String,
    expr: ast::Expr,
}

impl Filter {
    /// Parses a filter expression.
    ///
    /// An empty (or all-whitespace) expression is an error; callers that
    /// treat an empty `?filter=` as "no filter" should check before parsing.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        Ok(Filter {
            source: expr.to_owned(),
            expr: parser::parse(expr)?,
        })
    }

    /// True if `value` satisfies the filter.
    pub fn matches(&self, value: &Value) -> bool {
        eval::eval(&self.expr, value)
    }

    /// The expression as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Parses a filter expression, as [`Filter::parse`].
impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::parse(s)
    }
}

/// Shows the expression as it was written.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Keeps the values that `filter` matches, in their original order.
pub fn filter_values(filter: &Filter, values: Vec<Value>) -> Vec<Value> {
    values.into_iter().filter(|v| filter.matches(v)).collect()
}

#[cfg(test)]
mod tests;
