//! Microbenchmarks of the shard's Raft command codec (postcard): a `Prepare` with the write-set
//! of an ERC-20 transfer (sender account, two balance slots, one more slot), as every prepare
//! goes through the log.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parsec_core::{AgentId, Key, ShardId, Ticket, Value, WriteSet};
use parsec_shard::state_machine::{Command, encode_command};
use std::hint::black_box;
use std::time::Duration;

/// Short runs: the whole file takes about 6 s (the machine is shared).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// A key of `len` bytes starting with the EVM's domain `tag`.
fn key(tag: u8, len: usize, seed: u8) -> Key {
    let mut key = vec![seed; len];
    key[0] = tag;
    Key::from(key)
}

/// Four writes shaped like the EVM's: one account record (tag ‖ 20-byte address, a 12-byte
/// record) and three storage slots (tag ‖ 32-byte hash, a word without leading zeros).
fn prepare_with_4_writes() -> Command {
    let writes: WriteSet = [
        (
            key(0x01, 21, 0xaa),
            Value::from(vec![1, 1, 5, 8, 0x0d, 0xe0, 0xb6, 0xb3, 0xa7, 0x64, 0, 0]),
        ),
        (key(0x03, 33, 0x11), Value::from(vec![0x0f; 12])),
        (key(0x03, 33, 0x22), Value::from(vec![0x01; 3])),
        (key(0x03, 33, 0x33), Value::from(vec![0x7f; 32])),
    ]
    .into_iter()
    .collect();
    Command::Prepare {
        ticket: Ticket(1_700_000_000_123_456_789),
        attempt: 0,
        agent: AgentId(3),
        writes,
        participants: vec![ShardId(0), ShardId(2)],
    }
}

fn prepare_command(c: &mut Criterion) {
    let command = prepare_with_4_writes();
    let encoded = encode_command(&command);
    assert_eq!(
        postcard::from_bytes::<Command>(&encoded).unwrap(),
        command,
        "the command round-trips"
    );

    let mut group = c.benchmark_group("raft_command");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode_prepare_4_writes", |b| {
        b.iter(|| encode_command(black_box(&command)))
    });
    // What every replica does before applying an entry.
    group.bench_function("decode_prepare_4_writes", |b| {
        b.iter(|| postcard::from_bytes::<Command>(black_box(&encoded)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = prepare_command
}
criterion_main!(benches);
