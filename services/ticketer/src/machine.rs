//! The ticket machine's state: a pure, deterministic allocator (the replicated part).

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
#[derive(Debug, Default, Clone)]
pub struct TicketMachine {
    next: u64,
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
}

/// The ticket machine as a Raft-replicated application. A command is `count ‖ not_before`
/// (two little-endian u64): the leader reads its clock when it proposes, so every replica
/// computes the same range. The result is `start ‖ count`, or empty for a malformed command
/// (which changes nothing).
impl parsec_raft::ReplicatedState for TicketMachine {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let Some((count, not_before)) = decode_pair(command) else {
            return Vec::new();
        };
        let range = self.allocate(count, not_before);
        encode_pair(range.start, range.count)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.next.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| format!("ticket machine snapshot of {} bytes, not 8", snapshot.len()))?;
        self.next = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// The replicated command that allocates `count` tickets no earlier than `not_before`.
pub fn allocate_command(count: u64, not_before: u64) -> Vec<u8> {
    encode_pair(count, not_before)
}

/// The range in a replicated command's result.
pub fn range_of(result: &[u8]) -> Option<TicketRange> {
    decode_pair(result).map(|(start, count)| TicketRange { start, count })
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out
}

fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    let (a, b) = bytes.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(a.try_into().ok()?),
        u64::from_le_bytes(b.try_into().ok()?),
    ))
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
        assert!(c.restore(b"short").is_err());
    }

    #[test]
    fn range_size_is_bounded() {
        let mut machine = TicketMachine::new();
        assert_eq!(machine.allocate(0, 0).count, 1);
        assert_eq!(machine.allocate(u64::MAX, 0).count, MAX_RANGE);
    }
}
