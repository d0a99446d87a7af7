//! The shard engine: waiting requests, deadlines, abandonment and validation.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bytes::Bytes;
use parsec_core::{AgentId, LockMode, ShardId, Ticket, WriteSet};
use parsec_shard::engine::{LockBatch, PrepareBatch, ShardEngine, ShardError, Vote};
use parsec_shard::lock_table::LockError;
use std::time::Duration;

fn batch(ticket: u64, key: &'static str, mode: LockMode, wait_ms: u64) -> LockBatch {
    LockBatch {
        ticket: Ticket(ticket),
        attempt: 0,
        agent: AgentId(1),
        first: true,
        locks: vec![(Bytes::from_static(key.as_bytes()), mode)],
        wait: Duration::from_millis(wait_ms),
    }
}

fn commit_one_phase(ticket: u64, key: &'static str, value: &'static str) -> PrepareBatch {
    PrepareBatch {
        ticket: Ticket(ticket),
        attempt: 0,
        agent: AgentId(1),
        writes: WriteSet::from([(
            Bytes::from_static(key.as_bytes()),
            Bytes::from_static(value.as_bytes()),
        )]),
        participants: vec![ShardId(0)],
        lock_count: 1,
        one_phase: true,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lock_wait_that_times_out_releases_the_ticket() {
    let shard = ShardEngine::new(ShardId(0));
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    // Ticket 2 is younger: it waits for ticket 1, then gives up.
    let error = shard
        .lock(batch(2, "k", LockMode::Write, 100))
        .await
        .unwrap_err();
    assert!(matches!(error, ShardError::LockTimeout { .. }), "{error}");
    let status = shard.status();
    assert_eq!(
        (status.waiting_requests, status.tickets),
        (0, 1),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_abandoned_waiting_request_is_rolled_back() {
    let shard = ShardEngine::new(ShardId(0));
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    let waiting = shard.lock(batch(2, "k", LockMode::Write, 60_000));
    // The caller gives up (deadline, disconnect): dropping the future must not leave ticket 2
    // queued behind ticket 1, holding up everyone behind it.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), waiting)
            .await
            .is_err()
    );
    let status = shard.status();
    assert_eq!(
        (status.waiting_requests, status.tickets),
        (0, 1),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_waiting_younger_ticket_learns_it_was_wounded() {
    let shard = ShardEngine::new(ShardId(0));
    // Ticket 5 holds a, ticket 9 holds b and waits for a.
    shard
        .lock(batch(5, "a", LockMode::Write, 1_000))
        .await
        .unwrap();
    shard
        .lock(batch(9, "b", LockMode::Write, 1_000))
        .await
        .unwrap();
    let young = tokio::spawn({
        let shard = shard.clone();
        async move {
            let mut request = batch(9, "a", LockMode::Write, 10_000);
            request.first = false;
            shard.lock(request).await
        }
    });
    while shard.status().waiting_requests == 0 {
        tokio::task::yield_now().await;
    }
    // Ticket 5 asks for b: it wounds ticket 9, whose waiting request fails at once.
    let mut old = batch(5, "b", LockMode::Write, 1_000);
    old.first = false;
    shard.lock(old).await.unwrap();
    let error = young.await.unwrap().unwrap_err();
    match error {
        ShardError::Lock(LockError::Wounded { wound, .. }) => {
            assert_eq!(wound.by, Ticket(5));
            assert_eq!(wound.key, Bytes::from_static(b"b"));
        }
        other => panic!("expected a wound, got {other}"),
    }
}

#[tokio::test]
async fn one_phase_commit_applies_and_releases() {
    let shard = ShardEngine::new(ShardId(0));
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    assert_eq!(
        shard.prepare(commit_one_phase(1, "k", "v")).await.unwrap(),
        Vote::Committed
    );
    assert_eq!(
        shard.read(&[Bytes::from_static(b"k")]).unwrap(),
        vec![Bytes::from_static(b"v")]
    );
    let status = shard.status();
    assert_eq!((status.locked_keys, status.tickets), (0, 0));
    // Rolling back what committed in one phase changes nothing.
    shard.rollback(Ticket(1), 0, false).await.unwrap();
    assert_eq!(
        shard.read(&[Bytes::from_static(b"k")]).unwrap(),
        vec![Bytes::from_static(b"v")]
    );
}

#[tokio::test]
async fn prepare_refuses_writes_without_locks_and_changes_nothing() {
    let shard = ShardEngine::new(ShardId(0));
    shard
        .lock(batch(1, "k", LockMode::Read, 1_000))
        .await
        .unwrap();
    let error = shard
        .prepare(commit_one_phase(1, "k", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ShardError::Lock(LockError::WriteLockNotHeld { .. })),
        "{error}"
    );
    assert_eq!(
        shard.read(&[Bytes::from_static(b"k")]).unwrap(),
        vec![Bytes::new()]
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_before_touching_state() {
    let shard = ShardEngine::new(ShardId(0));
    let mut empty_key = batch(1, "k", LockMode::Write, 1_000);
    empty_key.locks[0].0 = Bytes::new();
    assert!(matches!(
        shard.lock(empty_key).await,
        Err(ShardError::InvalidArgument(_))
    ));
    let mut huge = batch(1, "k", LockMode::Write, 1_000);
    huge.locks[0].0 = Bytes::from(vec![b'x'; 1 << 16]);
    assert!(matches!(
        shard.lock(huge).await,
        Err(ShardError::InvalidArgument(_))
    ));
    assert_eq!(shard.status().tickets, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dead_agents_unprepared_tickets_are_rolled_back_when_its_lease_lapses() {
    let shard = ShardEngine::with_lease(ShardId(0), Duration::from_secs(3));
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    assert!(
        shard.sweep_expired().is_empty(),
        "the lease is still running"
    );
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(
        shard.sweep_expired().is_empty(),
        "nothing prepared to resolve"
    );
    let status = shard.status();
    assert_eq!((status.locked_keys, status.tickets), (0, 0), "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn lapsed_leases_of_agents_with_nothing_here_are_forgotten() {
    let shard = ShardEngine::with_lease(ShardId(0), Duration::from_secs(3));
    // A flood of heartbeats from agent ids that never do anything else.
    for agent in 0..1_000 {
        shard
            .heartbeat(AgentId(agent), 1, Duration::from_secs(3))
            .unwrap();
    }
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    shard.sweep_expired();
    assert_eq!(shard.leases(), 1_000, "live leases are kept");
    tokio::time::advance(Duration::from_secs(4)).await;
    shard.sweep_expired();
    assert_eq!(shard.leases(), 1, "only the agent of ticket 1 is left");
    tokio::time::advance(Duration::from_secs(4)).await;
    shard.sweep_expired();
    assert_eq!(
        shard.leases(),
        0,
        "its ticket was rolled back: nothing left"
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_lease_alive_and_a_restart_ends_it() {
    let shard = ShardEngine::with_lease(ShardId(0), Duration::from_secs(3));
    shard
        .heartbeat(AgentId(1), 11, Duration::from_secs(3))
        .unwrap();
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(2)).await;
        shard
            .heartbeat(AgentId(1), 11, Duration::from_secs(3))
            .unwrap();
        shard.sweep_expired();
    }
    assert_eq!(shard.status().tickets, 1, "renewed leases keep tickets");
    // The agent comes back as a new process: its old tickets go at once.
    shard
        .heartbeat(AgentId(1), 12, Duration::from_secs(3))
        .unwrap();
    assert_eq!(shard.status().tickets, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dead_agents_prepared_ticket_is_left_for_recovery() {
    let shard = ShardEngine::with_lease(ShardId(0), Duration::from_secs(3));
    shard
        .lock(batch(1, "k", LockMode::Write, 1_000))
        .await
        .unwrap();
    let mut prepare = commit_one_phase(1, "k", "v");
    prepare.one_phase = false;
    prepare.participants = vec![ShardId(0), ShardId(1)];
    assert_eq!(shard.prepare(prepare).await.unwrap(), Vote::Prepared);
    tokio::time::advance(Duration::from_secs(4)).await;
    let orphans = shard.sweep_expired();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].participants, vec![ShardId(0), ShardId(1)]);
    assert!(!orphans[0].committed);
    // Still prepared: its lock holds until recovery decides.
    assert_eq!(shard.status().locked_keys, 1);
}
