//! Sealed logical blocks: what `eth_getBlockBy*`, receipts and logs are built from.

use std::sync::Arc;

use alloy_consensus::TxEnvelope;
use alloy_primitives::{Address, B256, Bloom};

use crate::executor::Receipt;

/// A committed transaction inside a sealed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTx {
    pub envelope: TxEnvelope,
    pub hash: B256,
    pub sender: Address,
    pub receipt: Receipt,
    /// Gas used by this and every earlier transaction of the block.
    pub cumulative_gas_used: u64,
    /// Block-level index of this transaction's first log.
    pub first_log_index: u64,
}

/// A sealed block: never changes once sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    pub hash: B256,
    pub parent_hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    pub base_fee: u64,
    pub gas_limit: u64,
    pub gas_used: u64,
    pub logs_bloom: Bloom,
    /// In block order.
    pub transactions: Vec<BlockTx>,
}

/// A transaction found by hash.
#[derive(Clone, Debug)]
pub struct TxLookup {
    /// The block holding it and its index there; the transaction is `block.transactions[index]`.
    pub block: Arc<Block>,
    pub index: usize,
}

impl TxLookup {
    pub fn tx(&self) -> &BlockTx {
        &self.block.transactions[self.index]
    }
}
