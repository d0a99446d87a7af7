//! The ticket machine's state: a pure, deterministic allocator and the block ledger (the
//! replicated part).

use crate::chain::{BlockLedger, Seal};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Tickets `[start, start + count)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TicketRange {
    pub start: u64,
    pub count: u64,
}

impl TicketRange {
    pub fn end(&self) -> u64 {
        self.start + self.count
    }
}

/// Largest range one request may take.
pub const MAX_RANGE: u64 = 1 << 20;

/// The allocator. `allocate` is a pure function of the state and its arguments; the caller
/// supplies the clock reading, so that with Raft the leader stamps it into the log entry and
/// every replica computes the same range.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TicketMachine {
    next: u64,
    ledger: BlockLedger,
}

impl TicketMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allocates `count` tickets starting no earlier than `not_before` (nanoseconds since the
    /// UNIX epoch) and after every ticket allocated so far.
    pub fn allocate(&mut self, count: u64, not_before: u64) -> TicketRange {
        let count = count.clamp(1, MAX_RANGE);
        let start = self.next.max(not_before).max(1);
        self.next = start.saturating_add(count);
        TicketRange { start, count }
    }

    /// The first ticket the next allocation may hand out.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn ledger(&self) -> &BlockLedger {
        &self.ledger
    }

    pub fn seal(&mut self, seal: &Seal) -> u64 {
        self.ledger.apply(seal)
    }
}

/// A replicated command.
#[derive(Debug, Serialize, Deserialize)]
enum Command {
    /// `count` tickets no earlier than `not_before`: the leader reads its clock when it
    /// proposes, so every replica computes the same range.
    Allocate {
        count: u64,
        not_before: u64,
    },
    Seal(Seal),
}

/// A command's result.
#[derive(Debug, Serialize, Deserialize)]
enum Outcome {
    Range { start: u64, count: u64 },
    Sealed(u64),
}

/// The ticket machine as a Raft-replicated application: commands and snapshots are postcard;
/// a malformed command changes nothing and yields an empty result.
impl parsec_raft::ReplicatedState for TicketMachine {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let outcome = match postcard::from_bytes::<Command>(command) {
            Ok(Command::Allocate { count, not_before }) => {
                let range = self.allocate(count, not_before);
                Outcome::Range {
                    start: range.start,
                    count: range.count,
                }
            }
            Ok(Command::Seal(seal)) => Outcome::Sealed(self.seal(&seal)),
            Err(_) => return Vec::new(),
        };
        postcard::to_allocvec(&outcome).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self =
            postcard::from_bytes(snapshot).map_err(|e| format!("ticket machine snapshot: {e}"))?;
        Ok(())
    }
}

/// The replicated command that allocates `count` tickets no earlier than `not_before`.
pub fn allocate_command(count: u64, not_before: u64) -> Vec<u8> {
    postcard::to_allocvec(&Command::Allocate { count, not_before }).unwrap_or_default()
}

/// The replicated command that seals blocks.
pub fn seal_command(seal: Seal) -> Vec<u8> {
    postcard::to_allocvec(&Command::Seal(seal)).unwrap_or_default()
}

/// The range in a replicated command's result.
pub fn range_of(result: &[u8]) -> Option<TicketRange> {
    match postcard::from_bytes(result).ok()? {
        Outcome::Range { start, count } => Some(TicketRange { start, count }),
        Outcome::Sealed(_) => None,
    }
}

/// The sealed height in a replicated seal's result.
pub fn sealed_of(result: &[u8]) -> Option<u64> {
    match postcard::from_bytes(result).ok()? {
        Outcome::Sealed(height) => Some(height),
        Outcome::Range { .. } => None,
    }
}

/// Nanoseconds since the UNIX epoch on this machine's clock.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_overlap_and_follow_the_clock() {
        let mut machine = TicketMachine::new();
        let a = machine.allocate(100, 1_000);
        assert_eq!(
            a,
            TicketRange {
                start: 1_000,
                count: 100
            }
        );
        // The clock went backwards: the range still starts after the previous one.
        let b = machine.allocate(100, 500);
        assert_eq!(b.start, a.end());
        // The clock jumped ahead: the range starts at the clock.
        let c = machine.allocate(10, 1_000_000);
        assert_eq!(c.start, 1_000_000);
    }

    #[test]
    fn replicas_applying_the_same_commands_agree() {
        use parsec_raft::ReplicatedState;
        let commands = [
            allocate_command(10, 500),
            allocate_command(5, 100),
            allocate_command(7, 9_000),
        ];
        let mut a = TicketMachine::new();
        let mut b = TicketMachine::new();
        let results_a: Vec<_> = commands.iter().map(|c| a.apply(c)).collect();
        let results_b: Vec<_> = commands.iter().map(|c| b.apply(c)).collect();
        assert_eq!(results_a, results_b);
        assert_eq!(
            range_of(&results_a[1]),
            Some(TicketRange {
                start: 510,
                count: 5
            })
        );
        // A snapshot carries the allocator over to a fresh replica.
        let mut c = TicketMachine::new();
        c.restore(&a.snapshot()).unwrap();
        assert_eq!(c.next(), a.next());
        // Garbage changes nothing.
        assert!(a.apply(b"garbage").is_empty());
        assert_eq!(a.next(), c.next());
        assert!(c.restore(&[0xff]).is_err());
    }

    #[test]
    fn range_size_is_bounded() {
        let mut machine = TicketMachine::new();
        assert_eq!(machine.allocate(0, 0).count, 1);
        assert_eq!(machine.allocate(u64::MAX, 0).count, MAX_RANGE);
    }
}
