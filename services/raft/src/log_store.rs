//! The durable Raft log on redb: one file `raft.redb` in the node's data directory.
//!
//! Tables: `logs` (index → postcard `Entry`) and `meta` (`vote`, `committed`, `last_purged`).
//! Every write that openraft must find after a crash (entries, vote, truncate, purge) is one write
//! transaction committed with `Durability::Immediate` (fsync). `append` writes the whole batch
//! openraft hands over in one transaction before calling the flush callback: that is the group
//! commit. All redb I/O runs on the blocking pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// Name of the log file inside the data directory.
pub const LOG_FILE: &str = "raft.redb";

/// Failure of the log store, before it is wrapped into openraft's `StorageError`.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
    #[error("blocking storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for LogStoreError {
            fn from(e: $t) -> Self {
                LogStoreError::Redb(e.into())
            }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, LogStoreError> {
    postcard::to_allocvec(value).map_err(|source| LogStoreError::Encode { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, LogStoreError> {
    postcard::from_bytes(bytes).map_err(|source| LogStoreError::Decode { what, source })
}

/// Read-only view of the last committed log id, detached from the database.
#[derive(Clone)]
pub struct CommittedHandle(Arc<Mutex<Option<LogId>>>, Arc<AtomicU64>);

impl CommittedHandle {
    /// Last committed log id known to this node.
    pub fn get(&self) -> Option<LogId> {
        *self.0.lock()
    }

    /// fsyncs of the log since this node started (appends, purges, votes).
    pub fn syncs(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

/// Durable Raft log and vote. Cheap to clone: clones share the database (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Last committed log id seen by `save_committed` (also persisted), for status reports.
    committed: Arc<Mutex<Option<LogId>>>,
    /// fsynced write transactions, for status reports.
    syncs: Arc<AtomicU64>,
    /// Where durable writes report their duration, once the node exports metrics.
    fsync_seconds: FsyncHistogram,
}

/// The histogram of durable log writes, set by [`crate::metrics`] when the node is given its
/// group label (the log is opened before the node knows it).
pub(crate) type FsyncHistogram = Arc<std::sync::OnceLock<prometheus::Histogram>>;

impl LogStore {
    /// Opens (or creates) `raft.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LogStoreError> {
        let db = Database::create(dir.join(LOG_FILE))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(LOGS)?;
            txn.open_table(META)?;
        }
        txn.commit()?;
        let store = LogStore {
            db: Arc::new(db),
            committed: Arc::new(Mutex::new(None)),
            syncs: Arc::default(),
            fsync_seconds: Arc::default(),
        };
        let committed = store.read_meta_blocking::<LogId>(KEY_COMMITTED, "committed log id")?;
        *store.committed.lock() = committed;
        Ok(store)
    }

    /// Last committed log id known to this node (may lag after a restart until the leader speaks).
    pub fn committed(&self) -> Option<LogId> {
        *self.committed.lock()
    }

    /// Counts one fsynced write transaction that started at `started`.
    fn synced(&self, started: std::time::Instant) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Some(histogram) = self.fsync_seconds.get() {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }

    pub(crate) fn fsync_histogram(&self) -> FsyncHistogram {
        self.fsync_seconds.clone()
    }

    /// A handle to [`Self::committed`] that does not keep the database open.
    pub fn committed_handle(&self) -> CommittedHandle {
        CommittedHandle(self.committed.clone(), self.syncs.clone())
    }

    /// Whether some clone of this store is still alive (the database file is still open).
    pub(crate) fn open_watch(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    fn read_meta_blocking<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        match table.get(key)? {
            Some(v) => Ok(Some(decode(what, v.value())?)),
            None => Ok(None),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, LogStoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    async fn read_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_meta_blocking(key, what)).await?
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        what: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), LogStoreError> {
        let bytes = encode(what, value)?;
        let synced = matches!(durability, Durability::Immediate);
        let started = std::time::Instant::now();
        self.blocking(move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(key, bytes.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        if synced {
            self.synced(started);
        }
        Ok(())
    }

    async fn entries(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, LogStoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let mut out = Vec::new();
            for item in table.range::<u64>((start, end))? {
                let (_, v) = item?;
                out.push(decode::<Entry>("log entry", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes the entries with index in `range` and, if given, records `last_purged`, in one
    /// durable transaction.
    async fn delete(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        last_purged: Option<LogId>,
    ) -> Result<(), LogStoreError> {
        let purged = match &last_purged {
            Some(id) => Some(encode("last purged log id", id)?),
            None => None,
        };
        let started = std::time::Instant::now();
        self.blocking(move |db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                if let Some(bytes) = &purged {
                    let mut meta = txn.open_table(META)?;
                    meta.insert(KEY_LAST_PURGED, bytes.as_slice())?;
                }
                let mut logs = txn.open_table(LOGS)?;
                logs.retain_in::<u64, _>((start, end), |_, _| false)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await?;
        self.synced(started);
        Ok(())
    }
}

fn read_err(e: LogStoreError) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: LogStoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self
            .read_meta(KEY_LAST_PURGED, "last purged log id")
            .await
            .map_err(read_err)?;
        let last = self
            .blocking(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOGS)?;
                match table.last()? {
                    Some((_, v)) => Ok(Some(decode::<Entry>("log entry", v.value())?.log_id)),
                    None => Ok(None),
                }
            })
            .await
            .map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, "vote", vote, Durability::Immediate)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, "vote")
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.committed.lock() = committed;
        // Not fsynced on its own: a stale `committed` after a crash is only a lower bound, which
        // is safe. It becomes durable with the next fsynced transaction (the next append).
        self.write_meta(
            KEY_COMMITTED,
            "committed log id",
            &committed,
            Durability::None,
        )
        .await
        .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self
            .read_meta(KEY_COMMITTED, "committed log id")
            .await
            .map_err(read_err)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((
                entry.log_id.index,
                encode("log entry", &entry).map_err(write_err)?,
            ));
        }
        let started = std::time::Instant::now();
        let result = self
            .blocking(move |db| {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                {
                    let mut logs = txn.open_table(LOGS)?;
                    for (index, bytes) in &encoded {
                        logs.insert(*index, bytes.as_slice())?;
                    }
                }
                txn.commit()?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                self.synced(started);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log");
        self.delete(Bound::Included(log_id.index), Bound::Unbounded, None)
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log");
        self.delete(
            Bound::Unbounded,
            Bound::Included(log_id.index),
            Some(log_id),
        )
        .await
        .map_err(write_err)
    }
}
