//! Per-sender ordering at one agent (DESIGN.md §5): a sender's transactions run one at a time,
//! and a transaction whose nonce is ahead of the sender's committed nonce waits — for a bounded
//! time — for its predecessors, the way Hardhat and Anvil accept a burst of consecutive nonces
//! sent without waiting.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, watch};

/// One sender's line.
struct Line {
    turn: Arc<AsyncMutex<()>>,
    /// Counts the sender's transactions that finished here.
    finished: watch::Sender<u64>,
    /// Nonces of the sender's transactions in this agent, with how many carry each.
    in_flight: Mutex<BTreeMap<u64, usize>>,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            turn: Arc::default(),
            finished: watch::Sender::new(0),
            in_flight: Mutex::default(),
        }
    }
}

/// How long the agent remembers a sender's last committed nonce: a two-shard commit is answered
/// at its commit point and lands on the shards just after, so for a moment lock-free reads of
/// the sender's account may not show it yet.
const REMEMBER_COMMITTED: Duration = Duration::from_secs(30);

/// How many transactions may wait or run in one agent, so that no client can make the lines
/// grow without bound (a line holds each transaction, up to 128 KiB, until its turn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Transactions of one sender (geth's txpool holds 16 executable + 64 queued).
    pub per_sender: usize,
    /// Transactions of every sender.
    pub total: usize,
    /// Raw bytes of every sender's transactions.
    pub total_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            per_sender: 256,
            total: 8_192,
            total_bytes: 64 << 20,
        }
    }
}

/// Why a transaction was not let into its sender's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueFull {
    #[error("account limit exceeded: {sender} has {limit} transactions pending at this agent")]
    Sender { sender: Address, limit: usize },
    #[error("txpool is full: {limit} transactions pending at this agent")]
    Total { limit: usize },
    #[error("txpool is full: {limit} bytes of transactions pending at this agent")]
    Bytes { limit: usize },
}

#[derive(Default)]
struct Lines {
    by_sender: HashMap<Address, Arc<Line>>,
    total: usize,
    total_bytes: usize,
}

/// The lines of every sender with a transaction in this agent.
#[derive(Default)]
pub struct NonceGate {
    limits: QueueLimits,
    lines: Mutex<Lines>,
    /// The nonce after each sender's latest transaction committed here, and when.
    committed: Mutex<HashMap<Address, (u64, Instant)>>,
}

/// A transaction's place in its sender's line, from arrival to completion.
pub struct Ticket {
    gate: Arc<NonceGate>,
    sender: Address,
    nonce: u64,
    bytes: usize,
    line: Arc<Line>,
}

/// The sender's turn: only one of its transactions runs at a time.
pub struct Turn {
    _guard: OwnedMutexGuard<()>,
}

impl NonceGate {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Registers a transaction of `sender` with `nonce`, `bytes` long; refused when the
    /// sender's line or the agent's lines are full.
    pub fn arrive(
        self: &Arc<Self>,
        sender: Address,
        nonce: u64,
        bytes: usize,
    ) -> Result<Ticket, QueueFull> {
        let limits = self.limits;
        let mut lines = self.lines.lock();
        if lines.total >= limits.total {
            return Err(QueueFull::Total {
                limit: limits.total,
            });
        }
        if lines.total_bytes.saturating_add(bytes) > limits.total_bytes {
            return Err(QueueFull::Bytes {
                limit: limits.total_bytes,
            });
        }
        let line = Arc::clone(lines.by_sender.entry(sender).or_default());
        {
            let mut in_flight = line.in_flight.lock();
            if in_flight.values().sum::<usize>() >= limits.per_sender {
                drop(in_flight);
                drop(lines);
                // Leave the map as it was if the line was created for nothing.
                self.leave(&sender, &line);
                return Err(QueueFull::Sender {
                    sender,
                    limit: limits.per_sender,
                });
            }
            *in_flight.entry(nonce).or_default() += 1;
        }
        lines.total += 1;
        lines.total_bytes += bytes;
        Ok(Ticket {
            gate: Arc::clone(self),
            sender,
            nonce,
            bytes,
            line,
        })
    }

    /// Drops `sender`'s line from the map once `line` (the caller's reference) and the map's
    /// are the last: nobody else is in it.
    fn leave(&self, sender: &Address, line: &Arc<Line>) {
        let mut lines = self.lines.lock();
        if lines
            .by_sender
            .get(sender)
            .is_some_and(|held| Arc::ptr_eq(held, line) && Arc::strong_count(line) == 2)
        {
            lines.by_sender.remove(sender);
        }
    }

    /// The lowest nonce `sender`'s next transaction may carry, by what this agent knows: after
    /// the highest one running here and the latest one committed here.
    pub fn pending_floor(&self, sender: &Address) -> Option<u64> {
        let running = self
            .lines
            .lock()
            .by_sender
            .get(sender)
            .cloned()
            .and_then(|line| {
                let highest = line.in_flight.lock().last_key_value().map(|(n, _)| *n)?;
                highest.checked_add(1)
            });
        let committed = self.committed.lock().get(sender).map(|(next, _)| *next);
        running.max(committed)
    }

    /// Records that `sender`'s transaction with `nonce` committed.
    pub fn committed(&self, sender: Address, nonce: u64) {
        let now = Instant::now();
        let mut committed = self.committed.lock();
        if committed.len() >= 10_000 {
            committed.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_COMMITTED);
        }
        let entry = committed.entry(sender).or_insert((0, now));
        *entry = (entry.0.max(nonce.saturating_add(1)), now);
    }
}

impl Ticket {
    /// Waits for the sender's turn.
    pub async fn turn(&self) -> Turn {
        Turn {
            _guard: Arc::clone(&self.line.turn).lock_owned().await,
        }
    }

    /// Watches the sender's finished transactions: take it before an attempt, so that a
    /// predecessor finishing during the attempt is not missed.
    pub fn watch_progress(&self) -> watch::Receiver<u64> {
        self.line.finished.subscribe()
    }
}

/// Waits until another transaction of the sender finished since `progress` was taken (or
/// `timeout` passes); the caller gives its turn up first.
pub async fn progressed(progress: &mut watch::Receiver<u64>, timeout: std::time::Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, progress.changed()).await,
        Ok(Ok(()))
    )
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut in_flight = self.line.in_flight.lock();
            if let Some(count) = in_flight.get_mut(&self.nonce) {
                *count -= 1;
                if *count == 0 {
                    in_flight.remove(&self.nonce);
                }
            }
        }
        self.line.finished.send_modify(|count| *count += 1);
        {
            let mut lines = self.gate.lines.lock();
            lines.total -= 1;
            lines.total_bytes -= self.bytes;
        }
        self.gate.leave(&self.sender, &self.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sender_runs_one_at_a_time_and_its_pending_nonce_counts_what_runs() {
        let gate = Arc::new(NonceGate::default());
        let alice = Address::repeat_byte(1);
        let first = gate.arrive(alice, 4, 100).unwrap();
        let second = gate.arrive(alice, 5, 100).unwrap();
        assert_eq!(gate.pending_floor(&alice), Some(6));
        let turn = first.turn().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.turn())
                .await
                .is_err(),
            "the second waits for the first's turn to end"
        );
        drop(turn);
        let mut progress = second.watch_progress();
        drop(first);
        assert!(
            progressed(&mut progress, Duration::from_secs(30)).await,
            "the first finishing wakes the second"
        );
        drop(second);
        assert_eq!(gate.pending_floor(&alice), None);
        assert!(
            gate.lines.lock().by_sender.is_empty(),
            "an idle sender's line is dropped"
        );
        gate.committed(alice, 5);
        gate.committed(alice, 4);
        assert_eq!(
            gate.pending_floor(&alice),
            Some(6),
            "committed nonces only count up"
        );
    }

    #[test]
    fn lines_are_bounded_per_sender_in_count_and_in_bytes() {
        let gate = Arc::new(NonceGate::new(QueueLimits {
            per_sender: 2,
            total: 3,
            total_bytes: 1_000,
        }));
        let (alice, bob, carol) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let a0 = gate.arrive(alice, 0, 10).unwrap();
        let a1 = gate.arrive(alice, 1, 10).unwrap();
        assert_eq!(
            gate.arrive(alice, 2, 10).err(),
            Some(QueueFull::Sender {
                sender: alice,
                limit: 2
            })
        );
        assert_eq!(
            gate.arrive(bob, 0, 991).err(),
            Some(QueueFull::Bytes { limit: 1_000 }),
            "980 bytes are free"
        );
        assert!(
            !gate.lines.lock().by_sender.contains_key(&bob),
            "a refused sender leaves no line behind"
        );
        let b0 = gate.arrive(bob, 0, 980).unwrap();
        assert_eq!(
            gate.arrive(carol, 0, 0).err(),
            Some(QueueFull::Total { limit: 3 })
        );
        drop((a0, b0));
        let _c0 = gate.arrive(carol, 0, 10).unwrap();
        let _a2 = gate.arrive(alice, 2, 10).unwrap();
        drop(a1);
        let lines = gate.lines.lock();
        assert_eq!((lines.total, lines.total_bytes), (2, 20));
    }
}
