//! The shard's replicated state: the committed key/value data and the tickets that are prepared
//! or committed but not yet finished.
//!
//! Every change is a [`Command`] applied by [`StateMachine::apply`], a pure, deterministic
//! function. Commands go through the shard's Raft log (or straight into memory when the shard is
//! not replicated) and every replica applies them in log order.
//!
//! Every command is idempotent, so a re-delivered or re-driven command never changes the outcome
//! (PArSEC's replicated commit was not: a duplicate blanked the committed keys).
//!
//! Fences: recovery aborts a dead agent's unprepared participants with `Abort { fence: true }`,
//! which leaves a mark that refuses a late `Prepare` of that attempt. Marks are dropped once
//! their ticket is [`FENCE_HORIZON`] older than the newest ticket seen, and prepares of tickets
//! that old are refused outright, so the marks stay few and a dropped mark cannot be outrun.

use parsec_core::{AgentId, Key, ShardId, Ticket, Value, WriteSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How far (in ticket units: nanoseconds of the ticket machine's clock) behind the newest ticket
/// a ticket may still prepare: ten minutes, far beyond any transaction's timeout.
pub const FENCE_HORIZON: u64 = 600_000_000_000;

/// A change to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a ticket's write-set; the ticket keeps its locks until it commits or rolls back.
    Prepare {
        ticket: Ticket,
        attempt: u32,
        agent: AgentId,
        writes: WriteSet,
        participants: Vec<ShardId>,
    },
    /// Apply a prepared ticket's writes.
    Commit { ticket: Ticket },
    /// Apply a single-participant transaction's writes in one step (one-phase commit).
    CommitOnePhase {
        ticket: Ticket,
        attempt: u32,
        writes: WriteSet,
    },
    /// Forget a prepared ticket without applying it. With `fence`, also refuse any later
    /// prepare of this attempt or an older one.
    Abort {
        ticket: Ticket,
        attempt: u32,
        fence: bool,
    },
    /// Forget a committed ticket: every participant has committed it.
    Finish { ticket: Ticket },
}

/// Where a ticket stands in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    Prepared { writes: WriteSet },
    Committed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    pub attempt: u32,
    pub agent: AgentId,
    pub participants: Vec<ShardId>,
    pub state: RecordState,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("{0} is not prepared on this shard")]
    NotPrepared(Ticket),
    #[error("{0} is already committed")]
    AlreadyCommitted(Ticket),
    #[error("{ticket} is prepared with attempt {prepared}, not {attempt}")]
    AttemptMismatch {
        ticket: Ticket,
        attempt: u32,
        prepared: u32,
    },
    #[error("{ticket} attempt {attempt} was aborted by recovery")]
    Fenced { ticket: Ticket, attempt: u32 },
    #[error("{0} is too old to prepare")]
    TooOld(Ticket),
    #[error("malformed command: {0}")]
    Malformed(String),
}

/// The outcome of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The command changed the state.
    Done,
    /// The command had already been applied; nothing changed.
    AlreadyDone,
}

#[derive(Default, Debug, Serialize, Deserialize)]
pub struct StateMachine {
    data: HashMap<Key, Value>,
    tickets: HashMap<Ticket, TicketRecord>,
    /// Fenced tickets and the newest attempt fenced.
    fenced: BTreeMap<Ticket, u32>,
    /// The newest ticket any command named.
    newest: Ticket,
    applied: u64,
    data_bytes: u64,
}

impl StateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The committed value of `key`; empty when absent.
    pub fn get(&self, key: &[u8]) -> Value {
        self.data.get(key).cloned().unwrap_or_default()
    }

    pub fn ticket(&self, ticket: Ticket) -> Option<&TicketRecord> {
        self.tickets.get(&ticket)
    }

    pub fn tickets(&self) -> impl Iterator<Item = (&Ticket, &TicketRecord)> {
        self.tickets.iter()
    }

    pub fn key_count(&self) -> usize {
        self.data.len()
    }

    /// Bytes of keys and values stored.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Commands applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Fenced tickets still remembered.
    pub fn fence_count(&self) -> usize {
        self.fenced.len()
    }

    pub fn apply(&mut self, command: Command) -> Result<Applied, ApplyError> {
        self.applied += 1;
        match command {
            Command::Prepare {
                ticket,
                attempt,
                agent,
                writes,
                participants,
            } => {
                match self.tickets.get(&ticket) {
                    Some(TicketRecord {
                        state: RecordState::Committed,
                        ..
                    }) => return Err(ApplyError::AlreadyCommitted(ticket)),
                    Some(record) if record.attempt == attempt => return Ok(Applied::AlreadyDone),
                    Some(record) => {
                        return Err(ApplyError::AttemptMismatch {
                            ticket,
                            attempt,
                            prepared: record.attempt,
                        });
                    }
                    None => self.check_not_fenced(ticket, attempt)?,
                }
                self.tickets.insert(
                    ticket,
                    TicketRecord {
                        attempt,
                        agent,
                        participants,
                        state: RecordState::Prepared { writes },
                    },
                );
                Ok(Applied::Done)
            }
            Command::Commit { ticket } => {
                let record = self
                    .tickets
                    .get_mut(&ticket)
                    .ok_or(ApplyError::NotPrepared(ticket))?;
                match std::mem::replace(&mut record.state, RecordState::Committed) {
                    RecordState::Committed => Ok(Applied::AlreadyDone),
                    RecordState::Prepared { writes } => {
                        self.write(writes);
                        Ok(Applied::Done)
                    }
                }
            }
            Command::CommitOnePhase {
                ticket,
                attempt,
                writes,
            } => {
                if self.tickets.contains_key(&ticket) {
                    // A one-phase ticket never leaves a record; finding one means the ticket is
                    // also being committed in two phases, which the broker never does.
                    return Err(ApplyError::AlreadyCommitted(ticket));
                }
                self.check_not_fenced(ticket, attempt)?;
                self.write(writes);
                Ok(Applied::Done)
            }
            Command::Abort {
                ticket,
                attempt,
                fence,
            } => {
                let outcome = match self.tickets.get(&ticket) {
                    None => Applied::AlreadyDone,
                    Some(record) if record.state == RecordState::Committed => {
                        return Err(ApplyError::AlreadyCommitted(ticket));
                    }
                    Some(record) if record.attempt > attempt => {
                        return Err(ApplyError::AttemptMismatch {
                            ticket,
                            attempt,
                            prepared: record.attempt,
                        });
                    }
                    Some(_) => {
                        self.tickets.remove(&ticket);
                        Applied::Done
                    }
                };
                if fence {
                    self.see(ticket);
                    let mark = self.fenced.entry(ticket).or_insert(attempt);
                    *mark = (*mark).max(attempt);
                }
                Ok(outcome)
            }
            Command::Finish { ticket } => match self.tickets.get(&ticket) {
                None => Ok(Applied::AlreadyDone),
                Some(record) if record.state != RecordState::Committed => {
                    Err(ApplyError::NotPrepared(ticket))
                }
                Some(_) => {
                    self.tickets.remove(&ticket);
                    Ok(Applied::Done)
                }
            },
        }
    }

    /// Refuses a prepare of a fenced attempt, or of a ticket beyond the fence horizon.
    fn check_not_fenced(&mut self, ticket: Ticket, attempt: u32) -> Result<(), ApplyError> {
        if ticket.0 < self.newest.0.saturating_sub(FENCE_HORIZON) {
            return Err(ApplyError::TooOld(ticket));
        }
        if self
            .fenced
            .get(&ticket)
            .is_some_and(|&fenced| attempt <= fenced)
        {
            return Err(ApplyError::Fenced { ticket, attempt });
        }
        self.see(ticket);
        Ok(())
    }

    /// Moves the horizon forward and forgets the fences behind it.
    fn see(&mut self, ticket: Ticket) {
        if ticket > self.newest {
            self.newest = ticket;
            let horizon = Ticket(self.newest.0.saturating_sub(FENCE_HORIZON));
            self.fenced = self.fenced.split_off(&horizon);
        }
    }

    fn write(&mut self, writes: WriteSet) {
        for (key, value) in writes {
            // An empty value is how a key is deleted: absent and empty read the same.
            let old = if value.is_empty() {
                self.data.remove(&key)
            } else {
                let added = (key.len() + value.len()) as u64;
                self.data_bytes += added;
                self.data.insert(key.clone(), value)
            };
            if let Some(old) = old {
                self.data_bytes -= (key.len() + old.len()) as u64;
            }
        }
    }
}

/// A command as it travels in the Raft log.
pub fn encode_command(command: &Command) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    postcard::to_allocvec(command).unwrap_or_default()
}

/// The result of a replicated command, as [`ReplicatedState::apply`] returned it.
pub type ApplyResult = Result<Applied, ApplyError>;

/// Decodes what [`ReplicatedState::apply`] returned.
pub fn decode_result(bytes: &[u8]) -> Result<ApplyResult, postcard::Error> {
    postcard::from_bytes(bytes)
}

impl parsec_raft::ReplicatedState for StateMachine {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let result = match postcard::from_bytes::<Command>(command) {
            Ok(command) => StateMachine::apply(self, command),
            // Every replica refuses the same bytes the same way: the state stays deterministic.
            Err(error) => Err(ApplyError::Malformed(error.to_string())),
        };
        postcard::to_allocvec(&result).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn writes(pairs: &[(&'static str, &'static str)]) -> WriteSet {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    Bytes::from_static(k.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect()
    }

    fn prepare(ticket: u64, attempt: u32, w: WriteSet) -> Command {
        Command::Prepare {
            ticket: Ticket(ticket),
            attempt,
            agent: AgentId(0),
            writes: w,
            participants: vec![ShardId(0), ShardId(1)],
        }
    }

    #[test]
    fn writes_become_visible_only_at_commit() {
        let mut sm = StateMachine::new();
        sm.apply(prepare(1, 0, writes(&[("a", "1")]))).unwrap();
        assert_eq!(sm.get(b"a"), Bytes::new());
        sm.apply(Command::Commit { ticket: Ticket(1) }).unwrap();
        assert_eq!(sm.get(b"a"), Bytes::from_static(b"1"));
    }

    #[test]
    fn duplicate_commit_changes_nothing() {
        let mut sm = StateMachine::new();
        sm.apply(prepare(1, 0, writes(&[("a", "1")]))).unwrap();
        assert_eq!(
            sm.apply(Command::Commit { ticket: Ticket(1) }),
            Ok(Applied::Done)
        );
        sm.apply(Command::CommitOnePhase {
            ticket: Ticket(2),
            attempt: 0,
            writes: writes(&[("a", "2")]),
        })
        .unwrap();
        // A re-delivered commit of ticket 1 must not overwrite ticket 2's later write.
        assert_eq!(
            sm.apply(Command::Commit { ticket: Ticket(1) }),
            Ok(Applied::AlreadyDone)
        );
        assert_eq!(sm.get(b"a"), Bytes::from_static(b"2"));
    }

    #[test]
    fn abort_discards_and_finish_forgets() {
        let mut sm = StateMachine::new();
        sm.apply(prepare(1, 0, writes(&[("a", "1")]))).unwrap();
        sm.apply(Command::Abort {
            ticket: Ticket(1),
            attempt: 0,
            fence: false,
        })
        .unwrap();
        assert!(sm.ticket(Ticket(1)).is_none());
        assert_eq!(
            sm.apply(Command::Commit { ticket: Ticket(1) }),
            Err(ApplyError::NotPrepared(Ticket(1)))
        );

        sm.apply(prepare(2, 0, writes(&[("b", "2")]))).unwrap();
        sm.apply(Command::Commit { ticket: Ticket(2) }).unwrap();
        assert_eq!(
            sm.apply(Command::Abort {
                ticket: Ticket(2),
                attempt: 0,
                fence: false,
            }),
            Err(ApplyError::AlreadyCommitted(Ticket(2)))
        );
        sm.apply(Command::Finish { ticket: Ticket(2) }).unwrap();
        assert!(sm.ticket(Ticket(2)).is_none());
        assert_eq!(sm.get(b"b"), Bytes::from_static(b"2"));
    }

    #[test]
    fn a_stale_abort_cannot_drop_a_newer_attempt() {
        let mut sm = StateMachine::new();
        sm.apply(prepare(1, 3, writes(&[("a", "1")]))).unwrap();
        assert!(
            sm.apply(Command::Abort {
                ticket: Ticket(1),
                attempt: 2,
                fence: false,
            })
            .is_err()
        );
        assert!(sm.ticket(Ticket(1)).is_some());
    }

    #[test]
    fn empty_value_deletes_and_sizes_are_tracked() {
        let mut sm = StateMachine::new();
        sm.apply(Command::CommitOnePhase {
            ticket: Ticket(1),
            attempt: 0,
            writes: writes(&[("ab", "1234")]),
        })
        .unwrap();
        assert_eq!((sm.key_count(), sm.data_bytes()), (1, 6));
        sm.apply(Command::CommitOnePhase {
            ticket: Ticket(2),
            attempt: 0,
            writes: writes(&[("ab", "")]),
        })
        .unwrap();
        assert_eq!((sm.key_count(), sm.data_bytes()), (0, 0));
    }

    #[test]
    fn a_fence_refuses_a_late_prepare_of_that_attempt_but_not_a_later_one() {
        let mut sm = StateMachine::new();
        let fence = Command::Abort {
            ticket: Ticket(5),
            attempt: 1,
            fence: true,
        };
        assert_eq!(sm.apply(fence), Ok(Applied::AlreadyDone));
        assert_eq!(
            sm.apply(prepare(5, 1, writes(&[("a", "1")]))),
            Err(ApplyError::Fenced {
                ticket: Ticket(5),
                attempt: 1
            })
        );
        assert_eq!(
            sm.apply(Command::CommitOnePhase {
                ticket: Ticket(5),
                attempt: 0,
                writes: writes(&[("a", "1")]),
            }),
            Err(ApplyError::Fenced {
                ticket: Ticket(5),
                attempt: 0
            })
        );
        assert!(sm.ticket(Ticket(5)).is_none());
        assert_eq!(sm.get(b"a"), Bytes::new());
        sm.apply(prepare(5, 2, writes(&[("a", "1")]))).unwrap();
        assert!(sm.ticket(Ticket(5)).is_some());
    }

    #[test]
    fn fences_are_forgotten_behind_the_horizon_and_so_are_its_prepares() {
        let mut sm = StateMachine::new();
        sm.apply(Command::Abort {
            ticket: Ticket(10),
            attempt: 0,
            fence: true,
        })
        .unwrap();
        assert_eq!(sm.fence_count(), 1);
        let later = Ticket(10 + FENCE_HORIZON + 1);
        sm.apply(Command::CommitOnePhase {
            ticket: later,
            attempt: 0,
            writes: writes(&[("b", "1")]),
        })
        .unwrap();
        assert_eq!(sm.fence_count(), 0);
        assert_eq!(
            sm.apply(prepare(10, 0, writes(&[("a", "1")]))),
            Err(ApplyError::TooOld(Ticket(10)))
        );
    }

    #[test]
    fn the_state_survives_a_snapshot() {
        use parsec_raft::ReplicatedState;
        let mut sm = StateMachine::new();
        sm.apply(prepare(1, 0, writes(&[("a", "1")]))).unwrap();
        sm.apply(Command::CommitOnePhase {
            ticket: Ticket(2),
            attempt: 0,
            writes: writes(&[("b", "2")]),
        })
        .unwrap();
        let mut restored = StateMachine::new();
        restored.restore(&sm.snapshot()).unwrap();
        assert_eq!(restored.get(b"b"), Bytes::from_static(b"2"));
        assert_eq!(restored.ticket(Ticket(1)), sm.ticket(Ticket(1)));
        assert_eq!(restored.data_bytes(), sm.data_bytes());
        assert!(restored.restore(b"\xff\xff garbage").is_err());
    }

    #[test]
    fn replicated_commands_round_trip_and_garbage_is_refused() {
        use parsec_raft::ReplicatedState;
        let mut sm = StateMachine::new();
        let result = ReplicatedState::apply(
            &mut sm,
            &encode_command(&prepare(1, 0, writes(&[("a", "1")]))),
        );
        assert_eq!(decode_result(&result), Ok(Ok(Applied::Done)));
        let garbage = ReplicatedState::apply(&mut sm, b"\xff\x00\x13");
        assert!(matches!(
            decode_result(&garbage),
            Ok(Err(ApplyError::Malformed(_)))
        ));
    }
}
