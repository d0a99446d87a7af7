//! Failures of the write-ahead log, each naming the file (and byte offset) concerned.

use std::path::{Path, PathBuf};

/// Failure of the log store, before it is wrapped into openraft's `StorageError`.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Damage that a crash cannot explain (anywhere but the tail of the last segment): the node
    /// must not guess, an operator has to look (or wipe the data directory and let the node catch
    /// up from its group).
    #[error("raft log file {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "data directory {dir} holds a Raft log written by an older version of Parsec \
         ({legacy}); this version keeps its log in {wal} and cannot read the old one. \
         Remove the data directory (the node catches up from its group) and restart"
    )]
    LegacyLog {
        dir: PathBuf,
        legacy: PathBuf,
        wal: PathBuf,
    },
    #[error("raft log {path} is locked: another process uses this data directory")]
    Locked { path: PathBuf },
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        source: postcard::Error,
    },
    /// An earlier write or fsync failed: what reached the disk is unknown (a failed fsync cannot
    /// be retried), so the log refuses every later write until the node restarts and recovers.
    #[error("raft log writer failed earlier: {0}")]
    Failed(String),
    #[error("raft log writer thread is gone")]
    WriterGone,
}

/// Context for an I/O error: `map_err(io("fsync", &path))`.
pub(crate) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> LogStoreError {
    let path = path.to_path_buf();
    move |source| LogStoreError::Io {
        action,
        path,
        source,
    }
}

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> LogStoreError {
    LogStoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
