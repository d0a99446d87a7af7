//! The write-ahead log under crashes and damage: torn tails are cut off, any other damage stops
//! the open with an error naming the file; truncate, purge, votes and segment roll-over survive
//! a reopen.

use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
mod common;

use common::log_id;
use openraft::{EntryPayload, RaftLogReader, Vote};
use parsec_raft::LogStore;
use parsec_raft::log_store::{LEGACY_LOG_FILE, LogStoreError, WAL_DIR};
use parsec_raft::types::Entry;

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(parsec_raft::Command(vec![
            format!("set k{index} {}", "v".repeat(100)).into_bytes(),
        ])),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| entry(term, i)).collect()
}

/// The segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(WAL_DIR))
        .expect("listing the WAL directory")
        .map(|e| e.expect("listing the WAL directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..)
        .await
        .expect("reading entries")
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

async fn last_log_index(log: &mut LogStore) -> Option<u64> {
    log.get_log_state()
        .await
        .expect("reading the log state")
        .last_log_id
        .map(|l| l.index)
}

/// Writes 1..=5 and 6..=10 as two appends (two records) and closes the log.
async fn two_records(dir: &Path) -> u64 {
    let mut log = LogStore::open(dir).expect("opening the log");
    log.blocking_append(entries(1, 1..=5))
        .await
        .expect("appending");
    let first_end = std::fs::metadata(&segments(dir)[0])
        .expect("segment size")
        .len();
    log.blocking_append(entries(1, 6..=10))
        .await
        .expect("appending");
    first_end
}

fn open_err(dir: &Path) -> String {
    match LogStore::open(dir) {
        Ok(_) => panic!("opened a damaged log"),
        Err(e) => e.to_string(),
    }
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("reading a segment");
    bytes[at as usize] ^= 0x55;
    std::fs::write(path, bytes).expect("writing a segment");
}

#[tokio::test]
async fn torn_tail_is_cut_off() {
    for cut in [1, 7, 100] {
        let dir = tempfile::tempdir().unwrap();
        two_records(dir.path()).await;
        let segment = &segments(dir.path())[0];
        let len = std::fs::metadata(segment).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(segment)
            .unwrap()
            .set_len(len - cut)
            .unwrap();

        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(
            indexes(&mut log).await,
            (1..=5).collect::<Vec<_>>(),
            "cut {cut}"
        );
        // Appends go after the last complete record, and survive the next reopen.
        log.blocking_append(entries(2, 6..=7)).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, (1..=7).collect::<Vec<_>>());
        let six = log.try_get_log_entries(6..7).await.unwrap();
        assert_eq!(six, vec![entry(2, 6)]);
    }
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_off() {
    for garbage in [
        vec![0u8; 4096],
        vec![0xab; 13],
        b"\x05\0\0\0garbage".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        two_records(dir.path()).await;
        let segment = &segments(dir.path())[0];
        let len = std::fs::metadata(segment).unwrap().len();
        let mut bytes = std::fs::read(segment).unwrap();
        bytes.extend_from_slice(&garbage);
        std::fs::write(segment, bytes).unwrap();

        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
        drop(log);
        assert_eq!(std::fs::metadata(segment).unwrap().len(), len);
    }
}

#[tokio::test]
async fn damage_before_a_valid_record_is_an_error() {
    // A flipped bit in the payload, then in the length, of the first of two records: the
    // second record is intact, so this is no torn write.
    for at in [40, 21] {
        let dir = tempfile::tempdir().unwrap();
        two_records(dir.path()).await;
        let segment = &segments(dir.path())[0];
        flip_byte(segment, at);
        let err = open_err(dir.path());
        let name = segment.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains("corrupt"), "{err}");
        assert!(err.contains(&format!("byte {}", 20)), "{err}");
    }
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = segmented_log(dir.path()).await;
    assert!(files.len() >= 3, "{files:?}");
    let sealed = &files[1];
    let len = std::fs::metadata(sealed).unwrap().len();
    flip_byte(sealed, len / 2);
    let err = open_err(dir.path());
    let name = sealed.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("corrupt"), "{err}");

    // Even at the very end of a sealed segment, which would be a torn tail in the last one.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with_segment_size(dir.path(), 1024).unwrap();
        for b in 0..10 {
            log.blocking_append(entries(1, b * 4 + 1..=b * 4 + 4))
                .await
                .unwrap();
        }
    }
    let sealed = &segments(dir.path())[0];
    let len = std::fs::metadata(sealed).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(sealed)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains(sealed.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn segments_roll_over_and_read_across() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<u64> = (1..=200).collect();
    {
        let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
        for b in 0..25 {
            log.blocking_append(entries(1, b * 8 + 1..=b * 8 + 8))
                .await
                .unwrap();
        }
        assert_eq!(indexes(&mut log).await, all);
    }
    let files = segments(dir.path());
    assert!(files.len() >= 5, "{files:?}");
    assert!(files[0].ends_with("wal/00000000000000000001.log"));

    let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
    assert_eq!(indexes(&mut log).await, all);
    let middle = log.try_get_log_entries(37..=151).await.unwrap();
    assert_eq!(middle, entries(1, 37..=151));
    // Appends continue in the last segment (or the next one).
    log.blocking_append(entries(1, 201..=208)).await.unwrap();
    drop(log);
    let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
    assert_eq!(last_log_index(&mut log).await, Some(208));
}

#[tokio::test]
async fn truncate_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open_with_segment_size(dir.path(), 1024).unwrap();
        log.blocking_append(entries(1, 1..=20)).await.unwrap();
        log.truncate(log_id(1, 8)).await.unwrap();
        assert_eq!(last_log_index(&mut log).await, Some(7));
    }
    let mut log = LogStore::open_with_segment_size(dir.path(), 1024).unwrap();
    assert_eq!(indexes(&mut log).await, (1..=7).collect::<Vec<_>>());
    // A new leader's entries replace the truncated ones, across a segment boundary.
    log.blocking_append(entries(2, 8..=12)).await.unwrap();
    log.truncate(log_id(2, 11)).await.unwrap();
    drop(log);
    let mut log = LogStore::open_with_segment_size(dir.path(), 1024).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 10)));
    let tail = log.try_get_log_entries(6..).await.unwrap();
    assert_eq!(tail, [entries(1, 6..=7), entries(2, 8..=10)].concat());
}

#[tokio::test]
async fn purge_deletes_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let committed = log_id(1, 150);
    {
        let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
        for b in 0..25 {
            log.blocking_append(entries(1, b * 8 + 1..=b * 8 + 8))
                .await
                .unwrap();
        }
        log.save_committed(Some(committed)).await.unwrap();
        let before = segments(dir.path());
        log.purge(log_id(1, 120)).await.unwrap();
        let after = segments(dir.path());
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        // Only the oldest went, and the segment holding 121 is still there.
        assert_eq!(after[..], before[before.len() - after.len()..]);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 120)));
        assert_eq!(state.last_log_id, Some(log_id(1, 200)));
    }
    let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 120)));
    assert_eq!(state.last_log_id, Some(log_id(1, 200)));
    assert_eq!(indexes(&mut log).await, (121..=200).collect::<Vec<_>>());
    // The committed id rode along with the purge record.
    assert_eq!(log.read_committed().await.unwrap(), Some(committed));

    // Purging everything keeps one (the active) segment and the last purged id.
    log.purge(log_id(1, 200)).await.unwrap();
    for b in 25..40 {
        log.blocking_append(entries(1, b * 8 + 1..=b * 8 + 8))
            .await
            .unwrap();
    }
    log.purge(log_id(1, 310)).await.unwrap();
    drop(log);
    let mut log = LogStore::open_with_segment_size(dir.path(), 2048).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 310)));
    assert_eq!(indexes(&mut log).await, (311..=320).collect::<Vec<_>>());
    assert_eq!(log.read_committed().await.unwrap(), Some(committed));
    assert!(
        segments(dir.path()).len() <= 3,
        "{:?}",
        segments(dir.path())
    );
}

#[tokio::test]
async fn vote_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), None);
        log.save_vote(&Vote::new(1, 2)).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 3))
    );
    assert!(!dir.path().join(WAL_DIR).join("meta.tmp").exists());
}

#[tokio::test]
async fn committed_never_beyond_the_recovered_log() {
    let dir = tempfile::tempdir().unwrap();
    let first_end = two_records(dir.path()).await;
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_committed(Some(log_id(1, 9))).await.unwrap();
        // The vote makes the committed id durable (meta file and log).
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 9)));
    drop(log);
    // Lose everything after the first record (as a disk that lied about fsync would).
    let segment = &segments(dir.path())[0];
    std::fs::File::options()
        .write(true)
        .open(segment)
        .unwrap()
        .set_len(first_end + 3)
        .unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(last_log_index(&mut log).await, Some(5));
    assert_eq!(log.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn segment_torn_at_creation_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    two_records(dir.path()).await;
    let next = dir.path().join(WAL_DIR).join("00000000000000000002.log");
    std::fs::write(&next, b"PSCW").unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
    log.blocking_append(entries(1, 11..=11)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(last_log_index(&mut log).await, Some(11));

    // With data behind it, a bad header is damage.
    drop(log);
    flip_byte(&next, 2);
    let err = open_err(dir.path());
    assert!(err.contains("00000000000000000002.log"), "{err}");
}

#[tokio::test]
async fn a_missing_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = segmented_log(dir.path()).await;
    std::fs::remove_file(&files[1]).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains(files[1].file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
}

#[tokio::test]
async fn old_redb_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LEGACY_LOG_FILE), b"redb").unwrap();
    match LogStore::open(dir.path()) {
        Err(e @ LogStoreError::LegacyLog { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("older version") && msg.contains("raft.redb"),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a data directory with an old log"),
    }
    assert!(!dir.path().join(WAL_DIR).exists());
}

#[tokio::test]
async fn one_process_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(dir.path()).unwrap();
    // flock locks belong to the open file description, so a second open conflicts even here.
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(LogStoreError::Locked { .. })
    ));
    drop(log);
    LogStore::open(dir.path()).unwrap();
}

/// A log of 40 entries in 1 KiB segments (several of them, closed); returns the segment files.
async fn segmented_log(dir: &Path) -> Vec<PathBuf> {
    {
        let mut log = LogStore::open_with_segment_size(dir, 1024).expect("opening the log");
        for b in 0..10 {
            log.blocking_append(entries(1, b * 4 + 1..=b * 4 + 4))
                .await
                .expect("appending");
        }
    }
    segments(dir)
}
