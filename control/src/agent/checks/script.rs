//! Script checks: exit 0 passes, 1 warns, anything else is critical.

use super::{truncate_output, Probe};
use crate::structs::status;
use std::process::Stdio;
use std::time::Duration;

/// Runs `args` with a timeout, capturing stdout and stderr.
pub async fn probe(args: &[String], timeout: Duration, max_output: usize) -> Probe {
    let Some((cmd, rest)) = args.split_first() else {
        return Probe::new(status::CRITICAL, "no command");
    };
    let child = tokio::process::Command::new(cmd)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return Probe::new(status::CRITICAL, format!("Failed to start {cmd:?}: {e}")),
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Probe::new(
            status::CRITICAL,
            format!("Timed out ({}s) running check", timeout.as_secs_f64()),
        ),
        Ok(Err(e)) => Probe::new(status::CRITICAL, format!("Failed to run {cmd:?}: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text = truncate_output(&text, max_output);
            let s = match out.status.code() {
                Some(0) => status::PASSING,
                Some(1) => status::WARNING,
                _ => status::CRITICAL,
            };
            Probe::new(s, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses() {
        let t = Duration::from_secs(5);
        assert_eq!(
            probe(&args(&["sh", "-c", "echo hi"]), t, 100).await.status,
            status::PASSING
        );
        assert_eq!(
            probe(&args(&["sh", "-c", "exit 1"]), t, 100).await.status,
            status::WARNING
        );
        assert_eq!(
            probe(&args(&["sh", "-c", "exit 2"]), t, 100).await.status,
            status::CRITICAL
        );
        let p = probe(&args(&["sh", "-c", "echo out; echo err >&2"]), t, 100).await;
        assert_eq!(p.output, "out\nerr\n");
        let p = probe(&args(&["sleep", "5"]), Duration::from_millis(100), 100).await;
        assert_eq!(p.status, status::CRITICAL);
        assert!(p.output.contains("Timed out"));
        let p = probe(&args(&["/nonexistent/cmd"]), t, 100).await;
        assert_eq!(p.status, status::CRITICAL);
    }
}
