//! Why a filter expression was refused.

/// A filter expression that could not be parsed.
///
/// Every variant names what is wrong and the byte offset in the expression
/// where it was found, so the message can be handed back to an API caller as
/// is (Consul answers a bad `?filter=` with HTTP 400 and a plain-text reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// A character that cannot start any part of an expression.
    #[error("unexpected character {ch:?} at byte {offset}")]
    UnexpectedChar {
        /// The character found.
        ch: char,
        /// Where it is.
        offset: usize,
    },
    /// A quoted string with no closing quote.
    #[error("unterminated string literal starting at byte {offset}")]
    UnterminatedString {
        /// Where the opening quote is.
        offset: usize,
    },
    /// A double-quoted string whose contents are not valid (a bad escape
    /// sequence, a raw newline, or escapes that spell invalid UTF-8).
    #[error("invalid string literal at byte {offset}: {reason}")]
    InvalidString {
        /// Where the offending part of the string is.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A malformed number, such as `3x`, `01` or `1.`.
    #[error("invalid number literal {text:?} at byte {offset}")]
    InvalidNumber {
        /// The text that was read as a number (shortened if long).
        text: String,
        /// Where it starts.
        offset: usize,
    },
    /// A malformed selector: a bad index expression, a quoted selector that
    /// is not a JSON pointer, or a literal where a selector must be.
    #[error("invalid selector at byte {offset}: {reason}")]
    InvalidSelector {
        /// Where the selector (or the offending part of it) is.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The expression does not follow the grammar here.
    #[error("expected {expected} at byte {offset}, found {found}")]
    Unexpected {
        /// What the grammar allows at this point.
        expected: String,
        /// What was there instead (shortened if long), or `end of input`.
        found: String,
        /// Where it is.
        offset: usize,
    },
    /// Parentheses and `not`s nest deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
    #[error("expression nests deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
        /// Where the limit was passed.
        offset: usize,
    },
    /// The value of a `matches` operator is not a valid regular expression.
    #[error("invalid regular expression {pattern:?} at byte {offset}: {reason}")]
    InvalidRegex {
        /// The pattern as written (shortened if long).
        pattern: String,
        /// Where the pattern is.
        offset: usize,
        /// Why the regular expression engine refused it.
        reason: String,
    },
    /// A `matches` pattern whose counted repetitions spell out more than
    /// [`MAX_REGEX_EXPANSION`](crate::MAX_REGEX_EXPANSION) characters and
    /// classes, so searching long values with it would be slow.
    #[error(
        "regular expression {pattern:?} at byte {offset} is too expensive: its counted repetitions \
         expand to {size} characters and classes, more than the limit of {limit}"
    )]
    RegexTooLarge {
        /// The pattern as written (shortened if long).
        pattern: String,
        /// Where the pattern is.
        offset: usize,
        /// Its size with the repetitions written out (saturating).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More `matches` operators than [`MAX_REGEXES`](crate::MAX_REGEXES).
    #[error("more than {limit} regular expressions in one filter, at byte {offset}")]
    TooManyRegexes {
        /// The limit.
        limit: usize,
        /// Where the first one over the limit is.
        offset: usize,
    },
}

impl FilterError {
    /// The byte offset in the expression at which the problem was found.
    pub fn offset(&self) -> usize {
        match self {
            FilterError::UnexpectedChar { offset, .. }
            | FilterError::UnterminatedString { offset }
            | FilterError::InvalidString { offset, .. }
            | FilterError::InvalidNumber { offset, .. }
            | FilterError::InvalidSelector { offset, .. }
            | FilterError::Unexpected { offset, .. }
            | FilterError::TooDeep { offset, .. }
            | FilterError::InvalidRegex { offset, .. }
            | FilterError::RegexTooLarge { offset, .. }
            | FilterError::TooManyRegexes { offset, .. } => *offset,
        }
    }

    /// True when the expression was refused for its size or nesting rather
    /// than its syntax ([`TooDeep`](Self::TooDeep),
    /// [`TooManyRegexes`](Self::TooManyRegexes),
    /// [`RegexTooLarge`](Self::RegexTooLarge)).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            FilterError::TooDeep { .. }
                | FilterError::TooManyRegexes { .. }
                | FilterError::RegexTooLarge { .. }
        )
    }
}

/// Shortens `text` for use in an error message, so that hostile input cannot
/// blow up the size of the message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_offset() {
        let err = FilterError::UnexpectedChar { ch: '%', offset: 7 };
        assert_eq!(err.to_string(), "unexpected character '%' at byte 7");
        assert_eq!(err.offset(), 7);
        assert!(!err.is_limit());
        let err = FilterError::TooDeep {
            limit: 64,
            offset: 3,
        };
        assert!(err.is_limit());
        assert_eq!(err.offset(), 3);
    }

    #[test]
    fn shorten_keeps_short_text_and_cuts_long_text_on_char_boundaries() {
        assert_eq!(shorten("abc"), "abc");
        let long = "å".repeat(100);
        let short = shorten(&long);
        assert_eq!(short, format!("{}...", "å".repeat(40)));
    }
}
