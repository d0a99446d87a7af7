//! How a broker reaches a shard: over gRPC, or in process (`parsec dev`). Both go through the
//! same service code; the in-process transport only skips the network and protobuf encoding.

use async_trait::async_trait;
use parsec_proto as pb;
use parsec_proto::shard_server::Shard as _;
use parsec_raft::LeaderFollower;
use parsec_shard::ShardService;
use parsec_transport::Tls;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;
use tonic::transport::Channel;

#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

impl From<tonic::Status> for TransportError {
    fn from(status: tonic::Status) -> Self {
        TransportError(format!("{:?}: {}", status.code(), status.message()))
    }
}

/// The shard RPCs a broker makes.
#[async_trait]
pub trait ShardTransport: Send + Sync + 'static {
    async fn lock(&self, request: pb::LockRequest) -> Result<pb::LockReply, TransportError>;
    async fn prepare(
        &self,
        request: pb::PrepareRequest,
    ) -> Result<pb::PrepareReply, TransportError>;
    async fn commit(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError>;
    async fn rollback(
        &self,
        request: pb::TicketRequest,
    ) -> Result<pb::OutcomeReply, TransportError>;
    async fn finish(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError>;
    async fn read(&self, request: pb::ReadRequest) -> Result<pb::ReadReply, TransportError>;
    async fn status(&self) -> Result<pb::ShardStatus, TransportError>;
    async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatReply, TransportError>;
    async fn get_tickets(
        &self,
        request: pb::GetTicketsRequest,
    ) -> Result<pb::GetTicketsReply, TransportError>;
}

/// A shard in this process.
#[derive(Clone)]
pub struct LocalShard(pub ShardService);

#[async_trait]
impl ShardTransport for LocalShard {
    async fn lock(&self, request: pb::LockRequest) -> Result<pb::LockReply, TransportError> {
        Ok(self.0.lock(Request::new(request)).await?.into_inner())
    }
    async fn prepare(
        &self,
        request: pb::PrepareRequest,
    ) -> Result<pb::PrepareReply, TransportError> {
        Ok(self.0.prepare(Request::new(request)).await?.into_inner())
    }
    async fn commit(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.0.commit(Request::new(request)).await?.into_inner())
    }
    async fn rollback(
        &self,
        request: pb::TicketRequest,
    ) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.0.rollback(Request::new(request)).await?.into_inner())
    }
    async fn finish(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.0.finish(Request::new(request)).await?.into_inner())
    }
    async fn read(&self, request: pb::ReadRequest) -> Result<pb::ReadReply, TransportError> {
        Ok(self.0.read(Request::new(request)).await?.into_inner())
    }
    async fn status(&self) -> Result<pb::ShardStatus, TransportError> {
        Ok(self
            .0
            .status(Request::new(pb::StatusRequest {}))
            .await?
            .into_inner())
    }
    async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatReply, TransportError> {
        Ok(self.0.heartbeat(Request::new(request)).await?.into_inner())
    }
    async fn get_tickets(
        &self,
        request: pb::GetTicketsRequest,
    ) -> Result<pb::GetTicketsReply, TransportError> {
        Ok(self
            .0
            .get_tickets(Request::new(request))
            .await?
            .into_inner())
    }
}

/// A shard's replicas over gRPC. Calls go to the replica believed to lead and follow "not the
/// leader" refusals to the leader; the broker's deadline on every call bounds the search. Each
/// channel multiplexes every transaction's calls over one HTTP/2 connection and reconnects by
/// itself.
#[derive(Clone)]
pub struct GrpcShard {
    replicas: Arc<LeaderFollower<pb::shard_client::ShardClient<Channel>>>,
}

/// A lazily connected client of one shard replica (mutual TLS with `tls`).
fn shard_client(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&Tls>,
) -> Result<pb::shard_client::ShardClient<Channel>, TransportError> {
    let endpoint = parsec_transport::endpoint(address, tls)
        .map_err(|e| TransportError(format!("shard replica {address}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(pb::shard_client::ShardClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(parsec_shard::service::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(parsec_shard::service::MAX_MESSAGE_BYTES))
}

/// The broker puts a deadline on every call; within it, keep looking for the leader.
const NO_DEADLINE_OF_OUR_OWN: Duration = Duration::from_secs(3600);

impl GrpcShard {
    /// Connects lazily: the first call dials. `addresses`: every replica of the shard; `tls`:
    /// this process's mutual-TLS identity when the cluster uses TLS.
    pub fn new(
        addresses: &[String],
        connect_timeout: Duration,
        tls: Option<Tls>,
    ) -> Result<Self, TransportError> {
        if addresses.is_empty() {
            return Err(TransportError("a shard needs at least one replica".into()));
        }
        let replicas = addresses
            .iter()
            .map(|address| {
                let client = shard_client(address, connect_timeout, tls.as_ref())?;
                Ok((address.clone(), client))
            })
            .collect::<Result<_, TransportError>>()?;
        let follower = LeaderFollower::new(replicas).with_connect(Box::new(move |address| {
            shard_client(address, connect_timeout, tls.as_ref()).ok()
        }));
        Ok(Self {
            replicas: Arc::new(follower),
        })
    }

    async fn call<Req, Rep, F, Fut>(&self, request: Req, rpc: F) -> Result<Rep, TransportError>
    where
        Req: Clone,
        F: Fn(pb::shard_client::ShardClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Rep>, tonic::Status>>,
    {
        let reply = self
            .replicas
            .call(NO_DEADLINE_OF_OUR_OWN, NO_DEADLINE_OF_OUR_OWN, |client| {
                rpc(client, request.clone())
            })
            .await?;
        Ok(reply.into_inner())
    }
}

#[async_trait]
impl ShardTransport for GrpcShard {
    async fn lock(&self, request: pb::LockRequest) -> Result<pb::LockReply, TransportError> {
        self.call(request, |mut c, r| async move { c.lock(r).await })
            .await
    }
    async fn prepare(
        &self,
        request: pb::PrepareRequest,
    ) -> Result<pb::PrepareReply, TransportError> {
        self.call(request, |mut c, r| async move { c.prepare(r).await })
            .await
    }
    async fn commit(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        self.call(request, |mut c, r| async move { c.commit(r).await })
            .await
    }
    async fn rollback(
        &self,
        request: pb::TicketRequest,
    ) -> Result<pb::OutcomeReply, TransportError> {
        self.call(request, |mut c, r| async move { c.rollback(r).await })
            .await
    }
    async fn finish(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        self.call(request, |mut c, r| async move { c.finish(r).await })
            .await
    }
    async fn read(&self, request: pb::ReadRequest) -> Result<pb::ReadReply, TransportError> {
        self.call(request, |mut c, r| async move { c.read(r).await })
            .await
    }
    async fn status(&self) -> Result<pb::ShardStatus, TransportError> {
        self.call(
            pb::StatusRequest {},
            |mut c, r| async move { c.status(r).await },
        )
        .await
    }
    async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatReply, TransportError> {
        self.call(request, |mut c, r| async move { c.heartbeat(r).await })
            .await
    }
    async fn get_tickets(
        &self,
        request: pb::GetTicketsRequest,
    ) -> Result<pb::GetTicketsReply, TransportError> {
        self.call(request, |mut c, r| async move { c.get_tickets(r).await })
            .await
    }
}
