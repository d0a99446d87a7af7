//! The ticket machine over gRPC: the server, and the client brokers use.

use crate::dispenser::{RangeSource, TicketError};
use crate::machine::{TicketMachine, TicketRange, now_nanos};
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_proto as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// The ticket machine, served over gRPC and usable in process.
#[derive(Clone, Default)]
pub struct TicketMachineService {
    machine: Arc<Mutex<TicketMachine>>,
}

impl TicketMachineService {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn allocate(&self, count: u64) -> TicketRange {
        self.machine.lock().allocate(count, now_nanos())
    }

    pub fn into_server(self) -> pb::ticket_machine_server::TicketMachineServer<Self> {
        pb::ticket_machine_server::TicketMachineServer::new(self)
    }
}

#[async_trait]
impl RangeSource for TicketMachineService {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        Ok(TicketMachineService::allocate(self, count))
    }
}

#[tonic::async_trait]
impl pb::ticket_machine_server::TicketMachine for TicketMachineService {
    async fn allocate_range(
        &self,
        request: Request<pb::AllocateRangeRequest>,
    ) -> Result<Response<pb::TicketRange>, Status> {
        let count = request.into_inner().count;
        if count == 0 {
            return Err(Status::invalid_argument(
                "a range needs at least one ticket",
            ));
        }
        let range = TicketMachineService::allocate(self, count);
        Ok(Response::new(pb::TicketRange {
            start: range.start,
            count: range.count,
        }))
    }
}

/// A client of a remote ticket machine, with a deadline on every call.
#[derive(Clone)]
pub struct GrpcTicketMachine {
    client: pb::ticket_machine_client::TicketMachineClient<Channel>,
    timeout: Duration,
}

impl GrpcTicketMachine {
    /// Connects lazily: the first call dials, and a ticket machine that starts later is fine.
    pub fn new(address: &str, timeout: Duration) -> Result<Self, TicketError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| TicketError::Unreachable(format!("bad address {address}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        Ok(Self {
            client: pb::ticket_machine_client::TicketMachineClient::new(endpoint.connect_lazy()),
            timeout,
        })
    }
}

#[async_trait]
impl RangeSource for GrpcTicketMachine {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        let mut request = Request::new(pb::AllocateRangeRequest { count });
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let reply = tokio::time::timeout(self.timeout, client.allocate_range(request))
            .await
            .map_err(|_| TicketError::Unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))?
            .into_inner();
        Ok(TicketRange {
            start: reply.start,
            count: reply.count,
        })
    }
}
