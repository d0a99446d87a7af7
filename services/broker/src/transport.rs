//! How a broker reaches a shard: over gRPC, or in process (`parsec dev`). Both go through the
//! same service code; the in-process transport only skips the network and protobuf encoding.

use async_trait::async_trait;
use parsec_proto as pb;
use parsec_proto::shard_server::Shard as _;
use parsec_shard::ShardService;
use std::time::Duration;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

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

/// A shard over gRPC. The channel multiplexes every transaction's calls over one HTTP/2
/// connection and reconnects by itself.
#[derive(Clone)]
pub struct GrpcShard {
    client: pb::shard_client::ShardClient<Channel>,
}

impl GrpcShard {
    /// Connects lazily: the first call dials.
    pub fn new(address: &str, connect_timeout: Duration) -> Result<Self, TransportError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| TransportError(format!("bad shard address {address}: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(Self {
            client: pb::shard_client::ShardClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(parsec_shard::service::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(parsec_shard::service::MAX_MESSAGE_BYTES),
        })
    }
}

#[async_trait]
impl ShardTransport for GrpcShard {
    async fn lock(&self, request: pb::LockRequest) -> Result<pb::LockReply, TransportError> {
        Ok(self.client.clone().lock(request).await?.into_inner())
    }
    async fn prepare(
        &self,
        request: pb::PrepareRequest,
    ) -> Result<pb::PrepareReply, TransportError> {
        Ok(self.client.clone().prepare(request).await?.into_inner())
    }
    async fn commit(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.client.clone().commit(request).await?.into_inner())
    }
    async fn rollback(
        &self,
        request: pb::TicketRequest,
    ) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.client.clone().rollback(request).await?.into_inner())
    }
    async fn finish(&self, request: pb::TicketRequest) -> Result<pb::OutcomeReply, TransportError> {
        Ok(self.client.clone().finish(request).await?.into_inner())
    }
    async fn read(&self, request: pb::ReadRequest) -> Result<pb::ReadReply, TransportError> {
        Ok(self.client.clone().read(request).await?.into_inner())
    }
    async fn status(&self) -> Result<pb::ShardStatus, TransportError> {
        Ok(self
            .client
            .clone()
            .status(pb::StatusRequest {})
            .await?
            .into_inner())
    }
    async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatReply, TransportError> {
        Ok(self.client.clone().heartbeat(request).await?.into_inner())
    }
    async fn get_tickets(
        &self,
        request: pb::GetTicketsRequest,
    ) -> Result<pb::GetTicketsReply, TransportError> {
        Ok(self.client.clone().get_tickets(request).await?.into_inner())
    }
}
