//! Opening the WAL: checks, lock, replay of every segment, torn-tail repair.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::error::{LogStoreError, corrupt, io};
use super::memory::LogMemory;
use super::meta;
use super::record::{self, Op, Parsed};
use super::segment::{self, ActiveSegment, sync_dir};
use super::writer::{Durable, Files, Sealed, checkpoint};
use super::{LEGACY_LOG_FILE, WAL_DIR};
use crate::types::{LogId, Vote};

const LOCK_FILE: &str = "LOCK";

/// Everything the store needs from the disk.
pub(crate) struct Recovered {
    pub(crate) log: LogMemory,
    pub(crate) vote: Option<Vote>,
    /// The last committed log id known and still backed by the log (see [`check_committed`]).
    pub(crate) committed: Option<LogId>,
    pub(crate) durable: Durable,
    pub(crate) files: Files,
}

/// State built while replaying segments in order.
#[derive(Default)]
struct Replay {
    log: LogMemory,
    committed: Option<LogId>,
}

impl Replay {
    /// Applies one op; returns the entry index it wrote, if any.
    fn apply(&mut self, op: Op<'static>) -> Option<u64> {
        match op {
            Op::Entry(entry) => {
                let index = entry.log_id.index;
                self.log.insert(entry.into_owned());
                return Some(index);
            }
            Op::Truncate(since) => self.log.truncate(since),
            Op::Purge(upto) => self.log.purge(upto),
            Op::Committed(committed) => self.committed = committed,
        }
        None
    }

    fn durable(&self) -> Durable {
        Durable {
            committed: self.committed,
            last_purged: self.log.last_purged(),
        }
    }
}

/// Opens the WAL in `data_dir/wal` (creating it on first use).
pub(crate) fn recover(data_dir: &Path) -> Result<Recovered, LogStoreError> {
    let dir = data_dir.join(WAL_DIR);
    let legacy = data_dir.join(LEGACY_LOG_FILE);
    if !dir.exists() {
        if legacy.exists() {
            return Err(LogStoreError::LegacyLog {
                dir: data_dir.to_path_buf(),
                legacy,
                wal: dir,
            });
        }
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        sync_dir(data_dir)?;
    } else if legacy.exists() {
        tracing::warn!(
            "ignoring {} (a log of an older Parsec): this node uses {}",
            legacy.display(),
            dir.display()
        );
    }
    let lock = lock(&dir)?;
    let meta = meta::read(&dir)?;
    let segments = segment::list(&dir)?;
    if segments.is_empty() && meta.is_some() {
        // The first segment is durable before anything can write the meta file.
        return Err(corrupt(
            &dir.join(segment::file_name(1)),
            0,
            "no log segment, yet a vote was saved",
        ));
    }

    let mut replay = Replay::default();
    let mut sealed = VecDeque::new();
    let mut active = None;
    let count = segments.len();
    for (i, (id, path)) in segments.into_iter().enumerate() {
        let last = i + 1 == count;
        match replay_segment(&path, last, &mut replay)? {
            Scanned::Sealed { max_index } => sealed.push_back(Sealed { path, max_index }),
            Scanned::Active {
                salt,
                len,
                max_index,
            } => {
                active = Some((ActiveSegment::reopen(path, id, salt, len)?, max_index));
            }
            Scanned::TornHeader => {
                tracing::warn!(segment = %path.display(), "raft log segment torn at creation, recreating it");
                let durable = replay.durable();
                let segment = ActiveSegment::create(&dir, id, |salt| checkpoint(durable, salt))?;
                active = Some((segment, None));
            }
        }
    }
    let (active, active_max) = match active {
        Some(active) => active,
        None => (ActiveSegment::create(&dir, 1, |_| Ok(Vec::new()))?, None),
    };

    let vote = meta.as_ref().and_then(|m| m.vote);
    // Both are lower bounds of the real committed id: take the higher one.
    let newest = [meta.and_then(|m| m.committed), replay.committed]
        .into_iter()
        .flatten()
        .max_by_key(|c| c.index);
    let committed = check_committed(newest, &replay.log);
    let durable = Durable {
        committed,
        last_purged: replay.log.last_purged(),
    };
    Ok(Recovered {
        log: replay.log,
        vote,
        committed,
        durable,
        files: Files {
            dir,
            sealed,
            active,
            active_max,
            _lock: lock,
        },
    })
}

fn lock(dir: &Path) -> Result<File, LogStoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogStoreError::Locked { path }),
        Err(TryLockError::Error(e)) => Err(io("locking", &path)(e)),
    }
}

enum Scanned {
    Sealed {
        max_index: Option<u64>,
    },
    /// The last segment: records are appended at `len` (after any torn tail was cut off).
    Active {
        salt: u64,
        len: u64,
        max_index: Option<u64>,
    },
    /// The last segment, whose creation a crash interrupted: it holds no record.
    TornHeader,
}

/// Replays the records of one segment into `replay`.
fn replay_segment(path: &Path, last: bool, replay: &mut Replay) -> Result<Scanned, LogStoreError> {
    let buf = std::fs::read(path).map_err(io("reading", path))?;
    let Some(salt) = segment::read_header(&buf) else {
        // A segment's header is fsynced before any record goes into it, so a bad header with
        // nothing (or only zeros) behind it is a creation cut short; anything else is damage.
        if last && (buf.len() < segment::HEADER_LEN || buf.iter().all(|&b| b == 0)) {
            return Ok(Scanned::TornHeader);
        }
        return Err(corrupt(path, 0, "bad segment header"));
    };
    let mut pos = segment::HEADER_LEN;
    let mut max_index = None;
    loop {
        match record::parse(&buf, pos, salt) {
            Parsed::Record { payload, next } => {
                let ops = record::decode_ops(payload).map_err(|e| {
                    corrupt(
                        path,
                        pos as u64,
                        format!("record with a valid checksum does not decode: {e}"),
                    )
                })?;
                for op in ops {
                    max_index = max_index.max(replay.apply(op));
                }
                pos = next;
            }
            Parsed::End => break,
            Parsed::Bad(reason) if !last => {
                return Err(corrupt(
                    path,
                    pos as u64,
                    format!("{reason} (not in the last segment)"),
                ));
            }
            Parsed::Bad(reason) => {
                // Each record is one write followed by an fsync before the next write starts,
                // so a crash can damage only the last record. A valid record after the damage
                // means an acknowledged write is damaged: that is not ours to repair.
                if let Some(valid) = record::valid_record_after(&buf, pos, salt) {
                    return Err(corrupt(
                        path,
                        pos as u64,
                        format!("{reason}, yet a valid record follows at byte {valid}"),
                    ));
                }
                tracing::warn!(
                    segment = %path.display(),
                    offset = pos,
                    dropped_bytes = buf.len() - pos,
                    "raft log ends in a torn write ({reason}), cutting it off"
                );
                segment::truncate_file(path, pos as u64)?;
                break;
            }
        }
    }
    Ok(if last {
        Scanned::Active {
            salt,
            len: pos as u64,
            max_index,
        }
    } else {
        Scanned::Sealed { max_index }
    })
}

/// `committed` if the log still backs it, else `last_purged` (committed too, and applied).
///
/// The committed id is only ever written after the entries it names, so this holds unless the
/// disk lost acknowledged writes; but a committed id beyond the durable log would make openraft
/// apply entries this node does not have, so it is checked rather than assumed.
fn check_committed(committed: Option<LogId>, log: &LogMemory) -> Option<LogId> {
    let purged = log.last_purged();
    let committed = committed?;
    let backed = purged.is_some_and(|p| committed.index <= p.index)
        || log
            .get(committed.index)
            .is_some_and(|e| e.log_id == committed);
    if backed {
        Some(committed)
    } else {
        tracing::warn!(%committed, "committed log id not in the recovered log, falling back to the last purged one");
        purged
    }
}
