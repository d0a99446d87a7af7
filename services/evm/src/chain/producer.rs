//! An agent's side of the block clock (DESIGN.md §4; the ticket machine's side and the safety
//! argument are in `parsec_ticketer::chain`).
//!
//! Every transaction is stamped with the block open when its attempt starts: never a block at or
//! below what this agent has promised the ticket machine it will not stamp any more. Committed
//! transactions collect in this agent's part of their block. Every quarter interval the agent
//! works out the highest block it is done with (all windows up to it are over and no
//! transaction stamped at or below it is still running), stores its parts of those blocks in
//! the shards, and only then reports that block to the ticket machine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use parsec_agent::agent::{Agent, AgentError};
use parsec_ticketer::{BlockClockSource, ClockView};
use tokio::sync::watch;

use crate::chain::ChainError;
use crate::chain::record::{PartTx, TxLocation, decode_part, encode_part, location_key, part_key};
use parsec_core::{Key, Value};

/// Most keys one store transaction locks (the shards take up to 4,096 per request).
const STORE_BATCH: usize = 1_024;

/// The producer's bookkeeping, under one lock.
#[derive(Debug, Default)]
struct Book {
    view: ClockView,
    /// When the ticket machine last answered a report (our lease there).
    acknowledged: Option<Instant>,
    /// This agent stamps nothing at or below this block any more.
    promised: u64,
    /// Attempts running, by stamped block.
    running: BTreeMap<u64, usize>,
    /// Committed transactions whose part is not stored yet, by block.
    pending: BTreeMap<u64, Vec<PartTx>>,
    /// Blocks whose part is stored but not sealed yet.
    stored: BTreeSet<u64>,
}

impl Book {
    fn open_block(&self, now_ms: u64) -> u64 {
        self.view
            .block_at(now_ms)
            .max(self.view.sealed + 1)
            .max(self.promised + 1)
    }
}

/// The block clock of one agent.
pub struct BlockProducer {
    agent_id: u64,
    agent: Arc<Agent>,
    source: Arc<dyn BlockClockSource>,
    /// Stamps stop once the last acknowledged report is older than this: past the lease the
    /// ticket machine may seal blocks without us.
    stamp_window: Duration,
    book: Mutex<Book>,
    head: watch::Sender<u64>,
}

/// A running attempt's block, held open until the stamp (or its [`Listed`]) is dropped.
pub struct Stamp {
    producer: Arc<BlockProducer>,
    block: u64,
}

/// A committed transaction listed in its block, which stays open until this is dropped: drop it
/// once lock-free reads see the transaction's writes.
pub struct Listed {
    _stamp: Stamp,
}

impl Stamp {
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Unix seconds of the stamped block (what TIMESTAMP reads).
    pub fn timestamp(&self) -> u64 {
        self.producer.book.lock().view.timestamp(self.block)
    }

    /// The attempt committed `tx`: it goes into this agent's part of the block, in commit
    /// order.
    pub fn commit(self, tx: PartTx) -> Listed {
        self.producer
            .book
            .lock()
            .pending
            .entry(self.block)
            .or_default()
            .push(tx);
        Listed { _stamp: self }
    }
}

impl Drop for Stamp {
    fn drop(&mut self) {
        release(&mut self.producer.book.lock(), self.block);
    }
}

fn release(book: &mut Book, block: u64) {
    if let Some(count) = book.running.get_mut(&block) {
        *count -= 1;
        if *count == 0 {
            book.running.remove(&block);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl BlockProducer {
    pub fn new(
        agent_id: u64,
        agent: Arc<Agent>,
        source: Arc<dyn BlockClockSource>,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            agent_id,
            agent,
            source,
            stamp_window: lease / 2,
            book: Mutex::new(Book::default()),
            head: watch::Sender::new(0),
        })
    }

    /// The clock as last reported by the ticket machine.
    pub fn view(&self) -> ClockView {
        self.book.lock().view
    }

    /// The highest sealed block, as it changes.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Stamps an attempt with the open block.
    pub fn stamp(self: &Arc<Self>) -> Result<Stamp, ChainError> {
        let mut book = self.book.lock();
        let fresh = book
            .acknowledged
            .is_some_and(|at| at.elapsed() < self.stamp_window);
        if !fresh || !book.view.is_running() {
            return Err(ChainError(
                "the block clock is unavailable: the ticket machine has not answered this agent recently".into(),
            ));
        }
        let block = book.open_block(now_ms());
        *book.running.entry(block).or_default() += 1;
        Ok(Stamp {
            producer: Arc::clone(self),
            block,
        })
    }

    /// Reports every quarter of a block interval for as long as the producer lives.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let producer = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut period = Duration::from_millis(50);
            loop {
                let Some(producer) = producer.upgrade() else {
                    return;
                };
                match producer.cycle().await {
                    Ok(view) => {
                        period = Duration::from_millis((view.interval_ms / 4).clamp(5, 1_000));
                    }
                    Err(error) => tracing::warn!(%error, "block clock report failed"),
                }
                drop(producer);
                tokio::time::sleep(period).await;
            }
        })
    }

    /// Stores the parts of the blocks this agent is done with, then reports.
    pub async fn cycle(&self) -> Result<ClockView, ChainError> {
        let (done, to_store) = {
            let mut book = self.book.lock();
            let mut done = book.open_block(now_ms()) - 1;
            if let Some((&oldest, _)) = book.running.first_key_value() {
                done = done.min(oldest - 1);
            }
            // Never below an earlier promise (running stamps are above it, so this holds).
            done = done.max(book.promised);
            if book.view.is_running() {
                book.promised = done;
            }
            let later = book.pending.split_off(&(done + 1));
            let to_store = std::mem::replace(&mut book.pending, later);
            (done, to_store)
        };
        let mut through = done;
        if !to_store.is_empty() {
            let blocks: Vec<u64> = to_store.keys().copied().collect();
            match self.store(&to_store).await {
                Ok(()) => self.book.lock().stored.extend(blocks),
                Err(error) => {
                    // Keep them for the next cycle; report nothing at or above them.
                    through = blocks[0] - 1;
                    let mut book = self.book.lock();
                    for (block, mut txs) in to_store {
                        let entry = book.pending.entry(block).or_default();
                        txs.append(entry);
                        *entry = txs;
                    }
                    tracing::warn!(%error, "storing block parts failed; retrying");
                }
            }
        }
        let parts: Vec<u64> = {
            let book = self.book.lock();
            book.stored.iter().copied().collect()
        };
        let view = self
            .source
            .report(self.agent_id, through, parts)
            .await
            .map_err(|e| ChainError(e.to_string()))?;
        let mut book = self.book.lock();
        book.acknowledged = Some(Instant::now());
        // The sealed height never moves back, whichever replica answered.
        let sealed = view.sealed.max(book.view.sealed);
        book.view = ClockView { sealed, ..view };
        book.stored = book.stored.split_off(&(sealed + 1));
        let closed = book.view.block_at(now_ms()).saturating_sub(1);
        drop(book);
        let metrics = parsec_telemetry::EvmMetrics::global();
        metrics.sealed_block.set(sealed as i64);
        metrics
            .seal_lag_blocks
            .set(closed.saturating_sub(sealed) as i64);
        self.head.send_if_modified(|head| {
            let moved = sealed > *head;
            *head = (*head).max(sealed);
            moved
        });
        Ok(view)
    }

    /// Writes this agent's parts of `blocks`, merged with whatever an earlier incarnation of
    /// this agent id stored there, and the location record of each of their transactions. One
    /// transaction in the common case; a backlog too large for one goes in batches, the parts
    /// last (they put the transactions into blocks).
    async fn store(&self, blocks: &BTreeMap<u64, Vec<PartTx>>) -> Result<(), AgentError> {
        let parts: Vec<Key> = blocks
            .keys()
            .map(|block| part_key(*block, self.agent_id))
            .collect();
        let mut locations: Vec<(Key, Value)> = blocks
            .iter()
            .flat_map(|(block, txs)| {
                let record = TxLocation {
                    block: *block,
                    agent: self.agent_id,
                }
                .encode();
                txs.iter()
                    .map(move |tx| (location_key(&tx.hash()), record.clone()))
            })
            .collect();
        while locations.len() + parts.len() > STORE_BATCH {
            let batch: Vec<(Key, Value)> = locations.drain(..STORE_BATCH).collect();
            let keys: Vec<Key> = batch.iter().map(|(key, _)| key.clone()).collect();
            self.agent
                .update_keys("evm", &keys, |_| batch.iter().cloned().collect())
                .await?;
        }
        let keys: Vec<Key> = parts
            .iter()
            .cloned()
            .chain(locations.iter().map(|(key, _)| key.clone()))
            .collect();
        self.agent
            .update_keys("evm", &keys, |existing| {
                parts
                    .iter()
                    .zip(existing)
                    .zip(blocks.values())
                    .map(|((key, old), txs)| {
                        let mut part = if old.is_empty() {
                            Vec::new()
                        } else {
                            decode_part(&old).unwrap_or_default()
                        };
                        part.extend(txs.iter().cloned());
                        (key.clone(), encode_part(&part))
                    })
                    .chain(locations.iter().cloned())
                    .collect()
            })
            .await
            .map(|_| ())
    }
}
