//! The broker's side: hands out single tickets from ranges, fetching the next range before the
//! current one runs out and dropping ranges that have grown too old.

use crate::machine::TicketRange;
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_core::Ticket;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket machine unreachable: {0}")]
    Unreachable(String),
    #[error("ticket machine returned an empty range")]
    EmptyRange,
}

/// Where ranges come from: the ticket machine over gRPC, or in process.
#[async_trait]
pub trait RangeSource: Send + Sync + 'static {
    async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError>;
}

#[derive(Debug)]
struct Range {
    next: u64,
    end: u64,
    fetched: Instant,
}

impl Range {
    fn fresh(range: TicketRange) -> Self {
        Self {
            next: range.start,
            end: range.end(),
            fetched: Instant::now(),
        }
    }

    fn remaining(&self) -> u64 {
        self.end - self.next
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<Range>,
    spare: Option<Range>,
    prefetching: bool,
}

/// Hands out tickets one at a time.
pub struct TicketDispenser {
    source: Arc<dyn RangeSource>,
    range_size: u64,
    max_age: Duration,
    state: Mutex<State>,
    /// Serialises foreground fetches so that a crowd of callers waits for one range.
    fetch: tokio::sync::Mutex<()>,
}

impl TicketDispenser {
    pub fn new(source: Arc<dyn RangeSource>, range_size: u64, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            source,
            range_size: range_size.max(1),
            max_age,
            state: Mutex::new(State::default()),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    /// The next ticket.
    pub async fn next(self: &Arc<Self>) -> Result<Ticket, TicketError> {
        loop {
            if let Some(ticket) = self.take() {
                return Ok(ticket);
            }
            let _fetching = self.fetch.lock().await;
            if let Some(ticket) = self.take() {
                return Ok(ticket);
            }
            let range = self.source.allocate(self.range_size).await?;
            if range.count == 0 {
                return Err(TicketError::EmptyRange);
            }
            self.state.lock().current = Some(Range::fresh(range));
        }
    }

    fn take(self: &Arc<Self>) -> Option<Ticket> {
        let mut state = self.state.lock();
        let max_age = self.max_age;
        let usable = |range: &Option<Range>| {
            range
                .as_ref()
                .is_some_and(|r| r.remaining() > 0 && r.fetched.elapsed() <= max_age)
        };
        if !usable(&state.current) {
            state.current = state.spare.take();
            if !usable(&state.current) {
                state.current = None;
                return None;
            }
        }
        let current = state.current.as_mut()?;
        let ticket = Ticket(current.next);
        current.next += 1;
        let running_low =
            current.remaining() < self.range_size / 2 || current.fetched.elapsed() > max_age / 2;
        if running_low && state.spare.is_none() && !state.prefetching {
            state.prefetching = true;
            self.prefetch();
        }
        Some(ticket)
    }

    fn prefetch(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let fetched = this.source.allocate(this.range_size).await;
            let mut state = this.state.lock();
            state.prefetching = false;
            match fetched {
                Ok(range) if range.count > 0 => state.spare = Some(Range::fresh(range)),
                Ok(_) => {}
                // The foreground path retries and reports the error to its caller.
                Err(error) => tracing::debug!(%error, "ticket range prefetch failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::TicketMachine;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Local {
        machine: Mutex<TicketMachine>,
        calls: AtomicU64,
    }

    #[async_trait]
    impl RangeSource for Local {
        async fn allocate(&self, count: u64) -> Result<TicketRange, TicketError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(self.machine.lock().allocate(count, 0))
        }
    }

    #[tokio::test]
    async fn tickets_are_unique_and_ranges_are_shared_by_many_transactions() {
        let source = Arc::new(Local {
            machine: Mutex::new(TicketMachine::new()),
            calls: AtomicU64::new(0),
        });
        let dispenser = TicketDispenser::new(source.clone(), 100, Duration::from_secs(60));
        let mut seen = HashSet::new();
        for _ in 0..1_000 {
            assert!(seen.insert(dispenser.next().await.unwrap()));
        }
        let calls = source.calls.load(Ordering::Relaxed);
        assert!(
            (10..=12).contains(&calls),
            "{calls} range requests for 1000 tickets"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_get_unique_tickets() {
        let source = Arc::new(Local {
            machine: Mutex::new(TicketMachine::new()),
            calls: AtomicU64::new(0),
        });
        let dispenser = TicketDispenser::new(source, 16, Duration::from_secs(60));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let d = dispenser.clone();
                tokio::spawn(async move {
                    let mut v = Vec::new();
                    for _ in 0..200 {
                        v.push(d.next().await.unwrap());
                    }
                    v
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for task in tasks {
            for ticket in task.await.unwrap() {
                assert!(seen.insert(ticket), "{ticket} handed out twice");
            }
        }
        assert_eq!(seen.len(), 1_600);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_range_is_dropped() {
        let source = Arc::new(Local {
            machine: Mutex::new(TicketMachine::new()),
            calls: AtomicU64::new(0),
        });
        let dispenser = TicketDispenser::new(source.clone(), 1_000, Duration::from_millis(50));
        let first = dispenser.next().await.unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
        let second = dispenser.next().await.unwrap();
        // The 998 unused tickets of the old range were abandoned for a fresh range.
        assert!(second.0 >= first.0 + 1_000, "{first} then {second}");
    }
}
