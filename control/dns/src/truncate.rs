//! Fitting a response into what the transport carries, after Consul's
//! `trimUDPResponse` and `trimTCPResponse`.

use std::collections::HashSet;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::ProtoError;

use crate::resolve::srv_target;

/// The bounds a response must keep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most bytes the encoded response may take.
    pub max_size: usize,
    /// Most answers, for UDP clients without EDNS0 (`udp_answer_limit`).
    pub max_answers: Option<usize>,
    /// Whether cutting answers to `max_answers` sets the TC bit
    /// (`enable_truncate`).
    pub truncate_on_limit: bool,
}

/// Encodes `msg` within `limits`.
///
/// Answers beyond `max_answers` are dropped first, as in Consul. A response
/// still too large loses its authority section, then as many answers as it
/// must (found by binary search) with the TC bit set; the additional section
/// keeps only what the remaining SRV answers point at.
pub(crate) fn encode(msg: &mut Message, limits: Limits) -> Result<Vec<u8>, ProtoError> {
    let has_srv = msg
        .answers()
        .iter()
        .any(|r| r.record_type() == RecordType::SRV);
    if let Some(max) = limits.max_answers {
        if msg.answers().len() > max {
            let additional = msg.take_additionals();
            msg.answers_mut().truncate(max);
            sync_additional(msg, &additional, has_srv);
            if limits.truncate_on_limit {
                msg.set_truncated(true);
            }
        }
    }
    let bytes = msg.to_vec()?;
    if bytes.len() <= limits.max_size {
        return Ok(bytes);
    }

    if !msg.answers().is_empty() {
        msg.take_name_servers();
    }
    let answers = msg.take_answers();
    let additional = msg.take_additionals();
    let attempt = |msg: &mut Message, keep: usize| -> Result<Option<Vec<u8>>, ProtoError> {
        *msg.answers_mut() = answers[..keep].to_vec();
        sync_additional(msg, &additional, has_srv);
        let bytes = msg.to_vec()?;
        Ok((bytes.len() <= limits.max_size).then_some(bytes))
    };
    if let Some(bytes) = attempt(msg, answers.len())? {
        return Ok(bytes);
    }
    // Answers must go: say so, so the client can retry over TCP.
    msg.set_truncated(true);
    // `fits` answers fit (assumed for 0), `too_many` do not.
    let (mut fits, mut too_many) = (0, answers.len());
    let mut best = None;
    while too_many - fits > 1 {
        let mid = fits + (too_many - fits) / 2;
        match attempt(msg, mid)? {
            Some(bytes) => {
                fits = mid;
                best = Some(bytes);
            }
            None => too_many = mid,
        }
    }
    if let Some(bytes) = best {
        return Ok(bytes);
    }
    if let Some(bytes) = attempt(msg, 0)? {
        return Ok(bytes);
    }
    // Even the additional section alone is too large.
    msg.take_additionals();
    msg.to_vec()
}

/// Sets the additional section of `msg` to the records of `additional` that
/// its SRV answers still point at (following CNAMEs), or to all of them when
/// the answers were not SRV.
fn sync_additional(msg: &mut Message, additional: &[Record], has_srv: bool) {
    if !has_srv {
        *msg.additionals_mut() = additional.to_vec();
        return;
    }
    let mut wanted: HashSet<Name> = msg
        .answers()
        .iter()
        .filter_map(srv_target)
        .cloned()
        .collect();
    let mut kept = vec![false; additional.len()];
    // A CNAME in the additional section may point at records listed before
    // it, so repeat until nothing changes (chains are at most a few hops).
    loop {
        let mut changed = false;
        for (record, kept) in additional.iter().zip(kept.iter_mut()) {
            if *kept || !wanted.contains(record.name()) {
                continue;
            }
            *kept = true;
            changed = true;
            if let RData::CNAME(cname) = record.data() {
                wanted.insert(cname.0.clone());
            }
        }
        if !changed {
            break;
        }
    }
    let restored = additional
        .iter()
        .zip(kept)
        .filter(|(_, kept)| *kept)
        .map(|(record, _)| record.clone())
        .collect();
    *msg.additionals_mut() = restored;
}
