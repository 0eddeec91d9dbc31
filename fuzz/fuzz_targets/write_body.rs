//! The JSON bodies of the HTTP write endpoints, decoded as the handlers
//! decode them and carried as far as a fresh state store: catalog register
//! and deregister (`decode_body` and a Raft apply), `/v1/txn` operation
//! lists (admitted and applied), config entries (`config_entry::parse`, the
//! discovery-chain check of the write, and the apply) and the agent's
//! service and check definitions. Every body is tried on every decoder;
//! none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control::agent::{CheckDefinition, ServiceDefinition};
use mesh_control::discovery_chain::{validate_write, Change};
use mesh_control::http::decode_body;
use mesh_control::raft::Command;
use mesh_control::state::{Changes, StateData, TxnOp};
use mesh_control::structs::{DeregisterRequest, RegisterRequest};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut store = StateData::default();
    let mut index = 0;
    let mut apply = |cmd: Command, store: &mut StateData| {
        index += 1;
        let _ = cmd.admit();
        cmd.apply(index, store, &mut Changes::default())
    };

    // PUT /v1/catalog/register, then /v1/catalog/deregister.
    if let Ok(mut req) = decode_body::<RegisterRequest>(data) {
        if req.datacenter.is_empty() {
            req.datacenter = "dc1".into();
        }
        if let Some(svc) = req.service.as_mut() {
            if svc.id.is_empty() {
                svc.id = svc.service.clone();
            }
            svc.datacenter = req.datacenter.clone();
        }
        let req = Box::new(req);
        apply(Command::Register { req, now_ms: 1 }, &mut store);
    }
    if let Ok(req) = decode_body::<DeregisterRequest>(data) {
        apply(Command::Deregister { req, now_ms: 2 }, &mut store);
    }

    // PUT /v1/txn.
    if let Ok(ops) = decode_body::<Vec<TxnOp>>(data) {
        apply(Command::Txn { ops, now_ms: 3 }, &mut store);
    }

    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };

    // PUT /v1/config.
    if let Ok(entry) = mesh_control::config_entry::parse(value.clone()) {
        let _ = entry.to_json();
        let change = Change {
            kind: &entry.kind,
            name: &entry.name,
            entry: Some(&entry),
        };
        if validate_write(&store, "dc1", change).is_ok() {
            apply(Command::ConfigEntrySet { entry, cas: None }, &mut store);
        }
    }

    // PUT /v1/agent/service/register and /v1/agent/check/register.
    if let Ok(mut def) = ServiceDefinition::from_json(value.clone()) {
        if def.validate().is_ok() {
            let _ = def.to_node_service("dc1");
            for check in def.check_definitions() {
                let _ = check.kind(false);
            }
        }
    }
    if let Ok(check) = CheckDefinition::from_json(value) {
        if let Ok(kind) = check.kind(true) {
            let _ = check.to_health_check("node1", &kind);
        }
    }
});
