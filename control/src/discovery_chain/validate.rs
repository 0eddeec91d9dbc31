//! Judging a config entry write (or delete) by the chains it would produce,
//! as Consul does before it commits: every chain the entry can reach is
//! compiled with the entry in place, and intentions with L7 permissions
//! must still point at HTTP services.

use super::entries::entries_of;
use super::{compile, ChainEntries, ChainError, Change, CompileRequest};
use crate::config_entry::intentions::has_permissions;
use crate::config_entry::intentions::WILDCARD;
use crate::config_entry::{is_http_like, kind};
use crate::state::StateData;
use std::collections::BTreeSet;

/// The destinations of the `service-intentions` entries with L7
/// permissions, as they would be after `change`.
fn l7_destinations(d: &StateData, change: Change<'_>) -> BTreeSet<String> {
    entries_of(d, kind::SERVICE_INTENTIONS, Some(change))
        .into_iter()
        .filter(|e| e.name != WILDCARD && has_permissions(e))
        .map(|e| e.name.clone())
        .collect()
}

/// Checks that `change` leaves every chain it touches compilable in
/// datacenter `dc`, and every L7 intention on an HTTP service. `Err` names
/// the reason, in Consul's words.
pub fn validate_write(d: &StateData, dc: &str, change: Change<'_>) -> Result<(), ChainError> {
    let is_chain_kind = kind::CHAIN.contains(&change.kind);
    if !is_chain_kind && change.kind != kind::SERVICE_INTENTIONS {
        return Ok(());
    }
    let entries = ChainEntries::with_change(d, Some(change))?;
    let l7 = l7_destinations(d, change);
    let (chains, intentions): (BTreeSet<String>, BTreeSet<String>) = match change.kind {
        kind::PROXY_DEFAULTS => {
            let mut all = entries.chain_services();
            all.extend(l7.iter().cloned());
            (all, l7)
        }
        kind::SERVICE_INTENTIONS => {
            let mine: BTreeSet<String> = l7.into_iter().filter(|n| n == change.name).collect();
            (mine.clone(), mine)
        }
        _ => {
            let affected = entries.affected_by(change.name);
            let mine = l7.into_iter().filter(|n| affected.contains(n)).collect();
            (affected, mine)
        }
    };
    for service in &chains {
        let chain = compile(&CompileRequest {
            service,
            datacenter: dc,
            trust_domain: "",
            override_protocol: None,
            override_connect_timeout: None,
            entries: &entries,
        })?;
        if intentions.contains(service) && !is_http_like(&chain.protocol) {
            return Err(ChainError::L7IntentionsNeedHttp {
                service: service.clone(),
                protocol: chain.protocol,
            });
        }
    }
    Ok(())
}
