//! One attempt of one transaction: the locks it holds per shard and the commit protocol.

use crate::{Broker, BrokerError};
use futures::future::{join_all, try_join_all};
use parsec_core::{Key, LockMode, ShardId, Ticket, Value, WriteSet};
use parsec_proto as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How a transaction committed; tells how many rounds the client waited for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Touched nothing.
    Empty,
    /// Wrote nothing: read-only votes released the locks, nothing was replicated.
    ReadOnly,
    /// All writes on one shard: committed in one step (after read-only votes elsewhere, if any).
    OnePhase,
    /// Writes on several shards: every participant prepared; the commit phase runs in the
    /// background.
    TwoPhase,
}

/// Resolves once lock-free reads on every shard see a commit's writes: at once for a commit on
/// one shard; after the background commit phase for one across shards (or once that phase
/// gives a shard up to recovery).
#[derive(Debug)]
pub struct Visible(Option<oneshot::Receiver<()>>);

impl Visible {
    /// Whether the writes may not be visible yet (a commit phase is still running).
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    pub async fn wait(self) {
        if let Some(receiver) = self.0 {
            // Sent or dropped, the commit phase is over either way.
            let _ = receiver.await;
        }
    }
}

#[derive(Default)]
struct Participant {
    /// Keys locked on this shard, with the mode and the committed value seen at grant time
    /// (still current: the lock is held).
    locks: HashMap<Key, (LockMode, Value)>,
}

/// One attempt of a transaction. Commit or roll it back; dropping it unfinished rolls it back
/// in the background.
pub struct Transaction {
    broker: Arc<Broker>,
    ticket: Ticket,
    attempt: u32,
    participants: BTreeMap<ShardId, Participant>,
    finished: bool,
    /// Told when a background commit phase has run (see [`Self::commit_then_visible`]).
    visible: Option<oneshot::Sender<()>>,
}

impl Transaction {
    pub(crate) fn new(broker: Arc<Broker>, ticket: Ticket, attempt: u32) -> Self {
        Self {
            broker,
            ticket,
            attempt,
            participants: BTreeMap::new(),
            finished: false,
            visible: None,
        }
    }

    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Shards this attempt has locked keys on.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.participants.keys().copied()
    }

    /// Locks `requests` and returns the committed values in request order. Keys already held in
    /// a covering mode are answered from the cache; the rest go out as one RPC per shard, all
    /// shards in parallel. The first failure cancels the other requests.
    #[tracing::instrument(level = "debug", skip_all, fields(ticket = %self.ticket, attempt = self.attempt))]
    pub async fn lock(&mut self, requests: &[(Key, LockMode)]) -> Result<Vec<Value>, BrokerError> {
        let started = std::time::Instant::now();
        let result = self.lock_keys(requests).await;
        crate::metrics::lock_waited(started.elapsed());
        result
    }

    async fn lock_keys(&mut self, requests: &[(Key, LockMode)]) -> Result<Vec<Value>, BrokerError> {
        let directory = self.broker.directory();
        let mut values: Vec<Option<Value>> = vec![None; requests.len()];
        // shard → key → (mode, indexes of the request that asked for it)
        let mut wanted: BTreeMap<ShardId, BTreeMap<Key, (LockMode, Vec<usize>)>> = BTreeMap::new();
        for (index, (key, mode)) in requests.iter().enumerate() {
            let shard = directory.shard_of(key);
            let held = self
                .participants
                .get(&shard)
                .and_then(|p| p.locks.get(key))
                .filter(|(held, _)| held.covers(*mode));
            match held {
                Some((_, value)) => values[index] = Some(value.clone()),
                None => {
                    let entry = wanted
                        .entry(shard)
                        .or_default()
                        .entry(key.clone())
                        .or_insert((*mode, Vec::new()));
                    entry.0 = entry.0.max(*mode);
                    entry.1.push(index);
                }
            }
        }

        let settings = self.broker.settings().clone();
        let deadline = settings.lock_wait + settings.rpc_timeout;
        let calls = wanted.into_iter().map(|(shard, keys)| {
            let request = pb::LockRequest {
                ticket: self.ticket.0,
                attempt: self.attempt,
                agent: self.broker.agent().0,
                first: !self.participants.contains_key(&shard),
                locks: keys
                    .iter()
                    .map(|(key, (mode, _))| pb::KeyLock {
                        key: key.clone(),
                        mode: proto_mode(*mode) as i32,
                    })
                    .collect(),
                wait_timeout_ms: settings.lock_wait.as_millis() as u64,
            };
            let broker = &self.broker;
            async move {
                let reply = broker
                    .call(shard, deadline, |t| {
                        Box::pin(async move { t.lock(request).await })
                    })
                    .await?;
                if let Some(error) = reply.error {
                    return Err(BrokerError::from_shard(shard, error));
                }
                if reply.values.len() != keys.len() {
                    return Err(BrokerError::Protocol {
                        shard,
                        message: format!("{} values for {} keys", reply.values.len(), keys.len()),
                    });
                }
                Ok((shard, keys, reply.values))
            }
        });
        for (shard, keys, granted) in try_join_all(calls).await? {
            let participant = self.participants.entry(shard).or_default();
            for ((key, (mode, indexes)), value) in keys.into_iter().zip(granted) {
                for index in indexes {
                    values[index] = Some(value.clone());
                }
                let held = participant
                    .locks
                    .entry(key)
                    .or_insert((mode, value.clone()));
                held.0 = held.0.max(mode);
            }
        }
        values
            .into_iter()
            .map(|value| {
                value.ok_or_else(|| BrokerError::Protocol {
                    shard: ShardId(u32::MAX),
                    message: "a lock request went unanswered".into(),
                })
            })
            .collect()
    }

    /// Commits `writes` atomically on every shard this attempt touched. On an error nothing is
    /// written and the locks are released (except [`BrokerError::OutcomeUnknown`]).
    #[tracing::instrument(level = "debug", skip_all, fields(ticket = %self.ticket, attempt = self.attempt))]
    pub async fn commit(mut self, writes: WriteSet) -> Result<CommitOutcome, BrokerError> {
        let result = self.run_commit(writes).await;
        self.mark_finished();
        let Err(error) = result else {
            return result;
        };
        if matches!(error, BrokerError::OutcomeUnknown(_)) {
            self.rollback_all(false).await;
            return Err(error);
        }
        // A vote that got no clear answer may still be replicated: fence every participant, so
        // that the attempt is aborted for sure before anyone runs the transaction again.
        let uncertain = error.is_uncertain();
        if !self.rollback_all(uncertain).await && uncertain {
            return Err(BrokerError::OutcomeUnknown(format!(
                "prepare failed ({error}) and the attempt could not be fenced everywhere"
            )));
        }
        Err(error)
    }

    /// As [`Self::commit`], but a commit across shards answers only once its commit phase has
    /// run, so that lock-free reads on every shard see the writes (unless a shard could not be
    /// reached, which leaves the commit to recovery). For records that others read without
    /// locks as soon as this returns, e.g. a block's parts once the block is reported.
    pub async fn commit_visible(self, writes: WriteSet) -> Result<CommitOutcome, BrokerError> {
        let (outcome, visible) = self.commit_then_visible(writes).await?;
        visible.wait().await;
        Ok(outcome)
    }

    /// As [`Self::commit`] (a commit across shards answers at its commit point), with a
    /// [`Visible`] for whoever must not publish the commit before lock-free reads see it, e.g.
    /// the block that will list the transaction.
    pub async fn commit_then_visible(
        mut self,
        writes: WriteSet,
    ) -> Result<(CommitOutcome, Visible), BrokerError> {
        let (sender, receiver) = oneshot::channel();
        self.visible = Some(sender);
        let outcome = self.commit(writes).await?;
        // Only a commit across shards has a phase left to run after answering.
        let pending = (outcome == CommitOutcome::TwoPhase).then_some(receiver);
        Ok((outcome, Visible(pending)))
    }

    async fn run_commit(&mut self, writes: WriteSet) -> Result<CommitOutcome, BrokerError> {
        let directory = self.broker.directory();
        let mut shard_writes: BTreeMap<ShardId, Vec<pb::KeyValue>> = BTreeMap::new();
        for (key, value) in writes {
            let shard = directory.shard_of(&key);
            let write_locked = self
                .participants
                .get(&shard)
                .and_then(|p| p.locks.get(&key))
                .is_some_and(|(mode, _)| *mode == LockMode::Write);
            if !write_locked {
                return Err(BrokerError::CommitHazard {
                    key: parsec_core::display_key(&key),
                });
            }
            shard_writes
                .entry(shard)
                .or_default()
                .push(pb::KeyValue { key, value });
        }
        let participants: Vec<ShardId> = self.participants.keys().copied().collect();
        let read_only: Vec<ShardId> = participants
            .iter()
            .copied()
            .filter(|shard| !shard_writes.contains_key(shard))
            .collect();

        match (participants.len(), shard_writes.len()) {
            (0, _) => Ok(CommitOutcome::Empty),
            (_, 0) => {
                self.vote_all(&participants, &mut shard_writes).await?;
                Ok(CommitOutcome::ReadOnly)
            }
            (_, 1) => {
                // Read-only participants vote first (releasing their read locks: the lock point
                // is behind us), then the one writing shard commits in one step.
                if !read_only.is_empty() {
                    self.vote_all(&read_only, &mut BTreeMap::new()).await?;
                }
                let (shard, writes) = shard_writes
                    .pop_first()
                    .ok_or_else(|| BrokerError::OutcomeUnknown("no write shard".into()))?;
                self.commit_one_phase(shard, writes).await?;
                Ok(CommitOutcome::OnePhase)
            }
            _ => {
                let write_shards: Vec<ShardId> = shard_writes.keys().copied().collect();
                self.vote_all(&participants, &mut shard_writes).await?;
                // Commit point: every participant has prepared, so the outcome is commit,
                // whoever finishes it. Answer now and finish in the background.
                self.finished = true;
                tokio::spawn(complete_commit(
                    Arc::clone(&self.broker),
                    self.ticket,
                    self.attempt,
                    write_shards,
                    self.visible.take(),
                ));
                Ok(CommitOutcome::TwoPhase)
            }
        }
    }

    /// Sends `prepare` to `shards` in parallel, with each shard's writes (none: a read-only vote).
    async fn vote_all(
        &self,
        shards: &[ShardId],
        writes: &mut BTreeMap<ShardId, Vec<pb::KeyValue>>,
    ) -> Result<(), BrokerError> {
        let participants: Vec<u32> = self.participants.keys().map(|s| s.0).collect();
        let calls = shards.iter().map(|&shard| {
            let request = pb::PrepareRequest {
                ticket: self.ticket.0,
                attempt: self.attempt,
                agent: self.broker.agent().0,
                writes: writes.remove(&shard).unwrap_or_default(),
                participants: participants.clone(),
                lock_count: self.lock_count(shard),
                commit: false,
            };
            self.prepare(shard, request)
        });
        try_join_all(calls).await?;
        Ok(())
    }

    async fn commit_one_phase(
        &self,
        shard: ShardId,
        writes: Vec<pb::KeyValue>,
    ) -> Result<(), BrokerError> {
        let request = pb::PrepareRequest {
            ticket: self.ticket.0,
            attempt: self.attempt,
            agent: self.broker.agent().0,
            writes,
            participants: vec![shard.0],
            lock_count: self.lock_count(shard),
            commit: true,
        };
        match self.prepare(shard, request).await {
            Err(error) if error.is_uncertain() => Err(BrokerError::OutcomeUnknown(format!(
                "one-phase commit on {shard}: {error}"
            ))),
            other => other.map(|_| ()),
        }
    }

    async fn prepare(
        &self,
        shard: ShardId,
        request: pb::PrepareRequest,
    ) -> Result<pb::Vote, BrokerError> {
        let reply = self
            .broker
            .call(shard, self.broker.settings().rpc_timeout, |t| {
                Box::pin(async move { t.prepare(request).await })
            })
            .await?;
        if let Some(error) = reply.error {
            return Err(BrokerError::from_shard(shard, error));
        }
        Ok(pb::Vote::try_from(reply.vote).unwrap_or(pb::Vote::Unspecified))
    }

    fn lock_count(&self, shard: ShardId) -> u32 {
        self.participants
            .get(&shard)
            .map_or(0, |p| p.locks.len() as u32)
    }

    /// Rolls this attempt back on every shard it touched.
    pub async fn rollback(mut self) {
        self.rollback_all(false).await;
        self.mark_finished();
    }

    /// Nothing is left for `Drop` to clean up.
    fn mark_finished(&mut self) {
        self.finished = true;
    }

    /// Rolls back everywhere (fenced: see [`rollback_on`]); returns whether every shard did.
    async fn rollback_all(&mut self, fence: bool) -> bool {
        let shards: Vec<ShardId> = self.participants.keys().copied().collect();
        self.participants.clear();
        rollback_on(&self.broker, self.ticket, self.attempt, &shards, fence).await
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.finished || self.participants.is_empty() {
            return;
        }
        // Abandoned mid-flight (the caller's future was dropped): release the locks anyway.
        let broker = Arc::clone(&self.broker);
        let (ticket, attempt) = (self.ticket, self.attempt);
        let shards: Vec<ShardId> = self.participants.keys().copied().collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                rollback_on(&broker, ticket, attempt, &shards, false).await;
            });
        }
    }
}

/// Rolls `ticket`'s attempt back on `shards`, retrying shards that do not answer; returns
/// whether every shard confirmed. With `fence`, each shard also refuses any later prepare of the
/// attempt. A shard that keeps failing is left to its recovery, which resolves records that stay
/// unresolved.
async fn rollback_on(
    broker: &Broker,
    ticket: Ticket,
    attempt: u32,
    shards: &[ShardId],
    fence: bool,
) -> bool {
    let calls = shards.iter().map(|&shard| async move {
        let request = pb::TicketRequest {
            ticket: ticket.0,
            attempt,
            fence,
        };
        let mut delay = Duration::from_millis(5);
        for _ in 0..ROLLBACK_TRIES {
            let outcome = broker
                .call(shard, broker.settings().rpc_timeout, |t| {
                    Box::pin(async move { t.rollback(request).await })
                })
                .await;
            match outcome {
                Ok(pb::OutcomeReply { error: None }) => return true,
                Ok(pb::OutcomeReply { error: Some(error) }) if !is_unknown_outcome(&error) => {
                    tracing::debug!(%ticket, %shard, message = %error.message, "rollback refused");
                    return false;
                }
                Ok(pb::OutcomeReply { error: Some(error) }) => {
                    tracing::warn!(%ticket, %shard, message = %error.message, "rollback failed; retrying");
                }
                Err(error) => tracing::warn!(%ticket, %shard, %error, "rollback failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        false
    });
    join_all(calls).await.into_iter().all(|ok| ok)
}

/// How often a rollback is tried on a shard that does not answer.
const ROLLBACK_TRIES: usize = 5;

fn is_unknown_outcome(error: &pb::ShardError) -> bool {
    error.code == pb::ErrorCode::OutcomeUnknown as i32
}

/// The second phase of a two-phase commit: commit on every writing shard (retrying until each
/// has applied it), tell `visible`, then let the shards forget the ticket.
async fn complete_commit(
    broker: Arc<Broker>,
    ticket: Ticket,
    attempt: u32,
    shards: Vec<ShardId>,
    visible: Option<oneshot::Sender<()>>,
) {
    let committed = commit_round(&broker, ticket, attempt, &shards).await;
    if let Some(visible) = visible {
        let _ = visible.send(());
    }
    if committed {
        finish_round(&broker, ticket, attempt, &shards).await;
    }
}

/// Commits a prepared ticket on every writing shard; false if one could not be reached, which
/// leaves it prepared there for shard-driven recovery (all prepared → commit).
async fn commit_round(
    broker: &Arc<Broker>,
    ticket: Ticket,
    attempt: u32,
    shards: &[ShardId],
) -> bool {
    let request = pb::TicketRequest {
        ticket: ticket.0,
        attempt,
        fence: false,
    };
    let commits = shards.iter().map(|&shard| {
        async move {
            let mut delay = Duration::from_millis(5);
            for _ in 0..COMMIT_RETRIES {
                let outcome = broker
                    .call(shard, broker.settings().rpc_timeout, |t| {
                        Box::pin(async move { t.commit(request).await })
                    })
                    .await;
                match outcome {
                    Ok(pb::OutcomeReply { error: None }) => return true,
                    Ok(pb::OutcomeReply { error: Some(error) }) if !is_unknown_outcome(&error) => {
                        tracing::error!(%ticket, %shard, message = %error.message, "commit refused after prepare");
                        return false;
                    }
                    Ok(pb::OutcomeReply { error: Some(error) }) => {
                        tracing::warn!(%ticket, %shard, message = %error.message, "commit outcome unknown; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                    Err(error) => {
                        tracing::warn!(%ticket, %shard, %error, "commit failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            false
        }
    });
    join_all(commits).await.into_iter().all(|ok| ok)
}

/// Lets every writing shard forget a committed ticket.
async fn finish_round(broker: &Arc<Broker>, ticket: Ticket, attempt: u32, shards: &[ShardId]) {
    let request = pb::TicketRequest {
        ticket: ticket.0,
        attempt,
        fence: false,
    };
    let finishes = shards.iter().map(|&shard| async move {
        let _ = broker
            .call(shard, broker.settings().rpc_timeout, |t| {
                Box::pin(async move { t.finish(request).await })
            })
            .await;
    });
    join_all(finishes).await;
}

/// How often the background commit phase retries a shard before leaving it to recovery.
const COMMIT_RETRIES: usize = 30;

fn proto_mode(mode: LockMode) -> pb::LockMode {
    match mode {
        LockMode::Read => pb::LockMode::Read,
        LockMode::Write => pb::LockMode::Write,
    }
}
