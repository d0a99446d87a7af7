//! Where a shard's commands go: through its Raft group (every replica applies them in log order
//! and they survive the loss of a minority), or straight into memory (unit tests and throwaway
//! single-process runs).

use crate::state_machine::{ApplyResult, Command, StateMachine, decode_result, encode_command};
use parking_lot::RwLock;
use parsec_raft::{CatchUpError, NodeId, RaftNode, WriteError};
use std::sync::Arc;
use std::time::Duration;

/// Why a command could not be replicated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// This replica does not lead its group: the command was not appended.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The command may or may not be applied (no quorum in time, Raft stopped).
    #[error("replication outcome unknown: {0}")]
    Unknown(String),
}

/// A shard's replicated log and the state it applies to.
#[derive(Clone)]
pub enum ShardLog {
    Memory(Arc<RwLock<StateMachine>>),
    Raft(Arc<RaftNode<StateMachine>>),
}

impl ShardLog {
    /// An unreplicated log in memory.
    pub fn memory() -> Self {
        ShardLog::Memory(Arc::default())
    }

    /// Appends `command`, waits until it is applied here, and returns what applying it gave.
    pub async fn append(&self, command: Command) -> Result<ApplyResult, ReplicationError> {
        match self {
            ShardLog::Memory(state) => Ok(state.write().apply(command)),
            ShardLog::Raft(node) => {
                let bytes =
                    node.write(encode_command(&command))
                        .await
                        .map_err(|error| match error {
                            WriteError::NotLeader { leader } => {
                                ReplicationError::NotLeader { leader }
                            }
                            other => ReplicationError::Unknown(other.to_string()),
                        })?;
                decode_result(&bytes).map_err(|e| {
                    ReplicationError::Unknown(format!("undecodable apply result: {e}"))
                })
            }
        }
    }

    /// Reads the applied state. Do not block inside `f`: the log applies behind the same lock.
    pub fn read<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        match self {
            ShardLog::Memory(state) => f(&state.read()),
            ShardLog::Raft(node) => node.read(f),
        }
    }

    /// Confirms that this replica still leads its group (a heartbeat round to a quorum) and has
    /// applied everything committed before: what it read before this call was not stale.
    pub async fn confirm_leadership(&self) -> Result<(), ReplicationError> {
        match self {
            ShardLog::Memory(_) => Ok(()),
            ShardLog::Raft(node) => {
                if node.voter_count() <= 1 {
                    return if node.is_leader() {
                        Ok(())
                    } else {
                        Err(ReplicationError::NotLeader {
                            leader: node.leader(),
                        })
                    };
                }
                node.raft()
                    .ensure_linearizable()
                    .await
                    .map(|_| ())
                    .map_err(|_| ReplicationError::NotLeader {
                        leader: node.leader(),
                    })
            }
        }
    }

    /// Waits until everything this replica appended so far is applied here (bounded by
    /// `timeout`): after that the applied state includes every command a caller was told about.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), ReplicationError> {
        match self {
            ShardLog::Memory(_) => Ok(()),
            ShardLog::Raft(node) => node.catch_up(timeout).await.map_err(|e| match e {
                CatchUpError::NotLeader => ReplicationError::NotLeader {
                    leader: node.leader(),
                },
                other => ReplicationError::Unknown(other.to_string()),
            }),
        }
    }
}
