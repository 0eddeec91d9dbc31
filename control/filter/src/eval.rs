//! Evaluates a parsed expression against a JSON value.
//!
//! The rules follow go-bexpr 0.1.2, the version Consul's filtering was built
//! on, with JSON standing in for Go structs:
//!
//! - An object key is looked up verbatim. A missing key, or `null`, is
//!   "not present": `==`, `in`, `contains`, `matches` and `is not empty` are
//!   false; `!=`, `not in`, `not contains`, `not matches` and `is empty` are
//!   true. A selector that goes on past a string, number or bool is treated
//!   the same way (bexpr refuses such a selector when it knows the type; JSON
//!   carries no schema, so we cannot).
//! - When the path still has segments left and reaches an array, the rest of
//!   the match (operator included, negated or not) is applied to each element
//!   and the result is true if it is true for any element. So on a health
//!   entry `Checks.Status == "critical"` means "some check is critical", and
//!   `Checks.Status != "passing"` means "some check is not passing", not
//!   "no check is passing". An empty array matches nothing.
//! - A segment of digits on an array picks that element (`Checks.0.Status`).

use serde_json::Value;

use crate::ast::{Expr, Match, Test};

/// True if `value` satisfies `expr`.
pub(crate) fn eval(expr: &Expr, value: &Value) -> bool {
    match expr {
        Expr::And(operands) => operands.iter().all(|e| eval(e, value)),
        Expr::Or(operands) => operands.iter().any(|e| eval(e, value)),
        Expr::Not(operand) => !eval(operand, value),
        Expr::Match(m) => walk(m, value, &m.selector.segments),
    }
}

/// Follows `path` from `node` and applies the match where it ends.
///
/// Object and index steps loop rather than recurse, so a hostile selector
/// with very many segments cannot exhaust the stack; recursion happens only
/// into array elements, bounded by the nesting of the data.
fn walk(m: &Match, mut node: &Value, mut path: &[String]) -> bool {
    while let Some((segment, rest)) = path.split_first() {
        let next = match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => match index(segment) {
                Some(i) => items.get(i),
                None => return items.iter().any(|item| walk(m, item, path)),
            },
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
        };
        let Some(next) = next else {
            return not_present(m);
        };
        node = next;
        path = rest;
    }
    apply(m, node)
}

/// An array index: ASCII digits only.
fn index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// The result of a match whose selector found nothing.
fn not_present(m: &Match) -> bool {
    matches!(m.test, Test::IsEmpty) != m.negated
}

/// Applies the match to the value its selector picked out.
fn apply(m: &Match, value: &Value) -> bool {
    if value.is_null() {
        return not_present(m);
    }
    let positive = match &m.test {
        Test::Equal(literal) => literal.equals(value),
        Test::In(literal) => match value {
            Value::String(s) => s.contains(literal.raw.as_str()),
            Value::Array(items) => items.iter().any(|item| literal.equals(item)),
            Value::Object(map) => map.contains_key(&literal.raw),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        },
        Test::IsEmpty => match value {
            Value::String(s) => s.is_empty(),
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            Value::Null => true,
            Value::Bool(_) | Value::Number(_) => false,
        },
        Test::Matches(regex) => match value {
            Value::String(s) => regex.is_match(s),
            _ => false,
        },
    };
    positive != m.negated
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parser::parse;

    fn check(expr: &str, value: &Value) -> bool {
        eval(&parse(expr).unwrap(), value)
    }

    #[test]
    fn object_keys() {
        let v = json!({"Service": "web", "Meta": {"version": "2", "foo-bar": "x"}});
        assert!(check("Service == web", &v));
        assert!(check("Meta.version == \"2\"", &v));
        assert!(check("Meta[\"foo-bar\"] == x", &v));
        assert!(check("\"/Meta/foo-bar\" == x", &v));
        assert!(!check("Meta.version == \"3\"", &v));
        assert!(check("Meta.version != \"3\"", &v));
    }

    #[test]
    fn keys_and_field_names_are_case_sensitive() {
        let v = json!({"Service": "web", "Meta": {"Env": "prod"}});
        assert!(!check("service == web", &v));
        assert!(!check("Meta.env == prod", &v));
        assert!(check("Meta.Env == prod", &v));
    }

    #[test]
    fn missing_and_null_are_not_present() {
        for v in [
            json!({}),
            json!({"Meta": null}),
            json!({"Meta": {"env": null}}),
        ] {
            assert!(!check("Meta.env == x", &v), "{v}");
            assert!(check("Meta.env != x", &v), "{v}");
            assert!(!check("x in Meta.env", &v), "{v}");
            assert!(check("x not in Meta.env", &v), "{v}");
            assert!(!check("Meta.env contains x", &v), "{v}");
            assert!(check("Meta.env not contains x", &v), "{v}");
            assert!(check("Meta.env is empty", &v), "{v}");
            assert!(!check("Meta.env is not empty", &v), "{v}");
            assert!(!check("Meta.env matches \".*\"", &v), "{v}");
            assert!(check("Meta.env not matches \".*\"", &v), "{v}");
        }
    }

    #[test]
    fn selector_past_a_scalar_is_not_present() {
        let v = json!({"Port": 80, "Service": "web"});
        assert!(!check("Port.x == 80", &v));
        assert!(check("Port.x != 80", &v));
        assert!(check("Service.Name is empty", &v));
    }

    #[test]
    fn empty_selector_pointer_selects_the_datum() {
        assert!(check("\"\" == web", &json!("web")));
        assert!(check("web in \"\"", &json!(["web"])));
    }

    #[test]
    fn in_and_contains_on_each_kind() {
        let v = json!({
            "Tags": ["primary", "v1"],
            "Meta": {"env": "prod"},
            "Name": "redis-cache",
            "Port": 80,
            "Ports": [80, 443],
            "Flags": [true],
        });
        assert!(check("primary in Tags", &v));
        assert!(check("Tags contains \"v1\"", &v));
        assert!(!check("Tags contains prim", &v));
        assert!(check("env in Meta", &v));
        assert!(!check("prod in Meta", &v));
        assert!(check("Name contains cache", &v));
        assert!(check("\"\" in Name", &v));
        assert!(!check("Port contains 8", &v));
        assert!(check("Port not contains 8", &v));
        assert!(check("443 in Ports", &v));
        assert!(check("\"0x1bb\" in Ports", &v));
        assert!(!check("444 in Ports", &v));
        assert!(check("true in Flags", &v));
    }

    #[test]
    fn mixed_arrays_skip_elements_of_other_types() {
        let v = json!({"Mixed": ["a", 1, true, null, {"k": 1}, [1]]});
        assert!(check("a in Mixed", &v));
        assert!(check("1 in Mixed", &v));
        assert!(check("t in Mixed", &v));
        assert!(!check("k in Mixed", &v));
        assert!(!check("null in Mixed", &v));
    }

    #[test]
    fn emptiness() {
        let v = json!({"S": "", "A": [], "O": {}, "N": 0, "B": false, "Full": ["x"]});
        for sel in ["S", "A", "O", "Missing"] {
            assert!(check(&format!("{sel} is empty"), &v), "{sel}");
        }
        for sel in ["N", "B", "Full"] {
            assert!(check(&format!("{sel} is not empty"), &v), "{sel}");
        }
    }

    #[test]
    fn regex_matching() {
        let v = json!({"Name": "web-01", "Port": 80, "Tags": ["a"]});
        assert!(check("Name matches \"^web-[0-9]+$\"", &v));
        assert!(check("Name matches `\\d`", &v));
        assert!(check("Name matches \"eb\"", &v));
        assert!(!check("Name matches \"^eb\"", &v));
        assert!(check("Name not matches \"^db\"", &v));
        assert!(!check("Port matches \"80\"", &v));
        assert!(!check("Tags matches \"a\"", &v));
    }

    #[test]
    fn equality_on_containers_is_false() {
        let v = json!({"Tags": ["a"], "Meta": {"a": "b"}});
        assert!(!check("Tags == a", &v));
        assert!(check("Tags != a", &v));
        assert!(!check("Meta == a", &v));
    }

    #[test]
    fn arrays_mean_any_element() {
        let v = json!({"Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": "service:web", "Status": "critical"},
        ]});
        assert!(check("Checks.Status == critical", &v));
        assert!(check("Checks.Status == passing", &v));
        assert!(!check("Checks.Status == warning", &v));
        // The operator is applied per element, negation included.
        assert!(check("Checks.Status != passing", &v));
        assert!(!check("not (Checks.Status == passing)", &v));
        let all_passing = json!({"Checks": [{"Status": "passing"}, {"Status": "passing"}]});
        assert!(!check("Checks.Status != passing", &all_passing));
        // An element without the key counts as not present.
        let partial = json!({"Checks": [{"Status": "passing"}, {}]});
        assert!(check("Checks.Status is empty", &partial));
        // Nothing in an empty array matches, not even a negated operator.
        let none = json!({"Checks": []});
        assert!(!check("Checks.Status != passing", &none));
        assert!(!check("Checks.Status is empty", &none));
    }

    #[test]
    fn nested_arrays_and_indexes() {
        let v = json!({"Nodes": [
            {"Services": [{"Tags": ["a"]}, {"Tags": ["b"]}]},
            {"Services": [{"Tags": ["c"]}]},
        ]});
        assert!(check("c in Nodes.Services.Tags", &v));
        assert!(!check("d in Nodes.Services.Tags", &v));
        assert!(check("b in Nodes.0.Services.1.Tags", &v));
        assert!(!check("c in Nodes.0.Services.Tags", &v));
        assert!(check("c in Nodes[\"1\"].Services.Tags", &v));
        // Out of range is not present.
        assert!(check("Nodes.5.Services is empty", &v));
        let grid = json!({"Grid": [[{"X": 1}], [{"X": 2}]]});
        assert!(check("Grid.X == 2", &grid));
    }

    #[test]
    fn numbers_and_bools_coerce() {
        let v = json!({"Port": 8080, "Weight": 0.5, "EnableTagOverride": true});
        assert!(check("Port == 8080", &v));
        assert!(check("Port == \"8080\"", &v));
        assert!(check("Port != 80", &v));
        assert!(check("Port != abc", &v));
        assert!(check("Weight == 0.5", &v));
        assert!(check("EnableTagOverride == true", &v));
        assert!(check("EnableTagOverride != false", &v));
        assert!(!check("EnableTagOverride == yes", &v));
    }

    #[test]
    fn logic() {
        let v = json!({"A": "1", "B": "2"});
        assert!(check("A == 1 and B == 2", &v));
        assert!(!check("A == 1 and B == 3", &v));
        assert!(check("A == 9 or B == 2", &v));
        assert!(check("not A == 9", &v));
        assert!(check("A == 9 or not B == 3 and A == 1", &v));
        assert!(!check("(A == 9 or not B == 3) and A == 2", &v));
    }

    #[test]
    fn long_selector_does_not_overflow_the_stack() {
        let path = vec!["a"; 200_000].join(".");
        let mut v = json!("x");
        for _ in 0..100 {
            v = json!({ "a": v });
        }
        assert!(check(&format!("{path} is empty"), &v));
        assert!(!check(&format!("{path} == x"), &v));
    }
}
