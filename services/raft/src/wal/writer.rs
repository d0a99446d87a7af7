//! The writer thread: the only code that writes to the WAL once it is open.
//!
//! The store sends it messages in the order openraft issued the operations; it drains whatever
//! is queued, gathers the ops into one record, writes it with one `write` and one `fdatasync`
//! (the group commit: several `append` calls can share one fsync), and only then completes the
//! callbacks and replies. Everything runs in message order, so a completed append implies that
//! every earlier operation is durable too.

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use openraft::storage::LogFlushed;

use super::error::{LogStoreError, io};
use super::meta::{self, Meta};
use super::record::{Op, RecordBuf, encode_op};
use super::segment::{ActiveSegment, sync_dir};
use crate::log_store::FsyncHistogram;
use crate::types::{LogId, TypeConfig, Vote};

/// Records are cut at about this size even if more appends are queued, to bound the buffer.
const MAX_RECORD_BYTES: usize = 4 << 20;

/// Reply to an operation that must be durable before openraft continues.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<(), LogStoreError>>;

/// An operation for the writer.
pub(crate) enum Msg {
    /// Encoded `Op::Entry`s; `done` is called once they are durable.
    Append {
        ops: Vec<u8>,
        max_index: Option<u64>,
        done: LogFlushed<TypeConfig>,
    },
    /// A new committed log id: written with the next record, never fsynced on its own.
    Committed(Option<LogId>),
    Truncate {
        since: u64,
        done: Reply,
    },
    Purge {
        upto: LogId,
        done: Reply,
    },
    Vote {
        vote: Vote,
        done: Reply,
    },
}

/// fsync count and latency, shared with the store's status and metrics.
#[derive(Clone, Default)]
pub(crate) struct SyncMetrics {
    pub(crate) syncs: Arc<AtomicU64>,
    pub(crate) seconds: FsyncHistogram,
}

impl SyncMetrics {
    /// Counts one durable write that started at `started`.
    fn synced(&self, started: Instant) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Some(histogram) = self.seconds.get() {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// A segment no longer written to.
pub(crate) struct Sealed {
    pub(crate) path: PathBuf,
    /// Highest entry index ever written to it: it can go once that is purged.
    pub(crate) max_index: Option<u64>,
}

/// What the WAL on disk says (as opposed to what is queued).
#[derive(Clone, Copy, Default)]
pub(crate) struct Durable {
    pub(crate) committed: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
}

enum Waiter {
    Flushed(LogFlushed<TypeConfig>),
    Reply(Reply),
}

impl Waiter {
    fn complete(self, result: Result<(), &str>) {
        match self {
            Waiter::Flushed(callback) => {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())))
            }
            Waiter::Reply(reply) => {
                // The caller may have given up waiting (openraft shutting down): nothing to do.
                let _ = reply.send(result.map_err(|e| LogStoreError::Failed(e.to_string())));
            }
        }
    }
}

/// The WAL's files as recovery leaves them, then as the writer keeps them.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    /// Segments no longer written to, oldest first.
    pub(crate) sealed: VecDeque<Sealed>,
    pub(crate) active: ActiveSegment,
    /// Highest entry index written to the active segment.
    pub(crate) active_max: Option<u64>,
    /// Locked while the files are in use (one process per WAL); never read, only held.
    pub(crate) _lock: File,
}

pub(crate) struct Writer {
    files: Files,
    segment_bytes: u64,
    durable: Durable,
    metrics: SyncMetrics,
    /// Latest committed id received (written with the next record if it differs from durable).
    committed: Option<LogId>,
    record: RecordBuf,
    waiters: Vec<Waiter>,
    record_max: Option<u64>,
    record_purge: Option<LogId>,
    /// Set by the first failed write: the file's state is unknown from then on.
    failed: Option<String>,
}

impl Writer {
    pub(crate) fn new(
        files: Files,
        durable: Durable,
        segment_bytes: u64,
        metrics: SyncMetrics,
    ) -> Self {
        Writer {
            files,
            segment_bytes,
            committed: durable.committed,
            durable,
            metrics,
            record: RecordBuf::new(),
            waiters: Vec::new(),
            record_max: None,
            record_purge: None,
            failed: None,
        }
    }

    /// Serves `messages` until every sender is gone, then writes the last committed id.
    pub(crate) fn run(mut self, messages: Receiver<Msg>) {
        while let Ok(msg) = messages.recv() {
            self.handle(msg);
            while let Ok(msg) = messages.try_recv() {
                self.handle(msg);
                if self.record.payload_len() >= MAX_RECORD_BYTES {
                    self.flush();
                }
            }
            if !self.waiters.is_empty() {
                self.flush();
            }
        }
        self.flush();
        // The files close and the lock is released when the writer is dropped here.
    }

    fn handle(&mut self, msg: Msg) {
        if let Some(failure) = &self.failed {
            let waiter = match msg {
                Msg::Append { done, .. } => Waiter::Flushed(done),
                Msg::Committed(_) => return,
                Msg::Truncate { done, .. } | Msg::Purge { done, .. } | Msg::Vote { done, .. } => {
                    Waiter::Reply(done)
                }
            };
            waiter.complete(Err(failure));
            return;
        }
        match msg {
            Msg::Append {
                ops,
                max_index,
                done,
            } => {
                self.record.payload().extend_from_slice(&ops);
                self.record_max = self.record_max.max(max_index);
                self.waiters.push(Waiter::Flushed(done));
            }
            Msg::Committed(committed) => self.committed = committed,
            Msg::Truncate { since, done } => self.push_op(&Op::Truncate(since), done),
            Msg::Purge { upto, done } => {
                self.record_purge = self.record_purge.max(Some(upto));
                self.push_op(&Op::Purge(upto), done);
            }
            Msg::Vote { vote, done } => {
                // The meta file records the committed id: make it durable in the log first.
                self.flush();
                let result = match &self.failed {
                    Some(failure) => Err(LogStoreError::Failed(failure.clone())),
                    None => self.save_vote(vote),
                };
                let _ = done.send(result);
            }
        }
    }

    fn push_op(&mut self, op: &Op<'_>, done: Reply) {
        match encode_op(op, self.record.payload()) {
            Ok(()) => self.waiters.push(Waiter::Reply(done)),
            Err(source) => {
                let _ = done.send(Err(LogStoreError::Encode {
                    what: "log op",
                    source,
                }));
            }
        }
    }

    fn save_vote(&mut self, vote: Vote) -> Result<(), LogStoreError> {
        let started = Instant::now();
        let meta = Meta {
            vote: Some(vote),
            committed: self.durable.committed,
        };
        meta::write(&self.files.dir, &meta)?;
        self.metrics.synced(started);
        Ok(())
    }

    /// Writes the gathered record (if any) durably, then completes the waiters.
    fn flush(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let committed = self.committed;
        if committed != self.durable.committed
            && let Err(source) = encode_op(&Op::Committed(committed), self.record.payload())
        {
            return self.fail(LogStoreError::Encode {
                what: "committed log id",
                source,
            });
        }
        if self.record.payload_len() > 0 {
            let started = Instant::now();
            if let Err(e) = self.write_record() {
                return self.fail(e);
            }
            self.metrics.synced(started);
            self.files.active_max = self.files.active_max.max(self.record_max.take());
            self.durable.committed = committed;
            if let Some(upto) = self.record_purge.take() {
                self.durable.last_purged = self.durable.last_purged.max(Some(upto));
                self.delete_purged(upto);
            }
            self.record.clear();
        }
        for waiter in self.waiters.drain(..) {
            waiter.complete(Ok(()));
        }
    }

    fn write_record(&mut self) -> Result<(), LogStoreError> {
        if self.files.active.len >= self.segment_bytes {
            self.roll()?;
        }
        let salt = self.files.active.salt;
        let record = self.record.seal(salt).ok_or_else(|| LogStoreError::Io {
            action: "writing a record over 4 GiB to",
            path: self.files.active.path.clone(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        self.files.active.append(record)
    }

    /// Starts the next segment. Its first record restates `committed` and `last_purged`, so
    /// that deleting older segments never loses them.
    fn roll(&mut self) -> Result<(), LogStoreError> {
        let durable = self.durable;
        let next = ActiveSegment::create(&self.files.dir, self.files.active.id + 1, |salt| {
            checkpoint(durable, salt)
        })?;
        let old = std::mem::replace(&mut self.files.active, next);
        tracing::debug!(segment = %self.files.active.path.display(), "raft log segment started");
        self.files.sealed.push_back(Sealed {
            path: old.path,
            max_index: self.files.active_max.take(),
        });
        Ok(())
    }

    /// Deletes the oldest sealed segments whose entries are all purged. Oldest first and one at a
    /// time (each deletion made durable before the next): a later segment may hold the truncate
    /// op that hides entries of an earlier one, so the survivors must always be a suffix.
    fn delete_purged(&mut self, upto: LogId) {
        while let Some(oldest) = self.files.sealed.front() {
            if oldest.max_index.is_some_and(|max| max > upto.index) {
                break;
            }
            let removed = match std::fs::remove_file(&oldest.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io("deleting", &oldest.path)(e))
                }
                _ => sync_dir(&self.files.dir),
            };
            if let Err(e) = removed {
                // Not a durability problem: the purge op is durable; retried at the next purge.
                tracing::warn!("purging raft log segments: {e}");
                break;
            }
            tracing::debug!(segment = %oldest.path.display(), "raft log segment deleted");
            self.files.sealed.pop_front();
        }
    }

    fn fail(&mut self, error: LogStoreError) {
        let failure = error.to_string();
        tracing::error!("raft log write failed, refusing further writes: {failure}");
        for waiter in self.waiters.drain(..) {
            waiter.complete(Err(&failure));
        }
        self.failed = Some(failure);
    }
}

/// The first record of a new segment: `durable` restated (empty if there is nothing to state).
pub(crate) fn checkpoint(durable: Durable, salt: u64) -> Result<Vec<u8>, LogStoreError> {
    let mut ops = Vec::new();
    if let Some(upto) = durable.last_purged {
        ops.push(Op::Purge(upto));
    }
    if durable.committed.is_some() {
        ops.push(Op::Committed(durable.committed));
    }
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut record = RecordBuf::new();
    for op in &ops {
        encode_op(op, record.payload()).map_err(|source| LogStoreError::Encode {
            what: "checkpoint",
            source,
        })?;
    }
    record
        .seal(salt)
        .map(<[u8]>::to_vec)
        .ok_or(LogStoreError::Failed("checkpoint over 4 GiB".to_string()))
}
