//! The durable Raft log: an append-only write-ahead log (WAL) in `wal/` in the node's data
//! directory, replacing an embedded database whose copy-on-write commits cost far more than the
//! appends a Raft log needs.
//!
//! # Files
//!
//! - `wal/{id:020}.log`: segments, ids consecutive from 1. Records are appended to the last one
//!   (the active segment); it is sealed and the next one started once it reaches the segment size
//!   (64 MiB by default). Format: [`segment`] (header with a random salt), [`record`] (length,
//!   CRC, postcard ops). The ops are: an entry, `Truncate(index)`, `Purge(log id)` and
//!   `Committed(log id)`.
//! - `wal/meta`: the vote, and the committed id known when it was saved ([`meta`]), replaced
//!   atomically (temp file, fsync, rename, directory fsync).
//! - `wal/LOCK`: locked while a process uses the WAL.
//!
//! The whole unpurged log is also kept in memory, decoded ([`memory`]): reads never touch disk.
//!
//! # Writing
//!
//! One thread ([`writer`]) does all writes, in the order openraft issued them. It gathers what is
//! queued into one record, writes it (one `write`) and `fdatasync`s it, and only then reports
//! the appends flushed and the truncates and purges done. `save_vote` rewrites `meta` before it
//! returns. `save_committed` is not fsynced: the id rides along with the next record.
//!
//! # Crash recovery
//!
//! 1. A write starts only after the previous record's `fdatasync` returned, and nothing is
//!    acknowledged before its record's `fdatasync` returned. So after a crash every acknowledged
//!    byte is intact and at most one record, the last one of the last segment, is damaged.
//! 2. A segment's header is fsynced, file and directory, before any record goes into it: a
//!    segment other than the last was complete before its successor existed, and a bad header
//!    is only a crash if it is the last segment and holds no data.
//! 3. On open ([`recovery`]) every segment is read and every CRC checked. A bad record in the
//!    last segment is the torn write of point 1 if no valid record follows it (the per-segment
//!    salt in the CRC means data inside an entry cannot pass for a record): it is cut off
//!    (ftruncate, fsync). Any other damage stops the open with an error naming file and offset.
//! 4. Replaying the ops applies them to the in-memory log through the same methods the live
//!    store used, in the same order: the recovered log is the log as acknowledged (plus, possibly,
//!    the last record if it reached the disk whole: never acknowledged, but harmless to Raft,
//!    which only relies on what it was told is durable).
//! 5. Purge deletes sealed segments oldest first, once every entry ever written to them is
//!    purged, and each new segment begins by restating `last_purged` and `committed`: the
//!    surviving segments always replay to the same state.
//! 6. The committed id is written after the entries it names; on open it is checked against the
//!    recovered log anyway, so `read_committed` never names an entry the log does not have.

mod error;
mod memory;
mod meta;
mod record;
mod recovery;
mod segment;
mod writer;

pub use error::LogStoreError;
pub(crate) use memory::LogMemory;
pub(crate) use record::{Op, encode_op};
pub(crate) use recovery::{Recovered, recover};
pub(crate) use writer::{Msg, SyncMetrics, Writer};

/// Directory of the WAL inside the data directory.
pub const WAL_DIR: &str = "wal";

/// The log file of Parsec versions before the WAL (a redb database), refused on open.
pub const LEGACY_LOG_FILE: &str = "raft.redb";

/// Size at which the active segment is sealed and the next one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
