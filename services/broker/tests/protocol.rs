//! The commit protocol against real shard engines in process: which path each transaction takes,
//! what the shards hold afterwards, and serializability under contention.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bytes::Bytes;
use parsec_broker::{
    Broker, BrokerError, BrokerSettings, CommitOutcome, LocalShard, ShardTransport, Transaction,
};
use parsec_core::{AgentId, Directory, Key, LockMode, ShardId, WriteSet};
use parsec_shard::ShardService;
use parsec_shard::engine::ShardEngine;
use parsec_ticketer::{TicketDispenser, TicketMachineService};
use std::sync::Arc;
use std::time::Duration;

struct Cluster {
    broker: Arc<Broker>,
    engines: Vec<ShardEngine>,
}

fn cluster(shards: u32) -> Cluster {
    let engines: Vec<ShardEngine> = (0..shards).map(|i| ShardEngine::new(ShardId(i))).collect();
    let transports: Vec<Arc<dyn ShardTransport>> = engines
        .iter()
        .map(|e| {
            Arc::new(LocalShard(ShardService::new(
                e.clone(),
                Duration::from_secs(5),
            ))) as _
        })
        .collect();
    let tickets = TicketDispenser::new(
        Arc::new(TicketMachineService::default()),
        64,
        Duration::from_millis(50),
    );
    let settings = BrokerSettings {
        rpc_timeout: Duration::from_secs(5),
        lock_wait: Duration::from_secs(5),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
    };
    Cluster {
        broker: Broker::new(AgentId(7), transports, tickets, settings),
        engines,
    }
}

impl Cluster {
    /// One distinct key on each shard named in `shards`, in that order.
    fn keys_on(&self, shards: &[u32]) -> Vec<Key> {
        let directory = Directory::new(self.engines.len() as u32);
        shards
            .iter()
            .enumerate()
            .map(|(position, &shard)| {
                (0..)
                    .map(|i| Bytes::from(format!("key{position}-{i}")))
                    .find(|k| directory.shard_of(k) == ShardId(shard))
                    .unwrap()
            })
            .collect()
    }

    /// A transaction with a new ticket, holding write locks on `keys`.
    async fn write_locked(&self, keys: &[Key]) -> Transaction {
        let mut txn = self.broker.begin(self.broker.ticket().await.unwrap(), 0);
        let locks: Vec<_> = keys.iter().map(|k| (k.clone(), LockMode::Write)).collect();
        txn.lock(&locks).await.unwrap();
        txn
    }

    /// Every shard's lock table and ticket records are empty.
    fn assert_quiescent(&self) {
        for engine in &self.engines {
            let status = engine.status();
            assert_eq!(
                (status.locked_keys, status.waiting_requests, status.tickets),
                (0, 0, 0),
                "{:?} not quiescent: {status:?}",
                engine.id()
            );
        }
    }

    fn value(&self, key: &Key) -> Bytes {
        let shard = Directory::new(self.engines.len() as u32).shard_of(key);
        self.engines[shard.0 as usize]
            .read(std::slice::from_ref(key))
            .unwrap()
            .remove(0)
    }
}

fn writes(pairs: &[(&Key, &str)]) -> WriteSet {
    pairs
        .iter()
        .map(|(k, v)| ((*k).clone(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// Waits for the background commit phase of a two-phase commit to land (finish is the last step).
async fn settle(cluster: &Cluster) {
    for _ in 0..1_000 {
        if cluster.engines.iter().all(|e| e.status().tickets == 0) {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("background commit did not finish");
}

#[tokio::test]
async fn single_shard_commits_in_one_phase() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 0]);
    let txn = c.write_locked(&keys).await;
    let outcome = txn
        .commit(writes(&[(&keys[0], "a"), (&keys[1], "b")]))
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::OnePhase);
    assert_eq!(c.value(&keys[0]), "a");
    assert_eq!(c.value(&keys[1]), "b");
    // The shards forget the ticket in the background.
    settle(&c).await;
    c.assert_quiescent();
}

#[tokio::test]
async fn a_reader_elsewhere_votes_read_only_and_the_writer_commits_in_one_phase() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    let mut txn = c.broker.begin(c.broker.ticket().await.unwrap(), 0);
    txn.lock(&[
        (keys[0].clone(), LockMode::Read),
        (keys[1].clone(), LockMode::Write),
    ])
    .await
    .unwrap();
    let outcome = txn.commit(writes(&[(&keys[1], "w")])).await.unwrap();
    assert_eq!(outcome, CommitOutcome::OnePhase);
    assert_eq!(c.value(&keys[1]), "w");
    c.assert_quiescent();
    // The read-only shard never appended anything to its replicated state.
    assert_eq!(c.engines[0].status().applied_commands, 0);
}

#[tokio::test]
async fn writes_on_two_shards_commit_in_two_phases() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    let txn = c.write_locked(&keys).await;
    let outcome = txn
        .commit(writes(&[(&keys[0], "x"), (&keys[1], "y")]))
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::TwoPhase);
    // Answered at the commit point: a reader queues behind the prepared ticket and sees the
    // committed values once the background phase lands.
    let mut reader = c.broker.begin(c.broker.ticket().await.unwrap(), 0);
    let seen = reader
        .lock(&[
            (keys[0].clone(), LockMode::Read),
            (keys[1].clone(), LockMode::Read),
        ])
        .await
        .unwrap();
    assert_eq!(seen, vec![Bytes::from("x"), Bytes::from("y")]);
    assert_eq!(
        reader.commit(WriteSet::new()).await.unwrap(),
        CommitOutcome::ReadOnly
    );
    settle(&c).await;
    c.assert_quiescent();
}

#[tokio::test]
async fn writing_a_key_without_its_write_lock_is_refused_and_nothing_is_written() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    let mut txn = c.broker.begin(c.broker.ticket().await.unwrap(), 0);
    txn.lock(&[(keys[0].clone(), LockMode::Read)])
        .await
        .unwrap();
    let error = txn
        .commit(writes(&[(&keys[0], "a"), (&keys[1], "b")]))
        .await
        .unwrap_err();
    assert!(matches!(error, BrokerError::CommitHazard { .. }), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(c.value(&keys[0]), "");
    assert_eq!(c.value(&keys[1]), "");
    c.assert_quiescent();
}

#[tokio::test]
async fn an_abandoned_transaction_releases_its_locks() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    {
        let _txn = c.write_locked(&keys).await;
        // Dropped without commit or rollback.
    }
    c.write_locked(&keys).await.rollback().await;
    c.assert_quiescent();
}

#[tokio::test]
async fn an_older_transaction_wounds_a_younger_one() {
    let c = cluster(1);
    let key = c.keys_on(&[0]).remove(0);
    let older = c.broker.ticket().await.unwrap();
    let younger = c.broker.ticket().await.unwrap();
    let mut young = c.broker.begin(younger, 0);
    young.lock(&[(key.clone(), LockMode::Write)]).await.unwrap();
    let mut old = c.broker.begin(older, 0);
    old.lock(&[(key.clone(), LockMode::Write)]).await.unwrap();
    let error = young.commit(writes(&[(&key, "young")])).await.unwrap_err();
    assert!(error.is_wound(), "{error}");
    old.commit(writes(&[(&key, "old")])).await.unwrap();
    assert_eq!(c.value(&key), "old");
    // The younger one retries with the same ticket and its next attempt succeeds.
    let mut retry = c.broker.begin(younger, 1);
    retry.lock(&[(key.clone(), LockMode::Write)]).await.unwrap();
    retry.commit(writes(&[(&key, "young")])).await.unwrap();
    assert_eq!(c.value(&key), "young");
    c.assert_quiescent();
}

/// Transfers between accounts spread over shards, with a hot account in many of them; every
/// transfer retries until it commits. Money is conserved exactly and every transfer finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_conserve_money_and_all_finish() {
    const ACCOUNTS: usize = 40;
    const TRANSFERS: usize = 1_500;
    const START: u64 = 1_000;
    let c = Arc::new(cluster(3));
    let accounts: Vec<Key> = (0..ACCOUNTS)
        .map(|i| Bytes::from(format!("acct{i}")))
        .collect();
    // Fund every account in one multi-shard transaction.
    let txn = c.write_locked(&accounts).await;
    let funding: WriteSet = accounts
        .iter()
        .map(|k| (k.clone(), Bytes::copy_from_slice(&START.to_le_bytes())))
        .collect();
    txn.commit(funding).await.unwrap();

    let tasks: Vec<_> = (0..TRANSFERS)
        .map(|i| {
            let c = c.clone();
            let from = accounts[(i * 7) % ACCOUNTS].clone();
            // A third of the transfers pay the hot account 0.
            let to = if i % 3 == 0 {
                accounts[0].clone()
            } else {
                accounts[(i * 13 + 1) % ACCOUNTS].clone()
            };
            tokio::spawn(async move { transfer(&c.broker, from, to).await })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    settle(&c).await;
    let total: u64 = accounts
        .iter()
        .map(|k| u64::from_le_bytes(c.value(k)[..8].try_into().unwrap()))
        .sum();
    assert_eq!(total, START * ACCOUNTS as u64);
    c.assert_quiescent();
    eprintln!("{TRANSFERS} transfers, {retries} retries");
}

/// Moves 1 unit, retrying with the same ticket until it commits; returns the retries it took.
async fn transfer(broker: &Arc<Broker>, from: Key, to: Key) -> u32 {
    let ticket = broker.ticket().await.unwrap();
    for attempt in 0..10_000u32 {
        let mut txn = broker.begin(ticket, attempt);
        let keys = [
            (from.clone(), LockMode::Write),
            (to.clone(), LockMode::Write),
        ];
        let values = match txn.lock(&keys).await {
            Ok(values) => values,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                txn.rollback().await;
                tokio::time::sleep(broker.backoff(attempt + 1)).await;
                continue;
            }
        };
        let balance = |v: &Bytes| u64::from_le_bytes(v[..8].try_into().unwrap());
        let mut set = WriteSet::new();
        if from != to {
            set.insert(
                from.clone(),
                Bytes::copy_from_slice(&(balance(&values[0]) - 1).to_le_bytes()),
            );
            set.insert(
                to.clone(),
                Bytes::copy_from_slice(&(balance(&values[1]) + 1).to_le_bytes()),
            );
        }
        match txn.commit(set).await {
            Ok(_) => return attempt,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                tokio::time::sleep(broker.backoff(attempt + 1)).await;
            }
        }
    }
    panic!("transfer never committed: starvation");
}

/// `commit_then_visible` answers a two-shard commit at its commit point, as `commit` does, and
/// its `Visible` resolves only once the commit phase has run everywhere. (On this
/// single-threaded runtime, the background commit phase runs only when the test awaits.)
#[tokio::test]
async fn a_commit_tells_when_it_becomes_visible() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    let txn = c.write_locked(&keys).await;
    let (outcome, visible) = txn
        .commit_then_visible(writes(&[(&keys[0], "a"), (&keys[1], "b")]))
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::TwoPhase);
    assert!(
        c.value(&keys[0]).is_empty() && c.value(&keys[1]).is_empty(),
        "answered at the commit point, before the commit phase"
    );
    visible.wait().await;
    assert_eq!(c.value(&keys[0]), "a");
    assert_eq!(c.value(&keys[1]), "b");
    settle(&c).await;
    c.assert_quiescent();
}

/// A two-shard commit answered by `commit_visible` has run its commit phase: lock-free reads on
/// both shards see it at once. (On this single-threaded runtime, a background commit phase
/// could not have run before the check.)
#[tokio::test]
async fn a_visible_commit_is_readable_everywhere_when_it_answers() {
    let c = cluster(2);
    let keys = c.keys_on(&[0, 1]);
    let txn = c.write_locked(&keys).await;
    let outcome = txn
        .commit_visible(writes(&[(&keys[0], "a"), (&keys[1], "b")]))
        .await
        .unwrap();
    assert_eq!(outcome, CommitOutcome::TwoPhase);
    assert_eq!(c.value(&keys[0]), "a");
    assert_eq!(c.value(&keys[1]), "b");
    // The shards forget the ticket in the background.
    settle(&c).await;
    c.assert_quiescent();
}
