//! The lock table's command sequences: arbitrary interleavings of `lock`, `prepare`, `release`
//! and retries by up to 16 tickets over 6 keys (after an optional rebuild from prepared
//! records), checked step by step against a model of what each ticket's broker knows.
//!
//! The model is built only from the table's answers and events, and predicts each answer from
//! the rules of the module docs (attempts, wounds, prepare's checks). After every step the
//! table must agree with it exactly — per ticket (attempt, agent, phase, locks held, requests
//! queued) and per key (writer, readers, waiters in ticket order) — and pass its own
//! `check_invariants` (no conflicting holders, queues ordered by ticket, an older ticket never
//! waits for a younger active one, nothing grantable left waiting). Wounds must come from the
//! requester, hit only younger active holders of the key, and releases never wound. At the end
//! every ticket is released and the table must be empty: released means released.

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use parsec_core::{AgentId, Key, LockMode, Ticket};
use parsec_shard::lock_table::{Event, LockError, LockTable, Phase, TicketView, Wound};

const KEYS: usize = 6;
const TICKETS: u64 = 16;
const AGENTS: u32 = 2;
const MAX_OPS: usize = 256;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Prepared records a new leader restores before serving (keys must be idle).
    restored: Vec<Restored>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Restored {
    ticket: u8,
    attempt: u8,
    agent: u8,
    keys: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Lock {
        ticket: u8,
        attempt: u8,
        agent: u8,
        first: bool,
        requests: Vec<(u8, bool)>,
    },
    Prepare {
        ticket: u8,
        attempt: u8,
        writes: Vec<u8>,
        lock_count: u8,
    },
    /// Prepare with exactly what the model says the ticket holds (the broker's honest vote),
    /// which the random `Prepare` rarely hits.
    PrepareHonest {
        ticket: u8,
    },
    Release {
        ticket: u8,
    },
    /// The next attempt of a ticket re-asks for every lock it asked for, as a broker's retry.
    Retry {
        ticket: u8,
    },
}

fn ticket(raw: u8) -> Ticket {
    Ticket(u64::from(raw) % TICKETS + 1)
}

fn attempt(raw: u8) -> u32 {
    u32::from(raw % 4)
}

fn agent(raw: u8) -> AgentId {
    AgentId(u32::from(raw) % AGENTS)
}

fn key(raw: u8) -> Key {
    Key::from(vec![b'k', b'0' + raw % KEYS as u8])
}

fn all_keys() -> Vec<Key> {
    (0..KEYS as u8).map(key).collect()
}

fn mode(write: bool) -> LockMode {
    if write {
        LockMode::Write
    } else {
        LockMode::Read
    }
}

/// A ticket as its broker sees it, built from the table's answers only.
#[derive(Debug, Clone)]
struct Model {
    attempt: u32,
    agent: AgentId,
    phase: Phase,
    /// Every lock this attempt asked for, in the strongest mode asked.
    requested: BTreeMap<Key, LockMode>,
    held: BTreeMap<Key, LockMode>,
}

impl Model {
    fn new(attempt: u32, agent: AgentId) -> Self {
        Self {
            attempt,
            agent,
            phase: Phase::Active,
            requested: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Requests not granted yet (a ticket that is not active waits for nothing).
    fn pending(&self) -> Vec<(Key, LockMode)> {
        if self.phase != Phase::Active {
            return Vec::new();
        }
        self.requested
            .iter()
            .filter(|(key, mode)| !self.held.get(*key).is_some_and(|h| h.covers(**mode)))
            .map(|(key, mode)| (key.clone(), *mode))
            .collect()
    }
}

struct Harness {
    table: LockTable,
    models: BTreeMap<Ticket, Model>,
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut harness = Harness {
        table: LockTable::new(),
        models: BTreeMap::new(),
    };
    harness.restore(&input.restored);
    harness.check();
    for op in input.ops.iter().take(MAX_OPS) {
        harness.step(op);
        harness.check();
    }
    harness.release_everything();
}

impl Harness {
    /// What a new leader does: prepared records on idle keys, into an empty table.
    fn restore(&mut self, restored: &[Restored]) {
        let mut busy = std::collections::BTreeSet::new();
        for record in restored {
            let t = ticket(record.ticket);
            let keys: std::collections::BTreeSet<Key> =
                record.keys.iter().map(|&k| key(k)).collect();
            if self.models.contains_key(&t) || keys.iter().any(|k| busy.contains(k)) {
                continue;
            }
            busy.extend(keys.iter().cloned());
            let (a, g) = (attempt(record.attempt), agent(record.agent));
            self.table.restore_prepared(t, a, g, keys.iter().cloned());
            let mut model = Model::new(a, g);
            model.phase = Phase::Prepared;
            for k in keys {
                model.requested.insert(k.clone(), LockMode::Write);
                model.held.insert(k, LockMode::Write);
            }
            self.models.insert(t, model);
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Lock {
                ticket: t,
                attempt: a,
                agent: g,
                first,
                requests,
            } => {
                let requests: Vec<(Key, LockMode)> =
                    requests.iter().map(|&(k, w)| (key(k), mode(w))).collect();
                self.lock(ticket(*t), attempt(*a), agent(*g), *first, &requests);
            }
            Op::Prepare {
                ticket: t,
                attempt: a,
                writes,
                lock_count,
            } => {
                let writes: Vec<Key> = writes.iter().map(|&k| key(k)).collect();
                self.prepare(
                    ticket(*t),
                    attempt(*a),
                    &writes,
                    usize::from(*lock_count % 8),
                );
            }
            Op::PrepareHonest { ticket: t } => {
                let t = ticket(*t);
                let Some(model) = self.models.get(&t) else {
                    return self.prepare(t, 0, &[], 0);
                };
                let writes: Vec<Key> = model
                    .held
                    .iter()
                    .filter(|(_, m)| **m == LockMode::Write)
                    .map(|(k, _)| k.clone())
                    .collect();
                let (a, count) = (model.attempt, model.held.len());
                self.prepare(t, a, &writes, count);
            }
            Op::Release { ticket: t } => self.release(ticket(*t)),
            Op::Retry { ticket: t } => {
                let t = ticket(*t);
                let Some(model) = self.models.get(&t) else {
                    return;
                };
                let requests: Vec<(Key, LockMode)> = model
                    .requested
                    .iter()
                    .map(|(k, m)| (k.clone(), *m))
                    .collect();
                let (a, g) = (model.attempt.saturating_add(1), model.agent);
                self.lock(t, a, g, true, &requests);
            }
        }
    }

    /// The answer the admission rules give, and whether an older attempt's record is replaced.
    fn expected_admission(
        &self,
        t: Ticket,
        a: u32,
        g: AgentId,
        first: bool,
    ) -> (Result<(), LockError>, bool) {
        let Some(model) = self.models.get(&t) else {
            return if first {
                (Ok(()), false)
            } else {
                (Err(LockError::UnknownTicket(t)), false)
            };
        };
        if a < model.attempt {
            let stale = LockError::StaleAttempt {
                ticket: t,
                attempt: a,
                current: model.attempt,
            };
            return (Err(stale), false);
        }
        if a > model.attempt {
            return match (&model.phase, first) {
                (Phase::Prepared, _) => (Err(LockError::AlreadyPrepared(t)), false),
                (_, false) => (Err(LockError::UnknownTicket(t)), false),
                (_, true) => (Ok(()), true),
            };
        }
        match &model.phase {
            Phase::Active if g != model.agent => {
                let stale = LockError::StaleAttempt {
                    ticket: t,
                    attempt: a,
                    current: model.attempt,
                };
                (Err(stale), false)
            }
            Phase::Active => (Ok(()), false),
            Phase::Wounded(wound) => (
                Err(LockError::Wounded {
                    ticket: t,
                    wound: wound.clone(),
                }),
                false,
            ),
            Phase::Prepared => (Err(LockError::AlreadyPrepared(t)), false),
        }
    }

    fn lock(&mut self, t: Ticket, a: u32, g: AgentId, first: bool, requests: &[(Key, LockMode)]) {
        let (expected, replaces) = self.expected_admission(t, a, g, first);
        let mut events = Vec::new();
        let result = self.table.lock(t, a, g, first, requests, &mut events);
        assert_eq!(result, expected, "lock {t} attempt {a} first {first}");
        if result.is_err() {
            assert!(events.is_empty(), "a refused request emitted {events:?}");
            return;
        }
        // A new attempt first releases the old one's locks (grants to others only).
        if replaces || !self.models.contains_key(&t) {
            self.models.insert(t, Model::new(a, g));
        }
        let model = self.models.get_mut(&t).expect("admitted");
        for (k, m) in requests {
            let asked = model.requested.entry(k.clone()).or_insert(*m);
            *asked = (*asked).max(*m);
        }
        self.apply(Some((t, requests)), events);
    }

    fn prepare(&mut self, t: Ticket, a: u32, writes: &[Key], lock_count: usize) {
        let expected = self.expected_prepare(t, a, writes, lock_count);
        let result = self.table.prepare(t, a, writes, lock_count);
        assert_eq!(result, expected, "prepare {t} attempt {a}");
        if result.is_ok()
            && let Some(model) = self.models.get_mut(&t)
        {
            model.phase = Phase::Prepared;
        }
    }

    fn expected_prepare(
        &self,
        t: Ticket,
        a: u32,
        writes: &[Key],
        lock_count: usize,
    ) -> Result<(), LockError> {
        let model = self.models.get(&t).ok_or(LockError::UnknownTicket(t))?;
        if a < model.attempt {
            return Err(LockError::StaleAttempt {
                ticket: t,
                attempt: a,
                current: model.attempt,
            });
        }
        if a > model.attempt {
            return Err(LockError::UnknownTicket(t));
        }
        match &model.phase {
            Phase::Prepared => return Ok(()),
            Phase::Wounded(wound) => {
                return Err(LockError::Wounded {
                    ticket: t,
                    wound: wound.clone(),
                });
            }
            Phase::Active => {}
        }
        if !model.pending().is_empty() {
            return Err(LockError::LocksPending(t));
        }
        if model.held.len() != lock_count {
            return Err(LockError::LockCountMismatch {
                ticket: t,
                held: model.held.len(),
                expected: lock_count,
            });
        }
        if let Some(k) = writes
            .iter()
            .find(|k| model.held.get(*k) != Some(&LockMode::Write))
        {
            return Err(LockError::WriteLockNotHeld {
                ticket: t,
                key: k.clone(),
            });
        }
        Ok(())
    }

    fn release(&mut self, t: Ticket) {
        let mut events = Vec::new();
        let known = self.table.release(t, &mut events);
        assert_eq!(known, self.models.remove(&t).is_some(), "release {t}");
        self.apply(None, events);
    }

    /// Applies one call's events to the model, checking each is legitimate. `caller` is the
    /// requester and its batch, for lock calls: only it may wound.
    fn apply(&mut self, caller: Option<(Ticket, &[(Key, LockMode)])>, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Granted { ticket, key, mode } => {
                    let model = self
                        .models
                        .get_mut(&ticket)
                        .unwrap_or_else(|| panic!("{ticket} granted {key:?} but unknown"));
                    assert_eq!(
                        model.phase,
                        Phase::Active,
                        "{ticket} granted while not active"
                    );
                    let asked = model.requested.get(&key).copied();
                    assert!(
                        asked.is_some_and(|asked| asked.covers(mode)),
                        "{ticket} granted {key:?} {mode:?} but asked {asked:?}"
                    );
                    let holds = model.held.entry(key).or_insert(mode);
                    *holds = (*holds).max(mode);
                }
                Event::Wounded { ticket, wound } => {
                    let Some((by, batch)) = caller else {
                        panic!("{ticket} wounded by a release: {wound:?}");
                    };
                    let Wound { by: wounder, key } = &wound;
                    assert_eq!(*wounder, by, "wounds come from the requester");
                    assert!(
                        batch.iter().any(|(k, _)| k == key),
                        "wounded on another key"
                    );
                    assert!(by.is_older_than(ticket), "{ticket} wounded by younger {by}");
                    let model = self
                        .models
                        .get_mut(&ticket)
                        .unwrap_or_else(|| panic!("unknown {ticket} wounded"));
                    assert_eq!(
                        model.phase,
                        Phase::Active,
                        "{ticket} wounded while not active"
                    );
                    assert!(
                        model.held.contains_key(key),
                        "{ticket} wounded on a key it lacks"
                    );
                    model.phase = Phase::Wounded(wound);
                    model.held.clear();
                }
            }
        }
    }

    /// The table agrees with the model, ticket by ticket and key by key.
    fn check(&self) {
        if let Err(violation) = self.table.check_invariants() {
            panic!(
                "lock table invariant violated: {violation}\n{:#?}",
                self.table
            );
        }
        assert_eq!(self.table.ticket_count(), self.models.len());
        let mut waiting = 0;
        for (&t, model) in &self.models {
            let queued = model.pending().len();
            waiting += queued;
            let expected = TicketView {
                attempt: model.attempt,
                agent: model.agent,
                phase: model.phase.clone(),
                held: model.held.len(),
                queued,
            };
            assert_eq!(self.table.ticket(t), Some(expected), "{t}");
        }
        assert_eq!(self.table.waiting_requests(), waiting);
        for k in all_keys() {
            let holding = |mode| -> Vec<Ticket> {
                self.models
                    .iter()
                    .filter(|(_, model)| model.held.get(&k) == Some(&mode))
                    .map(|(&t, _)| t)
                    .collect()
            };
            let (writer, mut readers) = self.table.holders(&k);
            readers.sort_unstable();
            let writers = holding(LockMode::Write);
            assert!(writers.len() <= 1, "{k:?}: several writers {writers:?}");
            assert_eq!(writer, writers.first().copied(), "{k:?}: writer");
            assert_eq!(readers, holding(LockMode::Read), "{k:?}: readers");
            let mut expected_waiters: Vec<(Ticket, LockMode)> = self
                .models
                .iter()
                .flat_map(|(&t, model)| {
                    model
                        .pending()
                        .into_iter()
                        .filter(|(pending, _)| *pending == k)
                        .map(move |(_, m)| (t, m))
                })
                .collect();
            expected_waiters.sort_unstable();
            assert_eq!(self.table.waiters(&k), expected_waiters, "{k:?}: waiters");
        }
    }

    /// Releases every ticket, oldest first; the table must end empty.
    fn release_everything(&mut self) {
        let tickets: Vec<Ticket> = self.models.keys().copied().collect();
        for t in tickets {
            self.release(t);
            self.check();
        }
        assert_eq!(self.table.ticket_count(), 0);
        assert_eq!(self.table.locked_keys(), 0, "{:#?}", self.table);
        assert_eq!(self.table.waiting_requests(), 0);
    }
}
