//! The shard engine: the lock table, the replicated state machine and the lock requests waiting
//! for grants, behind one mutex. Transport-agnostic: the gRPC service and the in-process
//! transport of `parsec dev` both call it.

use crate::lock_table::{Event, LockError, LockTable, Phase};
use crate::state_machine::{ApplyError, Command, RecordState, StateMachine};
use parking_lot::Mutex;
use parsec_core::{AgentId, Key, LockMode, ShardId, Ticket, Value, WriteSet};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most keys one lock request or one write-set may carry.
pub const MAX_KEYS_PER_REQUEST: usize = 4096;
/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Longest a lock request may ask to wait.
pub const MAX_LOCK_WAIT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{ticket} waited {waited:?} for locks and gave up")]
    LockTimeout { ticket: Ticket, waited: Duration },
    #[error("{0} already has a lock request waiting on this shard")]
    RequestInFlight(Ticket),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

/// A batch of lock requests of one ticket.
#[derive(Clone, Debug)]
pub struct LockBatch {
    pub ticket: Ticket,
    pub attempt: u32,
    pub agent: AgentId,
    pub first: bool,
    pub locks: Vec<(Key, LockMode)>,
    pub wait: Duration,
}

/// A ticket's vote.
#[derive(Clone, Debug)]
pub struct PrepareBatch {
    pub ticket: Ticket,
    pub attempt: u32,
    pub agent: AgentId,
    pub writes: WriteSet,
    pub participants: Vec<ShardId>,
    pub lock_count: usize,
    /// This shard is the only participant: commit in one step.
    pub one_phase: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Prepared,
    ReadOnly,
    Committed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TicketState {
    Begun,
    Wounded,
    Prepared,
    Committed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketInfo {
    pub ticket: Ticket,
    pub attempt: u32,
    pub agent: AgentId,
    pub state: TicketState,
    pub participants: Vec<ShardId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStatus {
    pub keys: u64,
    pub tickets: u64,
    pub locked_keys: u64,
    pub waiting_requests: u64,
    pub applied_commands: u64,
    pub data_bytes: u64,
}

type Reply = Result<Vec<Value>, ShardError>;

/// A lock request waiting for its last grant.
struct Waiter {
    attempt: u32,
    keys: Vec<Key>,
    pending: usize,
    granted: HashMap<Key, bool>,
    reply: oneshot::Sender<Reply>,
}

/// How long an agent's tickets stay safe from lease expiry.
#[derive(Copy, Clone, Debug)]
struct Lease {
    incarnation: u64,
    expires: Instant,
}

/// A ticket of an agent whose lease lapsed, left for recovery to resolve with the other
/// participants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub ticket: Ticket,
    pub attempt: u32,
    pub agent: AgentId,
    pub participants: Vec<ShardId>,
    pub committed: bool,
}

#[derive(Default)]
struct Inner {
    locks: LockTable,
    state: StateMachine,
    waiters: HashMap<Ticket, Waiter>,
    leases: HashMap<AgentId, Lease>,
    /// Prepared tickets of a restarted agent's previous incarnation, for the next sweep.
    restarted_orphans: Vec<Orphan>,
}

impl Inner {
    /// Passes grants and wounds on to the waiting requests.
    fn dispatch(&mut self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Granted { ticket, key, .. } => {
                    let Some(waiter) = self.waiters.get_mut(&ticket) else {
                        continue;
                    };
                    if let Some(granted) = waiter.granted.get_mut(&key)
                        && !*granted
                    {
                        *granted = true;
                        waiter.pending -= 1;
                    }
                    if waiter.pending == 0
                        && let Some(waiter) = self.waiters.remove(&ticket)
                    {
                        let values = waiter.keys.iter().map(|k| self.state.get(k)).collect();
                        let _ = waiter.reply.send(Ok(values));
                    }
                }
                Event::Wounded { ticket, wound } => {
                    if let Some(waiter) = self.waiters.remove(&ticket) {
                        let _ = waiter
                            .reply
                            .send(Err(LockError::Wounded { ticket, wound }.into()));
                    }
                }
            }
        }
    }

    /// Drops a ticket from the lock table, failing its waiting request with `why`.
    fn release(&mut self, ticket: Ticket, why: ShardError) {
        let mut events = Vec::new();
        self.locks.release(ticket, &mut events);
        if let Some(waiter) = self.waiters.remove(&ticket) {
            let _ = waiter.reply.send(Err(why));
        }
        self.dispatch(events);
    }
}

/// One shard's engine. Cheap to clone.
#[derive(Clone)]
pub struct ShardEngine {
    id: ShardId,
    inner: Arc<Mutex<Inner>>,
    /// The lease an agent gets from its requests alone, before or between heartbeats.
    default_lease: Duration,
}

/// The default agent lease (see `Settings::agent_lease_ms`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

impl ShardEngine {
    pub fn new(id: ShardId) -> Self {
        Self::with_lease(id, DEFAULT_LEASE)
    }

    pub fn with_lease(id: ShardId, default_lease: Duration) -> Self {
        Self {
            id,
            inner: Arc::default(),
            default_lease,
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Locks a batch of keys for one ticket; resolves once every key is granted (with the
    /// committed values, in request order), or as soon as the ticket is wounded, or when the
    /// wait deadline passes (the ticket is then rolled back here).
    #[tracing::instrument(skip_all, fields(shard = %self.id, ticket = %batch.ticket))]
    pub async fn lock(&self, batch: LockBatch) -> Reply {
        validate_keys(batch.locks.iter().map(|(k, _)| k))?;
        let ticket = batch.ticket;
        let reply = {
            let mut inner = self.inner.lock();
            self.renew(&mut inner, batch.agent);
            if inner.waiters.contains_key(&ticket) {
                return Err(ShardError::RequestInFlight(ticket));
            }
            let mut events = Vec::new();
            inner.locks.lock(
                ticket,
                batch.attempt,
                batch.agent,
                batch.first,
                &batch.locks,
                &mut events,
            )?;
            let (sender, receiver) = oneshot::channel();
            let granted: HashMap<Key, bool> = batch
                .locks
                .iter()
                .map(|(k, _)| (k.clone(), false))
                .collect();
            inner.waiters.insert(
                ticket,
                Waiter {
                    attempt: batch.attempt,
                    keys: batch.locks.into_iter().map(|(k, _)| k).collect(),
                    pending: granted.len(),
                    granted,
                    reply: sender,
                },
            );
            inner.dispatch(events);
            receiver
        };
        // If the caller goes away (deadline, disconnect) the guard rolls the ticket back here,
        // so that no abandoned request ends up holding locks nobody will release.
        let guard = AbandonGuard {
            inner: &self.inner,
            ticket,
            attempt: batch.attempt,
            armed: true,
        };
        let wait = batch.wait.min(MAX_LOCK_WAIT);
        let outcome = tokio::time::timeout(wait, reply).await;
        guard.disarm();
        match outcome {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ShardError::InvalidArgument("lock request dropped".into())),
            Err(_) => {
                let timed_out = ShardError::LockTimeout {
                    ticket,
                    waited: wait,
                };
                let mut inner = self.inner.lock();
                // The grant may have landed between the timer firing and taking the mutex.
                if inner.waiters.contains_key(&ticket) {
                    inner.release(ticket, timed_out.clone());
                }
                Err(timed_out)
            }
        }
    }

    /// Records a ticket's vote: prepared (write-set stored, locks kept), read-only (locks
    /// released, nothing stored) or committed in one step.
    #[tracing::instrument(skip_all, fields(shard = %self.id, ticket = %batch.ticket))]
    pub async fn prepare(&self, batch: PrepareBatch) -> Result<Vote, ShardError> {
        validate_keys(batch.writes.keys())?;
        if let Some((key, _)) = batch.writes.iter().find(|(_, v)| v.len() > MAX_VALUE_BYTES) {
            return Err(ShardError::InvalidArgument(format!(
                "value of key {} exceeds {MAX_VALUE_BYTES} bytes",
                parsec_core::display_key(key)
            )));
        }
        let mut inner = self.inner.lock();
        self.renew(&mut inner, batch.agent);
        if let Some(record) = inner.state.ticket(batch.ticket) {
            // A re-sent prepare of a ticket already stored here.
            return match record.state {
                RecordState::Committed => Err(ApplyError::AlreadyCommitted(batch.ticket).into()),
                RecordState::Prepared { .. } if record.attempt == batch.attempt => {
                    Ok(Vote::Prepared)
                }
                RecordState::Prepared { .. } => Err(LockError::StaleAttempt {
                    ticket: batch.ticket,
                    attempt: batch.attempt,
                    current: record.attempt,
                }
                .into()),
            };
        }
        inner.locks.prepare(
            batch.ticket,
            batch.attempt,
            batch.writes.keys(),
            batch.lock_count,
        )?;
        if batch.writes.is_empty() {
            inner.release(batch.ticket, ShardError::InvalidArgument("voted".into()));
            return Ok(Vote::ReadOnly);
        }
        if batch.one_phase {
            inner.state.apply(Command::CommitOnePhase {
                ticket: batch.ticket,
                writes: batch.writes,
            })?;
            inner.release(
                batch.ticket,
                ShardError::InvalidArgument("committed".into()),
            );
            return Ok(Vote::Committed);
        }
        inner.state.apply(Command::Prepare {
            ticket: batch.ticket,
            attempt: batch.attempt,
            agent: batch.agent,
            writes: batch.writes,
            participants: batch.participants,
        })?;
        Ok(Vote::Prepared)
    }

    /// Applies a prepared ticket's writes and releases its locks. Idempotent.
    #[tracing::instrument(skip_all, fields(shard = %self.id, %ticket))]
    pub async fn commit(&self, ticket: Ticket) -> Result<(), ShardError> {
        let mut inner = self.inner.lock();
        inner.state.apply(Command::Commit { ticket })?;
        inner.release(ticket, ShardError::InvalidArgument("committed".into()));
        Ok(())
    }

    /// Drops a ticket that has not committed: its locks, its queued requests and its prepared
    /// write-set. Idempotent; refuses a committed ticket and ignores a stale attempt.
    #[tracing::instrument(skip_all, fields(shard = %self.id, %ticket))]
    pub async fn rollback(&self, ticket: Ticket, attempt: u32) -> Result<(), ShardError> {
        let mut inner = self.inner.lock();
        if let Some(view) = inner.locks.ticket(ticket)
            && view.attempt > attempt
        {
            return Err(LockError::StaleAttempt {
                ticket,
                attempt,
                current: view.attempt,
            }
            .into());
        }
        inner.state.apply(Command::Abort { ticket, attempt })?;
        inner.release(ticket, ShardError::Lock(LockError::UnknownTicket(ticket)));
        Ok(())
    }

    /// Forgets a committed ticket. Idempotent.
    #[tracing::instrument(skip_all, fields(shard = %self.id, %ticket))]
    pub async fn finish(&self, ticket: Ticket) -> Result<(), ShardError> {
        self.inner.lock().state.apply(Command::Finish { ticket })?;
        Ok(())
    }

    /// Every ticket this shard knows (optionally only `agent`'s), from the lock table and the
    /// replicated records (a replicated record wins: it is what survives a failover).
    pub fn tickets(&self, agent: Option<AgentId>) -> Vec<TicketInfo> {
        let inner = self.inner.lock();
        let mut out: HashMap<Ticket, TicketInfo> = inner
            .locks
            .tickets()
            .map(|(ticket, view)| (ticket, lock_info(ticket, &view)))
            .collect();
        for (&ticket, record) in inner.state.tickets() {
            out.insert(ticket, record_info(ticket, record));
        }
        let mut tickets: Vec<TicketInfo> = out
            .into_values()
            .filter(|info| agent.is_none_or(|a| info.agent == a))
            .collect();
        tickets.sort_by_key(|info| info.ticket);
        tickets
    }

    /// What this shard knows of one ticket.
    pub fn ticket(&self, ticket: Ticket) -> Option<TicketInfo> {
        let inner = self.inner.lock();
        match inner.state.ticket(ticket) {
            Some(record) => Some(record_info(ticket, record)),
            None => inner
                .locks
                .ticket(ticket)
                .map(|view| lock_info(ticket, &view)),
        }
    }

    /// Committed values without a lock.
    pub fn read(&self, keys: &[Key]) -> Result<Vec<Value>, ShardError> {
        validate_keys(keys.iter())?;
        let inner = self.inner.lock();
        Ok(keys.iter().map(|key| inner.state.get(key)).collect())
    }

    /// Extends `agent`'s lease by at least the default lease: any request is a sign of life.
    fn renew(&self, inner: &mut Inner, agent: AgentId) {
        let expires = Instant::now() + self.default_lease;
        let lease = inner.leases.entry(agent).or_insert(Lease {
            incarnation: 0,
            expires,
        });
        lease.expires = lease.expires.max(expires);
    }

    /// Renews `agent`'s lease for `lease`. A new incarnation (the agent restarted) ends the
    /// previous one's lease at once, so its tickets are recovered on the next sweep.
    pub fn heartbeat(&self, agent: AgentId, incarnation: u64, lease: Duration) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let restarted = inner
            .leases
            .get(&agent)
            .is_some_and(|l| l.incarnation != 0 && l.incarnation != incarnation);
        if restarted {
            tracing::info!(shard = %self.id, %agent, "agent restarted: recovering its tickets");
            let orphans = self.abandon(&mut inner, agent);
            inner.restarted_orphans.extend(orphans);
        }
        inner.leases.insert(
            agent,
            Lease {
                incarnation,
                expires: now + lease,
            },
        );
    }

    /// Rolls back the unprepared tickets of every agent whose lease lapsed and returns their
    /// prepared and committed tickets, which only the other participants can help resolve.
    /// An agent seen in a ticket but never in a request (a record restored after a failover)
    /// gets one lease from now.
    pub fn sweep_expired(&self) -> Vec<Orphan> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let agents: std::collections::HashSet<AgentId> = inner
            .locks
            .tickets()
            .map(|(_, view)| view.agent)
            .chain(inner.state.tickets().map(|(_, record)| record.agent))
            .collect();
        let default_lease = self.default_lease;
        let mut expired = Vec::new();
        for agent in agents {
            let lease = inner.leases.entry(agent).or_insert(Lease {
                incarnation: 0,
                expires: now + default_lease,
            });
            if lease.expires <= now {
                expired.push(agent);
            }
        }
        let mut orphans = std::mem::take(&mut inner.restarted_orphans);
        for agent in expired {
            tracing::info!(shard = %self.id, %agent, "agent lease lapsed: recovering its tickets");
            orphans.extend(self.abandon(&mut inner, agent));
        }
        orphans
    }

    /// Rolls back `agent`'s unprepared tickets; returns its prepared and committed ones.
    fn abandon(&self, inner: &mut Inner, agent: AgentId) -> Vec<Orphan> {
        let unprepared: Vec<Ticket> = inner
            .locks
            .tickets()
            .filter(|(_, view)| view.agent == agent && view.phase != Phase::Prepared)
            .map(|(ticket, _)| ticket)
            .collect();
        for ticket in unprepared {
            inner.release(ticket, ShardError::Lock(LockError::UnknownTicket(ticket)));
        }
        inner
            .state
            .tickets()
            .filter(|(_, record)| record.agent == agent)
            .map(|(&ticket, record)| Orphan {
                ticket,
                attempt: record.attempt,
                agent,
                participants: record.participants.clone(),
                committed: record.state == RecordState::Committed,
            })
            .collect()
    }

    pub fn status(&self) -> ShardStatus {
        let inner = self.inner.lock();
        ShardStatus {
            keys: inner.state.key_count() as u64,
            tickets: inner
                .locks
                .ticket_count()
                .max(inner.state.tickets().count()) as u64,
            locked_keys: inner.locks.locked_keys() as u64,
            waiting_requests: inner.locks.waiting_requests() as u64,
            applied_commands: inner.state.applied(),
            data_bytes: inner.state.data_bytes(),
        }
    }
}

fn lock_info(ticket: Ticket, view: &crate::lock_table::TicketView) -> TicketInfo {
    TicketInfo {
        ticket,
        attempt: view.attempt,
        agent: view.agent,
        state: match view.phase {
            Phase::Active => TicketState::Begun,
            Phase::Wounded(_) => TicketState::Wounded,
            Phase::Prepared => TicketState::Prepared,
        },
        participants: Vec::new(),
    }
}

fn record_info(ticket: Ticket, record: &crate::state_machine::TicketRecord) -> TicketInfo {
    TicketInfo {
        ticket,
        attempt: record.attempt,
        agent: record.agent,
        state: match record.state {
            RecordState::Prepared { .. } => TicketState::Prepared,
            RecordState::Committed => TicketState::Committed,
        },
        participants: record.participants.clone(),
    }
}

struct AbandonGuard<'a> {
    inner: &'a Mutex<Inner>,
    ticket: Ticket,
    attempt: u32,
    armed: bool,
}

impl AbandonGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut inner = self.inner.lock();
        let still_waiting = inner
            .waiters
            .get(&self.ticket)
            .is_some_and(|w| w.attempt == self.attempt);
        if still_waiting {
            tracing::debug!(ticket = %self.ticket, "lock request abandoned by its caller");
            inner.release(
                self.ticket,
                ShardError::InvalidArgument("request abandoned".into()),
            );
        }
    }
}

fn validate_keys<'a>(keys: impl ExactSizeIterator<Item = &'a Key>) -> Result<(), ShardError> {
    if keys.len() > MAX_KEYS_PER_REQUEST {
        return Err(ShardError::InvalidArgument(format!(
            "{} keys in one request; at most {MAX_KEYS_PER_REQUEST}",
            keys.len()
        )));
    }
    for key in keys {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(ShardError::InvalidArgument(format!(
                "key length {} is outside 1..={MAX_KEY_BYTES}",
                key.len()
            )));
        }
    }
    Ok(())
}
