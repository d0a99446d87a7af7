//! The EVM runner: Ethereum transactions executed by revm over Parsec's sharded, locked key
//! space (DESIGN.md §5).
//!
//! - [`state`]: where accounts, code and storage live in the key space;
//! - [`tx`]: raw transactions decoded, hashed and checked (alloy), errors in geth's words;
//! - [`executor`]: one transaction executed over a [`KeyAccess`](parsec_agent::runner::KeyAccess),
//!   its keys discovered and locked in batches, its writes and receipt returned;
//! - [`call`]: `eth_call` / `eth_estimateGas` over lock-free reads ([`reader::StateReader`]);
//! - [`chain`]: the chain as Ethereum tools see it, which [`rpc`] serves over JSON-RPC.

pub mod call;
pub mod chain;
pub mod code_cache;
pub mod config;
mod diff;
pub mod executor;
mod machine;
pub mod reader;
pub mod rpc;
pub mod state;
pub mod tx;
mod view;

pub use call::{CallError, CallRequest, CallSuccess};
pub use chain::{AgentChain, Chain, ChainSettings};
pub use code_cache::CodeCache;
pub use config::{BlockInfo, DEFAULT_CHAIN_ID, EvmConfig};
pub use executor::{ExecError, ExecOptions, ExecStats, Executed, Executor, Receipt};
pub use reader::{ReadError, StateReader};
pub use tx::{SignedTx, TxError, decode_transaction};
pub use view::ViewError;
