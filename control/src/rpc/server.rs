//! The RPC listener: answers other servers' Raft traffic and the requests
//! forwarded to this server while it leads.

use super::wire::{read_frame, write_frame, WireError, PROTOCOL_MARKER};
use super::{Request, Response};
use crate::raft::RaftNode;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, node: RaftNode) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, &node).await {
                        tracing::debug!(%peer, error = %e, "rpc connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "rpc accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn handle(mut conn: TcpStream, node: &RaftNode) -> Result<(), WireError> {
    let _ = conn.set_nodelay(true);
    let marker = conn.read_u8().await?;
    if marker != PROTOCOL_MARKER {
        return Err(WireError::Protocol(marker));
    }
    loop {
        let req: Request = match read_frame(&mut conn).await {
            Ok(r) => r,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let resp = dispatch(node, req).await;
        write_frame(&mut conn, &resp).await?;
    }
}

async fn dispatch(node: &RaftNode, req: Request) -> Response {
    match req {
        Request::AppendEntries(r) => {
            node.heard_from_leader();
            Response::AppendEntries(node.raft().append_entries(r).await)
        }
        Request::Vote(r) => Response::Vote(node.raft().vote(r).await),
        Request::InstallSnapshot(r) => {
            node.heard_from_leader();
            Response::InstallSnapshot(node.raft().install_snapshot(r).await)
        }
        Request::Info => Response::Info {
            initialized: node.is_initialized().await,
        },
        leader_only => node.handle_as_leader(leader_only).await,
    }
}
