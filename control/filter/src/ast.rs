//! The parsed form of an expression.

use std::fmt;

use regex::Regex;

use crate::literal::Literal;

/// A boolean expression over one JSON value.
///
/// `and` and `or` chains are kept flat (n-ary) so that a long chain does not
/// make a deep tree: only parentheses and `not` add depth, and the parser
/// bounds those.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// True if every operand is.
    And(Vec<Expr>),
    /// True if any operand is.
    Or(Vec<Expr>),
    /// True if the operand is not.
    Not(Box<Expr>),
    /// A single match against the datum.
    Match(Match),
}

impl Expr {
    /// `not expr`, folding `not not x` into `x` as go-bexpr does.
    pub(crate) fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }
}

/// A matching operator applied to the value a selector picks out.
#[derive(Debug, Clone)]
pub(crate) struct Match {
    /// Where in the datum to look.
    pub(crate) selector: Selector,
    /// The positive form of the test.
    pub(crate) test: Test,
    /// True for the negated operators (`!=`, `not in`, `not contains`,
    /// `is not empty`, `not matches`).
    pub(crate) negated: bool,
}

/// The positive forms of the matching operators.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `==` (and, negated, `!=`).
    Equal(Literal),
    /// `in` / `contains`: membership, key presence or substring.
    In(Literal),
    /// `is empty`.
    IsEmpty,
    /// `matches`: a regular-expression search.
    Matches(Regex),
}

/// A path into the datum: object keys, or array indexes written as digits.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) segments: Vec<String>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

/// Writes the selector back in bexpr syntax: `a.b["c-d"]`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            let plain = segment
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let index = i > 0 && !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
            match (i, plain || index) {
                (0, true) => f.write_str(segment)?,
                (_, true) => write!(f, ".{segment}")?,
                (_, false) => write!(f, "[{segment:?}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(segments: &[&str]) -> Selector {
        Selector {
            segments: segments.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn selectors_display_in_bexpr_syntax() {
        assert_eq!(
            selector(&["Service", "Meta", "v"]).to_string(),
            "Service.Meta.v"
        );
        assert_eq!(
            selector(&["Meta", "foo-bar"]).to_string(),
            "Meta[\"foo-bar\"]"
        );
        assert_eq!(
            selector(&["Checks", "0", "Status"]).to_string(),
            "Checks.0.Status"
        );
        assert_eq!(selector(&["a b"]).to_string(), "[\"a b\"]");
        assert_eq!(format!("{:?}", selector(&["a"])), "Selector(a)");
    }

    #[test]
    fn double_negation_folds() {
        let m = Expr::Or(vec![]);
        assert!(matches!(m.clone().negate(), Expr::Not(_)));
        assert!(matches!(m.negate().negate(), Expr::Or(_)));
    }
}
