//! The ticket machine over gRPC: the server (in memory, or replicated with Raft), and the client
//! brokers use, which follows the leader across replicas.

use crate::dispenser::{RangeSource, TicketError};
use crate::machine::{TicketMachine, TicketRange, allocate_command, now_nanos, range_of};
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_proto as pb;
use parsec_raft::{RaftNode, WriteError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Metadata key naming the leader's address when a replica refuses a write.
pub const LEADER_ADDRESS: &str = "x-raft-leader-addr";

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
                    .map_err(write_status)?;
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

/// A refused write as a status a client can act on: where the leader is, or try again.
fn write_status(error: WriteError) -> Status {
    match error {
        WriteError::NotLeader { leader } => {
            let mut status = Status::failed_precondition(match &leader {
                Some((id, address)) => format!("not the leader; leader is node {id} at {address}"),
                None => "not the leader; no leader elected yet".to_owned(),
            });
            if let Some(value) =
                leader.and_then(|(_, address)| MetadataValue::try_from(address).ok())
            {
                status.metadata_mut().insert(LEADER_ADDRESS, value);
            }
            status
        }
        WriteError::Timeout(after) => {
            Status::unavailable(format!("not committed within {after:?}"))
        }
        WriteError::Fatal(message) => Status::unavailable(message),
    }
}

#[async_trait]
impl RangeSource for TicketMachineService {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        TicketMachineService::allocate(self, count)
            .await
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))
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
        Ok(Response::new(pb::TicketRange {
            start: range.start,
            count: range.count,
        }))
    }
}

/// A client of a (possibly replicated) ticket machine. It remembers which replica answered
/// last, follows "not the leader" redirects, and tries the replicas in turn — with a deadline per
/// call and one for the whole allocation, so a failover delays tickets but does not fail them.
#[derive(Clone)]
pub struct GrpcTicketMachine {
    replicas: Vec<(
        String,
        pb::ticket_machine_client::TicketMachineClient<Channel>,
    )>,
    current: Arc<AtomicUsize>,
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
            .map(|address| {
                let endpoint = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|e| TicketError::Unreachable(format!("bad address {address}: {e}")))?
                    .connect_timeout(timeout)
                    .tcp_nodelay(true);
                Ok((
                    address.clone(),
                    pb::ticket_machine_client::TicketMachineClient::new(endpoint.connect_lazy()),
                ))
            })
            .collect::<Result<_, TicketError>>()?;
        Ok(Self {
            replicas,
            current: Arc::default(),
            timeout,
        })
    }

    async fn try_replica(&self, index: usize, count: u64) -> Result<TicketRange, Status> {
        let attempt = self.timeout.min(Duration::from_secs(1));
        let mut request = Request::new(pb::AllocateRangeRequest { count });
        request.set_timeout(attempt);
        let mut client = self.replicas[index].1.clone();
        let reply = tokio::time::timeout(attempt, client.allocate_range(request))
            .await
            .map_err(|_| Status::deadline_exceeded(format!("no answer within {attempt:?}")))??
            .into_inner();
        Ok(TicketRange {
            start: reply.start,
            count: reply.count,
        })
    }
}

#[async_trait]
impl RangeSource for GrpcTicketMachine {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
        let deadline = tokio::time::Instant::now() + self.timeout * 2;
        let mut backoff = Duration::from_millis(10);
        loop {
            let index = self.current.load(Ordering::Relaxed) % self.replicas.len();
            let status = match self.try_replica(index, count).await {
                Ok(range) => return Ok(range),
                Err(status) => status,
            };
            let (address, _) = &self.replicas[index];
            let redirect = status
                .metadata()
                .get(LEADER_ADDRESS)
                .and_then(|v| v.to_str().ok())
                .and_then(|a| self.replicas.iter().position(|(r, _)| r == a))
                .filter(|&leader| leader != index);
            self.current
                .store(redirect.unwrap_or(index + 1), Ordering::Relaxed);
            // Checked on redirects too: replicas with stale leader hints must not bounce a
            // caller between them forever.
            if tokio::time::Instant::now() >= deadline {
                return Err(TicketError::Unreachable(format!(
                    "no ticket machine replica allocated within {:?}; last: {address}: {}",
                    self.timeout * 2,
                    status.message()
                )));
            }
            if redirect.is_some() {
                continue;
            }
            // Between rounds over the replicas (an election is under way, or all are down).
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}
