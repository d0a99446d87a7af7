//! The Raft state machine: the replicated application plus what Raft needs next to it (last
//! applied log id, last membership, current snapshot).
//!
//! The application state lives only here, in memory. It is made durable by snapshots: each built
//! or installed snapshot is written to `snapshot.bin` in the data directory (write temp, fsync,
//! rename), and on start the state machine is restored from that file, so a restart replays only
//! the log after the snapshot.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::types::{
    CommandResult, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Name of the snapshot file inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The application a Raft group replicates (the shard's state machine, the ticket machine's
/// allocator). Deterministic: every replica applies the same commands in the same order and gets
/// the same state.
pub trait ReplicatedState: Send + Sync + 'static {
    /// Applies one command (opaque bytes, encoded by the application) and returns its result.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;
    /// The whole state, serialized.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// Failure of the state machine's own storage (the snapshot file) or of the application.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot file {path} is corrupt: {source}")]
    Decode {
        path: PathBuf,
        source: postcard::Error,
    },
    #[error("encoding snapshot: {0}")]
    Encode(postcard::Error),
    #[error("application rejected snapshot: {0}")]
    Restore(String),
    #[error("blocking snapshot task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The application state plus the Raft bookkeeping that must change atomically with it.
pub(crate) struct Applied<S> {
    pub(crate) app: S,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
}

/// A snapshot as kept in memory and on disk.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

struct Inner<S> {
    state: Arc<RwLock<Applied<S>>>,
    current: Mutex<Option<StoredSnapshot>>,
    dir: PathBuf,
    snapshot_seq: AtomicU64,
    snapshot_size: AtomicU64,
}

/// openraft's state machine over a [`ReplicatedState`]. Cheap to clone (clones share state).
pub struct StateMachine<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for StateMachine<S> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
        }
    }
}

impl<S> StateMachine<S> {
    pub(crate) fn state(&self) -> Arc<RwLock<Applied<S>>> {
        self.inner.state.clone()
    }

    /// Size in bytes of the application data of the current snapshot (0 if none).
    pub fn snapshot_size(&self) -> u64 {
        self.inner.snapshot_size.load(Ordering::Relaxed)
    }
}

impl<S: ReplicatedState> StateMachine<S> {
    /// Opens the state machine in `dir`: restores `app` from `dir/snapshot.bin` if it exists.
    pub fn open(dir: &Path, mut app: S) -> Result<Self, StateMachineError> {
        let path = dir.join(SNAPSHOT_FILE);
        let (current, last_applied, last_membership) = match std::fs::read(&path) {
            Ok(bytes) => {
                let snap: StoredSnapshot =
                    postcard::from_bytes(&bytes).map_err(|source| StateMachineError::Decode {
                        path: path.clone(),
                        source,
                    })?;
                app.restore(&snap.data)
                    .map_err(StateMachineError::Restore)?;
                let last_applied = snap.meta.last_log_id;
                let membership = snap.meta.last_membership.clone();
                (Some(snap), last_applied, membership)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (None, None, StoredMembership::default())
            }
            Err(source) => return Err(StateMachineError::Io { path, source }),
        };
        let size = current.as_ref().map_or(0, |s| s.data.len() as u64);
        Ok(StateMachine {
            inner: Arc::new(Inner {
                state: Arc::new(RwLock::new(Applied {
                    app,
                    last_applied,
                    last_membership,
                })),
                current: Mutex::new(current),
                dir: dir.to_path_buf(),
                snapshot_seq: AtomicU64::new(0),
                snapshot_size: AtomicU64::new(size),
            }),
        })
    }

    /// Makes `snap` the current snapshot: durable on disk first, then in memory.
    async fn save_snapshot(&self, snap: StoredSnapshot) -> Result<(), StateMachineError> {
        let bytes = postcard::to_allocvec(&snap).map_err(StateMachineError::Encode)?;
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, SNAPSHOT_FILE, &bytes))
            .await??;
        self.inner
            .snapshot_size
            .store(snap.data.len() as u64, Ordering::Relaxed);
        *self.inner.current.lock() = Some(snap);
        Ok(())
    }
}

/// Writes `dir/name` via a temporary file, fsync and rename, then fsyncs the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateMachineError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateMachineError::Io { path, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

fn sm_write_err(e: StateMachineError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl<S: ReplicatedState> RaftSnapshotBuilder<TypeConfig> for StateMachine<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.inner.state.clone();
        let (data, last_applied, last_membership) = tokio::task::spawn_blocking(move || {
            let guard = state.read();
            (
                guard.app.snapshot(),
                guard.last_applied,
                guard.last_membership.clone(),
            )
        })
        .await
        .map_err(|e| sm_write_err(e.into()))?;
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save_snapshot(snap).await.map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<S: ReplicatedState> RaftStateMachine<TypeConfig> for StateMachine<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let guard = self.inner.state.read();
        Ok((guard.last_applied, guard.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut guard = self.inner.state.write();
        let mut results = Vec::new();
        for entry in entries {
            guard.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(CommandResult::default()),
                EntryPayload::Normal(batch) => {
                    let applied = batch.0.iter().map(|c| guard.app.apply(c)).collect();
                    results.push(CommandResult(applied));
                }
                EntryPayload::Membership(membership) => {
                    guard.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    results.push(CommandResult::default());
                }
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        {
            let mut guard = self.inner.state.write();
            guard.app.restore(&data).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(
                    Some(meta.signature()),
                    AnyError::new(&StateMachineError::Restore(e)),
                ))
            })?;
            guard.last_applied = meta.last_log_id;
            guard.last_membership = meta.last_membership.clone();
        }
        tracing::info!(snapshot = %meta, bytes = data.len(), "installed raft snapshot");
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(snap).await.map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.inner.current.lock().clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
