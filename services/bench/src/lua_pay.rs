//! The Lua pay workload: wallets paying each other 1 unit in a closed loop, one payment in flight
//! per wallet, optionally with a share of payments going to one hot wallet. At the end every
//! balance is read back under read locks and checked against what the acknowledged payments say.
//!
//! A payment that ends in an error (agent killed, failover) has an unknown outcome. Each wallet
//! signs its payments with consecutive sequence numbers and the ledger records the next one, so
//! the outcome is learned afterwards: the payment committed iff the ledger moved past its
//! sequence (and no acknowledged payment reused that sequence). The audit stays exact.

use crate::client::{AgentPool, ClientError};
use crate::report::Report;
use crate::run::{Tally, new_histogram, progress_bar, spawn_ticker, stop_signal};
use bytes::Bytes;
use hdrhistogram::Histogram;
use parsec_agent::lua::contracts;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use secp256k1::Keypair;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

pub const PAY_CONTRACT: &str = "lua/pay";
pub const MINT_CONTRACT: &str = "lua/mint";
pub const BALANCES_CONTRACT: &str = "lua/balances";

#[derive(Clone, Debug)]
pub struct LuaPayOptions {
    pub wallets: usize,
    /// Payments in flight at once (closed loop).
    pub concurrency: usize,
    pub duration: Duration,
    /// Stop once this many payments committed (the duration still bounds the run).
    pub max_payments: Option<u64>,
    /// Share of payments sent to wallet 0.
    pub hot_fraction: f64,
    pub initial_balance: u64,
    pub progress: bool,
}

impl Default for LuaPayOptions {
    fn default() -> Self {
        Self {
            wallets: 1_000,
            concurrency: 256,
            duration: Duration::from_secs(10),
            max_payments: None,
            hot_fraction: 0.0,
            initial_balance: 10_000,
            progress: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unreadable account record: {0}")]
    Account(String),
}

struct Wallet {
    keypair: Keypair,
    pubkey: [u8; 32],
}

pub async fn run_lua_pay(pool: AgentPool, options: LuaPayOptions) -> Result<Report, BenchError> {
    options.validate()?;
    let wallets: Arc<Vec<Wallet>> = Arc::new(
        (0..options.wallets)
            .map(|_| {
                let keypair = Keypair::new_global(&mut rand::rng());
                Wallet {
                    pubkey: contracts::pubkey(&keypair),
                    keypair,
                }
            })
            .collect(),
    );
    setup(&pool, &wallets, options.initial_balance).await?;

    let expected: Arc<Vec<AtomicI64>> = Arc::new(
        (0..options.wallets)
            .map(|_| AtomicI64::new(options.initial_balance as i64))
            .collect(),
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rpcs_before = pool.shard_rpcs().await.ok();
    let started = Instant::now();
    let progress = progress_bar(options.duration, options.progress);
    let ticker = spawn_ticker(
        progress.clone(),
        tally.clone(),
        stop.clone(),
        options.duration,
    );

    let unresolved: Arc<parking_lot::Mutex<Vec<Unresolved>>> = Arc::default();
    // Ctrl-C or SIGTERM ends the load early; the audit and the report still run.
    let interrupt = {
        let stop = stop.clone();
        tokio::spawn(async move {
            stop_signal().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let workers: Vec<_> = (0..options.concurrency)
        .map(|worker| {
            let context = WorkerContext {
                pool: pool.clone(),
                wallets: wallets.clone(),
                expected: expected.clone(),
                tally: tally.clone(),
                stop: stop.clone(),
                options: options.clone(),
                started,
                unresolved: unresolved.clone(),
            };
            tokio::spawn(async move { context.run(worker).await })
        })
        .collect();
    let mut latencies = new_histogram();
    for worker in workers {
        if let Ok(histogram) = worker.await {
            latencies.add(&histogram).ok();
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    interrupt.abort();
    let _ = ticker.await;
    progress.finish_and_clear();
    let rpcs_after = pool.shard_rpcs().await.ok();

    let committed = tally.committed.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let observed = read_ledger(&pool, &wallets).await?;
    // Payments whose outcome the workers could not learn during the run.
    let unresolved = std::mem::take(&mut *unresolved.lock());
    for payment in &unresolved {
        if observed[payment.from].1 > payment.sequence {
            payment.apply(&expected);
        }
    }
    let expected_total = options.wallets as u128 * u128::from(options.initial_balance);
    let observed_total: u128 = observed.iter().map(|&(b, _)| u128::from(b)).sum();
    let wallets_ok = Some(
        observed
            .iter()
            .zip(expected.iter())
            .all(|(&(seen, _), want)| i128::from(seen) == i128::from(want.load(Ordering::Relaxed))),
    );
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1_000.0;
    Ok(Report {
        workload: format!(
            "lua-pay ({} wallets, {} in flight, {:.0}% hot)",
            options.wallets,
            options.concurrency,
            options.hot_fraction * 100.0
        ),
        committed,
        failed: tally.failed.load(Ordering::Relaxed),
        errors,
        retries: tally.retries.load(Ordering::Relaxed),
        duration_s: elapsed.as_secs_f64(),
        tps: committed as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latencies.max() as f64 / 1_000.0,
        rpcs_per_tx: match (rpcs_before, rpcs_after) {
            (Some(before), Some(after)) if committed > 0 => {
                Some((after - before) as f64 / committed as f64)
            }
            _ => None,
        },
        total_ok: observed_total == expected_total,
        wallets_ok,
        expected_total,
        observed_total,
        cost: None,
    })
}

impl LuaPayOptions {
    /// Checks the options before anything is sent.
    pub fn validate(&self) -> Result<(), BenchError> {
        validate(self)
    }
}

fn validate(options: &LuaPayOptions) -> Result<(), BenchError> {
    if options.wallets < 2 {
        return Err(BenchError::Options("at least 2 wallets are needed".into()));
    }
    if options.concurrency == 0 || options.concurrency > options.wallets {
        return Err(BenchError::Options(format!(
            "concurrency must be 1..=wallets ({}): each payment in flight needs its own wallet",
            options.wallets
        )));
    }
    if !(0.0..=1.0).contains(&options.hot_fraction) {
        return Err(BenchError::Options(
            "hot fraction must be within 0..=1".into(),
        ));
    }
    Ok(())
}

/// Deploys the contracts and funds every wallet.
async fn setup(pool: &AgentPool, wallets: &[Wallet], balance: u64) -> Result<(), BenchError> {
    pool.deploy(PAY_CONTRACT, contracts::PAY).await?;
    pool.deploy(MINT_CONTRACT, contracts::MINT).await?;
    pool.deploy(BALANCES_CONTRACT, contracts::BALANCES).await?;
    let batches: Vec<Vec<([u8; 32], u64)>> = wallets
        .chunks(contracts::MAX_BATCH)
        .map(|chunk| chunk.iter().map(|w| (w.pubkey, balance)).collect())
        .collect();
    let mints = batches.into_iter().enumerate().map(|(i, credits)| {
        let pool = pool.clone();
        async move {
            pool.execute(i, MINT_CONTRACT, contracts::mint_param(&credits), false)
                .await
        }
    });
    futures::future::try_join_all(mints).await?;
    Ok(())
}

/// Every wallet's balance and next sequence, read with read-only calls (read locks wait for any
/// commit still in flight, so the audit sees every acknowledged payment).
async fn read_ledger(pool: &AgentPool, wallets: &[Wallet]) -> Result<Vec<(u64, u64)>, BenchError> {
    let mut balances = Vec::with_capacity(wallets.len());
    for chunk in wallets.chunks(contracts::MAX_BATCH) {
        let pubkeys: Vec<[u8; 32]> = chunk.iter().map(|w| w.pubkey).collect();
        let reply = pool
            .execute(
                0,
                BALANCES_CONTRACT,
                contracts::balances_param(&pubkeys),
                true,
            )
            .await?;
        let records: std::collections::HashMap<Bytes, Bytes> = reply
            .reads
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        for pubkey in &pubkeys {
            let record = records
                .get(&contracts::account_key(pubkey))
                .cloned()
                .unwrap_or_default();
            let account = contracts::decode_account(&record)
                .map_err(|e| BenchError::Account(format!("{e:?}")))?;
            balances.push(account);
        }
    }
    Ok(balances)
}

/// A payment that ended in an error: committed or not, to be learned from the ledger.
#[derive(Clone, Copy, Debug)]
struct Unresolved {
    from: usize,
    to: usize,
    sequence: u64,
}

impl Unresolved {
    /// Counts the payment as committed.
    fn apply(&self, expected: &[AtomicI64]) {
        expected[self.from].fetch_sub(1, Ordering::Relaxed);
        expected[self.to].fetch_add(1, Ordering::Relaxed);
    }
}

struct WorkerContext {
    pool: AgentPool,
    wallets: Arc<Vec<Wallet>>,
    expected: Arc<Vec<AtomicI64>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    options: LuaPayOptions,
    started: Instant,
    /// Unknown outcomes left for the end of the run.
    unresolved: Arc<parking_lot::Mutex<Vec<Unresolved>>>,
}

impl WorkerContext {
    /// Worker `w` owns wallets w, w + C, w + 2C, …: one payment in flight per wallet, so each
    /// wallet's sequence numbers are known without asking.
    async fn run(self, worker: usize) -> Histogram<u64> {
        let mut latencies = new_histogram();
        let owned: Vec<usize> = (worker..self.wallets.len())
            .step_by(self.options.concurrency)
            .collect();
        let mut sequences = vec![0u64; owned.len()];
        // Per owned wallet: payments whose outcome is not known yet.
        let mut unknown: Vec<Vec<Unresolved>> = vec![Vec::new(); owned.len()];
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let mut turn = 0usize;
        while !self.done() {
            let slot = turn % owned.len();
            turn += 1;
            let from = owned[slot];
            let to = self.pick_recipient(from, &mut rng);
            let param = contracts::pay_param(
                &self.wallets[from].keypair,
                &self.wallets[to].pubkey,
                1,
                sequences[slot],
            );
            let sent = Instant::now();
            let outcome = self.pool.execute(from, PAY_CONTRACT, param, false).await;
            let latency = sent.elapsed();
            match outcome {
                Ok(reply) => {
                    latencies
                        .record(latency.as_micros() as u64)
                        .unwrap_or_default();
                    sequences[slot] += 1;
                    self.expected[from].fetch_sub(1, Ordering::Relaxed);
                    self.expected[to].fetch_add(1, Ordering::Relaxed);
                    self.tally.committed.fetch_add(1, Ordering::Relaxed);
                    self.tally.retries.fetch_add(
                        u64::from(reply.attempts.saturating_sub(1)),
                        Ordering::Relaxed,
                    );
                }
                Err(ClientError::Agent { message, .. }) if message.contains("contract failed") => {
                    self.tally.failed.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, "payment failed");
                    self.tally.errors.fetch_add(1, Ordering::Relaxed);
                    unknown[slot].push(Unresolved {
                        from,
                        to,
                        sequence: sequences[slot],
                    });
                    // An agent that is down fails at once: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    // The outcome is unknown: learn it, and the wallet's sequence, from the
                    // ledger (a read waits for any write still holding the account's lock).
                    // Until it is learned the sequence is not reused: two payments with one
                    // sequence could not both be told apart in the ledger.
                    while !self.done() {
                        if let Some(next) = self.sequence_of(from).await {
                            for payment in unknown[slot].drain(..) {
                                if next > payment.sequence {
                                    payment.apply(&self.expected);
                                }
                            }
                            sequences[slot] = next;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        self.unresolved.lock().extend(unknown.into_iter().flatten());
        latencies
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.started.elapsed() >= self.options.duration
            || self
                .options
                .max_payments
                .is_some_and(|max| self.tally.committed.load(Ordering::Relaxed) >= max)
    }

    fn pick_recipient(&self, from: usize, rng: &mut impl Rng) -> usize {
        let count = self.wallets.len();
        if from != 0 && rng.random_bool(self.options.hot_fraction) {
            return 0;
        }
        let to = rng.random_range(0..count - 1);
        if to >= from { to + 1 } else { to }
    }

    async fn sequence_of(&self, wallet: usize) -> Option<u64> {
        let param = contracts::balances_param(&[self.wallets[wallet].pubkey]);
        let reply = self
            .pool
            .execute(0, BALANCES_CONTRACT, param, true)
            .await
            .ok()?;
        let record = reply.reads.into_iter().next()?.value;
        contracts::decode_account(&record).ok().map(|(_, seq)| seq)
    }
}
