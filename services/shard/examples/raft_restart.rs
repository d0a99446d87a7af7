//! How long a shard replica takes to restart after a long life: writes N one-phase commits (each
//! a payment's two account updates) through a single-node Raft group on disk, with snapshots and
//! log compaction as configured, then restarts the node and times it until it has applied its
//! whole log again.
//!
//! `cargo run --release -p parsec-shard --example raft_restart -- [transactions] [snapshot_every]`
//! (defaults: 1,000,000 and 10,000).

use bytes::Bytes;
use futures::StreamExt;
use openraft::{BasicNode, SnapshotPolicy};
use parsec_core::{Ticket, WriteSet};
use parsec_raft::{RaftConfig, RaftNode};
use parsec_shard::state_machine::{Command, StateMachine, encode_command};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 512;
const ACCOUNTS: u64 = 100_000;

fn payment(i: u64) -> Vec<u8> {
    let account = |n: u64| Bytes::from(format!("account_{:08}", n % ACCOUNTS));
    let balance = |n: u64| Bytes::copy_from_slice(&n.to_le_bytes()[..]);
    let writes: WriteSet = [
        (account(i), balance(i)),
        (account(i * 7 + 1), balance(i + 1)),
    ]
    .into_iter()
    .collect();
    encode_command(&Command::CommitOnePhase {
        ticket: Ticket(i + 1),
        attempt: 0,
        writes,
    })
}

fn config(snapshot_every: u64) -> RaftConfig {
    let mut config = RaftConfig::default();
    config.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(snapshot_every);
    config.raft.max_in_snapshot_log_to_keep = snapshot_every / 2;
    config.write_timeout = Duration::from_secs(60);
    config
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let transactions: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let snapshot_every: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dir = tempfile::tempdir()?;

    let node = RaftNode::start(1, dir.path(), StateMachine::new(), config(snapshot_every)).await?;
    node.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
        .await?;
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut writes = futures::stream::iter(0..transactions)
        .map(|i| node.write(payment(i)))
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0u64;
    while let Some(result) = writes.next().await {
        result?;
        done += 1;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {done} / {transactions} written");
            last_report = Instant::now();
        }
    }
    drop(writes);
    let elapsed = started.elapsed();
    let status = node.status();
    let keys = node.read(|state| state.key_count());
    println!(
        "wrote {transactions} one-phase commits in {elapsed:.1?}: {:.0} tx/s, {:.3} fsyncs per tx; \
         {keys} keys; last log index {:?}, snapshot at {:?} ({} bytes), log purged to {:?}",
        transactions as f64 / elapsed.as_secs_f64(),
        status.log_syncs as f64 / transactions as f64,
        status.last_log_index,
        status.snapshot_index,
        status.snapshot_size_bytes,
        status.purged_index,
    );
    let last = status.last_log_index;
    node.shutdown().await;
    println!("data dir: {} bytes", dir_size(dir.path()));

    let restart = Instant::now();
    let node = RaftNode::start(1, dir.path(), StateMachine::new(), config(snapshot_every)).await?;
    let opened = restart.elapsed();
    node.raft()
        .wait(Some(Duration::from_secs(600)))
        .applied_index_at_least(last, "replay the log")
        .await?;
    let restarted = restart.elapsed();
    let keys_after = node.read(|state| state.key_count());
    println!(
        "restart: storage opened and snapshot loaded in {opened:.1?}, whole log applied in \
         {restarted:.1?} ({keys_after} keys)"
    );
    assert_eq!(keys, keys_after, "state differs after the restart");
    node.shutdown().await;
    Ok(())
}
