//! The shard's gRPC service: converts protobuf messages to engine calls and back. Outcomes of
//! the protocol (wounded, stale attempt, …) travel in the reply with their details; gRPC status
//! codes are left for malformed requests and for "not here, not now" (not the leader: the
//! status names the leader; not ready: try again), which clients handle below the protocol.

use crate::engine::{LockBatch, PrepareBatch, ShardEngine, ShardError, TicketState, Vote};
use crate::lock_table::LockError;
use crate::state_machine::ApplyError;
use parsec_core::{AgentId, LockMode, ShardId, Ticket};
use parsec_proto as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Serves one shard's engine over gRPC.
#[derive(Clone)]
pub struct ShardService {
    engine: ShardEngine,
    default_lock_wait: Duration,
    rpcs: Arc<AtomicU64>,
}

impl ShardService {
    pub fn new(engine: ShardEngine, default_lock_wait: Duration) -> Self {
        Self {
            engine,
            default_lock_wait,
            rpcs: Arc::default(),
        }
    }

    pub fn engine(&self) -> &ShardEngine {
        &self.engine
    }

    pub fn into_server(self) -> pb::shard_server::ShardServer<Self> {
        pb::shard_server::ShardServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Longest lease an agent may ask for (10 minutes).
pub const MAX_LEASE_MS: u64 = 600_000;

/// Largest request a shard accepts (a write-set of a few thousand keys fits easily).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

fn lock_mode(raw: i32) -> Result<LockMode, Status> {
    match pb::LockMode::try_from(raw) {
        Ok(pb::LockMode::Read) => Ok(LockMode::Read),
        Ok(pb::LockMode::Write) => Ok(LockMode::Write),
        Err(_) => Err(Status::invalid_argument(format!("unknown lock mode {raw}"))),
    }
}

/// An engine error as the reply carries it, or as a status when the request was not executed
/// because this replica does not serve (clients follow the leader on those).
fn reply_error(error: ShardError) -> Result<pb::ShardError, Status> {
    match error {
        ShardError::NotLeader { leader } => Err(parsec_raft::redirect::not_leader(leader)),
        ShardError::NotReady(message) => Err(Status::unavailable(message)),
        other => Ok(error_to_proto(&other)),
    }
}

/// The protobuf form of an engine error.
pub fn error_to_proto(error: &ShardError) -> pb::ShardError {
    use pb::ErrorCode as C;
    let mut out = pb::ShardError {
        code: C::Unspecified as i32,
        message: error.to_string(),
        wounded_by: None,
        wounded_on: None,
    };
    let code = match error {
        ShardError::Lock(lock) => match lock {
            LockError::UnknownTicket(_) => C::UnknownTicket,
            LockError::StaleAttempt { .. } => C::StaleAttempt,
            LockError::AlreadyPrepared(_) => C::AlreadyPrepared,
            LockError::Wounded { wound, .. } => {
                out.wounded_by = Some(wound.by.0);
                out.wounded_on = Some(wound.key.clone());
                C::Wounded
            }
            LockError::WriteLockNotHeld { .. } | LockError::LockCountMismatch { .. } => {
                C::LockNotHeld
            }
            LockError::LocksPending(_) => C::LocksPending,
        },
        ShardError::Apply(apply) => match apply {
            ApplyError::NotPrepared(_) => C::NotPrepared,
            ApplyError::AlreadyCommitted(_) => C::AlreadyCommitted,
            ApplyError::AttemptMismatch { .. } => C::StaleAttempt,
            ApplyError::Fenced { .. } => C::Fenced,
            ApplyError::TooOld(_) => C::TooOld,
            ApplyError::Malformed(_) => C::InvalidArgument,
        },
        ShardError::LockTimeout { .. } => C::LockTimeout,
        ShardError::RequestInFlight(_) => C::LocksPending,
        ShardError::InvalidArgument(_) => C::InvalidArgument,
        ShardError::OutcomeUnknown(_) => C::OutcomeUnknown,
        // Sent as statuses by `reply_error`; here only for completeness.
        ShardError::NotLeader { .. } | ShardError::NotReady(_) => C::Unspecified,
    };
    out.code = code as i32;
    out
}

fn outcome(result: Result<(), ShardError>) -> Result<Response<pb::OutcomeReply>, Status> {
    Ok(Response::new(pb::OutcomeReply {
        error: result.err().map(reply_error).transpose()?,
    }))
}

/// Statuses for the requests that have no protocol outcome to report.
fn status_of(error: ShardError) -> Status {
    match reply_error(error) {
        Err(status) => status,
        Ok(error) => Status::invalid_argument(error.message),
    }
}

#[tonic::async_trait]
impl pb::shard_server::Shard for ShardService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let locks = request
            .locks
            .into_iter()
            .map(|lock| Ok((lock.key, lock_mode(lock.mode)?)))
            .collect::<Result<Vec<_>, Status>>()?;
        if locks.is_empty() {
            return Err(Status::invalid_argument(
                "a lock request needs at least one key",
            ));
        }
        let wait = match request.wait_timeout_ms {
            0 => self.default_lock_wait,
            ms => Duration::from_millis(ms),
        };
        let batch = LockBatch {
            ticket: Ticket(request.ticket),
            attempt: request.attempt,
            agent: AgentId(request.agent),
            first: request.first,
            locks,
            wait,
        };
        let reply = match self.engine.lock(batch).await {
            Ok(values) => pb::LockReply {
                values,
                error: None,
            },
            Err(error) => pb::LockReply {
                values: Vec::new(),
                error: Some(reply_error(error)?),
            },
        };
        Ok(Response::new(reply))
    }

    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let mut writes = parsec_core::WriteSet::new();
        for kv in request.writes {
            if writes.insert(kv.key, kv.value).is_some() {
                return Err(Status::invalid_argument("a key is written twice"));
            }
        }
        let batch = PrepareBatch {
            ticket: Ticket(request.ticket),
            attempt: request.attempt,
            agent: AgentId(request.agent),
            writes,
            participants: request.participants.into_iter().map(ShardId).collect(),
            lock_count: request.lock_count as usize,
            one_phase: request.commit,
        };
        let reply = match self.engine.prepare(batch).await {
            Ok(vote) => pb::PrepareReply {
                vote: match vote {
                    Vote::Prepared => pb::Vote::Prepared,
                    Vote::ReadOnly => pb::Vote::ReadOnly,
                    Vote::Committed => pb::Vote::Committed,
                } as i32,
                error: None,
            },
            Err(error) => pb::PrepareReply {
                vote: pb::Vote::Unspecified as i32,
                error: Some(reply_error(error)?),
            },
        };
        Ok(Response::new(reply))
    }

    async fn commit(
        &self,
        request: Request<pb::TicketRequest>,
    ) -> Result<Response<pb::OutcomeReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket(request.into_inner().ticket);
        outcome(self.engine.commit(ticket).await)
    }

    async fn rollback(
        &self,
        request: Request<pb::TicketRequest>,
    ) -> Result<Response<pb::OutcomeReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        outcome(
            self.engine
                .rollback(Ticket(request.ticket), request.attempt, request.fence)
                .await,
        )
    }

    async fn finish(
        &self,
        request: Request<pb::TicketRequest>,
    ) -> Result<Response<pb::OutcomeReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket(request.into_inner().ticket);
        outcome(self.engine.finish(ticket).await)
    }

    async fn get_tickets(
        &self,
        request: Request<pb::GetTicketsRequest>,
    ) -> Result<Response<pb::GetTicketsReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        let agent = request.agent.map(AgentId);
        // One ticket (what recovery asks for) is a direct lookup, not a scan of every ticket.
        let infos = match request.ticket.map(Ticket) {
            Some(ticket) => self
                .engine
                .ticket(ticket)
                .map_err(status_of)?
                .filter(|info| agent.is_none_or(|a| info.agent == a))
                .into_iter()
                .collect(),
            None => self.engine.tickets(agent).map_err(status_of)?,
        };
        let tickets = infos
            .into_iter()
            .map(|info| pb::TicketInfo {
                ticket: info.ticket.0,
                attempt: info.attempt,
                agent: info.agent.0,
                state: match info.state {
                    TicketState::Begun => pb::TicketState::Begun,
                    TicketState::Wounded => pb::TicketState::Wounded,
                    TicketState::Preparing => pb::TicketState::Preparing,
                    TicketState::Prepared => pb::TicketState::Prepared,
                    TicketState::Committed => pb::TicketState::Committed,
                } as i32,
                participants: info.participants.into_iter().map(|s| s.0).collect(),
            })
            .collect();
        Ok(Response::new(pb::GetTicketsReply { tickets }))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let keys = request.into_inner().keys;
        let values = self.engine.read(&keys).map_err(status_of)?;
        Ok(Response::new(pb::ReadReply { values }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let request = request.into_inner();
        if request.lease_ms == 0 || request.lease_ms > MAX_LEASE_MS {
            return Err(Status::invalid_argument(format!(
                "lease must be 1..={MAX_LEASE_MS} ms"
            )));
        }
        self.engine
            .heartbeat(
                AgentId(request.agent),
                request.incarnation,
                Duration::from_millis(request.lease_ms),
            )
            .map_err(status_of)?;
        Ok(Response::new(pb::HeartbeatReply {}))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ShardStatus>, Status> {
        self.rpcs.fetch_add(1, Ordering::Relaxed);
        let status = self.engine.status();
        Ok(Response::new(pb::ShardStatus {
            shard: self.engine.id().0,
            keys: status.keys,
            tickets: status.tickets,
            locked_keys: status.locked_keys,
            waiting_requests: status.waiting_requests,
            applied_commands: status.applied_commands,
            rpcs: self.rpcs.load(Ordering::Relaxed),
        }))
    }
}
