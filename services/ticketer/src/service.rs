//! The ticket machine over gRPC: the server (in memory, or replicated with Raft), and the client
//! brokers use, which follows the leader across replicas.

use crate::chain::{ClockView, SealedParts, Sealer};
use crate::dispenser::{RangeSource, TicketError};
use crate::machine::{
    TicketMachine, TicketRange, allocate_command, now_nanos, range_of, seal_command, sealed_of,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_proto as pb;
use parsec_raft::redirect::{not_leader, write_error_status};
use parsec_raft::{LeaderFollower, RaftNode};
use parsec_transport::Tls;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[derive(Clone)]
enum Backend {
    /// One process, no replication (`parsec dev`, tests).
    Local(Arc<Mutex<TicketMachine>>),
    /// A Raft group member: allocations go through the replicated log.
    Replicated(Arc<RaftNode<TicketMachine>>),
}

/// How the block clock runs.
#[derive(Clone, Copy, Debug)]
pub struct ClockSettings {
    pub interval: Duration,
    /// An agent that has not reported for this long no longer holds sealing back.
    pub lease: Duration,
}

impl Default for ClockSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            lease: Duration::from_secs(3),
        }
    }
}

/// The ticket machine service: ticket ranges and the block clock.
#[derive(Clone)]
pub struct TicketMachineService {
    backend: Backend,
    clock: ClockSettings,
    sealer: Arc<Mutex<Sealer>>,
}

impl Default for TicketMachineService {
    fn default() -> Self {
        Self::new(ClockSettings::default())
    }
}

impl TicketMachineService {
    /// An unreplicated ticket machine in this process.
    pub fn new(clock: ClockSettings) -> Self {
        Self::with_backend(Backend::Local(Arc::default()), clock)
    }

    /// A ticket machine replica whose allocations and seals go through `node`'s Raft log.
    pub fn replicated(node: Arc<RaftNode<TicketMachine>>, clock: ClockSettings) -> Self {
        Self::with_backend(Backend::Replicated(node), clock)
    }

    fn with_backend(backend: Backend, clock: ClockSettings) -> Self {
        Self {
            backend,
            clock,
            sealer: Arc::new(Mutex::new(Sealer::new(clock.lease))),
        }
    }

    fn is_leading(&self) -> bool {
        match &self.backend {
            Backend::Local(_) => true,
            Backend::Replicated(node) => node.is_leader(),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&TicketMachine) -> R) -> R {
        match &self.backend {
            Backend::Local(machine) => f(&machine.lock()),
            Backend::Replicated(node) => node.read(f),
        }
    }

    fn refuse_unless_leading(&self) -> Result<(), Status> {
        match &self.backend {
            Backend::Replicated(node) if !node.is_leader() => Err(not_leader(node.leader())),
            _ => Ok(()),
        }
    }

    /// Records an agent's block report; answers where the clock stands.
    pub fn report_blocks(
        &self,
        agent: u64,
        through: u64,
        parts: &[u64],
    ) -> Result<ClockView, Status> {
        self.refuse_unless_leading()?;
        self.sealer
            .lock()
            .report(agent, through, parts, Instant::now());
        Ok(self.read(|machine| machine.ledger().view()))
    }

    /// The sealed height and the parts of the non-empty sealed blocks in `[from, to]`.
    pub fn block_parts(&self, from: u64, to: u64) -> Result<SealedParts, Status> {
        self.refuse_unless_leading()?;
        Ok(self.read(|machine| {
            let ledger = machine.ledger();
            SealedParts {
                sealed: ledger.sealed(),
                blocks: ledger.parts(from, to),
            }
        }))
    }

    /// Seals what can be sealed, every quarter of a block interval, for as long as the service
    /// lives (only the leader seals).
    pub fn spawn_sealer(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval((service.clock.interval / 4).max(Duration::from_millis(5)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(error) = service.seal_once().await {
                    tracing::debug!(%error, "sealing blocks failed; retrying");
                }
            }
        })
    }

    /// One sealing step.
    pub async fn seal_once(&self) -> Result<(), Status> {
        let now = Instant::now();
        let interval_ms = self.clock.interval.as_millis() as u64;
        let plan = {
            let mut sealer = self.sealer.lock();
            sealer.set_leading(self.is_leading(), now);
            let ledger = self.read(|machine| machine.ledger().clone());
            sealer.plan(&ledger, interval_ms, now_nanos() / 1_000_000, now)
        };
        let Some(seal) = plan else {
            return Ok(());
        };
        let sealed = match &self.backend {
            Backend::Local(machine) => machine.lock().seal(&seal),
            Backend::Replicated(node) => {
                let result = node
                    .write(seal_command(seal))
                    .await
                    .map_err(write_error_status)?;
                sealed_of(&result).ok_or_else(|| {
                    Status::internal("the ticket machine applied a malformed seal")
                })?
            }
        };
        self.sealer.lock().sealed(sealed);
        Ok(())
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

    async fn report_blocks(
        &self,
        request: Request<pb::BlockReport>,
    ) -> Result<Response<pb::ClockState>, Status> {
        let report = request.into_inner();
        if report.parts.len() > MAX_REPORTED_PARTS {
            return Err(Status::invalid_argument(format!(
                "{} parts in one report; at most {MAX_REPORTED_PARTS}",
                report.parts.len()
            )));
        }
        let view = self.report_blocks(report.agent, report.through, &report.parts)?;
        Ok(Response::new(clock_state(view)))
    }

    async fn get_block_parts(
        &self,
        request: Request<pb::BlockPartsRequest>,
    ) -> Result<Response<pb::BlockPartsReply>, Status> {
        let request = request.into_inner();
        if request.to.saturating_sub(request.from) > MAX_BLOCKS_PER_QUERY {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BLOCKS_PER_QUERY} blocks per query"
            )));
        }
        let SealedParts { sealed, blocks } = self.block_parts(request.from, request.to)?;
        Ok(Response::new(pb::BlockPartsReply {
            sealed,
            blocks: blocks
                .into_iter()
                .map(|(block, agents)| pb::BlockParts { block, agents })
                .collect(),
        }))
    }
}

/// Bounds on one block-clock request (a report covers a few seconds of blocks at most).
const MAX_REPORTED_PARTS: usize = 100_000;
const MAX_BLOCKS_PER_QUERY: u64 = 100_000;

fn clock_state(view: ClockView) -> pb::ClockState {
    pb::ClockState {
        genesis_ms: view.genesis_ms,
        interval_ms: view.interval_ms,
        sealed: view.sealed,
    }
}

fn clock_view(state: &pb::ClockState) -> ClockView {
    ClockView {
        genesis_ms: state.genesis_ms,
        interval_ms: state.interval_ms,
        sealed: state.sealed,
    }
}

/// The block clock as agents use it: in this process, or over gRPC.
#[async_trait]
pub trait BlockClockSource: Send + Sync {
    /// Reports `through` and the blocks holding a part of `agent`'s; returns the clock.
    async fn report(
        &self,
        agent: u64,
        through: u64,
        parts: Vec<u64>,
    ) -> Result<ClockView, TicketError>;

    /// The sealed height and which agents hold parts of the non-empty sealed blocks in
    /// `[from, to]`.
    async fn parts(&self, from: u64, to: u64) -> Result<SealedParts, TicketError>;
}

#[async_trait]
impl BlockClockSource for TicketMachineService {
    async fn report(
        &self,
        agent: u64,
        through: u64,
        parts: Vec<u64>,
    ) -> Result<ClockView, TicketError> {
        self.report_blocks(agent, through, &parts)
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))
    }

    async fn parts(&self, from: u64, to: u64) -> Result<SealedParts, TicketError> {
        self.block_parts(from, to)
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))
    }
}

#[async_trait]
impl BlockClockSource for GrpcTicketMachine {
    async fn report(
        &self,
        agent: u64,
        through: u64,
        parts: Vec<u64>,
    ) -> Result<ClockView, TicketError> {
        let attempt = self.timeout.min(Duration::from_secs(1));
        let reply = self
            .replicas
            .call(attempt, self.timeout, |mut client| {
                let parts = parts.clone();
                async move {
                    let mut request = Request::new(pb::BlockReport {
                        agent,
                        through,
                        parts,
                    });
                    request.set_timeout(attempt);
                    client.report_blocks(request).await
                }
            })
            .await
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))?
            .into_inner();
        Ok(clock_view(&reply))
    }

    async fn parts(&self, from: u64, to: u64) -> Result<SealedParts, TicketError> {
        let attempt = self.timeout.min(Duration::from_secs(1));
        let reply = self
            .replicas
            .call(attempt, self.timeout, |mut client| async move {
                let mut request = Request::new(pb::BlockPartsRequest { from, to });
                request.set_timeout(attempt);
                client.get_block_parts(request).await
            })
            .await
            .map_err(|status| TicketError::Unreachable(status.message().to_owned()))?
            .into_inner();
        Ok(SealedParts {
            sealed: reply.sealed,
            blocks: reply
                .blocks
                .into_iter()
                .map(|parts| (parts.block, parts.agents))
                .collect(),
        })
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
    /// Connects lazily: the first call dials, and replicas that start later are fine. `tls`:
    /// this process's mutual-TLS identity when the cluster uses TLS.
    pub fn new(
        addresses: &[String],
        timeout: Duration,
        tls: Option<Tls>,
    ) -> Result<Self, TicketError> {
        if addresses.is_empty() {
            return Err(TicketError::Unreachable(
                "no ticket machine replica given".into(),
            ));
        }
        let replicas = addresses
            .iter()
            .map(|address| {
                let client = ticket_client(address, timeout, tls.as_ref())?;
                Ok((address.clone(), client))
            })
            .collect::<Result<_, TicketError>>()?;
        // Allocating a range twice only wastes it: every failure may be retried elsewhere.
        let follower = LeaderFollower::new(replicas)
            .with_connect(Box::new(move |address| {
                ticket_client(address, timeout, tls.as_ref()).ok()
            }))
            .idempotent();
        Ok(Self {
            replicas: Arc::new(follower),
            timeout,
        })
    }
}

/// A lazily connected client of one ticket machine replica (mutual TLS with `tls`).
fn ticket_client(
    address: &str,
    timeout: Duration,
    tls: Option<&Tls>,
) -> Result<pb::ticket_machine_client::TicketMachineClient<Channel>, TicketError> {
    let endpoint = parsec_transport::endpoint(address, tls)
        .map_err(|e| TicketError::Unreachable(format!("ticket machine {address}: {e}")))?
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
