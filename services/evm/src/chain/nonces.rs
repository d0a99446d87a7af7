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

/// The lines of every sender with a transaction in this agent.
#[derive(Default)]
pub struct NonceGate {
    lines: Mutex<HashMap<Address, Arc<Line>>>,
    /// The nonce after each sender's latest transaction committed here, and when.
    committed: Mutex<HashMap<Address, (u64, Instant)>>,
}

/// A transaction's place in its sender's line, from arrival to completion.
pub struct Ticket {
    gate: Arc<NonceGate>,
    sender: Address,
    nonce: u64,
    line: Arc<Line>,
}

/// The sender's turn: only one of its transactions runs at a time.
pub struct Turn {
    _guard: OwnedMutexGuard<()>,
}

impl NonceGate {
    /// Registers a transaction of `sender` with `nonce`.
    pub fn arrive(self: &Arc<Self>, sender: Address, nonce: u64) -> Ticket {
        let line = Arc::clone(self.lines.lock().entry(sender).or_default());
        *line.in_flight.lock().entry(nonce).or_default() += 1;
        Ticket {
            gate: Arc::clone(self),
            sender,
            nonce,
            line,
        }
    }

    /// The lowest nonce `sender`'s next transaction may carry, by what this agent knows: after
    /// the highest one running here and the latest one committed here.
    pub fn pending_floor(&self, sender: &Address) -> Option<u64> {
        let running = self.lines.lock().get(sender).cloned().and_then(|line| {
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
        let mut lines = self.gate.lines.lock();
        // The map's and this ticket's references are the last: nobody else is in the line.
        if lines
            .get(&self.sender)
            .is_some_and(|line| Arc::strong_count(line) == 2)
        {
            lines.remove(&self.sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sender_runs_one_at_a_time_and_its_pending_nonce_counts_what_runs() {
        let gate = Arc::new(NonceGate::default());
        let alice = Address::repeat_byte(1);
        let first = gate.arrive(alice, 4);
        let second = gate.arrive(alice, 5);
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
            gate.lines.lock().is_empty(),
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
}
