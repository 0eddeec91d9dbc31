//! The config entries a discovery chain is compiled from, decoded once
//! from the store — optionally with one entry written or deleted, to
//! judge a write before it is made.

use crate::config_entry::proxy_defaults::ProxyDefaults;
use crate::config_entry::service_defaults::ServiceDefaults;
use crate::config_entry::service_resolver::ServiceResolver;
use crate::config_entry::service_router::ServiceRouter;
use crate::config_entry::service_splitter::ServiceSplitter;
use crate::config_entry::{decode, kind, ConfigEntry, EntryError, KindSpec};
use crate::state::StateData;
use std::collections::{BTreeMap, BTreeSet};

/// A proposed change: this kind and name now hold `entry` (`None`: the
/// entry is deleted).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The entry's kind.
    pub kind: &'a str,
    /// The entry's name.
    pub name: &'a str,
    /// The new entry, or `None` for a deletion.
    pub entry: Option<&'a ConfigEntry>,
}

/// Every chain-shaping entry, by name.
#[derive(Debug, Clone, Default)]
pub struct ChainEntries {
    /// The `global` proxy-defaults.
    pub proxy_defaults: Option<ProxyDefaults>,
    /// `service-defaults` by service.
    pub services: BTreeMap<String, ServiceDefaults>,
    /// The `Meta` of each `service-defaults` entry.
    pub service_meta: BTreeMap<String, BTreeMap<String, String>>,
    /// `service-resolver` by service.
    pub resolvers: BTreeMap<String, ServiceResolver>,
    /// `service-splitter` by service.
    pub splitters: BTreeMap<String, ServiceSplitter>,
    /// `service-router` by service.
    pub routers: BTreeMap<String, ServiceRouter>,
}

/// The entries of `kind` in `d`, with `change` applied.
pub(super) fn entries_of<'a>(
    d: &'a StateData,
    kind: &str,
    change: Option<Change<'a>>,
) -> Vec<&'a ConfigEntry> {
    let mut out: Vec<&ConfigEntry> = d.config_list(kind);
    if let Some(c) = change.filter(|c| c.kind == kind) {
        out.retain(|e| e.name != c.name);
        out.extend(c.entry);
    }
    out
}

/// Decodes every entry of `K`, by name. A stored entry that no longer
/// decodes (written by another version) is skipped with a warning; the
/// changed one must decode.
fn decode_all<'a, K: KindSpec>(
    d: &'a StateData,
    change: Option<Change<'a>>,
) -> Result<BTreeMap<String, K>, EntryError> {
    let mut out = BTreeMap::new();
    for e in entries_of(d, K::KIND, change) {
        match decode::<K>(e) {
            Ok(k) => {
                out.insert(e.name.clone(), k);
            }
            Err(err) if change.is_some_and(|c| c.entry.is_some_and(|n| std::ptr::eq(n, e))) => {
                return Err(err)
            }
            Err(err) => {
                tracing::warn!(kind = K::KIND, name = %e.name, error = %err, "skipping a stored config entry")
            }
        }
    }
    Ok(out)
}

impl ChainEntries {
    /// The entries as stored.
    pub fn from_state(d: &StateData) -> Self {
        Self::with_change(d, None).unwrap_or_default()
    }

    /// The entries as they would be after `change`.
    pub fn with_change(d: &StateData, change: Option<Change<'_>>) -> Result<Self, EntryError> {
        let service_meta = entries_of(d, kind::SERVICE_DEFAULTS, change)
            .into_iter()
            .filter_map(|e| {
                let meta = serde_json::from_value(e.body.get("Meta")?.clone()).ok()?;
                Some((e.name.clone(), meta))
            })
            .collect();
        Ok(ChainEntries {
            proxy_defaults: decode_all::<ProxyDefaults>(d, change)?
                .remove(crate::config_entry::proxy_defaults::GLOBAL),
            services: decode_all(d, change)?,
            service_meta,
            resolvers: decode_all(d, change)?,
            splitters: decode_all(d, change)?,
            routers: decode_all(d, change)?,
        })
    }

    /// The protocol `service` speaks: its `service-defaults` protocol, else
    /// the `proxy-defaults` one, else `tcp`.
    pub fn protocol_of(&self, service: &str) -> String {
        let own = self
            .services
            .get(service)
            .map(|s| s.protocol.clone())
            .unwrap_or_default();
        let global = self
            .proxy_defaults
            .as_ref()
            .map(ProxyDefaults::protocol)
            .unwrap_or_default();
        [own, global]
            .into_iter()
            .find(|p| !p.is_empty())
            .unwrap_or_else(|| "tcp".into())
    }

    /// The services whose router, splitter or resolver names `service`.
    fn referrers(&self, service: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for (name, r) in &self.routers {
            let dests = r.routes.iter().filter_map(|r| r.destination.as_ref());
            if dests.into_iter().any(|d| d.service == service) {
                out.insert(name.as_str());
            }
        }
        for (name, s) in &self.splitters {
            if s.splits.iter().any(|s| s.service == service) {
                out.insert(name.as_str());
            }
        }
        for (name, r) in &self.resolvers {
            let redirect = r.redirect.iter().map(|t| t.service.as_str());
            let failover = r.failover.values().flat_map(|f| {
                std::iter::once(f.service.as_str())
                    .chain(f.targets.iter().map(|t| t.service.as_str()))
            });
            if redirect.chain(failover).any(|s| s == service) {
                out.insert(name.as_str());
            }
        }
        out
    }

    /// `service` and every service whose chain may reach it, directly or
    /// through other entries.
    pub fn affected_by(&self, service: &str) -> BTreeSet<String> {
        let mut set = BTreeSet::from([service.to_string()]);
        let mut todo = vec![service.to_string()];
        while let Some(s) = todo.pop() {
            for r in self.referrers(&s) {
                if set.insert(r.to_string()) {
                    todo.push(r.to_string());
                }
            }
        }
        set
    }

    /// Every service with a router, splitter or resolver.
    pub fn chain_services(&self) -> BTreeSet<String> {
        self.routers
            .keys()
            .chain(self.splitters.keys())
            .chain(self.resolvers.keys())
            .cloned()
            .collect()
    }
}
