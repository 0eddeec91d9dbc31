//! Values written in an expression, and how they compare with JSON.
//!
//! go-bexpr keeps every value as the text written and converts it to the type
//! of the field it is compared with (Go's `strconv.ParseBool`, `ParseInt` with
//! base 0, `ParseFloat`). JSON carries the field's type with the value, so the
//! conversions are done once at parse time and the one that fits is picked
//! when a value is compared.

use serde_json::Value;

/// A value from an expression: its text and the typed readings of that text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Literal {
    /// The text, as written (strings unquoted and unescaped).
    pub(crate) raw: String,
    /// The text read as a Go `bool`, if it is one.
    boolean: Option<bool>,
    /// The text read as a Go integer (`int64` or `uint64`), if it is one.
    int: Option<i128>,
    /// The text read as a float, if it is one.
    float: Option<f64>,
}

impl Literal {
    /// Reads `raw` every way it can be compared.
    pub(crate) fn new(raw: String) -> Literal {
        Literal {
            boolean: parse_bool(&raw),
            int: parse_int(&raw),
            float: raw.parse().ok(),
            raw,
        }
    }

    /// True if `value` equals this literal converted to `value`'s type.
    /// Arrays, objects and null equal nothing.
    pub(crate) fn equals(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => *s == self.raw,
            Value::Bool(b) => self.boolean == Some(*b),
            Value::Number(n) => {
                let int = n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from));
                match (int, self.int) {
                    (Some(have), Some(want)) => have == want,
                    // An integer field and a literal such as `80.0`, or a
                    // float field: compare as floats.
                    _ => match (n.as_f64(), self.float) {
                        (Some(have), Some(want)) => have == want,
                        _ => false,
                    },
                }
            }
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, widened to also take the `uint64`
/// range: an optional sign, then a `0x`, `0o`, `0b` or bare `0` (octal)
/// prefix or none (decimal); `_` may separate digits.
fn parse_int(s: &str) -> Option<i128> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits, prefixed) = match lower.as_deref() {
        Some("0x") => (16, &body[2..], true),
        Some("0o") => (8, &body[2..], true),
        Some("0b") => (2, &body[2..], true),
        // A leading zero means octal; the zero itself is a digit.
        _ if body.len() > 1 && body.starts_with('0') => (8, body, false),
        _ => (10, body, false),
    };
    if !underscores_ok(digits, prefixed) {
        return None;
    }
    let mut value: i128 = 0;
    let mut seen = false;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(radix)?;
        value = value
            .checked_mul(i128::from(radix))?
            .checked_add(i128::from(d))?;
        seen = true;
    }
    if !seen {
        return None;
    }
    let value = if negative { -value } else { value };
    let fits = i128::from(i64::MIN) <= value && value <= i128::from(u64::MAX);
    fits.then_some(value)
}

/// Go's rule: each `_` sits between two digits, or between a base prefix
/// and a digit.
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    let bytes = digits.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        if b != b'_' {
            return true;
        }
        let before = if i == 0 {
            prefixed
        } else {
            bytes[i - 1] != b'_'
        };
        let after = bytes.get(i + 1).is_some_and(|&n| n != b'_');
        before && after
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", "no", " true"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_ints() {
        let cases: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("80", Some(80)),
            ("-80", Some(-80)),
            ("+80", Some(80)),
            ("0x50", Some(80)),
            ("0X50", Some(80)),
            ("0o120", Some(80)),
            ("0120", Some(80)),
            ("0b1010000", Some(80)),
            ("1_000", Some(1000)),
            ("0x_50", Some(80)),
            ("0_7", Some(7)),
            ("-0x10", Some(-16)),
            ("18446744073709551615", Some(u64::MAX as i128)),
            ("-9223372036854775808", Some(i64::MIN as i128)),
            ("18446744073709551616", None),
            ("-9223372036854775809", None),
            ("99999999999999999999999999999999999999999999", None),
            ("", None),
            ("-", None),
            ("0x", None),
            ("08", None),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("1.0", None),
            ("abc", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_int(text), *want, "{text}");
        }
    }

    #[test]
    fn strings_compare_as_written() {
        let lit = Literal::new("80".into());
        assert!(lit.equals(&json!("80")));
        assert!(!lit.equals(&json!("080")));
    }

    #[test]
    fn numbers_coerce_to_the_field() {
        let lit = Literal::new("80".into());
        assert!(lit.equals(&json!(80)));
        assert!(lit.equals(&json!(80u64)));
        assert!(lit.equals(&json!(80.0)));
        assert!(!lit.equals(&json!(81)));
        assert!(Literal::new("0x50".into()).equals(&json!(80)));
        assert!(Literal::new("80.0".into()).equals(&json!(80)));
        assert!(!Literal::new("80.5".into()).equals(&json!(80)));
        assert!(Literal::new("0.25".into()).equals(&json!(0.25)));
        assert!(Literal::new("-1".into()).equals(&json!(-1)));
        assert!(Literal::new(u64::MAX.to_string()).equals(&json!(u64::MAX)));
        assert!(!Literal::new("web".into()).equals(&json!(80)));
        assert!(!Literal::new("NaN".into()).equals(&json!(f64::NAN)));
    }

    #[test]
    fn bools_coerce_to_the_field() {
        assert!(Literal::new("true".into()).equals(&json!(true)));
        assert!(Literal::new("1".into()).equals(&json!(true)));
        assert!(Literal::new("False".into()).equals(&json!(false)));
        assert!(!Literal::new("true".into()).equals(&json!(false)));
        assert!(!Literal::new("yes".into()).equals(&json!(true)));
    }

    #[test]
    fn containers_and_null_equal_nothing() {
        let lit = Literal::new("".into());
        assert!(!lit.equals(&json!(null)));
        assert!(!lit.equals(&json!([])));
        assert!(!lit.equals(&json!({})));
    }
}
