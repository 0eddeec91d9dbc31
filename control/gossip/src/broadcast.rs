//! foca's custom-broadcast handler for [`Intent`]s: decides which received
//! intents are new (to apply and pass on) and queues them for the runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::wire::{Intent, IntentKey};

/// An intent that did not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable intent: {0}")]
pub(crate) struct BadIntent(#[from] postcard::Error);

#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Newest version seen per (member, kind).
    seen: HashMap<(String, u8), (u64, u64)>,
    /// New intents, for the runtime to apply.
    pub(crate) queue: Vec<Intent>,
}

impl Inbox {
    /// Forgets what was seen about a reaped member.
    pub(crate) fn forget(&mut self, name: &str) {
        self.seen.retain(|(n, _), _| n != name);
    }
}

/// Shares its inbox with the runtime; foca owns the handler itself.
#[derive(Debug, Default, Clone)]
pub(crate) struct IntentHandler {
    pub(crate) inbox: Arc<Mutex<Inbox>>,
}

impl foca::BroadcastHandler<crate::identity::NodeId> for IntentHandler {
    type Key = IntentKey;
    type Error = BadIntent;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&crate::identity::NodeId>,
    ) -> Result<Option<IntentKey>, BadIntent> {
        let intent: Intent = postcard::from_bytes(data)?;
        let key = intent.key();
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (key.name.clone(), key.kind);
        if inbox.seen.get(&slot).is_some_and(|v| *v >= key.version) {
            return Ok(None);
        }
        inbox.seen.insert(slot, key.version);
        inbox.queue.push(intent);
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeId;
    use foca::BroadcastHandler;

    #[test]
    fn only_new_intents_pass() {
        let mut h = IntentHandler::default();
        let id = NodeId {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
        };
        let leave = Intent::Leave { id }.encode();
        assert!(h.receive_item(&leave, None).unwrap().is_some());
        assert!(h.receive_item(&leave, None).unwrap().is_none());
        assert!(h.receive_item(b"\xff\xff\xff", None).is_err());
        assert_eq!(h.inbox.lock().unwrap().queue.len(), 1);
    }
}
