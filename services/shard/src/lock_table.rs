//! The lock table: strict two-phase locking with wound-wait, as a pure data structure.
//!
//! No I/O, no clocks, no channels: every call returns what happened as [`Event`]s and the caller
//! (the shard engine) tells the waiting parties. That makes the whole protocol testable by
//! replaying command sequences against a reference model.
//!
//! Semantics (those of PArSEC's runtime locking shard, minus its defects):
//! - read locks are shared, write locks exclusive; a ticket holding a read lock may ask for a write
//!   lock on the same key (upgrade), which is granted once it is the only reader;
//! - each key has one queue ordered by ticket number (oldest first), not by arrival; the head of
//!   the queue is served first, consecutive reads at the head are granted together, and a waiting
//!   write at the head holds back every younger request behind it;
//! - wound-wait: a request wounds every *younger* holder it conflicts with (all its locks are
//!   released and its queued requests dropped), and waits for *older* holders. An older ticket never
//!   waits for a younger one, so the waits-for graph has no cycle and the oldest ticket always
//!   progresses;
//! - a prepared ticket is past its lock point and is never wounded: requesters wait for it;
//! - every retry of a ticket is a new *attempt*: a request from an older attempt is refused, and the
//!   first request of a newer attempt replaces the older attempt's record. A request that is not
//!   marked `first` for a ticket the table does not know fails, so a transaction can never carry on
//!   believing it holds locks that a reset or a failover took away.

use parsec_core::{AgentId, Key, LockMode, Ticket, display_key};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Who wounded a ticket, and on which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wound {
    pub by: Ticket,
    pub key: Key,
}

/// Where a ticket stands in the lock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Acquiring locks.
    Active,
    /// Wounded by an older ticket: holds nothing, waits for its rollback.
    Wounded(Wound),
    /// Past its lock point: keeps its locks until commit or rollback, cannot be wounded.
    Prepared,
}

/// What the caller must pass on to waiting parties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `ticket` now holds `key` in (at least) `mode`.
    Granted {
        ticket: Ticket,
        key: Key,
        mode: LockMode,
    },
    /// `ticket` was wounded: it lost every lock and every queued request.
    Wounded { ticket: Ticket, wound: Wound },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("{0} is unknown to this shard")]
    UnknownTicket(Ticket),
    #[error("{ticket} attempt {attempt} is stale: the shard knows attempt {current}")]
    StaleAttempt {
        ticket: Ticket,
        attempt: u32,
        current: u32,
    },
    #[error("{0} is already prepared")]
    AlreadyPrepared(Ticket),
    #[error("{ticket} was wounded by {} on key {}", wound.by, display_key(&wound.key))]
    Wounded { ticket: Ticket, wound: Wound },
    #[error("{ticket} does not hold a write lock on key {}", display_key(key))]
    WriteLockNotHeld { ticket: Ticket, key: Key },
    #[error("{ticket} holds {held} locks here but its broker counted {expected}")]
    LockCountMismatch {
        ticket: Ticket,
        held: usize,
        expected: usize,
    },
    #[error("{0} still has lock requests waiting")]
    LocksPending(Ticket),
}

/// A ticket's record, as queries see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketView {
    pub attempt: u32,
    pub agent: AgentId,
    pub phase: Phase,
    pub held: usize,
    pub queued: usize,
}

#[derive(Default, Debug)]
struct KeyLock {
    writer: Option<Ticket>,
    /// Few readers per key in practice: a vector beats a set.
    readers: Vec<Ticket>,
    /// Waiting requests, oldest ticket first. One entry per ticket.
    queue: BTreeMap<Ticket, LockMode>,
}

impl KeyLock {
    fn is_idle(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty() && self.queue.is_empty()
    }

    /// Holders that a request of `ticket` in `mode` conflicts with.
    fn conflicting_holders(&self, ticket: Ticket, mode: LockMode) -> Vec<Ticket> {
        let mut holders: Vec<Ticket> = self.writer.into_iter().filter(|&t| t != ticket).collect();
        if mode == LockMode::Write {
            holders.extend(self.readers.iter().copied().filter(|&t| t != ticket));
        }
        holders
    }

    fn remove_holder(&mut self, ticket: Ticket) {
        if self.writer == Some(ticket) {
            self.writer = None;
        }
        self.readers.retain(|&t| t != ticket);
    }
}

#[derive(Debug)]
struct TicketLocks {
    attempt: u32,
    agent: AgentId,
    phase: Phase,
    held: HashMap<Key, LockMode>,
    queued: HashSet<Key>,
}

impl TicketLocks {
    fn new(attempt: u32, agent: AgentId) -> Self {
        Self {
            attempt,
            agent,
            phase: Phase::Active,
            held: HashMap::new(),
            queued: HashSet::new(),
        }
    }
}

/// The lock table of one shard.
#[derive(Default, Debug)]
pub struct LockTable {
    keys: HashMap<Key, KeyLock>,
    tickets: HashMap<Ticket, TicketLocks>,
    waiting: usize,
}

impl LockTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests `requests` for `ticket`. Grants that happen at once, and wounds this request
    /// inflicts on younger holders, are appended to `events`; the rest of the grants come later,
    /// as events of the calls that release the keys.
    pub fn lock(
        &mut self,
        ticket: Ticket,
        attempt: u32,
        agent: AgentId,
        first: bool,
        requests: &[(Key, LockMode)],
        events: &mut Vec<Event>,
    ) -> Result<(), LockError> {
        self.admit(ticket, attempt, agent, first, events)?;
        for (key, mode) in requests {
            self.request(ticket, key, *mode, events);
        }
        Ok(())
    }

    /// Checks that `ticket` may ask for locks, creating or resetting its record as the attempt
    /// rules say.
    fn admit(
        &mut self,
        ticket: Ticket,
        attempt: u32,
        agent: AgentId,
        first: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), LockError> {
        match self.tickets.get(&ticket) {
            None if first => {}
            None => return Err(LockError::UnknownTicket(ticket)),
            Some(record) if attempt < record.attempt => {
                return Err(LockError::StaleAttempt {
                    ticket,
                    attempt,
                    current: record.attempt,
                });
            }
            Some(record) if attempt > record.attempt => {
                if record.phase == Phase::Prepared {
                    return Err(LockError::AlreadyPrepared(ticket));
                }
                if !first {
                    // The record of this attempt was lost (reset or failover).
                    return Err(LockError::UnknownTicket(ticket));
                }
                self.release(ticket, events);
            }
            Some(record) => {
                return match &record.phase {
                    Phase::Active => {
                        if agent != record.agent {
                            // Same ticket and attempt from another agent: never legitimate.
                            return Err(LockError::StaleAttempt {
                                ticket,
                                attempt,
                                current: record.attempt,
                            });
                        }
                        Ok(())
                    }
                    Phase::Wounded(wound) => Err(LockError::Wounded {
                        ticket,
                        wound: wound.clone(),
                    }),
                    Phase::Prepared => Err(LockError::AlreadyPrepared(ticket)),
                };
            }
        }
        self.tickets
            .insert(ticket, TicketLocks::new(attempt, agent));
        Ok(())
    }

    fn request(&mut self, ticket: Ticket, key: &Key, mode: LockMode, events: &mut Vec<Event>) {
        let Some(record) = self.tickets.get_mut(&ticket) else {
            return;
        };
        if record.phase != Phase::Active {
            // Wounded by an earlier request of this same batch? Impossible (a requester only
            // wounds younger tickets), but never queue for a ticket that is not active.
            return;
        }
        if let Some(&held) = record.held.get(key)
            && held.covers(mode)
        {
            events.push(Event::Granted {
                ticket,
                key: key.clone(),
                mode: held,
            });
            return;
        }
        let lock = self.keys.entry(key.clone()).or_default();
        if record.queued.insert(key.clone()) {
            self.waiting += 1;
        }
        let queued_mode = lock.queue.entry(ticket).or_insert(mode);
        *queued_mode = (*queued_mode).max(mode);

        let victims: Vec<Ticket> = lock
            .conflicting_holders(ticket, mode)
            .into_iter()
            .filter(|&holder| {
                ticket.is_older_than(holder)
                    && self
                        .tickets
                        .get(&holder)
                        .is_some_and(|h| h.phase == Phase::Active)
            })
            .collect();
        for victim in victims {
            self.wound(
                victim,
                Wound {
                    by: ticket,
                    key: key.clone(),
                },
                events,
            );
        }
        self.grant(key, events);
    }

    fn wound(&mut self, victim: Ticket, wound: Wound, events: &mut Vec<Event>) {
        let Some(record) = self.tickets.get_mut(&victim) else {
            return;
        };
        record.phase = Phase::Wounded(wound.clone());
        let held = std::mem::take(&mut record.held);
        let queued = std::mem::take(&mut record.queued);
        events.push(Event::Wounded {
            ticket: victim,
            wound,
        });
        self.drop_locks(victim, held, queued, events);
    }

    /// Forgets `ticket`: releases its locks, drops its queued requests and erases its record.
    /// Used for commit, rollback and read-only votes alike. Returns whether it was known.
    pub fn release(&mut self, ticket: Ticket, events: &mut Vec<Event>) -> bool {
        let Some(record) = self.tickets.remove(&ticket) else {
            return false;
        };
        self.drop_locks(ticket, record.held, record.queued, events);
        true
    }

    fn drop_locks(
        &mut self,
        ticket: Ticket,
        held: HashMap<Key, LockMode>,
        queued: HashSet<Key>,
        events: &mut Vec<Event>,
    ) {
        self.waiting -= queued.len();
        let mut touched: Vec<Key> = Vec::with_capacity(held.len() + queued.len());
        for key in queued {
            if let Some(lock) = self.keys.get_mut(&key) {
                lock.queue.remove(&ticket);
            }
            touched.push(key);
        }
        for (key, _) in held {
            if let Some(lock) = self.keys.get_mut(&key) {
                lock.remove_holder(ticket);
            }
            touched.push(key);
        }
        for key in touched {
            self.grant(&key, events);
        }
    }

    /// Serves the head of `key`'s queue for as long as it can be served.
    fn grant(&mut self, key: &Key, events: &mut Vec<Event>) {
        let Some(lock) = self.keys.get_mut(key) else {
            return;
        };
        while let Some((&ticket, &mode)) = lock.queue.first_key_value() {
            let grantable = match mode {
                LockMode::Read => lock.writer.is_none(),
                LockMode::Write => {
                    lock.writer.is_none() && lock.readers.iter().all(|&reader| reader == ticket)
                }
            };
            if !grantable {
                break;
            }
            lock.queue.pop_first();
            match mode {
                LockMode::Read => lock.readers.push(ticket),
                LockMode::Write => {
                    lock.readers.clear();
                    lock.writer = Some(ticket);
                }
            }
            self.waiting -= 1;
            if let Some(record) = self.tickets.get_mut(&ticket) {
                record.queued.remove(key);
                record.held.insert(key.clone(), mode);
            }
            events.push(Event::Granted {
                ticket,
                key: key.clone(),
                mode,
            });
            if mode == LockMode::Write {
                break;
            }
        }
        if lock.is_idle() {
            self.keys.remove(key);
        }
    }

    /// Moves `ticket` past its lock point. Refused unless the ticket is active, has nothing
    /// queued, holds exactly `lock_count` locks (what its broker believes it holds) and holds a
    /// write lock on every key in `writes`. Preparing a prepared ticket again succeeds.
    pub fn prepare<'a>(
        &mut self,
        ticket: Ticket,
        attempt: u32,
        writes: impl IntoIterator<Item = &'a Key>,
        lock_count: usize,
    ) -> Result<(), LockError> {
        let record = self.record_of_attempt(ticket, attempt)?;
        match &record.phase {
            Phase::Prepared => return Ok(()),
            Phase::Wounded(wound) => {
                return Err(LockError::Wounded {
                    ticket,
                    wound: wound.clone(),
                });
            }
            Phase::Active => {}
        }
        if !record.queued.is_empty() {
            return Err(LockError::LocksPending(ticket));
        }
        if record.held.len() != lock_count {
            return Err(LockError::LockCountMismatch {
                ticket,
                held: record.held.len(),
                expected: lock_count,
            });
        }
        for key in writes {
            if record.held.get(key) != Some(&LockMode::Write) {
                return Err(LockError::WriteLockNotHeld {
                    ticket,
                    key: key.clone(),
                });
            }
        }
        if let Some(record) = self.tickets.get_mut(&ticket) {
            record.phase = Phase::Prepared;
        }
        Ok(())
    }

    fn record_of_attempt(&self, ticket: Ticket, attempt: u32) -> Result<&TicketLocks, LockError> {
        let record = self
            .tickets
            .get(&ticket)
            .ok_or(LockError::UnknownTicket(ticket))?;
        if attempt < record.attempt {
            return Err(LockError::StaleAttempt {
                ticket,
                attempt,
                current: record.attempt,
            });
        }
        if attempt > record.attempt {
            return Err(LockError::UnknownTicket(ticket));
        }
        Ok(record)
    }

    /// Re-creates a prepared ticket holding write locks on `keys`: how a new leader rebuilds
    /// the lock table from the replicated prepared records after a failover. Meant for a table
    /// being rebuilt from scratch: the keys must be idle.
    pub fn restore_prepared(
        &mut self,
        ticket: Ticket,
        attempt: u32,
        agent: AgentId,
        keys: impl IntoIterator<Item = Key>,
    ) {
        let mut events = Vec::new();
        self.release(ticket, &mut events);
        let mut record = TicketLocks::new(attempt, agent);
        record.phase = Phase::Prepared;
        for key in keys {
            let lock = self.keys.entry(key.clone()).or_default();
            debug_assert!(
                lock.is_idle(),
                "restore_prepared over a busy key {}",
                display_key(&key)
            );
            lock.writer = Some(ticket);
            record.held.insert(key, LockMode::Write);
        }
        self.tickets.insert(ticket, record);
    }

    pub fn ticket(&self, ticket: Ticket) -> Option<TicketView> {
        self.tickets.get(&ticket).map(|record| TicketView {
            attempt: record.attempt,
            agent: record.agent,
            phase: record.phase.clone(),
            held: record.held.len(),
            queued: record.queued.len(),
        })
    }

    pub fn tickets(&self) -> impl Iterator<Item = (Ticket, TicketView)> + '_ {
        self.tickets
            .keys()
            .filter_map(|&ticket| Some((ticket, self.ticket(ticket)?)))
    }

    /// The mode in which `ticket` holds `key`, if it does.
    pub fn held(&self, ticket: Ticket, key: &[u8]) -> Option<LockMode> {
        self.tickets.get(&ticket)?.held.get(key).copied()
    }

    /// The current writer and readers of `key`.
    pub fn holders(&self, key: &[u8]) -> (Option<Ticket>, Vec<Ticket>) {
        self.keys
            .get(key)
            .map(|lock| (lock.writer, lock.readers.clone()))
            .unwrap_or_default()
    }

    /// Tickets waiting for `key`, oldest first, with the mode they asked for.
    pub fn waiters(&self, key: &[u8]) -> Vec<(Ticket, LockMode)> {
        self.keys
            .get(key)
            .map(|lock| lock.queue.iter().map(|(&t, &m)| (t, m)).collect())
            .unwrap_or_default()
    }

    /// Keys with a holder or a waiter.
    pub fn locked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Lock requests waiting in queues.
    pub fn waiting_requests(&self) -> usize {
        self.waiting
    }

    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    /// Checks the table's internal consistency and the 2PL/wound-wait invariants; returns the
    /// first violation. For tests: every property test calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut waiting = 0;
        for (key, lock) in &self.keys {
            let k = display_key(key);
            if lock.is_idle() {
                return Err(format!("idle key {k} kept in the table"));
            }
            if lock.writer.is_some() && !lock.readers.is_empty() {
                return Err(format!(
                    "key {k} has writer {:?} and readers {:?}",
                    lock.writer, lock.readers
                ));
            }
            let mut seen = HashSet::new();
            if !lock.readers.iter().all(|reader| seen.insert(reader)) {
                return Err(format!("key {k} lists a reader twice"));
            }
            for holder in lock.writer.iter().chain(&lock.readers) {
                let mode = if lock.writer == Some(*holder) {
                    LockMode::Write
                } else {
                    LockMode::Read
                };
                match self.tickets.get(holder) {
                    Some(record) if record.held.get(key) == Some(&mode) => {}
                    _ => return Err(format!("key {k}: holder {holder} has no matching record")),
                }
            }
            for (&waiter, &mode) in &lock.queue {
                waiting += 1;
                let Some(record) = self.tickets.get(&waiter) else {
                    return Err(format!("key {k}: waiter {waiter} has no record"));
                };
                if record.phase != Phase::Active || !record.queued.contains(key) {
                    return Err(format!(
                        "key {k}: waiter {waiter} is not an active queued ticket"
                    ));
                }
                // Wound-wait: whatever blocks a waiter is older than it or prepared.
                for holder in lock.conflicting_holders(waiter, mode) {
                    let prepared = self
                        .tickets
                        .get(&holder)
                        .is_some_and(|h| h.phase == Phase::Prepared);
                    if waiter.is_older_than(holder) && !prepared {
                        return Err(format!(
                            "key {k}: {waiter} waits for younger active holder {holder}"
                        ));
                    }
                }
            }
            // The head of a queue is never grantable and left waiting.
            if let Some((&head, &mode)) = lock.queue.first_key_value() {
                let grantable = match mode {
                    LockMode::Read => lock.writer.is_none(),
                    LockMode::Write => {
                        lock.writer.is_none() && lock.readers.iter().all(|&r| r == head)
                    }
                };
                if grantable {
                    return Err(format!("key {k}: head {head} is grantable but waits"));
                }
            }
        }
        if waiting != self.waiting {
            return Err(format!(
                "waiting counter {} but {} queued",
                self.waiting, waiting
            ));
        }
        for (ticket, record) in &self.tickets {
            if record.phase != Phase::Active && !record.queued.is_empty() {
                return Err(format!("{ticket} is not active but has queued requests"));
            }
            if matches!(record.phase, Phase::Wounded(_)) && !record.held.is_empty() {
                return Err(format!("wounded {ticket} still holds locks"));
            }
            for (key, mode) in &record.held {
                let holds = self.keys.get(key).is_some_and(|lock| match mode {
                    LockMode::Write => lock.writer == Some(*ticket),
                    LockMode::Read => lock.readers.contains(ticket),
                });
                if !holds {
                    return Err(format!(
                        "{ticket} believes it holds {} but does not",
                        display_key(key)
                    ));
                }
            }
            for key in &record.queued {
                if !self
                    .keys
                    .get(key)
                    .is_some_and(|lock| lock.queue.contains_key(ticket))
                {
                    return Err(format!(
                        "{ticket} believes it waits for {}",
                        display_key(key)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
