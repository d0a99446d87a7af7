//! openraft's `RaftLogStorage` over the write-ahead log of [`crate::wal`].
//!
//! The log lives in memory (reads never touch the disk) and in the WAL; one writer thread makes
//! every change durable in the order openraft issued it. `append` returns once the entries are
//! readable and the writer reports them flushed (one `write` + `fdatasync` per record, shared by
//! whatever appends were queued: the group commit). Votes, truncates and purges return once
//! durable; the committed id is written along with the next record.

use std::borrow::Cow;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::wal::{self, LogMemory, Msg, Op, Recovered, SyncMetrics, Writer, encode_op};
pub use crate::wal::{DEFAULT_SEGMENT_BYTES, LEGACY_LOG_FILE, LogStoreError, WAL_DIR};

/// Read-only view of the last committed log id, detached from the log (it does not keep the
/// log open).
#[derive(Clone)]
pub struct CommittedHandle(
    Arc<Mutex<Option<LogId>>>,
    Arc<AtomicU64>,
    std::sync::Weak<Shared>,
);

impl CommittedHandle {
    /// Last committed log id known to this node.
    pub fn get(&self) -> Option<LogId> {
        *self.0.lock()
    }

    /// The id of the local entry at `index`, while the log is open and holds it (or it is the
    /// last purged one).
    pub(crate) fn log_id_at(&self, index: u64) -> Option<LogId> {
        let shared = self.2.upgrade()?;
        let state = shared.state.read();
        let purged = state.log.last_purged().filter(|p| p.index == index);
        state.log.get(index).map(|entry| entry.log_id).or(purged)
    }

    /// fsyncs of the log since this node started (appends, truncates, purges, votes).
    pub fn syncs(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

/// The histogram of durable log writes, set by [`crate::metrics`] when the node is given its
/// group label (the log is opened before the node knows it).
pub(crate) type FsyncHistogram = Arc<std::sync::OnceLock<prometheus::Histogram>>;

/// Alive as long as the log's files are open (see [`LogStore::open_watch`]).
pub(crate) struct OpenToken;

/// Durable Raft log and vote. Cheap to clone: clones share the log (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    /// Last committed log id seen by `save_committed`, for status reports.
    committed: Arc<Mutex<Option<LogId>>>,
    metrics: SyncMetrics,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Dropped after the writer thread is joined, i.e. once the files are closed.
    open: Arc<OpenToken>,
}

struct State {
    log: LogMemory,
    vote: Option<Vote>,
    /// Messages are sent while `state` is locked for writing: the WAL sees the changes in the
    /// order the in-memory log got them.
    writer: Option<mpsc::Sender<Msg>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel stops the writer once it has written what is queued; joining it
        // means the files are closed and the lock released when the last clone is gone, so the
        // log can be reopened at once. Waits for at most the write in progress.
        self.state.get_mut().writer = None;
        if let Some(thread) = self.writer.take()
            && thread.join().is_err()
        {
            tracing::error!("raft log writer thread panicked");
        }
    }
}

fn write_err(e: LogStoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    /// Opens (or creates) the log in `dir/wal`, recovering it after a crash.
    pub fn open(dir: &Path) -> Result<Self, LogStoreError> {
        Self::open_with_segment_size(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// [`Self::open`] with segments sealed at `segment_bytes` (small in tests, to roll often).
    pub fn open_with_segment_size(dir: &Path, segment_bytes: u64) -> Result<Self, LogStoreError> {
        let Recovered {
            log,
            vote,
            committed,
            durable,
            files,
        } = wal::recover(dir)?;
        let metrics = SyncMetrics::default();
        let writer = Writer::new(files, durable, segment_bytes, metrics.clone());
        let (sender, messages) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-wal".to_string())
            .spawn(move || writer.run(messages))
            .map_err(|source| LogStoreError::Io {
                action: "starting the writer thread for",
                path: dir.join(WAL_DIR),
                source,
            })?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                state: RwLock::new(State {
                    log,
                    vote,
                    writer: Some(sender),
                }),
                committed: Arc::new(Mutex::new(committed)),
                metrics,
                writer: Some(thread),
                open: Arc::new(OpenToken),
            }),
        })
    }

    /// Last committed log id known to this node (may lag after a restart until the leader speaks).
    pub fn committed(&self) -> Option<LogId> {
        *self.shared.committed.lock()
    }

    pub(crate) fn fsync_histogram(&self) -> FsyncHistogram {
        self.shared.metrics.seconds.clone()
    }

    /// A handle to [`Self::committed`] that does not keep the log open.
    pub fn committed_handle(&self) -> CommittedHandle {
        CommittedHandle(
            self.shared.committed.clone(),
            self.shared.metrics.syncs.clone(),
            Arc::downgrade(&self.shared),
        )
    }

    /// Whether some clone of this store is still alive (the log's files are still open).
    pub(crate) fn open_watch(&self) -> std::sync::Weak<OpenToken> {
        Arc::downgrade(&self.shared.open)
    }

    /// Applies a change to the in-memory log and queues `msg` for the writer, atomically.
    fn submit(&self, change: impl FnOnce(&mut LogMemory), msg: Msg) -> Result<(), Msg> {
        let mut state = self.shared.state.write();
        change(&mut state.log);
        match &state.writer {
            Some(writer) => writer.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }

    /// [`Self::submit`], then waits until the writer made the change durable.
    async fn durable(
        &self,
        change: impl FnOnce(&mut LogMemory),
        msg: impl FnOnce(oneshot::Sender<Result<(), LogStoreError>>) -> Msg,
    ) -> Result<(), LogStoreError> {
        let (done, result) = oneshot::channel();
        self.submit(change, msg(done))
            .map_err(|_| LogStoreError::WriterGone)?;
        result.await.map_err(|_| LogStoreError::WriterGone)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.shared.state.read().log.range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.shared.state.read();
        Ok(LogState {
            last_purged_log_id: state.log.last_purged(),
            last_log_id: state.log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.durable(|_| {}, |done| Msg::Vote { vote, done })
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.shared.state.write().vote = Some(vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.state.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.shared.committed.lock() = committed;
        // Not fsynced on its own: a stale `committed` after a crash is only a lower bound, which
        // is safe. It becomes durable with the next record.
        self.submit(|_| {}, Msg::Committed(committed))
            .map_err(|_| write_err(LogStoreError::WriterGone))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(*self.shared.committed.lock())
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut ops = Vec::new();
        for entry in &entries {
            encode_op(&Op::Entry(Cow::Borrowed(entry)), &mut ops).map_err(|source| {
                write_err(LogStoreError::Encode {
                    what: "log entry",
                    source,
                })
            })?;
        }
        let max_index = entries.iter().map(|e| e.log_id.index).max();
        let msg = Msg::Append {
            ops,
            max_index,
            done: callback,
        };
        let change = |log: &mut LogMemory| entries.into_iter().for_each(|e| log.insert(e));
        match self.submit(change, msg) {
            Ok(()) => Ok(()),
            Err(msg) => {
                if let Msg::Append { done, .. } = msg {
                    done.log_io_completed(Err(std::io::Error::other(
                        LogStoreError::WriterGone.to_string(),
                    )));
                }
                Err(write_err(LogStoreError::WriterGone))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log");
        let since = log_id.index;
        self.durable(
            |log| log.truncate(since),
            |done| Msg::Truncate { since, done },
        )
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log");
        self.durable(
            |log| log.purge(log_id),
            |done| Msg::Purge { upto: log_id, done },
        )
        .await
        .map_err(write_err)
    }
}
