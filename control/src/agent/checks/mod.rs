//! Check runners: one task per check that probes on its interval (or, for
//! TTL checks, waits for the application) and reports to the agent.

mod grpc;
mod http;
mod script;
mod tcp;

use super::definition::{CheckDefinition, CheckKind};
use super::Agent;
use crate::structs::status;
use rand::Rng;
use std::sync::Weak;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The result of one probe.
pub struct Probe {
    /// `passing`, `warning` or `critical`.
    pub status: &'static str,
    /// What the probe saw.
    pub output: String,
}

impl Probe {
    fn new(status: &'static str, output: impl Into<String>) -> Self {
        Probe {
            status,
            output: output.into(),
        }
    }
}

/// Default probe timeout (script checks use 30s, as Consul).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the runner of a check; `None` for kinds that do not run.
pub(super) fn spawn(
    agent: Weak<Agent>,
    def: CheckDefinition,
    kind: CheckKind,
) -> Option<JoinHandle<()>> {
    match kind {
        CheckKind::Ttl(ttl) => Some(spawn_ttl(agent, def.id, ttl)),
        CheckKind::Alias(service) => Some(tokio::spawn(run_alias(agent, def.id, service))),
        CheckKind::Maintenance => None,
        CheckKind::Http | CheckKind::Tcp | CheckKind::Grpc | CheckKind::Script => {
            Some(tokio::spawn(run_interval(agent, def, kind)))
        }
    }
}

/// A TTL check turns critical unless updated within its TTL.
pub(super) fn spawn_ttl(agent: Weak<Agent>, id: String, ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        if let Some(agent) = agent.upgrade() {
            agent
                .check_result(&id, status::CRITICAL, "TTL expired")
                .await;
        }
    })
}

/// An alias check follows the aggregate status of another local service's
/// checks, re-evaluated on every local change.
async fn run_alias(agent: Weak<Agent>, id: String, service: String) {
    let Some(mut changes) = agent.upgrade().map(|a| a.local().subscribe()) else {
        return;
    };
    loop {
        let Some(a) = agent.upgrade() else { return };
        let (state, output) = a.alias_status(&id, &service);
        a.check_result(&id, state, &output).await;
        drop(a);
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn run_interval(agent: Weak<Agent>, def: CheckDefinition, kind: CheckKind) {
    let interval = def.interval.map(|i| i.0).unwrap_or(Duration::from_secs(10));
    let timeout =
        def.timeout
            .map(|t| t.0)
            .filter(|t| !t.is_zero())
            .unwrap_or(if kind == CheckKind::Script {
                SCRIPT_TIMEOUT
            } else {
                DEFAULT_TIMEOUT
            });
    let max_output = if def.output_max_size == 0 {
        super::definition::DEFAULT_OUTPUT_MAX_SIZE
    } else {
        def.output_max_size
    };
    let http_client = (kind == CheckKind::Http || kind == CheckKind::Grpc)
        .then(|| http::client(&def, timeout, kind == CheckKind::Grpc));
    let mut gate = StatusGate::new(&def);
    let stagger = rand::thread_rng().gen_range(0..=interval.as_millis() as u64 / 4);
    tokio::time::sleep(Duration::from_millis(stagger)).await;
    loop {
        let probe = match (&kind, &http_client) {
            (CheckKind::Http, Some(client)) => http::probe(client, &def, max_output).await,
            (CheckKind::Grpc, Some(client)) => grpc::probe(client, &def).await,
            (CheckKind::Tcp, _) => tcp::probe(&def.tcp, timeout).await,
            (CheckKind::Script, _) => script::probe(&def.args, timeout, max_output).await,
            _ => return,
        };
        let Some(agent) = agent.upgrade() else {
            return;
        };
        let current = agent.check_status(&def.id);
        let Some(current) = current else {
            return;
        };
        let status = gate.next(probe.status, &current);
        agent.check_result(&def.id, status, &probe.output).await;
        drop(agent);
        tokio::time::sleep(interval).await;
    }
}

/// Consul's `SuccessBeforePassing` / `FailuresBeforeWarning` /
/// `FailuresBeforeCritical`: a status changes only after that many
/// consecutive probes agree.
struct StatusGate {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl StatusGate {
    fn new(def: &CheckDefinition) -> Self {
        let critical = def.failures_before_critical;
        StatusGate {
            success_before_passing: def.success_before_passing,
            failures_before_warning: if def.failures_before_warning == 0 {
                critical
            } else {
                def.failures_before_warning
            },
            failures_before_critical: critical,
            successes: 0,
            failures: 0,
        }
    }

    /// The status to report after a probe said `probed`, given `current`.
    fn next(&mut self, probed: &'static str, current: &str) -> &'static str {
        let keep = |c: &str| match c {
            status::PASSING => status::PASSING,
            status::WARNING => status::WARNING,
            _ => status::CRITICAL,
        };
        if probed == status::PASSING {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.success_before_passing {
                return status::PASSING;
            }
            return keep(current);
        }
        self.successes = 0;
        self.failures += 1;
        if probed == status::CRITICAL && self.failures >= self.failures_before_critical {
            return status::CRITICAL;
        }
        if self.failures >= self.failures_before_warning {
            return status::WARNING;
        }
        keep(current)
    }
}

/// Keeps at most `max` bytes of output, as Consul: the tail, with a note.
pub fn truncate_output(out: &str, max: usize) -> String {
    if out.len() <= max {
        return out.to_string();
    }
    let mut start = out.len() - max;
    while !out.is_char_boundary(start) {
        start += 1;
    }
    format!(
        "Captured {max} of {} bytes\n...\n{}",
        out.len(),
        &out[start..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_waits_for_consecutive_results() {
        let def = CheckDefinition {
            success_before_passing: 2,
            failures_before_critical: 3,
            ..Default::default()
        };
        let mut g = StatusGate::new(&def);
        assert_eq!(g.next(status::PASSING, "critical"), status::CRITICAL);
        assert_eq!(g.next(status::PASSING, "critical"), status::PASSING);
        assert_eq!(g.next(status::CRITICAL, "passing"), status::PASSING);
        assert_eq!(g.next(status::CRITICAL, "passing"), status::PASSING);
        assert_eq!(g.next(status::CRITICAL, "passing"), status::CRITICAL);
    }

    #[test]
    fn gate_defaults_pass_through() {
        let mut g = StatusGate::new(&CheckDefinition::default());
        assert_eq!(g.next(status::WARNING, "passing"), status::WARNING);
        assert_eq!(g.next(status::CRITICAL, "warning"), status::CRITICAL);
        assert_eq!(g.next(status::PASSING, "critical"), status::PASSING);
    }

    #[test]
    fn output_keeps_the_tail() {
        assert_eq!(truncate_output("abc", 10), "abc");
        let t = truncate_output("0123456789", 4);
        assert_eq!(t, "Captured 4 of 10 bytes\n...\n6789");
        let t = truncate_output("ééééé", 3);
        assert!(t.ends_with('é'));
    }
}
