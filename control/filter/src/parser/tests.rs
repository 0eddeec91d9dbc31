use super::*;

/// Renders an expression compactly so the tests can state the tree.
fn render(expr: &Expr) -> String {
    match expr {
        Expr::And(xs) => format!("(and {})", join(xs)),
        Expr::Or(xs) => format!("(or {})", join(xs)),
        Expr::Not(x) => format!("(not {})", render(x)),
        Expr::Match(m) => {
            let not = if m.negated { "!" } else { "" };
            match &m.test {
                Test::Equal(v) => format!("[{} {not}== {:?}]", m.selector, v.raw),
                Test::In(v) => format!("[{:?} {not}in {}]", v.raw, m.selector),
                Test::IsEmpty => format!("[{} {not}empty]", m.selector),
                Test::Matches(re) => format!("[{} {not}matches {:?}]", m.selector, re.as_str()),
            }
        }
    }
}

fn join(xs: &[Expr]) -> String {
    xs.iter().map(render).collect::<Vec<_>>().join(" ")
}

fn tree(input: &str) -> String {
    match parse(input) {
        Ok(expr) => render(&expr),
        Err(err) => panic!("{input:?}: {err}"),
    }
}

fn error(input: &str) -> FilterError {
    match parse(input) {
        Ok(expr) => panic!("{input:?} parsed as {}", render(&expr)),
        Err(err) => err,
    }
}

#[test]
fn match_operators() {
    let cases = [
        ("foo == 3", "[foo == \"3\"]"),
        ("foo != xyz", "[foo !== \"xyz\"]"),
        ("list is empty", "[list empty]"),
        ("list is not empty", "[list !empty]"),
        ("foo in bar", "[\"foo\" in bar]"),
        ("foo not in bar", "[\"foo\" !in bar]"),
        ("bar contains foo", "[\"foo\" in bar]"),
        ("bar not contains foo", "[\"foo\" !in bar]"),
        ("foo matches bar", "[foo matches \"bar\"]"),
        ("foo not matches bar", "[foo !matches \"bar\"]"),
        ("foo == \"bar\"", "[foo == \"bar\"]"),
        ("foo == `bar`", "[foo == \"bar\"]"),
        ("\"foo\" in bar", "[\"foo\" in bar]"),
        ("`foo` not in bar", "[\"foo\" !in bar]"),
        ("foo == 0.2", "[foo == \"0.2\"]"),
        ("foo == -0.2", "[foo == \"-0.2\"]"),
        ("foo == a.b.c", "[foo == \"a.b.c\"]"),
        ("foo==bar", "[foo == \"bar\"]"),
        ("foo == \"\"", "[foo == \"\"]"),
    ];
    for (input, want) in cases {
        assert_eq!(tree(input), want, "{input}");
    }
}

#[test]
fn selectors() {
    assert_eq!(
        tree("`environment` in foo.bar[\"meta\"].tags[\t`ENV` ]"),
        "[\"environment\" in foo.bar.meta.tags.ENV]"
    );
    assert_eq!(
        tree("environment in foo[\"bar\"][\"meta\"][\"tags\"][\"ENV\"]"),
        "[\"environment\" in foo.bar.meta.tags.ENV]"
    );
    assert_eq!(
        tree("environment in foo[\"abc-def ghi åß∂ƒ\"]"),
        "[\"environment\" in foo[\"abc-def ghi åß∂ƒ\"]]"
    );
    assert_eq!(tree("Checks.0.Status == x"), "[Checks.0.Status == \"x\"]");
}

#[test]
fn json_pointer_selectors() {
    assert_eq!(tree("\"/foo\" == 3"), "[foo == \"3\"]");
    assert_eq!(
        tree("\"/hy-phen/under_score/pi|pe/do.t/ti~lde\" == 3"),
        "[[\"hy-phen\"].under_score[\"pi|pe\"][\"do.t\"][\"ti~lde\"] == \"3\"]"
    );
    assert_eq!(
        tree("\"/a~1b/c~0d\" is empty"),
        "[[\"a/b\"][\"c~d\"] empty]"
    );
    assert_eq!(
        tree("environment in \"/Meta/tags\""),
        "[\"environment\" in Meta.tags]"
    );
    // In value position a string stays a string.
    assert_eq!(tree("foo == \"/bar\""), "[foo == \"/bar\"]");
    for bad in [
        "\"/a/\" == 3",
        "\"/a b\" == 3",
        "\"foo\" == 3",
        "`/foo` == 3",
        "\"\\u002ffoo\" == 3",
        "x in \"nope\"",
    ] {
        assert!(
            matches!(error(bad), FilterError::InvalidSelector { offset, .. } if offset == bad.find(['"', '`']).unwrap()),
            "{bad}: {}",
            error(bad)
        );
    }
}

#[test]
fn precedence_is_not_then_and_then_or() {
    assert_eq!(
        tree("x in foo and not str == something or list is empty"),
        "(or (and [\"x\" in foo] (not [str == \"something\"])) [list empty])"
    );
    assert_eq!(
        tree("x in foo and not (str == something or list is empty)"),
        "(and [\"x\" in foo] (not (or [str == \"something\"] [list empty])))"
    );
    assert_eq!(
        tree("a == 1 or b == 2 and c == 3 or d == 4"),
        "(or [a == \"1\"] (and [b == \"2\"] [c == \"3\"]) [d == \"4\"])"
    );
    assert_eq!(
        tree("port != 80 and port != 8080"),
        "(and [port !== \"80\"] [port !== \"8080\"])"
    );
}

#[test]
fn grouping_and_whitespace() {
    assert_eq!(
        tree("\t\r\n ( \t\r\n foo \t\r\n == \t\r\n x \t\r\n ) \t\r\n"),
        "[foo == \"x\"]"
    );
    assert_eq!(
        tree("\t\r\n  foo \t\r\n is \t\r\n not \t\r\n empty \t\r\n"),
        "[foo !empty]"
    );
    assert_eq!(
        tree("(((foo == 3) and (not ((bar in baz) and (not (one != two))))) or (((next is empty) and (not (foo is not empty))) and (bar not in foo)))"),
        "(or (and [foo == \"3\"] (not (and [\"bar\" in baz] (not [one !== \"two\"])))) (and (and [next empty] (not [foo !empty])) [\"bar\" !in foo]))"
    );
}

#[test]
fn double_not_folds() {
    assert_eq!(tree("not not foo == 3"), "[foo == \"3\"]");
    assert_eq!(tree("not not not foo == 3"), "(not [foo == \"3\"])");
}

#[test]
fn keywords_can_be_selectors_and_values() {
    assert_eq!(tree("not in Tags"), "[\"not\" in Tags]");
    assert_eq!(tree("not == 3"), "[not == \"3\"]");
    assert_eq!(tree("not not in Tags"), "(not [\"not\" in Tags])");
    assert_eq!(tree("not contains x"), "[\"x\" in not]");
    assert_eq!(tree("not is empty"), "[not empty]");
    assert_eq!(tree("in == and"), "[in == \"and\"]");
    assert_eq!(tree("x in in"), "[\"x\" in in]");
    assert_eq!(tree("a == or or b == c"), "(or [a == \"or\"] [b == \"c\"])");
    assert_eq!(tree("Meta.not == x"), "[Meta.not == \"x\"]");
    assert_eq!(tree("notes == x"), "[notes == \"x\"]");
}

#[test]
fn keywords_are_case_sensitive() {
    let err = error("a == 1 AND b == 2");
    assert_eq!(
        err,
        FilterError::Unexpected {
            expected: "`and`, `or` or the end of the filter".into(),
            found: "`AND`".into(),
            offset: 7,
        }
    );
}

#[test]
fn syntax_errors_say_what_and_where() {
    let cases: &[(&str, usize)] = &[
        ("", 0),
        ("   ", 3),
        ("x in foo abc", 9),
        ("x in foo and ", 13),
        ("x in foo or ", 12),
        ("x in foo or not ", 16),
        ("(foo == 4", 9),
        ("(foo == 4 bar", 10),
        ("foo == 4)", 8),
        ("foo", 3),
        ("foo bar", 4),
        ("foo ==", 6),
        ("foo == ==", 7),
        ("foo is", 6),
        ("foo is full", 7),
        ("foo is not", 10),
        ("foo not", 7),
        ("foo not equals x", 8),
        ("()", 1),
        (")", 0),
        ("== x", 0),
        ("not", 3),
        ("a == b and", 10),
        // `or` here reads as a selector, so the complaint is about `c`.
        ("a == b and or c == d", 14),
    ];
    for &(input, offset) in cases {
        let err = error(input);
        assert!(
            matches!(err, FilterError::Unexpected { .. }),
            "{input:?}: {err:?}"
        );
        assert_eq!(err.offset(), offset, "{input:?}: {err}");
    }
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        error("(foo == 4").to_string(),
        "expected `and`, `or` or a `)` to close the `(` at byte 0 at byte 9, found end of input"
    );
    assert_eq!(
        error("foo bar").to_string(),
        "expected an operator (`==`, `!=`, `is`, `in`, `not`, `contains` or `matches`) at byte 4, found `bar`"
    );
    assert_eq!(
        error("").to_string(),
        "expected a selector, a value, `not` or `(` at byte 0, found end of input"
    );
}

#[test]
fn literals_cannot_be_selectors() {
    for (input, offset) in [
        ("x in 32", 5),
        ("32 == 32", 0),
        ("32 is empty", 0),
        ("`a` == b", 0),
    ] {
        let err = error(input);
        assert!(
            matches!(err, FilterError::InvalidSelector { .. }),
            "{input}: {err:?}"
        );
        assert_eq!(err.offset(), offset, "{input}");
    }
}

#[test]
fn lexer_errors_pass_through() {
    assert!(matches!(
        error("foo == 3x"),
        FilterError::InvalidNumber { offset: 7, .. }
    ));
    assert!(matches!(
        error("foo == \"12x"),
        FilterError::UnterminatedString { offset: 7 }
    ));
    assert!(matches!(
        error("foo[3] == abc"),
        FilterError::InvalidSelector { offset: 4, .. }
    ));
    assert!(matches!(
        error("a & b"),
        FilterError::UnexpectedChar { ch: '&', offset: 2 }
    ));
}

#[test]
fn regexes_compile_at_parse_time() {
    assert_eq!(
        tree("Name matches \"^web-\\\\d+$\""),
        "[Name matches \"^web-\\\\d+$\"]"
    );
    match error("Name matches \"(unclosed\"") {
        FilterError::InvalidRegex {
            pattern, offset, ..
        } => {
            assert_eq!(pattern, "(unclosed");
            assert_eq!(offset, 13);
        }
        other => panic!("{other:?}"),
    }
    // Too large once compiled: Unicode classes compile to many states.
    assert!(matches!(
        error("Name matches `\\w{100}`"),
        FilterError::InvalidRegex { .. }
    ));
}

#[test]
fn counted_repeats_are_capped() {
    match error("Meta.x matches \"(a{1000}|b)\"") {
        FilterError::RegexTooLarge {
            pattern,
            offset,
            size,
            limit,
        } => {
            assert_eq!(pattern, "(a{1000}|b)");
            assert_eq!(offset, 15);
            assert_eq!(size, 1001);
            assert_eq!(limit, MAX_REGEX_EXPANSION);
        }
        other => panic!("{other:?}"),
    }
    let err = error("Meta.x matches \"(a{1000}|b)\"");
    assert!(err.is_limit());
    let message = err.to_string();
    assert!(message.contains("\"(a{1000}|b)\""), "{message}");
    assert!(message.contains("too expensive"), "{message}");
    // Nested repeats multiply, and repeats side by side add up.
    for expensive in [
        "(a{1,20}){1,20}X",
        "a{1,100}a{1,100}a{1,100}X",
        "x{257}",
        "(ab){129}",
        "[a-z]{300,}",
        "(a{65535}){65535}",
    ] {
        let expr = format!("Name matches `{expensive}`");
        assert!(
            matches!(error(&expr), FilterError::RegexTooLarge { .. }),
            "{expensive}"
        );
    }
    // `not matches` is refused the same way, not read as a selector `not`.
    assert!(matches!(
        error("not Name matches `x{1000}`"),
        FilterError::RegexTooLarge { .. }
    ));
    assert!(matches!(
        error("Name not matches `x{1000}`"),
        FilterError::RegexTooLarge { .. }
    ));
}

#[test]
fn ordinary_regexes_still_compile() {
    for ordinary in [
        "^v[0-9]+$",
        ".*-canary",
        "[a-z]{1,63}",
        "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        "^\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}$",
        "^([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}$",
        "^.{0,255}$",
        "(?i)^web-(primary|secondary)\\b",
        "x{256}",
    ] {
        let expr = format!("Name matches `{ordinary}`");
        assert!(parse(&expr).is_ok(), "{ordinary}: {:?}", parse(&expr));
    }
}

#[test]
fn regex_count_is_capped() {
    let ok = vec!["a matches x"; MAX_REGEXES].join(" or ");
    assert!(parse(&ok).is_ok());
    let too_many = vec!["a matches x"; MAX_REGEXES + 1].join(" or ");
    let err = error(&too_many);
    assert!(err.is_limit());
    assert!(matches!(err, FilterError::TooManyRegexes { .. }));
    // Regexes in a reading of `not` that was abandoned are not counted.
    let mut retried = vec!["a matches x"; MAX_REGEXES - 1].join(" or ");
    retried.push_str(" or not in Tags");
    assert!(parse(&retried).is_ok());
}

#[test]
fn nesting_is_capped() {
    let ok = format!("{}a == b{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok).is_ok());
    let deep = format!(
        "{}a == b{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(
        error(&deep),
        FilterError::TooDeep {
            limit: MAX_DEPTH,
            offset: MAX_DEPTH + 1
        }
    );
    let nots = format!("{}a == b", "not ".repeat(MAX_DEPTH + 1));
    assert!(matches!(error(&nots), FilterError::TooDeep { .. }));
    let mixed = "not (".repeat(100_000);
    assert!(matches!(error(&mixed), FilterError::TooDeep { .. }));
    // Unbalanced garbage fails fast instead of overflowing the stack.
    assert!(parse(&"(".repeat(1_000_000)).is_err());
    assert!(parse(&"not ".repeat(1_000_000)).is_err());
}

#[test]
fn long_flat_chains_are_fine() {
    let long = vec!["a == b"; 100_000].join(" and ");
    match parse(&long) {
        Ok(Expr::And(xs)) => assert_eq!(xs.len(), 100_000),
        other => panic!("{:?}", other.map(|e| render(&e))),
    }
    let long = vec!["a == b"; 100_000].join(" or ");
    assert!(matches!(parse(&long), Ok(Expr::Or(_))));
}

#[test]
fn hostile_inputs_do_not_panic() {
    let inputs = [
        "\"",
        "`",
        "\\",
        "[",
        "a[",
        "a[\"",
        "a[\"x\"",
        "a.",
        "a..b",
        "-",
        "--1",
        "\"\\u",
        "\"\\U0000",
        "\"\\x\"",
        "a == \"\\",
        "é",
        "a == b \u{0}",
        "not not not",
        "((((",
        "))))",
        "a == b or (",
        "a matches",
        "a matches \"[\"",
        "a is not not empty",
    ];
    for input in inputs {
        assert!(parse(input).is_err(), "{input:?}");
    }
}
