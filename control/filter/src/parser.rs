//! A recursive-descent parser for go-bexpr's grammar.
//!
//! ```text
//! or_expr   = and_expr { "or" and_expr }
//! and_expr  = not_expr { "and" not_expr }
//! not_expr  = "not" not_expr | primary
//! primary   = "(" or_expr ")" | match
//! match     = selector ("==" | "!=") value
//!           | selector ["not"] ("contains" | "matches") value
//!           | selector "is" ["not"] "empty"
//!           | value ["not"] "in" selector
//! selector  = path | "\"/json/pointer\""
//! value     = path | number | string
//! ```
//!
//! Keywords are not reserved. The one real ambiguity is a leading `not`,
//! which may be the operator or a selector named `not` (`not in Tags`); as in
//! go-bexpr's PEG the operator reading is tried first and the parser falls
//! back to the other when it fails.

use regex::RegexBuilder;
use regex_syntax::hir::{Hir, HirKind};

use crate::ast::{Expr, Match, Selector, Test};
use crate::error::{shorten, FilterError};
use crate::lexer::{lex, Token, TokenKind};
use crate::literal::Literal;
use crate::{MAX_DEPTH, MAX_REGEXES, MAX_REGEX_EXPANSION};

/// The most memory one compiled regular expression may use, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parses a whole expression.
pub(crate) fn parse(input: &str) -> Result<Expr, FilterError> {
    let tokens = lex(input)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: input.len(),
        regexes: 0,
    };
    let expr = parser.or_expr(0)?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(unexpected("`and`, `or` or the end of the filter", token)),
    }
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    /// Length of the input: the offset reported for "end of input".
    end: usize,
    /// `matches` operators compiled so far.
    regexes: usize,
}

fn unexpected(expected: &str, token: &Token<'_>) -> FilterError {
    FilterError::Unexpected {
        expected: expected.into(),
        found: token.describe(),
        offset: token.offset,
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.pos)
    }

    fn peek_word(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(word))
    }

    /// Takes the next token, or fails saying `expected` was wanted.
    fn next(&mut self, expected: &str) -> Result<Token<'a>, FilterError> {
        match self.tokens.get(self.pos) {
            Some(token) => {
                self.pos += 1;
                Ok(token.clone())
            }
            None => Err(self.at_end(expected)),
        }
    }

    /// The error for running out of input when `expected` was wanted.
    fn at_end(&self, expected: &str) -> FilterError {
        FilterError::Unexpected {
            expected: expected.into(),
            found: "end of input".into(),
            offset: self.end,
        }
    }

    /// Takes the next token if it is the bare word `word`.
    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek_word(word);
        if found {
            self.pos += 1;
        }
        found
    }

    fn offset(&self) -> usize {
        self.peek().map_or(self.end, |t| t.offset)
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut operands = vec![self.and_expr(depth)?];
        while self.eat_word("or") {
            operands.push(self.and_expr(depth)?);
        }
        Ok(flatten(operands, Expr::Or))
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut operands = vec![self.not_expr(depth)?];
        while self.eat_word("and") {
            operands.push(self.not_expr(depth)?);
        }
        Ok(flatten(operands, Expr::And))
    }

    fn not_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep {
                limit: MAX_DEPTH,
                offset: self.offset(),
            });
        }
        if !self.peek_word("not") {
            return self.primary(depth);
        }
        let (pos, regexes) = (self.pos, self.regexes);
        self.pos += 1;
        let as_operator = match self.not_expr(depth + 1) {
            Ok(expr) => return Ok(expr.negate()),
            Err(err) if err.is_limit() => return Err(err),
            Err(err) => err,
        };
        // Perhaps `not` is a selector or value here, as in `not in Tags`.
        (self.pos, self.regexes) = (pos, regexes);
        match self.primary(depth) {
            Ok(expr) => Ok(expr),
            // Report whichever reading got further: that is the likelier
            // intent (ties go to the operator reading).
            Err(as_word) if as_word.offset() > as_operator.offset() => Err(as_word),
            Err(_) => Err(as_operator),
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let Some(token) = self.peek() else {
            return Err(self.at_end(EXPRESSION));
        };
        if token.kind != TokenKind::LParen {
            return self.match_expr();
        }
        let open = token.offset;
        self.pos += 1;
        let expr = self.or_expr(depth + 1)?;
        let close = self.next(&close_paren(open))?;
        if close.kind != TokenKind::RParen {
            return Err(unexpected(&close_paren(open), &close));
        }
        Ok(expr)
    }

    fn match_expr(&mut self) -> Result<Expr, FilterError> {
        let first = self.next(EXPRESSION)?;
        if matches!(
            first.kind,
            TokenKind::LParen | TokenKind::RParen | TokenKind::Eq | TokenKind::Ne
        ) {
            return Err(unexpected(EXPRESSION, &first));
        }
        let op = self.next(OPERATOR)?;
        let (test, negated, selector) = match &op.kind {
            TokenKind::Eq | TokenKind::Ne => {
                let selector = to_selector(&first)?;
                let value = self.value()?;
                let negated = op.kind == TokenKind::Ne;
                (Test::Equal(Literal::new(value.raw)), negated, selector)
            }
            _ if op.is_word("is") => {
                let selector = to_selector(&first)?;
                let negated = self.eat_word("not");
                let empty = self.next("`empty`")?;
                if !empty.is_word("empty") {
                    return Err(unexpected("`empty`", &empty));
                }
                (Test::IsEmpty, negated, selector)
            }
            _ if op.is_word("not") => {
                let second = self.next(AFTER_NOT)?;
                self.operator(&first, &second, true)?
            }
            _ => self.operator(&first, &op, false)?,
        };
        Ok(Expr::Match(Match {
            selector,
            test,
            negated,
        }))
    }

    /// Finishes a match whose operator is `in`, `contains` or `matches`.
    fn operator(
        &mut self,
        first: &Token<'_>,
        op: &Token<'_>,
        negated: bool,
    ) -> Result<(Test, bool, Selector), FilterError> {
        if op.is_word("in") {
            let value = to_literal(first)?;
            let selector = self.selector()?;
            return Ok((Test::In(value), negated, selector));
        }
        if op.is_word("contains") {
            let selector = to_selector(first)?;
            let value = self.value()?;
            return Ok((Test::In(value), negated, selector));
        }
        if op.is_word("matches") {
            let selector = to_selector(first)?;
            let at = self.offset();
            let pattern = self.value()?.raw;
            return Ok((Test::Matches(self.regex(&pattern, at)?), negated, selector));
        }
        let expected = if negated { AFTER_NOT } else { OPERATOR };
        Err(unexpected(expected, op))
    }

    fn value(&mut self) -> Result<Literal, FilterError> {
        let token = self.next(VALUE)?;
        to_literal(&token)
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let token = self.next(SELECTOR)?;
        to_selector(&token)
    }

    fn regex(&mut self, pattern: &str, offset: usize) -> Result<regex::Regex, FilterError> {
        if self.regexes >= MAX_REGEXES {
            return Err(FilterError::TooManyRegexes {
                limit: MAX_REGEXES,
                offset,
            });
        }
        self.regexes += 1;
        // A pattern that does not parse is left to the builder below, whose
        // message is the one callers see.
        if let Ok(hir) = regex_syntax::parse(pattern) {
            let size = expansion(&hir);
            if size > MAX_REGEX_EXPANSION {
                return Err(FilterError::RegexTooLarge {
                    pattern: shorten(pattern),
                    offset,
                    size,
                    limit: MAX_REGEX_EXPANSION,
                });
            }
        }
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| FilterError::InvalidRegex {
                pattern: shorten(pattern),
                offset,
                reason: err.to_string(),
            })
    }
}

/// How many characters and classes `hir` spells out once every counted
/// repetition is written out in full: `a{3}` is 3, `(ab|c){1,5}` is 15,
/// `x{4,}` is 4, and `*`, `+` and `?` count their operand once.
///
/// This is what makes a search slow: the regex engines' automata grow with
/// it, and once an automaton is too large for the lazy DFA's cache the
/// search falls back to simulating it, at a cost of this size times the
/// length of the text.
fn expansion(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(literal) => {
            std::str::from_utf8(&literal.0).map_or(literal.0.len(), |text| text.chars().count())
        }
        HirKind::Class(_) => 1,
        HirKind::Repetition(rep) => {
            let copies = rep.max.unwrap_or(rep.min).max(1);
            let copies = usize::try_from(copies).unwrap_or(usize::MAX);
            expansion(&rep.sub).saturating_mul(copies)
        }
        HirKind::Capture(capture) => expansion(&capture.sub),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts
            .iter()
            .fold(0, |total, part| total.saturating_add(expansion(part))),
    }
}

const EXPRESSION: &str = "a selector, a value, `not` or `(`";
const OPERATOR: &str = "an operator (`==`, `!=`, `is`, `in`, `not`, `contains` or `matches`)";
const AFTER_NOT: &str = "`in`, `contains` or `matches` after `not`";
const VALUE: &str = "a value (a string, number or bare word)";
const SELECTOR: &str = "a selector";

fn close_paren(open: usize) -> String {
    format!("`and`, `or` or a `)` to close the `(` at byte {open}")
}

/// One operand stays itself; more become an `and` or `or` node.
fn flatten(mut operands: Vec<Expr>, node: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1 {
        if let Some(only) = operands.pop() {
            return only;
        }
    }
    node(operands)
}

/// Reads a token in value position: a bare path stands for its own text
/// (`Meta.env == qa` compares with `"qa"`).
fn to_literal(token: &Token<'_>) -> Result<Literal, FilterError> {
    let raw = match &token.kind {
        TokenKind::Path { segments, .. } => segments.join("."),
        TokenKind::Str { value, .. } => value.clone(),
        TokenKind::Number => token.text.to_owned(),
        _ => return Err(unexpected(VALUE, token)),
    };
    Ok(Literal::new(raw))
}

/// Reads a token in selector position.
fn to_selector(token: &Token<'_>) -> Result<Selector, FilterError> {
    match &token.kind {
        TokenKind::Path { segments, .. } => Ok(Selector {
            segments: segments.clone(),
        }),
        TokenKind::Str {
            value,
            pointer: true,
        } => json_pointer(value).ok_or_else(|| FilterError::InvalidSelector {
            offset: token.offset,
            reason: format!(
                "{} is not a JSON pointer such as \"/Meta/env\"; a quoted string is a value",
                token.describe()
            ),
        }),
        TokenKind::Str { .. } => Err(FilterError::InvalidSelector {
            offset: token.offset,
            reason: format!(
                "{} is a value, not a selector (a quoted selector must be a JSON pointer in double quotes)",
                token.describe()
            ),
        }),
        TokenKind::Number => Err(FilterError::InvalidSelector {
            offset: token.offset,
            reason: format!("{} is a number, not a selector", token.describe()),
        }),
        _ => Err(unexpected(SELECTOR, token)),
    }
}

/// go-bexpr's quoted selector: `/seg/seg` where each segment is letters,
/// digits or `-_.~|:`, with `~1` standing for `/` and `~0` for `~`. The empty
/// pointer selects the datum itself.
fn json_pointer(text: &str) -> Option<Selector> {
    if text.is_empty() {
        return Some(Selector {
            segments: Vec::new(),
        });
    }
    let rest = text.strip_prefix('/')?;
    let segments = rest
        .split('/')
        .map(|segment| {
            let valid = !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_.~|:".contains(c));
            valid.then(|| segment.replace("~1", "/").replace("~0", "~"))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Selector { segments })
}

#[cfg(test)]
mod tests;
