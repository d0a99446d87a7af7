//! The shard's replicated state: the committed key/value data and the tickets that are prepared
//! or committed but not yet finished.
//!
//! Every change is a [`Command`] applied by [`StateMachine::apply`], a pure, deterministic
//! function: today the engine applies commands directly; with Raft the same commands go through
//! the replicated log first and every replica applies them in log order.
//!
//! Every command is idempotent, so a re-delivered or re-driven command never changes the outcome
//! (PArSEC's replicated commit was not: a duplicate blanked the committed keys).

use parsec_core::{AgentId, Key, ShardId, Ticket, Value, WriteSet};
use std::collections::HashMap;

/// A change to the replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    CommitOnePhase { ticket: Ticket, writes: WriteSet },
    /// Forget a prepared ticket without applying it.
    Abort { ticket: Ticket, attempt: u32 },
    /// Forget a committed ticket: every participant has committed it.
    Finish { ticket: Ticket },
}

/// Where a ticket stands in the replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    Prepared { writes: WriteSet },
    Committed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketRecord {
    pub attempt: u32,
    pub agent: AgentId,
    pub participants: Vec<ShardId>,
    pub state: RecordState,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
}

/// The outcome of applying a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command changed the state.
    Done,
    /// The command had already been applied; nothing changed.
    AlreadyDone,
}

#[derive(Default, Debug)]
pub struct StateMachine {
    data: HashMap<Key, Value>,
    tickets: HashMap<Ticket, TicketRecord>,
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

    pub fn apply(&mut self, command: Command) -> Result<Applied, ApplyError> {
        self.applied += 1;
        match command {
            Command::Prepare {
                ticket,
                attempt,
                agent,
                writes,
                participants,
            } => match self.tickets.get(&ticket) {
                Some(TicketRecord {
                    state: RecordState::Committed,
                    ..
                }) => Err(ApplyError::AlreadyCommitted(ticket)),
                Some(record) if record.attempt == attempt => Ok(Applied::AlreadyDone),
                Some(record) => Err(ApplyError::AttemptMismatch {
                    ticket,
                    attempt,
                    prepared: record.attempt,
                }),
                None => {
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
            },
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
            Command::CommitOnePhase { ticket, writes } => {
                if self.tickets.contains_key(&ticket) {
                    // A one-phase ticket never leaves a record; finding one means the ticket is
                    // also being committed in two phases, which the broker never does.
                    return Err(ApplyError::AlreadyCommitted(ticket));
                }
                self.write(writes);
                Ok(Applied::Done)
            }
            Command::Abort { ticket, attempt } => match self.tickets.get(&ticket) {
                None => Ok(Applied::AlreadyDone),
                Some(record) if record.state == RecordState::Committed => {
                    Err(ApplyError::AlreadyCommitted(ticket))
                }
                Some(record) if record.attempt > attempt => Err(ApplyError::AttemptMismatch {
                    ticket,
                    attempt,
                    prepared: record.attempt,
                }),
                Some(_) => {
                    self.tickets.remove(&ticket);
                    Ok(Applied::Done)
                }
            },
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
                attempt: 0
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
                attempt: 2
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
            writes: writes(&[("ab", "1234")]),
        })
        .unwrap();
        assert_eq!((sm.key_count(), sm.data_bytes()), (1, 6));
        sm.apply(Command::CommitOnePhase {
            ticket: Ticket(2),
            writes: writes(&[("ab", "")]),
        })
        .unwrap();
        assert_eq!((sm.key_count(), sm.data_bytes()), (0, 0));
    }
}
