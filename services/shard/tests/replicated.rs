//! A shard replicated by a three-node Raft group over real gRPC on 127.0.0.1: only the leader
//! serves, prepared tickets survive the leader (with their locks), and a new leader refuses the
//! old leader's unprepared tickets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use openraft::BasicNode;
use parsec_core::{AgentId, Key, LockMode, ShardId, Ticket, WriteSet};
use parsec_raft::{RaftConfig, RaftNode};
use parsec_shard::ShardEngine;
use parsec_shard::engine::{LockBatch, PrepareBatch, ShardError, TicketState, Vote};
use parsec_shard::lock_table::LockError;
use parsec_shard::state_machine::StateMachine;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct Replica {
    raft: Arc<RaftNode<StateMachine>>,
    engine: ShardEngine,
    _dir: tempfile::TempDir,
}

async fn group() -> BTreeMap<u64, Replica> {
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, listener);
    }
    let members: BTreeMap<u64, BasicNode> = listeners
        .iter()
        .map(|(id, l)| (*id, BasicNode::new(l.local_addr().unwrap().to_string())))
        .collect();
    let mut replicas = BTreeMap::new();
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().unwrap();
        let raft = RaftNode::start(id, dir.path(), StateMachine::new(), RaftConfig::default())
            .await
            .unwrap();
        raft.serve(listener).unwrap();
        let raft = Arc::new(raft);
        let engine = ShardEngine::replicated(ShardId(0), raft.clone(), Duration::from_secs(60));
        replicas.insert(
            id,
            Replica {
                raft,
                engine,
                _dir: dir,
            },
        );
    }
    replicas[&1].raft.initialize(members).await.unwrap();
    replicas
}

/// The replica whose engine serves, once one does.
async fn serving(replicas: &BTreeMap<u64, Replica>) -> u64 {
    let waits = replicas.iter().map(|(id, r)| {
        let id = *id;
        let engine = r.engine.clone();
        Box::pin(async move {
            engine.wait_until_leading().await;
            id
        })
    });
    tokio::time::timeout(WAIT, futures::future::select_all(waits))
        .await
        .expect("a replica serves")
        .0
}

fn key(name: &str) -> Key {
    Bytes::copy_from_slice(name.as_bytes())
}

fn lock(ticket: u64, first: bool, keys: &[&str], mode: LockMode) -> LockBatch {
    LockBatch {
        ticket: Ticket(ticket),
        attempt: 0,
        agent: AgentId(1),
        first,
        locks: keys.iter().map(|k| (key(k), mode)).collect(),
        wait: WAIT,
    }
}

fn prepare(
    ticket: u64,
    writes: &[(&str, &str)],
    lock_count: usize,
    one_phase: bool,
) -> PrepareBatch {
    PrepareBatch {
        ticket: Ticket(ticket),
        attempt: 0,
        agent: AgentId(1),
        writes: writes
            .iter()
            .map(|(k, v)| (key(k), Bytes::copy_from_slice(v.as_bytes())))
            .collect::<WriteSet>(),
        participants: vec![ShardId(0), ShardId(1)],
        lock_count,
        one_phase,
    }
}

async fn shutdown(replicas: BTreeMap<u64, Replica>) {
    for replica in replicas.values() {
        replica.raft.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_serves_and_followers_name_it() {
    let replicas = group().await;
    let leader = serving(&replicas).await;
    let engine = &replicas[&leader].engine;
    engine
        .lock(lock(10, true, &["a"], LockMode::Write))
        .await
        .unwrap();
    assert_eq!(
        engine
            .prepare(prepare(10, &[("a", "1")], 1, true))
            .await
            .unwrap(),
        Vote::Committed
    );
    for (id, replica) in &replicas {
        if *id == leader {
            continue;
        }
        match replica
            .engine
            .lock(lock(11, true, &["a"], LockMode::Read))
            .await
        {
            Err(ShardError::NotLeader {
                leader: Some((named, _)),
            }) => assert_eq!(named, leader),
            other => panic!("follower {id} answered {other:?}"),
        }
        // The commit reached the follower's state through the log.
        let applied = replica.raft.raft().wait(Some(WAIT));
        applied
            .applied_index_at_least(replicas[&leader].raft.applied_index(), "follower applies")
            .await
            .unwrap();
        assert_eq!(
            replica.raft.read(|state| state.get(b"a")),
            Bytes::from_static(b"1")
        );
    }
    shutdown(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prepared_ticket_keeps_its_locks_across_a_failover_and_commits_on_the_new_leader() {
    let mut replicas = group().await;
    let old = serving(&replicas).await;
    let engine = replicas[&old].engine.clone();
    // Ticket 20 prepares a write of "a"; ticket 30 only holds a lock on "b" (unprepared).
    engine
        .lock(lock(20, true, &["a"], LockMode::Write))
        .await
        .unwrap();
    assert_eq!(
        engine
            .prepare(prepare(20, &[("a", "new")], 1, false))
            .await
            .unwrap(),
        Vote::Prepared
    );
    engine
        .lock(lock(30, true, &["b"], LockMode::Write))
        .await
        .unwrap();

    let stopped = replicas.remove(&old).unwrap();
    stopped.raft.shutdown().await;
    let new = serving(&replicas).await;
    assert_ne!(new, old);
    let engine = replicas[&new].engine.clone();

    // The prepared record came back with its write lock: a younger reader of "a" waits.
    assert_eq!(
        engine.ticket(Ticket(20)).unwrap().map(|t| t.state),
        Some(TicketState::Prepared)
    );
    let reader = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.lock(lock(40, true, &["a"], LockMode::Read)).await })
    };
    // The unprepared ticket's locks died with the old leader: its next request is refused and
    // "b" is free for others.
    assert!(matches!(
        engine.lock(lock(30, false, &["c"], LockMode::Write)).await,
        Err(ShardError::Lock(LockError::UnknownTicket(_)))
    ));
    engine
        .lock(lock(50, true, &["b"], LockMode::Write))
        .await
        .unwrap();
    assert!(!reader.is_finished(), "a reader got past a prepared writer");

    engine.commit(Ticket(20)).await.unwrap();
    let values = tokio::time::timeout(WAIT, reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(values, vec![Bytes::from_static(b"new")]);
    assert_eq!(
        engine.ticket(Ticket(20)).unwrap().map(|t| t.state),
        Some(TicketState::Committed)
    );
    engine.finish(Ticket(20)).await.unwrap();
    assert_eq!(engine.ticket(Ticket(20)).unwrap(), None);
    shutdown(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_rollback_survives_a_failover_and_refuses_the_late_prepare() {
    let mut replicas = group().await;
    let old = serving(&replicas).await;
    let engine = replicas[&old].engine.clone();
    // Recovery fences ticket 60 (never seen here) on the old leader.
    engine.rollback(Ticket(60), 0, true).await.unwrap();
    let stopped = replicas.remove(&old).unwrap();
    stopped.raft.shutdown().await;
    let new = serving(&replicas).await;
    let engine = replicas[&new].engine.clone();
    // A late request of that attempt starts over on the new leader and tries to prepare.
    engine
        .lock(lock(60, true, &["z"], LockMode::Write))
        .await
        .unwrap();
    let refused = engine
        .prepare(prepare(60, &[("z", "late")], 1, false))
        .await;
    assert!(
        matches!(
            refused,
            Err(ShardError::Apply(
                parsec_shard::state_machine::ApplyError::Fenced { .. }
            ))
        ),
        "{refused:?}"
    );
    // Nothing was written and the key is free again.
    assert_eq!(engine.read(&[key("z")]).unwrap(), vec![Bytes::new()]);
    engine
        .lock(lock(61, true, &["z"], LockMode::Write))
        .await
        .unwrap();
    shutdown(replicas).await;
}
