//! Microbenchmarks of the shard lock table: one transaction's grant/release cycle without
//! contention, and two tickets contending for one key in both wound-wait orders.
//!
//! Every iteration starts and ends with an empty table, so iterations are independent and the
//! figures are the table's own cost per cycle, not that of a table growing with the run.
#![allow(clippy::unwrap_used)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use parsec_core::{AgentId, Key, LockMode, Ticket};
use parsec_shard::lock_table::{Event, LockTable};
use std::hint::black_box;
use std::time::Duration;

const AGENT: AgentId = AgentId(1);
/// Keys a typical transaction touches (sender, recipient, fee recipient, two storage slots).
const KEYS_PER_TX: usize = 5;

/// Short runs: the whole file takes about 15 s (the machine is shared).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// Keys shaped like the EVM's storage keys (tag ‖ 32-byte hash), so hashing costs what it
/// costs in production.
fn keys(count: usize) -> Vec<Key> {
    (0..count)
        .map(|i| {
            let mut key = vec![0x03; 33];
            key[1..9].copy_from_slice(&(i as u64).to_be_bytes());
            Key::from(key)
        })
        .collect()
}

fn requests(keys: &[Key], mode: LockMode) -> Vec<(Key, LockMode)> {
    keys.iter().map(|key| (key.clone(), mode)).collect()
}

/// Locks then releases `requests` for a fresh ticket per iteration.
fn grant_release(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    requests: &[(Key, LockMode)],
) {
    let mut table = LockTable::new();
    let mut events = Vec::with_capacity(2 * KEYS_PER_TX);
    // Every request is granted at once, and the release leaves nothing behind.
    table
        .lock(Ticket(1), 0, AGENT, true, requests, &mut events)
        .unwrap();
    assert_eq!(events.len(), requests.len());
    assert!(events.iter().all(|e| matches!(e, Event::Granted { .. })));
    table.release(Ticket(1), &mut events);
    assert_eq!(table.locked_keys(), 0);

    let mut next_ticket = 2u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            let ticket = Ticket(next_ticket);
            next_ticket += 1;
            events.clear();
            table
                .lock(ticket, 0, AGENT, true, black_box(requests), &mut events)
                .unwrap();
            black_box(table.release(ticket, &mut events));
        })
    });
    assert_eq!(table.locked_keys(), 0);
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_table");
    let keys = keys(KEYS_PER_TX);
    grant_release(
        &mut group,
        "write_5_keys_grant_release",
        &requests(&keys, LockMode::Write),
    );
    grant_release(
        &mut group,
        "read_5_keys_grant_release",
        &requests(&keys, LockMode::Read),
    );

    // The full life of a committing transaction: lock, prepare (lock point), release.
    let write = requests(&keys, LockMode::Write);
    let mut table = LockTable::new();
    let mut events = Vec::with_capacity(2 * KEYS_PER_TX);
    let mut next_ticket = 1u64;
    group.bench_function("write_5_keys_lock_prepare_release", |b| {
        b.iter(|| {
            let ticket = Ticket(next_ticket);
            next_ticket += 1;
            events.clear();
            table
                .lock(ticket, 0, AGENT, true, black_box(&write), &mut events)
                .unwrap();
            table.prepare(ticket, 0, &keys, KEYS_PER_TX).unwrap();
            black_box(table.release(ticket, &mut events));
        })
    });
    group.finish();
}

/// Two tickets, one key. Asserts once, before measuring, that each case takes the wound-wait
/// path its name says.
fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_table");
    let key = keys(1);
    let write = requests(&key, LockMode::Write);
    let mut table = LockTable::new();
    let mut events = Vec::with_capacity(4);

    // The younger ticket asks for a key the older one holds: it waits, and is granted the key
    // when the older one releases it.
    let younger_waits = |table: &mut LockTable, events: &mut Vec<Event>, older: Ticket| {
        let younger = Ticket(older.0 + 1);
        table.lock(older, 0, AGENT, true, &write, events).unwrap();
        table.lock(younger, 0, AGENT, true, &write, events).unwrap();
        table.release(older, events);
        table.release(younger, events);
    };
    younger_waits(&mut table, &mut events, Ticket(1));
    assert!(matches!(
        events.as_slice(),
        [
            Event::Granted {
                ticket: Ticket(1),
                ..
            },
            Event::Granted {
                ticket: Ticket(2),
                ..
            }
        ]
    ));
    let mut next_ticket = 3u64;
    group.bench_function("contended_younger_waits_for_older", |b| {
        b.iter(|| {
            events.clear();
            younger_waits(&mut table, &mut events, Ticket(next_ticket));
            next_ticket += 2;
            black_box(&events);
        })
    });

    // The older ticket asks for a key the younger one holds: it wounds the younger one (which
    // loses the key at once) and takes it; then both are forgotten.
    let older_wounds = |table: &mut LockTable, events: &mut Vec<Event>, older: Ticket| {
        let younger = Ticket(older.0 + 1);
        table.lock(younger, 0, AGENT, true, &write, events).unwrap();
        table.lock(older, 0, AGENT, true, &write, events).unwrap();
        table.release(older, events);
        table.release(younger, events);
    };
    events.clear();
    older_wounds(&mut table, &mut events, Ticket(next_ticket));
    assert!(matches!(
        events.as_slice(),
        [
            Event::Granted { .. },
            Event::Wounded { .. },
            Event::Granted { .. }
        ]
    ));
    next_ticket += 2;
    group.bench_function("contended_older_wounds_younger", |b| {
        b.iter(|| {
            events.clear();
            older_wounds(&mut table, &mut events, Ticket(next_ticket));
            next_ticket += 2;
            black_box(&events);
        })
    });
    group.finish();
    assert_eq!(table.locked_keys(), 0);
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended, contended
}
criterion_main!(benches);
