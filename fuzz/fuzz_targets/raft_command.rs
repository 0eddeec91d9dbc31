//! Raft commands as a peer proposes them or the log replays them: any bytes
//! decode as a [`Command`] or are refused, `admit` judges it, and applying
//! it to a fresh state store never panics. Applying is deterministic (every
//! server must end in the same state): the same command applied to two
//! fresh stores leaves them equal, and applying it again on top (a
//! re-proposal at a later index) does not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control::raft::Command;
use mesh_control::state::{Changes, StateData};

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = serde_json::from_slice::<Command>(data) else {
        return;
    };
    let _ = cmd.kind();
    let _ = cmd.admit();
    let mut a = StateData::default();
    let mut b = StateData::default();
    let first = cmd.apply(1, &mut a, &mut Changes::default());
    let again = cmd.apply(1, &mut b, &mut Changes::default());
    assert_eq!(first, again, "one command, two results");
    assert_eq!(
        serde_json::to_value(&a).ok(),
        serde_json::to_value(&b).ok(),
        "one command, two states"
    );
    cmd.apply(2, &mut a, &mut Changes::default());
});
