//! Cluster-wide keyring operations, like `consul keyring`: the operation is
//! applied locally and sent over TCP (encrypted with the current primary key)
//! to every alive member; each member's answer is counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::crypto::encode_key;
use crate::error::GossipError;
use crate::runtime::Shared;
use crate::wire::{KeyringOp, Request, Response};

/// The outcome of a keyring operation across the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyringResponse {
    /// Members asked: every alive member, this node included.
    pub num_nodes: usize,
    /// Members that answered successfully.
    pub num_resp: usize,
    /// Members that refused or could not be reached, with the reason.
    pub errors: BTreeMap<String, String>,
    /// Every key (base64) with the number of answering members holding it.
    pub keys: Vec<(String, usize)>,
    /// Every primary key (base64) with the number of members using it.
    pub primary_keys: Vec<(String, usize)>,
}

/// One member's keys after an operation, or why it refused.
type KeysOrError = Result<Vec<Vec<u8>>, String>;

/// Applies `op` to this node's keyring; returns the keys after it.
pub(crate) fn apply_local(shared: &Shared, op: &KeyringOp) -> KeysOrError {
    let mut ring = shared.keyring_mut();
    if !ring.is_enabled() {
        return Err("encryption is not enabled on this node".into());
    }
    let res = match op {
        KeyringOp::List => Ok(()),
        KeyringOp::Install(k) => ring.install(k),
        KeyringOp::Use(k) => ring.use_key(k),
        KeyringOp::Remove(k) => ring.remove(k),
    };
    res.map_err(|e| match e {
        GossipError::Keyring(m) | GossipError::InvalidKey(m) => m,
        other => other.to_string(),
    })?;
    Ok(ring.keys().map(<[u8]>::to_vec).collect())
}

/// Checks the operation locally first (so an obviously wrong request changes
/// nothing anywhere), then applies it on every alive member.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    op: KeyringOp,
) -> Result<KeyringResponse, GossipError> {
    {
        let ring = shared.keyring();
        if !ring.is_enabled() {
            return Err(GossipError::Keyring(
                "encryption is not enabled (no keys installed); start with -encrypt to use the keyring"
                    .into(),
            ));
        }
        let installed = |k: &[u8]| ring.keys().any(|x| x == k);
        match &op {
            KeyringOp::Install(k) => {
                crate::crypto::check_key_len(k).map_err(GossipError::InvalidKey)?;
            }
            KeyringOp::Use(k) if !installed(k) => {
                return Err(GossipError::Keyring(
                    "the key is not installed; install it first".into(),
                ));
            }
            KeyringOp::Remove(k) if ring.keys().next() == Some(k.as_slice()) => {
                return Err(GossipError::Keyring(
                    "removing the primary key is not allowed; make another key primary with use first"
                        .into(),
                ));
            }
            _ => {}
        }
    }

    let local = shared.table().local_id().name;
    let peers = shared.table().peers(crate::MemberStatus::Alive);
    let mut answers: Vec<(String, KeysOrError)> = vec![(local, apply_local(shared, &op))];
    let mut tasks = JoinSet::new();
    for peer in peers {
        let shared = shared.clone();
        let req = Request::Keyring(op.clone());
        tasks.spawn(async move {
            let res = match crate::tcp::request(&shared, peer.addr, &req).await {
                Ok(Response::Keyring(r)) => r,
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (peer.name, res)
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(answer) = done {
            answers.push(answer);
        }
    }

    let mut resp = KeyringResponse {
        num_nodes: answers.len(),
        ..KeyringResponse::default()
    };
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    let mut primaries: BTreeMap<String, usize> = BTreeMap::new();
    for (node, res) in answers {
        match res {
            Ok(ks) => {
                resp.num_resp += 1;
                if let Some(p) = ks.first() {
                    *primaries.entry(encode_key(p)).or_default() += 1;
                }
                for k in ks {
                    *keys.entry(encode_key(&k)).or_default() += 1;
                }
            }
            Err(e) => {
                resp.errors.insert(node, e);
            }
        }
    }
    resp.keys = keys.into_iter().collect();
    resp.primary_keys = primaries.into_iter().collect();
    if op != KeyringOp::List && !resp.errors.is_empty() {
        let list: Vec<String> = resp
            .errors
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        return Err(GossipError::Keyring(format!(
            "{} of {} members failed: {}",
            resp.errors.len(),
            resp.num_nodes,
            list.join("; ")
        )));
    }
    Ok(resp)
}
