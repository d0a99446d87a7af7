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
    fn range_size_is_bounded() {
        let mut machine = TicketMachine::new();
        assert_eq!(machine.allocate(0, 0).count, 1);
        assert_eq!(machine.allocate(u64::MAX, 0).count, MAX_RANGE);
    }
}
