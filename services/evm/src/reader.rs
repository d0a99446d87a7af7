//! Lock-free reads of committed state: what `eth_call`, `eth_estimateGas` and the optimistic
//! prefetch of an execution use (over `Broker::read` in the agent). No ticket, no lock, no Raft
//! write; successive reads may see different commits.

use async_trait::async_trait;
use parsec_core::{Key, Value};

/// Why a lock-free read failed (shard unreachable, timeout, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct ReadError(pub String);

#[async_trait]
pub trait StateReader: Send + Sync {
    /// The committed values of `keys`, in order; an absent key reads as empty.
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Value>, ReadError>;
}
