//! The shard engine: the lock table and the lock requests waiting for grants behind one mutex,
//! in front of the shard's replicated log. Transport-agnostic: the gRPC service and the
//! in-process transport of `parsec dev` both call it.
//!
//! Only the leader of the shard's Raft group serves transactions. Its lock table lives in memory;
//! what must survive a failover (prepared write-sets, commits, aborts) goes through the log
//! *before* the engine answers. A replica that becomes leader first catches up with the log,
//! then rebuilds its lock table from the prepared records (they keep their write locks), and only
//! then serves; unprepared transactions of the old leader lose their locks and retry. A replica
//! that is not the leader refuses with the leader's address.
//!
//! Replicated writes run outside the mutex, in their own task (a caller that goes away cannot cut
//! a write off between the log and the lock table). While a ticket's prepare is being
//! replicated it is `Preparing`: recovery waits for it and a rollback waits for it. When a write's
//! outcome is unknown (no quorum in time), the leader stops serving and re-synchronises as if it
//! had just been elected.

use crate::lock_table::{Event, LockError, LockTable, Phase};
use crate::log::{ReplicationError, ShardLog};
use crate::metrics::{LockResult, ShardMetrics, TicketOutcome};
use crate::state_machine::{ApplyError, Command, RecordState, StateMachine};
use parking_lot::Mutex;
use parsec_core::{AgentId, Key, LockMode, ShardId, Ticket, Value, WriteSet};
use parsec_raft::{NodeId, RaftNode};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};
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
    /// This replica does not lead the shard's group; nothing was done.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// This replica leads but does not serve yet (it is rebuilding its lock table); nothing was
    /// done.
    #[error("not ready: {0}")]
    NotReady(String),
    /// Replication failed; the request may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

impl From<ReplicationError> for ShardError {
    fn from(error: ReplicationError) -> Self {
        match error {
            ReplicationError::NotLeader { leader } => ShardError::NotLeader { leader },
            ReplicationError::Unknown(message) => ShardError::OutcomeUnknown(message),
        }
    }
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
    /// The prepare is being replicated: it may yet become `Prepared` or fail.
    Preparing,
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

/// Whether this replica serves transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// Leads the group and serves, with a lock table built in `term`.
    Leader { term: u64 },
    /// Leads the group in `term` but is still catching up and rebuilding its lock table.
    TakingOver { term: u64 },
    /// Another replica leads (or nobody yet).
    Follower { leader: Option<(NodeId, String)> },
}

struct Inner {
    role: Role,
    locks: LockTable,
    waiters: HashMap<Ticket, Waiter>,
    leases: HashMap<AgentId, Lease>,
    /// Prepared tickets of a restarted agent's previous incarnation, for the next sweep.
    restarted_orphans: Vec<Orphan>,
    /// Tickets whose prepare (or one-phase commit) is being replicated, with their attempt.
    preparing: HashMap<Ticket, u32>,
    /// Replicated writes started and not yet returned.
    in_flight: usize,
    /// When this leader first saw each replicated record: records that stay too long are
    /// resolved by recovery even if their agent is alive (its broker may have given up).
    recorded_at: HashMap<Ticket, Instant>,
}

impl Inner {
    fn new(role: Role) -> Self {
        Inner {
            role,
            locks: LockTable::default(),
            waiters: HashMap::new(),
            leases: HashMap::new(),
            restarted_orphans: Vec::new(),
            preparing: HashMap::new(),
            in_flight: 0,
            recorded_at: HashMap::new(),
        }
    }

    /// Refuses every request unless this replica leads and serves.
    fn check_serving(&self) -> Result<(), ShardError> {
        match &self.role {
            Role::Leader { .. } => Ok(()),
            Role::TakingOver { .. } => Err(ShardError::NotReady(
                "new leader rebuilding its lock table".into(),
            )),
            Role::Follower { leader } => Err(ShardError::NotLeader {
                leader: leader.clone(),
            }),
        }
    }

    /// Passes grants and wounds on to the waiting requests.
    fn dispatch(&mut self, events: Vec<Event>, log: &ShardLog) {
        let mut completed = Vec::new();
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
                        completed.push(waiter);
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
        if completed.is_empty() {
            return;
        }
        // The values are current: the locks are held, and a commit is applied before the
        // committing ticket's locks are released.
        log.read(|state| {
            for waiter in completed {
                let values = waiter.keys.iter().map(|k| state.get(k)).collect();
                let _ = waiter.reply.send(Ok(values));
            }
        });
    }

    /// Drops a ticket from the lock table. A request of it still waiting learns that the
    /// ticket's locks are gone.
    fn release(&mut self, ticket: Ticket, log: &ShardLog) {
        if let Some(waiter) = self.waiters.remove(&ticket) {
            let _ = waiter
                .reply
                .send(Err(LockError::UnknownTicket(ticket).into()));
        }
        let mut events = Vec::new();
        self.locks.release(ticket, &mut events);
        self.dispatch(events, log);
    }

    /// Forgets every lock and lease (they belong to a leadership that ended), failing the
    /// waiting requests with `why`.
    fn reset(&mut self, why: &ShardError) {
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(why.clone()));
        }
        self.locks = LockTable::default();
        self.leases.clear();
        self.restarted_orphans.clear();
        self.recorded_at.clear();
    }
}

/// One shard's engine. Cheap to clone.
#[derive(Clone)]
pub struct ShardEngine {
    id: ShardId,
    inner: Arc<Mutex<Inner>>,
    log: ShardLog,
    /// Signalled whenever a replicated write returns.
    settled: Arc<Notify>,
    /// Whether this replica serves (for callers that wait for it).
    leading: watch::Sender<bool>,
    /// The lease an agent gets from its requests alone, before or between heartbeats.
    default_lease: Duration,
    /// How long a replicated write or a catch-up may take before its outcome counts as unknown.
    write_timeout: Duration,
    metrics: ShardMetrics,
}

/// The default agent lease (see `Settings::agent_lease_ms`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// How many leases a replicated record may stay unresolved before recovery takes it up even
/// though its agent is alive.
const STALE_RECORD_LEASES: u32 = 4;

impl ShardEngine {
    /// An unreplicated shard in memory (tests, throwaway runs).
    pub fn new(id: ShardId) -> Self {
        Self::with_lease(id, DEFAULT_LEASE)
    }

    /// An unreplicated shard in memory with a given default lease.
    pub fn with_lease(id: ShardId, default_lease: Duration) -> Self {
        Self::build(
            id,
            ShardLog::memory(),
            Role::Leader { term: 0 },
            default_lease,
        )
    }

    /// A replica of a Raft-replicated shard: serves while `node` leads the group. Must be called
    /// inside a Tokio runtime (it watches the node's leadership in a task).
    pub fn replicated(
        id: ShardId,
        node: Arc<RaftNode<StateMachine>>,
        default_lease: Duration,
    ) -> Self {
        let engine = Self::build(
            id,
            ShardLog::Raft(node.clone()),
            Role::Follower { leader: None },
            default_lease,
        );
        tokio::spawn(engine.clone().follow_leadership(node));
        engine
    }

    fn build(id: ShardId, log: ShardLog, role: Role, default_lease: Duration) -> Self {
        let leading = matches!(role, Role::Leader { .. });
        Self {
            id,
            inner: Arc::new(Mutex::new(Inner::new(role))),
            log,
            settled: Arc::default(),
            leading: watch::Sender::new(leading),
            default_lease,
            write_timeout: Duration::from_secs(5),
            metrics: ShardMetrics::new(id),
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Whether this replica serves transactions now.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until this replica serves transactions (it leads and has rebuilt its lock table).
    pub async fn wait_until_leading(&self) {
        let mut leading = self.leading.subscribe();
        let _ = leading.wait_for(|leading| *leading).await;
    }

    /// Follows the Raft node's role: steps down when it stops leading, takes over when it
    /// starts. Ends when the node shuts down.
    async fn follow_leadership(self, node: Arc<RaftNode<StateMachine>>) {
        let mut metrics = node.raft().metrics();
        loop {
            let term = metrics.borrow_and_update().current_term;
            self.observe_role(node.is_leader(), term, node.leader());
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    fn observe_role(&self, leads: bool, term: u64, leader: Option<(NodeId, String)>) {
        let mut inner = self.inner.lock();
        match (&inner.role, leads) {
            (Role::Leader { term: t } | Role::TakingOver { term: t }, true) if *t == term => {}
            (_, true) => {
                tracing::info!(shard = %self.id, term, "elected leader: taking over");
                self.take_over(&mut inner, term);
            }
            (Role::Follower { leader: l }, false) if *l == leader => {}
            (_, false) => {
                tracing::info!(shard = %self.id, ?leader, "following");
                let why = ShardError::NotLeader {
                    leader: leader.clone(),
                };
                inner.reset(&why);
                inner.role = Role::Follower { leader };
                self.leading.send_replace(false);
            }
        }
    }

    /// Stops serving and rebuilds the lock table for `term` in the background.
    fn take_over(&self, inner: &mut Inner, term: u64) {
        inner.reset(&ShardError::NotReady("leadership changing".into()));
        inner.role = Role::TakingOver { term };
        self.leading.send_replace(false);
        tokio::spawn(self.clone().rebuild(term));
    }

    /// After a write of unknown outcome: start over as if just elected, so that the lock table
    /// again matches what the log holds.
    fn resync(&self, inner: &mut Inner) {
        if let Role::Leader { term } = inner.role {
            tracing::warn!(shard = %self.id, "replicated write of unknown outcome: re-synchronising");
            self.take_over(inner, term);
        }
    }

    /// The take-over of leadership in `term`: wait for this replica's own writes to return,
    /// catch up with the log, then rebuild the lock table from the prepared records.
    async fn rebuild(self, term: u64) {
        let taking_over = |inner: &Inner| inner.role == Role::TakingOver { term };
        loop {
            // 1. Every write this replica started has returned, so the log holds them all.
            loop {
                let settled = self.settled.notified();
                {
                    let inner = self.inner.lock();
                    if !taking_over(&inner) {
                        return;
                    }
                    if inner.in_flight == 0 {
                        break;
                    }
                }
                let _ = tokio::time::timeout(self.write_timeout, settled).await;
            }
            // 2. The applied state holds everything committed, by every earlier leader too.
            if let Err(error) = self.log.catch_up(self.write_timeout).await {
                tracing::warn!(shard = %self.id, term, %error, "cannot catch up yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            // 3. Prepared records keep their write locks; every other lock is gone.
            let mut inner = self.inner.lock();
            if !taking_over(&inner) {
                return;
            }
            if inner.in_flight > 0 {
                continue;
            }
            let now = Instant::now();
            let (prepared, records) = self.log.read(|state| {
                let mut prepared = Vec::new();
                let mut records = Vec::new();
                for (&ticket, record) in state.tickets() {
                    records.push(ticket);
                    if let RecordState::Prepared { writes } = &record.state {
                        let keys: Vec<Key> = writes.keys().cloned().collect();
                        prepared.push((ticket, record.attempt, record.agent, keys));
                    }
                }
                (prepared, records)
            });
            inner.locks = LockTable::default();
            let restored = prepared.len();
            for (ticket, attempt, agent, keys) in prepared {
                inner.locks.restore_prepared(ticket, attempt, agent, keys);
            }
            inner.recorded_at = records.into_iter().map(|t| (t, now)).collect();
            inner.role = Role::Leader { term };
            self.leading.send_replace(true);
            tracing::info!(shard = %self.id, term, restored, "leading: lock table rebuilt");
            return;
        }
    }

    /// Runs a request's replicated part in its own task: a caller that goes away (deadline,
    /// disconnect) must not cut it off between the log and the lock table.
    async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, ShardError>> + Send + 'static,
    ) -> Result<T, ShardError> {
        tokio::spawn(work)
            .await
            .unwrap_or_else(|e| Err(ShardError::OutcomeUnknown(format!("task failed: {e}"))))
    }

    /// Bookkeeping after a replicated write returned; re-synchronises after an unknown outcome.
    fn write_returned<T>(&self, inner: &mut Inner, result: &Result<T, ReplicationError>) {
        inner.in_flight -= 1;
        self.settled.notify_waiters();
        if matches!(result, Err(ReplicationError::Unknown(_))) {
            self.resync(inner);
        }
    }

    /// Locks a batch of keys for one ticket; resolves once every key is granted (with the
    /// committed values, in request order), or as soon as the ticket is wounded, or when the
    /// wait deadline passes (the ticket is then rolled back here).
    #[tracing::instrument(level = "debug", skip_all, fields(shard = %self.id, ticket = %batch.ticket))]
    pub async fn lock(&self, batch: LockBatch) -> Reply {
        let reply = self.lock_batch(batch).await;
        self.metrics.lock(match &reply {
            Ok(_) => LockResult::Granted,
            Err(ShardError::Lock(LockError::Wounded { .. })) => LockResult::Wounded,
            Err(ShardError::LockTimeout { .. }) => LockResult::Timeout,
            Err(_) => LockResult::Refused,
        });
        reply
    }

    async fn lock_batch(&self, batch: LockBatch) -> Reply {
        validate_keys(batch.locks.iter().map(|(k, _)| k))?;
        let ticket = batch.ticket;
        let reply = {
            let mut inner = self.inner.lock();
            inner.check_serving()?;
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
            inner.dispatch(events, &self.log);
            if inner.waiters.contains_key(&ticket) {
                self.metrics.waits.inc();
            }
            receiver
        };
        // If the caller goes away (deadline, disconnect) the guard rolls the ticket back here,
        // so that no abandoned request ends up holding locks nobody will release.
        let guard = AbandonGuard {
            engine: self,
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
                let mut inner = self.inner.lock();
                // The grant may have landed between the timer firing and taking the mutex.
                if inner.waiters.remove(&ticket).is_some() {
                    inner.release(ticket, &self.log);
                }
                Err(ShardError::LockTimeout {
                    ticket,
                    waited: wait,
                })
            }
        }
    }

    /// Records a ticket's vote: prepared (write-set replicated, locks kept), read-only (locks
    /// released, nothing replicated) or committed in one step.
    #[tracing::instrument(level = "debug", skip_all, fields(shard = %self.id, ticket = %batch.ticket))]
    pub async fn prepare(&self, batch: PrepareBatch) -> Result<Vote, ShardError> {
        validate_keys(batch.writes.keys())?;
        if let Some((key, _)) = batch.writes.iter().find(|(_, v)| v.len() > MAX_VALUE_BYTES) {
            return Err(ShardError::InvalidArgument(format!(
                "value of key {} exceeds {MAX_VALUE_BYTES} bytes",
                parsec_core::display_key(key)
            )));
        }
        let engine = self.clone();
        let vote = self
            .detached(async move { engine.run_prepare(batch).await })
            .await;
        match vote {
            Ok(Vote::Prepared) => self.metrics.ticket(TicketOutcome::Prepared),
            Ok(Vote::Committed) => self.metrics.ticket(TicketOutcome::Committed),
            _ => {}
        }
        vote
    }

    async fn run_prepare(self, batch: PrepareBatch) -> Result<Vote, ShardError> {
        let ticket = batch.ticket;
        {
            let mut inner = self.inner.lock();
            inner.check_serving()?;
            self.renew(&mut inner, batch.agent);
            let stored = self.log.read(|state| {
                state
                    .ticket(ticket)
                    .map(|r| (r.attempt, r.state == RecordState::Committed))
            });
            if let Some((attempt, committed)) = stored {
                // A re-sent prepare of a ticket already stored here.
                return match (committed, attempt == batch.attempt) {
                    (true, _) => Err(ApplyError::AlreadyCommitted(ticket).into()),
                    (false, true) => Ok(Vote::Prepared),
                    (false, false) => Err(LockError::StaleAttempt {
                        ticket,
                        attempt: batch.attempt,
                        current: attempt,
                    }
                    .into()),
                };
            }
            if inner.preparing.contains_key(&ticket) {
                return Err(ShardError::RequestInFlight(ticket));
            }
            inner
                .locks
                .prepare(ticket, batch.attempt, batch.writes.keys(), batch.lock_count)?;
            if !batch.writes.is_empty() {
                inner.preparing.insert(ticket, batch.attempt);
                inner.in_flight += 1;
            }
        }
        if batch.writes.is_empty() {
            // A read-only vote replicates nothing, but the values it read must not have been
            // stale: confirm that no other leader could have committed in the meantime.
            let confirmed = self.log.confirm_leadership().await;
            self.inner.lock().release(ticket, &self.log);
            confirmed?;
            return Ok(Vote::ReadOnly);
        }
        let one_phase = batch.one_phase;
        let command = if one_phase {
            Command::CommitOnePhase {
                ticket,
                attempt: batch.attempt,
                writes: batch.writes,
            }
        } else {
            Command::Prepare {
                ticket,
                attempt: batch.attempt,
                agent: batch.agent,
                writes: batch.writes,
                participants: batch.participants,
            }
        };
        let result = self.log.append(command).await;
        let mut inner = self.inner.lock();
        inner.preparing.remove(&ticket);
        self.write_returned(&mut inner, &result);
        match result? {
            Ok(_) if one_phase => {
                inner.release(ticket, &self.log);
                Ok(Vote::Committed)
            }
            Ok(_) => {
                inner.recorded_at.insert(ticket, Instant::now());
                Ok(Vote::Prepared)
            }
            Err(error) => {
                inner.release(ticket, &self.log);
                Err(error.into())
            }
        }
    }

    /// Applies a prepared ticket's writes and releases its locks. Idempotent.
    #[tracing::instrument(level = "debug", skip_all, fields(shard = %self.id, %ticket))]
    pub async fn commit(&self, ticket: Ticket) -> Result<(), ShardError> {
        let result = self.settle(ticket, Command::Commit { ticket }).await;
        if result.is_ok() {
            self.metrics.ticket(TicketOutcome::Committed);
        }
        result
    }

    /// Forgets a committed ticket (and any lock it still holds). Idempotent.
    #[tracing::instrument(level = "debug", skip_all, fields(shard = %self.id, %ticket))]
    pub async fn finish(&self, ticket: Ticket) -> Result<(), ShardError> {
        self.settle(ticket, Command::Finish { ticket }).await
    }

    /// Replicates a command that ends (part of) a ticket's life here, then releases its locks.
    async fn settle(&self, ticket: Ticket, command: Command) -> Result<(), ShardError> {
        {
            let mut inner = self.inner.lock();
            inner.check_serving()?;
            inner.in_flight += 1;
        }
        let engine = self.clone();
        self.detached(async move {
            let result = engine.log.append(command).await;
            let mut inner = engine.inner.lock();
            engine.write_returned(&mut inner, &result);
            result??;
            inner.release(ticket, &engine.log);
            Ok(())
        })
        .await
    }

    /// Drops a ticket that has not committed: its locks, its queued requests and its prepared
    /// write-set. Idempotent; refuses a committed ticket and ignores a stale attempt. With
    /// `fence`, a later prepare of this attempt is refused for good (recovery uses it on the
    /// participants that had not prepared). Waits for a prepare still being replicated.
    #[tracing::instrument(level = "debug", skip_all, fields(shard = %self.id, %ticket))]
    pub async fn rollback(
        &self,
        ticket: Ticket,
        attempt: u32,
        fence: bool,
    ) -> Result<(), ShardError> {
        let result = self.roll_back(ticket, attempt, fence).await;
        if result.is_ok() {
            self.metrics.ticket(TicketOutcome::Aborted);
        }
        result
    }

    async fn roll_back(&self, ticket: Ticket, attempt: u32, fence: bool) -> Result<(), ShardError> {
        loop {
            let settled = self.settled.notified();
            {
                let mut inner = self.inner.lock();
                inner.check_serving()?;
                let held = inner.locks.ticket(ticket);
                if let Some(view) = &held
                    && view.attempt > attempt
                {
                    return Err(LockError::StaleAttempt {
                        ticket,
                        attempt,
                        current: view.attempt,
                    }
                    .into());
                }
                if !inner.preparing.contains_key(&ticket) {
                    let recorded = self.log.read(|state| state.ticket(ticket).is_some());
                    let prepared = held.is_some_and(|view| view.phase == Phase::Prepared);
                    if !(fence || recorded || prepared) {
                        // Nothing of it is in the log: the lock table is all there is.
                        inner.release(ticket, &self.log);
                        return Ok(());
                    }
                    inner.in_flight += 1;
                    break;
                }
            }
            if tokio::time::timeout(self.write_timeout, settled)
                .await
                .is_err()
            {
                return Err(ShardError::NotReady(format!(
                    "the prepare of {ticket} is still being replicated"
                )));
            }
        }
        let engine = self.clone();
        self.detached(async move {
            let result = engine
                .log
                .append(Command::Abort {
                    ticket,
                    attempt,
                    fence,
                })
                .await;
            let mut inner = engine.inner.lock();
            engine.write_returned(&mut inner, &result);
            result??;
            if inner
                .locks
                .ticket(ticket)
                .is_none_or(|v| v.attempt <= attempt)
            {
                inner.release(ticket, &engine.log);
            }
            inner.recorded_at.remove(&ticket);
            Ok(())
        })
        .await
    }

    /// Every ticket this shard knows (optionally only `agent`'s), from the lock table and the
    /// replicated records (a replicated record wins: it is what survives a failover).
    pub fn tickets(&self, agent: Option<AgentId>) -> Result<Vec<TicketInfo>, ShardError> {
        let inner = self.inner.lock();
        inner.check_serving()?;
        let mut out: HashMap<Ticket, TicketInfo> = inner
            .locks
            .tickets()
            .map(|(ticket, view)| (ticket, lock_info(ticket, &view)))
            .collect();
        self.log.read(|state| {
            for (&ticket, record) in state.tickets() {
                out.insert(ticket, record_info(ticket, record));
            }
        });
        let mut tickets: Vec<TicketInfo> = out
            .into_values()
            .filter(|info| agent.is_none_or(|a| info.agent == a))
            .collect();
        tickets.sort_by_key(|info| info.ticket);
        Ok(tickets)
    }

    /// What this shard knows of one ticket.
    pub fn ticket(&self, ticket: Ticket) -> Result<Option<TicketInfo>, ShardError> {
        let inner = self.inner.lock();
        inner.check_serving()?;
        let recorded = self
            .log
            .read(|state| state.ticket(ticket).map(|r| record_info(ticket, r)));
        Ok(recorded.or_else(|| {
            inner
                .locks
                .ticket(ticket)
                .map(|view| lock_info(ticket, &view))
        }))
    }

    /// Committed values without a lock (as this leader has applied them).
    pub fn read(&self, keys: &[Key]) -> Result<Vec<Value>, ShardError> {
        validate_keys(keys.iter())?;
        self.inner.lock().check_serving()?;
        Ok(self
            .log
            .read(|state| keys.iter().map(|key| state.get(key)).collect()))
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

    /// Agents whose lease this shard tracks.
    pub fn leases(&self) -> usize {
        self.inner.lock().leases.len()
    }

    /// Renews `agent`'s lease for `lease`. A new incarnation (the agent restarted) ends the
    /// previous one's lease at once, so its tickets are recovered on the next sweep.
    pub fn heartbeat(
        &self,
        agent: AgentId,
        incarnation: u64,
        lease: Duration,
    ) -> Result<(), ShardError> {
        let mut inner = self.inner.lock();
        inner.check_serving()?;
        let now = Instant::now();
        let restarted = inner
            .leases
            .get(&agent)
            .is_some_and(|l| l.incarnation != 0 && l.incarnation != incarnation);
        if restarted {
            tracing::info!(shard = %self.id, %agent, "agent restarted: recovering its tickets");
            let orphans = self.abandon(&mut inner, agent);
            inner.restarted_orphans.extend(orphans);
            self.metrics.lease_expiries.inc();
        }
        inner.leases.insert(
            agent,
            Lease {
                incarnation,
                expires: now + lease,
            },
        );
        Ok(())
    }

    /// Rolls back the unprepared tickets of every agent whose lease lapsed and returns their
    /// prepared and committed tickets, which only the other participants can help resolve; also
    /// returns records left unresolved for several leases by agents that are alive. An agent
    /// seen in a ticket but never in a request (a record restored after a failover) gets one
    /// lease from now. Only the serving leader sweeps.
    pub fn sweep_expired(&self) -> Vec<Orphan> {
        let mut inner = self.inner.lock();
        if inner.check_serving().is_err() {
            return Vec::new();
        }
        let now = Instant::now();
        let (record_agents, records) = self.log.read(|state| {
            let agents: Vec<AgentId> = state.tickets().map(|(_, r)| r.agent).collect();
            let records: Vec<Orphan> = state
                .tickets()
                .map(|(&ticket, record)| orphan(ticket, record))
                .collect();
            (agents, records)
        });
        let agents: std::collections::HashSet<AgentId> = inner
            .locks
            .tickets()
            .map(|(_, view)| view.agent)
            .chain(record_agents)
            .collect();
        let default_lease = self.default_lease;
        let mut expired = Vec::new();
        for &agent in &agents {
            let lease = inner.leases.entry(agent).or_insert(Lease {
                incarnation: 0,
                expires: now + default_lease,
            });
            if lease.expires <= now {
                expired.push(agent);
                self.metrics.lease_expiries.inc();
            }
        }
        // A lapsed lease of an agent with nothing here is forgotten: heartbeats of ever new
        // agent ids must not grow the map without end.
        inner
            .leases
            .retain(|agent, lease| lease.expires > now || agents.contains(agent));
        let mut orphans = std::mem::take(&mut inner.restarted_orphans);
        for agent in &expired {
            tracing::info!(shard = %self.id, %agent, "agent lease lapsed: recovering its tickets");
            orphans.extend(self.abandon(&mut inner, *agent));
        }
        let stale_after = self.default_lease * STALE_RECORD_LEASES;
        for record in records {
            let seen = *inner.recorded_at.entry(record.ticket).or_insert(now);
            if now.duration_since(seen) >= stale_after && !expired.contains(&record.agent) {
                tracing::info!(shard = %self.id, ticket = %record.ticket, "record unresolved for {stale_after:?}: recovering it");
                orphans.push(record);
            }
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
            inner.release(ticket, &self.log);
        }
        self.log.read(|state| {
            state
                .tickets()
                .filter(|(_, record)| record.agent == agent)
                .map(|(&ticket, record)| orphan(ticket, record))
                .collect()
        })
    }

    /// The shard's metrics (recovery records its resolutions; sizes are refreshed from
    /// [`Self::status`] by [`Self::refresh_metrics`]).
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Sets the size gauges (lock table, state) from the current status.
    pub fn refresh_metrics(&self) {
        self.metrics.sizes(&self.status());
    }

    /// Checks the lock table's invariants ([`LockTable::check_invariants`]): for tests and the
    /// fuzz targets, which call it after every request.
    pub fn check_lock_table(&self) -> Result<(), String> {
        self.inner.lock().locks.check_invariants()
    }

    pub fn status(&self) -> ShardStatus {
        let inner = self.inner.lock();
        let (keys, records, applied, data_bytes) = self.log.read(|state| {
            (
                state.key_count() as u64,
                state.tickets().count(),
                state.applied(),
                state.data_bytes(),
            )
        });
        ShardStatus {
            keys,
            tickets: inner.locks.ticket_count().max(records) as u64,
            locked_keys: inner.locks.locked_keys() as u64,
            waiting_requests: inner.locks.waiting_requests() as u64,
            applied_commands: applied,
            data_bytes,
        }
    }
}

fn orphan(ticket: Ticket, record: &crate::state_machine::TicketRecord) -> Orphan {
    Orphan {
        ticket,
        attempt: record.attempt,
        agent: record.agent,
        participants: record.participants.clone(),
        committed: record.state == RecordState::Committed,
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
            // Prepared in the lock table but not (yet) in the log: not a vote anyone may count.
            Phase::Prepared => TicketState::Preparing,
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
    engine: &'a ShardEngine,
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
        let mut inner = self.engine.inner.lock();
        let still_waiting = inner
            .waiters
            .get(&self.ticket)
            .is_some_and(|w| w.attempt == self.attempt);
        if still_waiting {
            tracing::debug!(ticket = %self.ticket, "lock request abandoned by its caller");
            inner.waiters.remove(&self.ticket);
            inner.release(self.ticket, &self.engine.log);
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
