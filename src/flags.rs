//! Consul-style flags: `-flag` and `-flag=value` are rewritten to clap's
//! `--flag` form. Rewriting stops at `--` and at the child command of
//! commands that run one (`mesh lock PREFIX CMD ...`).

use std::ffi::OsString;

/// Commands whose second positional argument starts a child command line.
const RUNS_A_CHILD: &[&str] = &["lock"];

/// Rewrites single-dash long flags to double-dash ones.
pub fn consul_style(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut positionals = 0usize;
    let mut child_after: Option<usize> = None;
    let mut verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || verbatim {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            verbatim = true;
            out.push(arg);
            continue;
        }
        if is_single_dash_long(text) {
            out.push(OsString::from(format!("-{text}")));
            continue;
        }
        if !text.starts_with('-') {
            positionals += 1;
            if positionals == 1 && RUNS_A_CHILD.contains(&text) {
                child_after = Some(2);
            } else if child_after.is_some_and(|n| positionals > n) {
                verbatim = true;
            }
        }
        out.push(arg);
    }
    out
}

fn is_single_dash_long(arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-') else {
        return false;
    };
    let name = rest.split('=').next().unwrap_or("");
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        consul_style(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_becomes_double() {
        assert_eq!(
            rewrite(&[
                "mesh",
                "agent",
                "-dev",
                "-config-dir=.",
                "--http-port",
                "0",
                "-h"
            ]),
            vec![
                "mesh",
                "agent",
                "--dev",
                "--config-dir=.",
                "--http-port",
                "0",
                "-h"
            ]
        );
        assert_eq!(
            rewrite(&["mesh", "kv", "put", "k", "-5"]),
            vec!["mesh", "kv", "put", "k", "-5"]
        );
    }

    #[test]
    fn child_commands_are_left_alone() {
        assert_eq!(
            rewrite(&["mesh", "lock", "-verbose", "svc/lock", "ls", "-la"]),
            vec!["mesh", "lock", "--verbose", "svc/lock", "ls", "-la"]
        );
        assert_eq!(
            rewrite(&["mesh", "kv", "put", "--", "-key"]),
            vec!["mesh", "kv", "put", "--", "-key"]
        );
    }
}
