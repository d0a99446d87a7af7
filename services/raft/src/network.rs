//! Node-to-node Raft transport over gRPC (`parsec.raft.v1.RaftTransport`).
//!
//! Each RPC carries a postcard-encoded openraft request; the reply carries a postcard-encoded
//! `Result<response, RaftError>`. Clients are created lazily per target and their tonic channels
//! are shared by every openraft client of that target; each RPC has a deadline (openraft's
//! `RPCOption::hard_ttl`). Transport failures map to `Unreachable` (openraft backs off) or
//! `NetworkError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::log_store::CommittedHandle;
use crate::pb;
use crate::pb::raft_transport_client::RaftTransportClient;
use crate::types::{Node, NodeId, Raft, TypeConfig};
use crate::validate;

/// Largest gRPC message accepted or sent (snapshot chunks and entry batches).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A transport error that is not a remote Raft error.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no endpoint for node {target} at {addr:?}: {source}")]
    Address {
        target: NodeId,
        addr: String,
        source: parsec_transport::TransportError,
    },
    #[error("rpc {rpc} to node {target} failed: {status}")]
    Status {
        rpc: &'static str,
        target: NodeId,
        status: Status,
    },
    #[error("rpc {rpc} to node {target} timed out after {timeout:?}")]
    Timeout {
        rpc: &'static str,
        target: NodeId,
        timeout: Duration,
    },
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
}

/// Creates openraft clients; shares one lazily-connected channel per target address.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    tls: Option<parsec_transport::Tls>,
}

impl NetworkFactory {
    /// Clients that speak mutual TLS to every member when `tls` is given.
    pub fn new(tls: Option<parsec_transport::Tls>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, TransportError> {
        let key = (target, addr.to_string());
        let mut channels = self.channels.lock();
        if let Some(ch) = channels.get(&key) {
            return Ok(ch.clone());
        }
        let endpoint = parsec_transport::endpoint(addr, self.tls.as_ref())
            .map_err(|source| TransportError::Address {
                target,
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let ch = endpoint.connect_lazy();
        channels.insert(key, ch.clone());
        Ok(ch)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        let client = self.channel(target, &node.addr).map(|ch| {
            RaftTransportClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        Connection {
            target,
            node: node.clone(),
            client,
        }
    }
}

/// openraft's client to one target node.
pub struct Connection {
    target: NodeId,
    node: Node,
    client: Result<RaftTransportClient<Channel>, TransportError>,
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, TransportError> {
    postcard::to_allocvec(v).map_err(|source| TransportError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(b).map_err(|source| TransportError::Decode { what, source })
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::InstallSnapshot => "InstallSnapshot",
        }
    }
}

impl Connection {
    /// Sends one request and decodes the remote `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let target = self.target;
        let payload =
            encode("raft request", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&*e))),
        };
        let timeout = option.hard_ttl();
        let mut request = Request::new(pb::RaftRequest {
            payload: Bytes::from(payload),
        });
        request.set_timeout(timeout);
        let fut = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => {
                let err = TransportError::Status {
                    rpc: rpc.name(),
                    target,
                    status,
                };
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
            Err(_) => {
                let err = TransportError::Timeout {
                    rpc: rpc.name(),
                    target,
                    timeout,
                };
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode("raft reply", &reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(target, self.node.clone(), e))
        })
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        // Retry an unreachable peer every 200 ms: a restarted node rejoins quickly.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// Server side of the transport: checks requests ([`crate::validate`]) and feeds them to the
/// local `Raft`.
#[derive(Clone)]
pub struct TransportService {
    raft: Raft,
    me: NodeId,
    /// The committed log id, which a peer's entries must not contradict.
    committed: CommittedHandle,
}

impl TransportService {
    pub(crate) fn new(raft: Raft, me: NodeId, committed: CommittedHandle) -> Self {
        TransportService {
            raft,
            me,
            committed,
        }
    }
}

fn refused(rpc: &str, refusal: validate::Refusal) -> Status {
    tracing::warn!(rpc, %refusal, "refused a malformed raft request");
    Status::invalid_argument(format!("malformed {rpc}: {refusal}"))
}

fn decode_request<T: DeserializeOwned>(req: Request<pb::RaftRequest>) -> Result<T, Status> {
    decode("raft request", &req.into_inner().payload)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(result: &T) -> Result<Response<pb::RaftReply>, Status> {
    let payload = encode("raft reply", result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::RaftReply {
        payload: Bytes::from(payload),
    }))
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode_request(request)?;
        validate::append_entries(self.me, &self.committed, &req)
            .map_err(|r| refused("AppendEntries", r))?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req: VoteRequest<NodeId> = decode_request(request)?;
        validate::vote(self.me, &req).map_err(|r| refused("Vote", r))?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode_request(request)?;
        validate::install_snapshot(self.me, &req).map_err(|r| refused("InstallSnapshot", r))?;
        reply(&self.raft.install_snapshot(req).await)
    }
}
