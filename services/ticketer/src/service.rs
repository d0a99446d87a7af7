//! The ticket machine over gRPC: the server (in memory, or replicated with Raft), and the client
//! brokers use, which follows the leader across replicas.

use crate::dispenser::{RangeSource, TicketError};
use crate::machine::{TicketMachine, TicketRange, allocate_command, now_nanos, range_of};
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_proto as pb;
use parsec_raft::redirect::write_error_status;
use parsec_raft::{LeaderFollower, RaftNode};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

#[derive(Clone)]
enum Backend {
    /// One process, no replication (`parsec dev`, tests).
    Local(Arc<Mutex<TicketMachine>>),
    /// A Raft group member: allocations go through the replicated log.
    Replicated(Arc<RaftNode<TicketMachine>>),
}

/// The ticket machine service.
#[derive(Clone)]
pub struct TicketMachineService {
    backend: Backend,
}

impl Default for TicketMachineService {
    fn default() -> Self {
        Self::new()
    }
}

impl TicketMachineService {
    /// An unreplicated ticket machine in this process.
    pub fn new() -> Self {
        Self {
            backend: Backend::Local(Arc::default()),
        }
    }

    /// A ticket machine replica whose allocations go through `node`'s Raft log.
    pub fn replicated(node: Arc<RaftNode<TicketMachine>>) -> Self {
        Self {
            backend: Backend::Replicated(node),
        }
    }

    pub async fn allocate(&self, count: u64) -> Result<TicketRange, Status> {
        match &self.backend {
            Backend::Local(machine) => Ok(machine.lock().allocate(count, now_nanos())),
            Backend::Replicated(node) => {
                let result = node
                    .write(allocate_command(count, now_nanos()))
                    .await
                    .map_err(write_error_status)?;
                range_of(&result).ok_or_else(|| {
                    Status::internal("the ticket machine applied a malformed command")
                })
            }
        }
    }

    pub fn into_server(self) -> pb::ticket_machine_server::TicketMachineServer<Self> {
        pb::ticket_machine_server::TicketMachineServer::new(self)
    }
}

#[async_trait]
impl RangeSource for TicketMachineService {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        let range = TicketMachineService::allocate(self, count)
            .await
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))?;
        crate::metrics::issued(&range);
        Ok(range)
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
        let range = TicketMachineService::allocate(self, count).await?;
        crate::metrics::issued(&range);
        Ok(Response::new(pb::TicketRange {
            start: range.start,
            count: range.count,
        }))
    }
}

/// A client of a (possibly replicated) ticket machine: follows the leader across replicas, with
/// a deadline per call and one for the whole allocation, so a failover delays tickets but does
/// not fail them.
#[derive(Clone)]
pub struct GrpcTicketMachine {
    replicas: Arc<LeaderFollower<pb::ticket_machine_client::TicketMachineClient<Channel>>>,
    timeout: Duration,
}

impl GrpcTicketMachine {
    /// Connects lazily: the first call dials, and replicas that start later are fine.
    pub fn new(addresses: &[String], timeout: Duration) -> Result<Self, TicketError> {
        if addresses.is_empty() {
            return Err(TicketError::Unreachable(
                "no ticket machine replica given".into(),
            ));
        }
        let replicas = addresses
            .iter()
            .map(|address| Ok((address.clone(), ticket_client(address, timeout)?)))
            .collect::<Result<_, TicketError>>()?;
        // Allocating a range twice only wastes it: every failure may be retried elsewhere.
        let follower = LeaderFollower::new(replicas)
            .with_connect(Box::new(move |address| {
                ticket_client(address, timeout).ok()
            }))
            .idempotent();
        Ok(Self {
            replicas: Arc::new(follower),
            timeout,
        })
    }
}

/// A lazily connected client of one ticket machine replica.
fn ticket_client(
    address: &str,
    timeout: Duration,
) -> Result<pb::ticket_machine_client::TicketMachineClient<Channel>, TicketError> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| TicketError::Unreachable(format!("bad address {address}: {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    Ok(pb::ticket_machine_client::TicketMachineClient::new(
        endpoint.connect_lazy(),
    ))
}

#[async_trait]
impl RangeSource for GrpcTicketMachine {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        let attempt = self.timeout.min(Duration::from_secs(1));
        let reply = self
            .replicas
            .call(attempt, self.timeout * 2, |mut client| async move {
                let mut request = Request::new(pb::AllocateRangeRequest { count });
                request.set_timeout(attempt);
                client.allocate_range(request).await
            })
            .await
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))?
            .into_inner();
        Ok(TicketRange {
            start: reply.start,
            count: reply.count,
        })
    }
}
