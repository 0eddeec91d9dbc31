//! The Raft network: openraft's RPCs carried over the server RPC port
//! ([`crate::rpc`]), on pooled connections shared with forwarded requests.

use super::{ServerNode, TypeConfig};
use crate::rpc::pool::RpcPool;
use crate::rpc::{Request, Response};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// When each follower last answered the leader's AppendEntries.
pub type Contacts = Arc<Mutex<HashMap<u64, Instant>>>;

/// Makes connections to peers.
pub struct Network {
    pool: Arc<RpcPool>,
    contacts: Contacts,
}

impl Network {
    /// A network that dials through `pool` and records followers' answers
    /// in `contacts`.
    pub fn new(pool: Arc<RpcPool>, contacts: Contacts) -> Network {
        Network { pool, contacts }
    }
}

/// The way to one peer.
pub struct Connection {
    pool: Arc<RpcPool>,
    contacts: Contacts,
    target: u64,
    node: ServerNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &ServerNode) -> Connection {
        Connection {
            pool: self.pool.clone(),
            contacts: self.contacts.clone(),
            target,
            node: node.clone(),
        }
    }
}

type Rpc<T, E = RaftError<u64>> = Result<T, RPCError<u64, ServerNode, E>>;

impl Connection {
    /// Sends `req` and hands the matching answer to `pick`.
    async fn send<T, E: std::error::Error>(
        &self,
        req: Request,
        option: &RPCOption,
        pick: impl FnOnce(Response) -> Option<Result<T, E>>,
    ) -> Rpc<T, E> {
        let resp = self
            .pool
            .call(&self.node.addr, &req, option.hard_ttl())
            .await
            .map_err(|e| {
                self.pool.forget(&self.node.addr);
                RPCError::Unreachable(Unreachable::new(&e))
            })?;
        match pick(resp) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            None => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("unexpected rpc answer"),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        let resp = self
            .send(Request::AppendEntries(rpc), &option, |r| match r {
                Response::AppendEntries(r) => Some(r),
                _ => None,
            })
            .await?;
        self.contacts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.target, Instant::now());
        Ok(resp)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.send(Request::InstallSnapshot(rpc), &option, |r| match r {
            Response::InstallSnapshot(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Rpc<VoteResponse<u64>> {
        self.send(Request::Vote(rpc), &option, |r| match r {
            Response::Vote(r) => Some(r),
            _ => None,
        })
        .await
    }
}
