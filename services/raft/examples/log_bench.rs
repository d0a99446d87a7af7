//! Append throughput of the durable Raft log: `BATCHES` appends of 8 entries of ~200 bytes each,
//! every append fsynced (openraft's group commit), as a node's log sees them under load.
//!
//! ```text
//! cargo run --release -p parsec-raft --example log_bench -- [DIR] [BATCHES]
//! ```
//!
//! `DIR` must be on the disk under test (default: a temporary directory); `BATCHES` defaults to
//! 20 000. Prints wall time and CPU time (user + system, all threads, `getrusage`) per append.

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use parsec_raft::types::Entry;
use parsec_raft::{Command, LogStore};

const ENTRIES_PER_BATCH: u64 = 8;
const PAYLOAD_BYTES: usize = 200;

fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

fn batch(first: u64) -> Vec<Entry> {
    (first..first + ENTRIES_PER_BATCH)
        .map(|index| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command(vec![vec![(index % 251) as u8; PAYLOAD_BYTES]])),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next();
    let batches: u64 = args
        .next()
        .map(|b| b.parse().expect("BATCHES must be a number"))
        .unwrap_or(20_000);
    let dir = match &base {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut log = LogStore::open(dir.path()).expect("open log");
        let syncs_before = log.committed_handle().syncs();
        let (wall, cpu) = (Instant::now(), cpu_time());
        for b in 0..batches {
            log.blocking_append(batch(1 + b * ENTRIES_PER_BATCH))
                .await
                .expect("append");
        }
        let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
        let syncs = log.committed_handle().syncs() - syncs_before;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / batches as f64;
        println!(
            "{batches} appends x {ENTRIES_PER_BATCH} entries x {PAYLOAD_BYTES} B in {}: \
             {:.1} us wall/append, {:.1} us CPU/append, {syncs} fsyncs counted",
            dir.path().display(),
            per(wall),
            per(cpu),
        );
    });
}
