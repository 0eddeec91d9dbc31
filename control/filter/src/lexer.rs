//! Splits an expression into tokens.
//!
//! Selectors are read whole here (`Service.Meta["a-b"].x` is one token), as in
//! go-bexpr's grammar, where no whitespace may appear inside a selector except
//! within the brackets of an index. Keywords (`and`, `or`, `not`, `in`, `is`,
//! `empty`, `contains`, `matches`) are not reserved: they come out as bare
//! one-word paths and the parser decides from their position what they are.

use crate::error::{shorten, FilterError};

/// One token and where it is in the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'a> {
    /// What was read.
    pub(crate) kind: TokenKind,
    /// Byte offset of the token's first character.
    pub(crate) offset: usize,
    /// The token's source text.
    pub(crate) text: &'a str,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// A selector path such as `Service.Meta["version"]`. `bare` is true for a
    /// single identifier with nothing after it, which may be a keyword.
    Path { segments: Vec<String>, bare: bool },
    /// A quoted string, unescaped. `pointer` is true when it was written in
    /// double quotes without any escape, the only form in which go-bexpr
    /// reads a string as a JSON-pointer selector.
    Str { value: String, pointer: bool },
    /// A number literal, kept as written.
    Number,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Token<'_> {
    /// True if this token is the bare word `word`.
    pub(crate) fn is_word(&self, word: &str) -> bool {
        matches!(&self.kind, TokenKind::Path { segments, bare: true } if segments[0] == word)
    }

    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        format!("`{}`", shorten(self.text))
    }
}

/// Splits `input` into tokens.
pub(crate) fn lex(input: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let mut lexer = Lexer {
        input,
        bytes: input.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let Some(&b) = lexer.bytes.get(start) else {
            return Ok(tokens);
        };
        let kind = match b {
            b'(' => {
                lexer.pos += 1;
                TokenKind::LParen
            }
            b')' => {
                lexer.pos += 1;
                TokenKind::RParen
            }
            b'=' | b'!' if lexer.bytes.get(start + 1) == Some(&b'=') => {
                lexer.pos += 2;
                if b == b'=' {
                    TokenKind::Eq
                } else {
                    TokenKind::Ne
                }
            }
            b'"' | b'`' => {
                let (value, pointer) = lexer.string()?;
                TokenKind::Str { value, pointer }
            }
            b'-' | b'0'..=b'9' => {
                lexer.number()?;
                TokenKind::Number
            }
            b'a'..=b'z' | b'A'..=b'Z' => {
                let (segments, bare) = lexer.path()?;
                TokenKind::Path { segments, bare }
            }
            _ => return Err(lexer.unexpected_char(start)),
        };
        tokens.push(Token {
            kind,
            offset: start,
            text: &input[start..lexer.pos],
        });
    }
}

/// The whitespace go-bexpr skips between tokens.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

struct Lexer<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    fn unexpected_char(&self, offset: usize) -> FilterError {
        match self.input[offset..].chars().next() {
            Some(ch) => FilterError::UnexpectedChar { ch, offset },
            None => FilterError::Unexpected {
                expected: "more input".into(),
                found: "end of input".into(),
                offset,
            },
        }
    }

    /// `-? ("0" / [1-9][0-9]*) ("." [0-9]+)?`, which must be followed by
    /// whitespace, `)` or the end of the input.
    fn number(&mut self) -> Result<(), FilterError> {
        let start = self.pos;
        let mut ok = true;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            _ => ok = false,
        }
        if ok && self.peek() == Some(b'.') {
            self.pos += 1;
            let digits = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            ok = self.pos > digits;
        }
        if ok && self.peek().is_none_or(|b| is_space(b) || b == b')') {
            return Ok(());
        }
        // Take the rest of the word so the message shows what was written.
        while self
            .peek()
            .is_some_and(|b| is_ident_continue(b) || b == b'.' || b == b'-')
        {
            self.pos += 1;
        }
        let end = self.pos.max(start + 1);
        let text = self.input.get(start..end).unwrap_or("-");
        Err(FilterError::InvalidNumber {
            text: shorten(text),
            offset: start,
        })
    }

    /// `Identifier ("." Identifier / "." [0-9]+ / "[" String "]")*`
    fn path(&mut self) -> Result<(Vec<String>, bool), FilterError> {
        let mut segments = vec![self.identifier()];
        let mut bare = true;
        loop {
            match self.peek() {
                Some(b'.') => {
                    let dot = self.pos;
                    self.pos += 1;
                    match self.peek() {
                        Some(b'a'..=b'z' | b'A'..=b'Z') => segments.push(self.identifier()),
                        Some(b'0'..=b'9') => {
                            let start = self.pos;
                            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                                self.pos += 1;
                            }
                            segments.push(self.input[start..self.pos].to_owned());
                        }
                        _ => {
                            return Err(FilterError::InvalidSelector {
                                offset: dot,
                                reason: "expected a field name or index after `.`".into(),
                            })
                        }
                    }
                }
                Some(b'[') => {
                    let open = self.pos;
                    self.pos += 1;
                    self.skip_whitespace();
                    if !matches!(self.peek(), Some(b'"' | b'`')) {
                        return Err(FilterError::InvalidSelector {
                            offset: self.pos,
                            reason: "an index must be a quoted string, such as [\"key\"]".into(),
                        });
                    }
                    let (key, _) = self.string()?;
                    self.skip_whitespace();
                    if self.peek() != Some(b']') {
                        return Err(FilterError::InvalidSelector {
                            offset: self.pos,
                            reason: format!("unclosed index expression opened at byte {open}"),
                        });
                    }
                    self.pos += 1;
                    segments.push(key);
                }
                _ => break,
            }
            bare = false;
        }
        Ok((segments, bare))
    }

    /// `[a-zA-Z][a-zA-Z0-9_]*`; the caller has checked the first byte.
    fn identifier(&mut self) -> String {
        let start = self.pos;
        self.pos += 1;
        while self.peek().is_some_and(is_ident_continue) {
            self.pos += 1;
        }
        self.input[start..self.pos].to_owned()
    }

    /// A double-quoted (Go escapes) or backtick (raw) string. Returns the
    /// contents and whether it was double-quoted with no escapes.
    fn string(&mut self) -> Result<(String, bool), FilterError> {
        let open = self.pos;
        let quote = self.bytes[open];
        self.pos += 1;
        if quote == b'`' {
            let Some(len) = self.input[self.pos..].find('`') else {
                return Err(FilterError::UnterminatedString { offset: open });
            };
            // Go's strconv.Unquote drops carriage returns from raw strings.
            let value = self.input[self.pos..self.pos + len].replace('\r', "");
            self.pos += len + 1;
            return Ok((value, false));
        }

        let mut out: Vec<u8> = Vec::new();
        let mut escaped = false;
        loop {
            let Some(b) = self.peek() else {
                return Err(FilterError::UnterminatedString { offset: open });
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\n' => {
                    return Err(FilterError::InvalidString {
                        offset: self.pos,
                        reason: "newline in a double-quoted string (use \\n or a `raw` string)",
                    })
                }
                b'\\' => {
                    escaped = true;
                    self.escape(open, &mut out)?;
                }
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(value) => Ok((value, !escaped)),
            Err(_) => Err(FilterError::InvalidString {
                offset: open,
                reason: "escape sequences spell invalid UTF-8",
            }),
        }
    }

    /// One Go escape sequence (`\n`, `\x41`, `\101`, `\u00e5`, ...), with
    /// `pos` on the backslash, in the string opened at `open`. Appends the
    /// bytes it stands for to `out`.
    fn escape(&mut self, open: usize, out: &mut Vec<u8>) -> Result<(), FilterError> {
        let at = self.pos;
        let bad = |reason| FilterError::InvalidString { offset: at, reason };
        let Some(c) = self.bytes.get(at + 1).copied() else {
            return Err(FilterError::UnterminatedString { offset: open });
        };
        self.pos = at + 2;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        match c {
            b'0'..=b'7' => {
                let digits = self.digits(at + 1, 3, 8).ok_or_else(|| {
                    bad("an octal escape needs three octal digits, such as \\101")
                })?;
                let byte = u8::try_from(digits)
                    .map_err(|_| bad("an octal escape must be at most \\377"))?;
                self.pos = at + 4;
                out.push(byte);
            }
            b'x' => {
                let digits = self
                    .digits(at + 2, 2, 16)
                    .ok_or_else(|| bad("a \\x escape needs two hex digits"))?;
                self.pos = at + 4;
                // Two hex digits never exceed a byte.
                out.push(digits as u8);
            }
            b'u' | b'U' => {
                let n = if c == b'u' { 4 } else { 8 };
                let digits = self
                    .digits(at + 2, n, 16)
                    .ok_or_else(|| bad("a \\u escape needs 4 hex digits, \\U needs 8"))?;
                let ch = char::from_u32(digits)
                    .ok_or_else(|| bad("escape names an invalid Unicode code point"))?;
                self.pos = at + 2 + n;
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(bad("unknown escape sequence")),
        }
        Ok(())
    }

    /// Reads exactly `n` digits in `radix` starting at byte `start`.
    fn digits(&self, start: usize, n: usize, radix: u32) -> Option<u32> {
        let text = self.bytes.get(start..start + n)?;
        text.iter().try_fold(0u32, |acc, &b| {
            let d = char::from(b).to_digit(radix)?;
            Some(acc * radix + d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<TokenKind> {
        lex(input).unwrap().into_iter().map(|t| t.kind).collect()
    }

    fn path(segments: &[&str], bare: bool) -> TokenKind {
        TokenKind::Path {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            bare,
        }
    }

    fn string(value: &str, pointer: bool) -> TokenKind {
        TokenKind::Str {
            value: value.into(),
            pointer,
        }
    }

    #[test]
    fn simple_tokens_and_offsets() {
        let tokens = lex(" ( Service == \"web\" ) ").unwrap();
        let got: Vec<_> = tokens.iter().map(|t| (t.offset, t.text)).collect();
        assert_eq!(
            got,
            vec![
                (1, "("),
                (3, "Service"),
                (11, "=="),
                (14, "\"web\""),
                (20, ")")
            ]
        );
        assert_eq!(
            kinds("a!=b"),
            vec![path(&["a"], true), TokenKind::Ne, path(&["b"], true)]
        );
    }

    #[test]
    fn empty_input_has_no_tokens() {
        assert!(lex("").unwrap().is_empty());
        assert!(lex(" \t\r\n").unwrap().is_empty());
    }

    #[test]
    fn paths_with_dots_indexes_and_numbers() {
        assert_eq!(
            kinds("Service.Meta.version"),
            vec![path(&["Service", "Meta", "version"], false)]
        );
        assert_eq!(
            kinds("Meta[\"foo-bar\"].x[ `a b` ].0"),
            vec![path(&["Meta", "foo-bar", "x", "a b", "0"], false)]
        );
        assert_eq!(
            kinds("foo[\"abc-def ghi åß∂ƒ\"]"),
            vec![path(&["foo", "abc-def ghi åß∂ƒ"], false)]
        );
        assert_eq!(kinds("a_1"), vec![path(&["a_1"], true)]);
    }

    #[test]
    fn bad_paths() {
        assert!(matches!(
            lex("foo[3] == abc"),
            Err(FilterError::InvalidSelector { offset: 4, .. })
        ));
        assert!(matches!(
            lex("x in foo[\"abc\""),
            Err(FilterError::InvalidSelector { offset: 14, .. })
        ));
        assert!(matches!(
            lex("foo[\"abc\" == 3"),
            Err(FilterError::InvalidSelector { offset: 10, .. })
        ));
        assert!(matches!(
            lex("foo. == 3"),
            Err(FilterError::InvalidSelector { offset: 3, .. })
        ));
        assert!(matches!(
            lex("foo[\"abc"),
            Err(FilterError::UnterminatedString { offset: 4 })
        ));
    }

    #[test]
    fn numbers() {
        for ok in ["0", "42", "-7", "0.25", "-0.2", "11.11"] {
            assert_eq!(lex(ok).unwrap()[0].text, ok, "{ok}");
        }
        assert_eq!(
            kinds("(80)"),
            vec![TokenKind::LParen, TokenKind::Number, TokenKind::RParen]
        );
        for (bad, text) in [
            ("3x", "3x"),
            ("01", "01"),
            ("1.", "1."),
            ("1.2.3", "1.2.3"),
            ("-", "-"),
            ("-x", "-x"),
            ("80==", "80"),
        ] {
            match lex(bad) {
                Err(FilterError::InvalidNumber { text: t, offset: 0 }) => assert_eq!(t, text),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn double_quoted_strings_unescape_like_go() {
        assert_eq!(kinds(r#""a b""#), vec![string("a b", true)]);
        assert_eq!(
            kinds(r#""a\tb\n\\\"\x41\101\u00e5\U0001F600""#),
            vec![string("a\tb\n\\\"AAå😀", false)]
        );
        assert_eq!(kinds(r#""""#), vec![string("", true)]);
        assert_eq!(kinds("\"åß∂\""), vec![string("åß∂", true)]);
    }

    #[test]
    fn bad_double_quoted_strings() {
        assert_eq!(
            lex("foo == \"12x"),
            Err(FilterError::UnterminatedString { offset: 7 })
        );
        assert_eq!(
            lex("\"abc\\"),
            Err(FilterError::UnterminatedString { offset: 0 })
        );
        for bad in [
            r#""\q""#,
            r#""\x4""#,
            r#""\xZZ""#,
            r#""\400""#,
            r#""\12""#,
            r#""\ud800""#,
            r#""\U00110000""#,
            r#""\'""#,
            "\"a\nb\"",
        ] {
            assert!(
                matches!(lex(bad), Err(FilterError::InvalidString { .. })),
                "{bad}: {:?}",
                lex(bad)
            );
        }
        // Bytes that do not form UTF-8.
        assert!(matches!(
            lex(r#""\xff""#),
            Err(FilterError::InvalidString { offset: 0, .. })
        ));
    }

    #[test]
    fn raw_strings_keep_backslashes() {
        assert_eq!(kinds(r"`a\nb`"), vec![string(r"a\nb", false)]);
        assert_eq!(kinds("`a\r\nb`"), vec![string("a\nb", false)]);
        assert_eq!(
            lex("foo == `12x"),
            Err(FilterError::UnterminatedString { offset: 7 })
        );
    }

    #[test]
    fn unexpected_characters() {
        assert_eq!(
            lex("a = b"),
            Err(FilterError::UnexpectedChar { ch: '=', offset: 2 })
        );
        assert_eq!(
            lex("a ! b"),
            Err(FilterError::UnexpectedChar { ch: '!', offset: 2 })
        );
        assert_eq!(
            lex("a == é"),
            Err(FilterError::UnexpectedChar {
                ch: 'é', offset: 5
            })
        );
        assert_eq!(
            lex("_a"),
            Err(FilterError::UnexpectedChar { ch: '_', offset: 0 })
        );
    }

    #[test]
    fn keywords_are_bare_words() {
        let tokens = lex("not Meta.not").unwrap();
        assert!(tokens[0].is_word("not"));
        assert!(!tokens[1].is_word("not"));
    }
}
