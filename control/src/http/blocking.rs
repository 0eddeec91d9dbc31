//! Blocking queries and the headers every read carries.
//!
//! A read subscribes to the topics it covers, runs, and if its index has not
//! passed the client's `index` it parks until a watched topic changes or the
//! wait (plus up to 1/16 jitter, as Consul) runs out.

use super::query::{Consistency, QueryOptions};
use super::{ApiError, ApiState};
use crate::cluster::Cluster;
use crate::state::{StateData, Topic};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// What a read reports about itself (Consul's `QueryMeta`).
#[derive(Debug, Clone, Copy)]
pub struct QueryMeta {
    /// The index of the data returned.
    pub index: u64,
    /// Whether a leader was known.
    pub known_leader: bool,
    /// Milliseconds since the leader was heard from.
    pub last_contact_ms: u64,
}

impl QueryMeta {
    /// Adds `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
    pub fn apply(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        h.insert("X-Consul-Index", HeaderValue::from(self.index));
        h.insert(
            "X-Consul-KnownLeader",
            HeaderValue::from_static(if self.known_leader { "true" } else { "false" }),
        );
        h.insert(
            "X-Consul-LastContact",
            HeaderValue::from(self.last_contact_ms),
        );
    }

    /// A JSON response with the query headers.
    pub fn json<T: Serialize>(&self, body: &T) -> Response {
        let mut resp = axum::Json(body).into_response();
        self.apply(&mut resp);
        resp
    }
}

impl ApiState {
    /// Runs `read` under `opts`, blocking while its index equals
    /// `opts.min_index`. `read` returns the data's index and the data.
    pub async fn blocking<T>(
        &self,
        opts: &QueryOptions,
        topics: &[Topic],
        read: impl Fn(&StateData) -> (u64, T),
    ) -> Result<(QueryMeta, T), ApiError> {
        self.caught_up(opts.consistency).await?;
        let deadline = (opts.min_index > 0).then(|| {
            let jitter = rand::thread_rng().gen_range(0..=opts.max_wait.as_millis() as u64 / 16);
            Instant::now() + opts.max_wait + Duration::from_millis(jitter)
        });
        let store = self.raft()?.store();
        loop {
            let watch = store.watch(topics);
            let (index, out) = {
                let data = store.read();
                read(&data)
            };
            let index = index.max(1);
            let done = match deadline {
                None => true,
                Some(d) => index > opts.min_index || Instant::now() >= d,
            };
            if done {
                return Ok((self.meta(index), out));
            }
            drop(out);
            let deadline = deadline.unwrap_or_else(Instant::now);
            let _parked =
                crate::metrics::InFlight::new(&crate::metrics::global().blocking_queries_parked);
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Returns once this server's store may answer a read of `consistency`.
    /// A follower answers a default read only after catching up with what
    /// the leader had committed (read-index), as Consul forwards such reads
    /// to the leader; `stale` reads answer from local state at once.
    pub async fn caught_up(&self, consistency: Consistency) -> Result<(), ApiError> {
        let node = self.raft()?;
        let catch_up = match consistency {
            Consistency::Consistent => true,
            Consistency::Default => !node.is_leader(),
            Consistency::Stale => false,
        };
        if catch_up {
            node.barrier().await?;
        }
        Ok(())
    }

    /// The query meta for data at `index`.
    /// A client agent knows no leader of its own: it reports one known
    /// while it knows servers to ask.
    pub fn meta(&self, index: u64) -> QueryMeta {
        let (known_leader, last_contact_ms) = match &self.cluster {
            Cluster::Server(node) => (node.leader().is_some(), node.last_contact_ms()),
            Cluster::Client(link) => (link.knows_servers(), 0),
        };
        QueryMeta {
            index,
            known_leader,
            last_contact_ms,
        }
    }
}
