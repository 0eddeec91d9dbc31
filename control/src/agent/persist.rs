//! Services and checks registered through the API survive a restart: with a
//! data directory they are saved to `agent/local.json` on every change and
//! registered again when the agent starts (config-file ones come from the
//! files). Maintenance marks are not kept.

use super::definition::{CheckDefinition, CheckKind, ServiceDefinition};
use super::local::{LocalState, Source};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What is saved.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Persisted {
    /// Service definitions, without their checks.
    pub services: Vec<ServiceDefinition>,
    /// Check definitions, each with its service ID.
    pub checks: Vec<CheckDefinition>,
}

fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("local.json")
}

/// The API registrations of `local`.
pub fn collect(local: &LocalState) -> Persisted {
    // Sidecars come back with the parent that asks for them.
    let implied: Vec<String> = local
        .services
        .values()
        .filter(|s| super::sidecar::wants_sidecar(&s.definition))
        .map(|s| super::sidecar::sidecar_id(&s.service.id))
        .collect();
    Persisted {
        services: local
            .services
            .values()
            .filter(|s| s.source == Source::Api && !implied.contains(&s.service.id))
            .map(|s| ServiceDefinition {
                check: None,
                checks: Vec::new(),
                ..s.definition.clone()
            })
            .collect(),
        checks: local
            .checks
            .values()
            .filter(|c| c.source == Source::Api && c.kind != CheckKind::Maintenance)
            .filter(|c| !implied.contains(&c.check.service_id))
            .map(|c| c.definition.clone())
            .collect(),
    }
}

/// Writes `state` atomically under `data_dir`.
pub fn save(data_dir: &Path, state: &Persisted) -> std::io::Result<()> {
    let path = file(data_dir);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Reads what [`save`] wrote; nothing if there is no file yet.
pub fn load(data_dir: &Path) -> Result<Persisted, String> {
    let path = file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
