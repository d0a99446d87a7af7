//! The chain as Ethereum tools see it: logical blocks of committed transactions (DESIGN.md §4),
//! state reads, calls and transaction submission. The JSON-RPC server ([`crate::rpc`]) speaks to
//! a [`Chain`]; the agent implements it over the broker and the ticket machine's block clock.

mod agent_chain;
pub mod assemble;
pub mod block;
mod blocks;
mod nonces;
mod producer;
pub mod record;

pub use agent_chain::{AgentChain, BrokerReader, ChainSettings};
pub use nonces::{QueueFull, QueueLimits};

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;
use tokio::sync::broadcast;

pub use block::{Block, BlockTx, TxLookup};

use crate::call::{CallError, CallRequest, CallSuccess};
use crate::config::EvmConfig;
use crate::executor::ExecError;
use crate::tx::TxError;

/// A read of chain data failed (shard or ticket machine unreachable, corrupt record, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChainError(pub String);

/// Why `eth_sendRawTransaction` refused or could not run a transaction.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Invalid (decoding, signature, chain id, nonce, funds, …): geth's words, nothing written.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// A future nonce whose predecessors did not arrive in time.
    #[error(
        "nonce too high: address {sender}, tx: {tx} state: {state} (gap not filled within {waited_ms} ms)"
    )]
    NonceGap {
        sender: Address,
        tx: u64,
        state: u64,
        waited_ms: u64,
    },
    /// The agent has too many transactions in flight.
    #[error("txpool is full")]
    Overloaded,
    /// The sender's line or the agent's lines are full (geth's txpool limits).
    #[error(transparent)]
    QueueFull(#[from] crate::chain::nonces::QueueFull),
    /// The execution could not finish (timeout, shards unreachable); nothing was committed
    /// unless `uncertain` says the outcome is unknown.
    #[error("{message}")]
    Failed { message: String, uncertain: bool },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// An account as `eth_getBalance` / `eth_getTransactionCount` / `eth_getCode` see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountState {
    pub nonce: u64,
    pub balance: U256,
    pub code: Bytes,
}

/// Everything the JSON-RPC server needs. Reads take no ticket and no lock (DESIGN.md §5); only
/// [`Chain::send_raw_transaction`] writes.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// Chain id, fee recipient, gas limits.
    fn config(&self) -> &EvmConfig;

    /// Accounts `eth_accounts` lists (the funded development accounts in `parsec dev`; the
    /// node never signs for them).
    fn accounts(&self) -> Vec<Address>;

    /// The base fee of the block being built (constant: configuration).
    fn base_fee(&self) -> u64;

    /// The highest sealed block: `eth_blockNumber`. Never goes backwards.
    async fn head(&self) -> Result<u64, ChainError>;

    /// A sealed block; `None` above the head.
    async fn block_by_number(&self, number: u64) -> Result<Option<Arc<Block>>, ChainError>;

    async fn block_by_hash(&self, hash: B256) -> Result<Option<Arc<Block>>, ChainError>;

    /// Committed state of an account (`latest`).
    async fn account(&self, address: Address) -> Result<AccountState, ChainError>;

    /// Committed value of a storage slot (`latest`).
    async fn storage(&self, address: Address, slot: U256) -> Result<U256, ChainError>;

    /// The nonce the sender's next transaction should carry, counting transactions this agent
    /// is still running (`eth_getTransactionCount(…, "pending")`).
    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError>;

    async fn call(&self, request: CallRequest) -> Result<CallSuccess, CallError>;

    async fn estimate_gas(&self, request: CallRequest) -> Result<u64, CallError>;

    /// Decodes, executes and commits a raw transaction; answers once it is committed (its
    /// receipt appears when its block seals, within about one block interval).
    async fn send_raw_transaction(&self, raw: Bytes) -> Result<B256, SendError>;

    /// A transaction by hash, with its block once that block is sealed.
    async fn transaction(&self, hash: B256) -> Result<Option<TxLookup>, ChainError>;

    /// Every block as it seals, in order (for `newHeads`, `logs` subscriptions and filters).
    fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<Block>>;
}
