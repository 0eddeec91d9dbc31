//! Config files as `-config-file` and `-config-dir` read them: the text is
//! parsed both as HCL (`structs::hcl::from_str`, with its HCL 1 rewrite)
//! and as JSON, keys are normalized, and the top level is taken apart as
//! `load_paths` does: service and check definitions (decoded, validated,
//! turned into catalog records) and agent settings. HCL is also what
//! `mesh config write` reads config entries from, so the parsed value is
//! tried as a config entry too. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control::agent::config_file::FileSettings;
use mesh_control::agent::{CheckDefinition, ServiceDefinition};
use mesh_control::structs::keys::normalize;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = mesh_control::structs::hcl::from_str(text) {
        let _ = mesh_control::config_entry::parse(value.clone());
        load(value);
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        load(value);
    }
});

/// What `load_paths` does with one parsed file.
fn load(value: Value) {
    let Value::Object(top) = normalize(value) else {
        return;
    };
    for (key, value) in &top {
        let items = match value {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        match key.as_str() {
            "Service" | "Services" => {
                for v in items {
                    if let Ok(mut def) = ServiceDefinition::from_json(v) {
                        if def.validate().is_ok() {
                            let _ = def.to_node_service("dc1");
                            for check in def.check_definitions() {
                                let _ = check.kind(true);
                            }
                        }
                    }
                }
            }
            "Check" | "Checks" => {
                for v in items {
                    if let Ok(check) = CheckDefinition::from_json(v) {
                        if let Ok(kind) = check.kind(true) {
                            let _ = check.to_health_check("node1", &kind);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let _ = serde_json::from_value::<FileSettings>(Value::Object(top));
}
