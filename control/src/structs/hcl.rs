//! HCL input. Consul reads config entries with HCL 1, where a nested block
//! may appear anywhere — also inside an object value:
//!
//! ```hcl
//! Routes = [
//!   {
//!     Match { HTTP { PathPrefix = "/admin" } }
//!     Destination { Service = "admin" }
//!   },
//! ]
//! ```
//!
//! HCL 2 (what `hcl-rs` parses) allows blocks only in bodies; inside an
//! object expression it wants `Match = { ... }`. [`from_str`] rewrites
//! such blocks into attributes first, so the files in Consul's documentation
//! read as Consul reads them. Text that is already valid HCL 2 is left as
//! it is: only a block inside an object expression — a parse error
//! otherwise — is touched.

use serde_json::Value;

/// Parses HCL (1 or 2) into JSON.
pub fn from_str(text: &str) -> Result<Value, String> {
    hcl::from_str(&hcl1_compat(text)).map_err(|e| e.to_string())
}

/// What an open bracket started.
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    /// A body: blocks are allowed.
    Body,
    /// An object or a list expression: blocks must become attributes.
    Expr,
}

/// Rewrites `Name {` inside object expressions into `Name = {`.
fn hcl1_compat(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut stack = vec![Ctx::Body];
    // The last significant token: an identifier or string (a possible
    // block name), or another character.
    let mut last_was_name = false;
    let mut last_char = '\n';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(chars.len());
                out.extend(&chars[start..i]);
                last_was_name = true;
                last_char = '"';
                continue;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let start = i;
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i = (i + 2).min(chars.len());
                out.extend(&chars[start..i]);
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                {
                    i += 1;
                }
                out.extend(&chars[start..i]);
                // A name starting an item (not a value after `=`).
                last_was_name = !matches!(last_char, '=' | ':');
                last_char = 'a';
                continue;
            }
            '{' => {
                let ctx = *stack.last().unwrap_or(&Ctx::Body);
                let block = last_was_name && !matches!(last_char, '=' | ':');
                if block && ctx == Ctx::Expr {
                    out.push_str("= ");
                }
                stack.push(if block && ctx == Ctx::Body {
                    Ctx::Body
                } else {
                    Ctx::Expr
                });
            }
            '[' | '(' => stack.push(Ctx::Expr),
            '}' | ']' | ')' if stack.len() > 1 => {
                stack.pop();
            }
            _ => {}
        }
        out.push(c);
        if !c.is_whitespace() {
            last_was_name = false;
            last_char = c;
        } else if c == '\n' && *stack.last().unwrap_or(&Ctx::Body) == Ctx::Body {
            last_char = '\n';
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_inside_objects_become_attributes() {
        let v = from_str(
            r#"
            Kind = "service-router"
            Name = "web"  # the router
            Routes = [
              {
                Match {
                  HTTP {
                    PathPrefix = "/admin"
                    Header = [ { Name = "x-debug", Exact = "{1}" } ]
                  }
                }
                Destination { Service = "admin" }
              },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(
            v["Routes"][0],
            json!({"Match": {"HTTP": {"PathPrefix": "/admin",
                "Header": [{"Name": "x-debug", "Exact": "{1}"}]}},
                "Destination": {"Service": "admin"}})
        );
    }

    #[test]
    fn hcl2_is_left_alone() {
        let text = r#"
            service {
              name = "web"
              check { ttl = "30s" }
            }
            service { name = "db" }
            Redirect { Service = "x" }
            Subsets = { "v1" = { Filter = "Service.Meta.version == v1" } }
            Note = "a { b"
            "#;
        assert_eq!(hcl1_compat(text), text);
        let v = from_str(text).unwrap();
        assert_eq!(v["service"][1]["name"], "db");
        assert_eq!(v["service"][0]["check"]["ttl"], "30s");
        assert_eq!(v["Redirect"]["Service"], "x");
    }
}
