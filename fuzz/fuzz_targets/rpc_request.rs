//! The server RPC port's decoder and its gate: any frame body decodes as a
//! [`Request`] or is refused without a panic, and `permitted` judges every
//! request a client agent sends without a panic. Checks that a client agent
//! is only ever let through with its catalog writes, and never with an HTTP
//! request the server's router would send to one of its own `/v1/agent/`
//! endpoints (the router matches the path of the parsed URI), and that an
//! enrolling client agent (auto_encrypt, no certificate yet) may send
//! nothing but its CSR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control::raft::Command;
use mesh_control::rpc::handshake::Role;
use mesh_control::rpc::server::permitted;
use mesh_control::rpc::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let _ = req.kind();
    assert!(
        permitted(Role::Server, &req).is_ok(),
        "servers may send anything"
    );
    assert_eq!(
        permitted(Role::Enrolling, &req).is_ok(),
        matches!(req, Request::AutoEncryptSign { .. }),
        "an enrolling agent sent {}",
        req.kind()
    );
    let verdict = permitted(Role::Client, &req);
    match &req {
        Request::Apply(cmd) if verdict.is_ok() => assert!(
            matches!(cmd, Command::Register { .. } | Command::Deregister { .. }),
            "a client agent proposed {}",
            cmd.kind()
        ),
        Request::Http(http) if verdict.is_ok() => {
            // What `answer_http` hands the router: a parsed URI, routed by
            // its path as written.
            if let Ok(uri) = http.uri.parse::<axum::http::Uri>() {
                let path = uri.path().to_ascii_lowercase();
                assert!(
                    !path.starts_with("/v1/agent/") && path != "/v1/agent",
                    "a client agent reached {path} with {:?}",
                    http.uri
                );
            }
        }
        _ => {}
    }
});
