//! The runner trait: what a contract runtime (Lua today, the EVM next) implements so that the
//! agent can run its contracts. A runtime never talks to the broker or the shards: it asks for
//! keys through [`KeyAccess`] and hands back a write-set. Adding a runtime touches neither the
//! broker nor the shards.

use async_trait::async_trait;
use bytes::Bytes;
use parsec_core::{Key, LockMode, Value, WriteSet};

/// Why the agent could not give a runner the keys it asked for. The runner must stop at once
/// and return [`RunError::Access`] with it: a wounded execution does not run on to the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// An older transaction took a lock this one needed; the agent retries it with the same ticket.
    #[error("wounded by an older transaction")]
    Wounded,
    /// The transaction cannot go on (timeout, shard unreachable, stale attempt, …).
    #[error("{0}")]
    Aborted(String),
    /// The runner asked for something the agent refuses (e.g. too many keys at once).
    #[error("invalid key request: {0}")]
    Invalid(String),
}

/// The agent's side of a running contract: lock keys, receive their committed values.
#[async_trait]
pub trait KeyAccess: Send {
    /// Locks every key in `keys` in `mode` (the agent downgrades to `Read` in a read-only call)
    /// and returns their committed values in the same order; an absent key reads as empty.
    /// Keys on the same shard travel in one request, shards are asked in parallel.
    async fn lock(&mut self, keys: Vec<Key>, mode: LockMode) -> Result<Vec<Value>, AccessError>;

    /// Locks every key in its own mode and returns the committed values in request order. An
    /// implementation that can mix modes in one request takes one round trip per shard; this
    /// default takes one per mode.
    async fn lock_each(
        &mut self,
        requests: Vec<(Key, LockMode)>,
    ) -> Result<Vec<Value>, AccessError> {
        let mut values = vec![Value::new(); requests.len()];
        for mode in [LockMode::Write, LockMode::Read] {
            let (indexes, keys): (Vec<usize>, Vec<Key>) = requests
                .iter()
                .enumerate()
                .filter(|(_, (_, wanted))| *wanted == mode)
                .map(|(index, (key, _))| (index, key.clone()))
                .unzip();
            if keys.is_empty() {
                continue;
            }
            for (index, value) in indexes.into_iter().zip(self.lock(keys, mode).await?) {
                values[index] = value;
            }
        }
        Ok(values)
    }
}

/// What a contract produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    /// In a normal call: the writes to commit. In a read-only call: the values the contract
    /// returned to its caller (nothing is written).
    pub writes: WriteSet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The code is not a valid contract for this runtime (syntax error, binary chunk, …).
    #[error("invalid contract: {0}")]
    InvalidContract(String),
    /// The contract raised an error, yielded garbage or returned something that is not a
    /// write-set. Permanent: retrying gives the same answer.
    #[error("contract failed: {0}")]
    ContractFailed(String),
    #[error("contract exceeded its instruction budget of {0} instructions")]
    InstructionBudgetExceeded(u64),
    #[error("contract exceeded its memory limit of {0} bytes")]
    MemoryLimitExceeded(usize),
    /// Locking failed; see [`AccessError`].
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("internal runner error: {0}")]
    Internal(String),
}

/// A contract runtime.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// A short name for logs and metrics ("lua", "evm").
    fn name(&self) -> &'static str;

    /// Checks that `code` is a contract this runtime can run; the deploy path calls it before
    /// storing code, so that a broken contract is refused up front with a clear message.
    fn validate(&self, code: &[u8]) -> Result<(), RunError>;

    /// Runs the contract `code` with argument `param`. Every key the contract reads or writes
    /// must be locked through `access` first (writes of keys never locked are refused).
    async fn run(
        &self,
        code: &Value,
        param: &Bytes,
        read_only: bool,
        access: &mut dyn KeyAccess,
    ) -> Result<RunOutput, RunError>;
}
