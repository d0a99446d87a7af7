//! The log store: openraft's storage test suite, and durability across reopen.

mod common;

use std::collections::BTreeSet;

use common::{Kv, log_id};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, Vote};
use parsec_raft::types::{Entry, StorageError};
use parsec_raft::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine<Kv>, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine<Kv>), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path()).expect("open log");
        let sm = StateMachine::open(dir.path(), Kv::default()).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite: {e}");
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(parsec_raft::Command(vec![
            format!("set k{index} v").into_bytes(),
        ])),
    }
}

#[tokio::test]
async fn log_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 1);
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&vote).await.unwrap();
        let mut entries = vec![Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                None,
            )),
        }];
        entries.extend((1..=20).map(|i| entry(2, i)));
        log.blocking_append(entries).await.unwrap();
        log.purge(log_id(2, 5)).await.unwrap();
        log.truncate(log_id(2, 16)).await.unwrap();
        log.save_committed(Some(log_id(2, 12))).await.unwrap();
        // A later fsynced write makes the committed id durable too.
        log.save_vote(&vote).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 15)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 12)));
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (6..=15).collect::<Vec<_>>());
    assert_eq!(entries[0], entry(2, 6));

    // Purging everything keeps the last purged id as the last log id.
    log.purge(log_id(2, 15)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 15)));
    assert_eq!(state.last_log_id, Some(log_id(2, 15)));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn state_machine_restores_from_snapshot_file() {
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachine::open(dir.path(), Kv::default()).unwrap();
        let res = sm.apply((1..=5).map(|i| entry(1, i))).await.unwrap();
        assert_eq!(res.len(), 5);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 5)));
    }
    let mut sm = StateMachine::open(dir.path(), Kv::default()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 5)));
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
    assert!(sm.snapshot_size() > 0);
}
