//! Recovery of a dead agent's prepared tickets by the shards, in process: the decision rules
//! applied for real through `ShardPeers`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bytes::Bytes;
use parsec_broker::{LocalShard, ShardPeers, ShardTransport};
use parsec_core::{AgentId, Directory, Key, LockMode, ShardId, Ticket, WriteSet};
use parsec_shard::ShardService;
use parsec_shard::engine::{LockBatch, PrepareBatch, ShardEngine, Vote};
use parsec_shard::recovery::resolve;
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(3);
const DEAD_AGENT: AgentId = AgentId(9);

struct Shards {
    engines: Vec<ShardEngine>,
    peers: ShardPeers,
}

fn shards() -> Shards {
    let engines: Vec<ShardEngine> = (0..2)
        .map(|i| ShardEngine::with_lease(ShardId(i), LEASE))
        .collect();
    let transports: Vec<Arc<dyn ShardTransport>> = engines
        .iter()
        .map(|e| {
            Arc::new(LocalShard(ShardService::new(
                e.clone(),
                Duration::from_secs(5),
            ))) as _
        })
        .collect();
    Shards {
        engines,
        peers: ShardPeers::new(transports, Duration::from_secs(1)),
    }
}

fn key_on(shard: u32) -> Key {
    let directory = Directory::new(2);
    (0..)
        .map(|i| Bytes::from(format!("key-{i}")))
        .find(|k| directory.shard_of(k) == ShardId(shard))
        .unwrap()
}

async fn lock(engine: &ShardEngine, ticket: u64, key: &Key) {
    engine
        .lock(LockBatch {
            ticket: Ticket(ticket),
            attempt: 0,
            agent: DEAD_AGENT,
            first: true,
            locks: vec![(key.clone(), LockMode::Write)],
            wait: Duration::from_secs(1),
        })
        .await
        .unwrap();
}

async fn prepare(engine: &ShardEngine, ticket: u64, key: &Key) -> Result<Vote, String> {
    engine
        .prepare(PrepareBatch {
            ticket: Ticket(ticket),
            attempt: 0,
            agent: DEAD_AGENT,
            writes: WriteSet::from([(key.clone(), Bytes::from_static(b"new"))]),
            participants: vec![ShardId(0), ShardId(1)],
            lock_count: 1,
            one_phase: false,
        })
        .await
        .map_err(|e| e.to_string())
}

fn value(engine: &ShardEngine, key: &Key) -> Bytes {
    engine.read(std::slice::from_ref(key)).unwrap().remove(0)
}

#[tokio::test(start_paused = true)]
async fn all_prepared_commits_everywhere_and_is_then_forgotten() {
    let s = shards();
    let keys = [key_on(0), key_on(1)];
    for (engine, key) in s.engines.iter().zip(&keys) {
        lock(engine, 1, key).await;
        assert_eq!(prepare(engine, 1, key).await, Ok(Vote::Prepared));
    }
    // The agent dies at the commit point: nobody sends commit.
    tokio::time::advance(LEASE * 2).await;
    for engine in &s.engines {
        for orphan in engine.sweep_expired() {
            assert!(resolve(engine, &s.peers, &orphan).await);
        }
    }
    for (engine, key) in s.engines.iter().zip(&keys) {
        assert_eq!(value(engine, key), "new");
    }
    // Both committed: the next sweep forgets the records.
    for engine in &s.engines {
        for orphan in engine.sweep_expired() {
            assert!(resolve(engine, &s.peers, &orphan).await);
        }
        let status = engine.status();
        assert_eq!((status.tickets, status.locked_keys), (0, 0), "{status:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_participant_that_never_prepared_is_fenced_and_the_ticket_aborts() {
    let s = shards();
    let keys = [key_on(0), key_on(1)];
    lock(&s.engines[0], 1, &keys[0]).await;
    lock(&s.engines[1], 1, &keys[1]).await;
    assert_eq!(
        prepare(&s.engines[0], 1, &keys[0]).await,
        Ok(Vote::Prepared)
    );
    // The agent dies before preparing shard 1.
    tokio::time::advance(LEASE * 2).await;
    let orphans = s.engines[0].sweep_expired();
    assert_eq!(orphans.len(), 1);
    assert!(resolve(&s.engines[0], &s.peers, &orphans[0]).await);
    // Shard 1 was fenced: a late prepare from the dead agent cannot land.
    assert!(prepare(&s.engines[1], 1, &keys[1]).await.is_err());
    for (engine, key) in s.engines.iter().zip(&keys) {
        assert_eq!(value(engine, key), "", "nothing written");
        let status = engine.status();
        assert_eq!((status.tickets, status.locked_keys), (0, 0), "{status:?}");
    }
}
