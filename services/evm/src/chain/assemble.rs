//! Sealed blocks put together from their parts (pure).
//!
//! A block's hash carries its number in its first eight bytes, so that a lookup by hash needs no
//! index: the rest is the keccak of the number and the block's transaction hashes, so the hash
//! names exactly one content.

use alloy_primitives::{B256, Bloom, keccak256};

use crate::chain::block::{Block, BlockTx};

/// What a block is besides its transactions.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub number: u64,
    pub parent_hash: B256,
    pub timestamp: u64,
    pub base_fee: u64,
    pub gas_limit: u64,
}

/// The hash of block `number` holding `transactions` (hashes, in block order).
pub fn block_hash<'a>(number: u64, transactions: impl IntoIterator<Item = &'a B256>) -> B256 {
    let mut preimage = number.to_be_bytes().to_vec();
    for hash in transactions {
        preimage.extend_from_slice(hash.as_slice());
    }
    let mut hash = keccak256(&preimage);
    hash.0[..8].copy_from_slice(&number.to_be_bytes());
    hash
}

/// The block number a hash of [`block_hash`] names.
pub fn number_of(hash: &B256) -> u64 {
    let mut number = [0u8; 8];
    number.copy_from_slice(&hash.0[..8]);
    u64::from_be_bytes(number)
}

/// Assembles a block from its parts, ordered by agent and, within a part, by commit order.
pub fn assemble(header: Header, mut parts: Vec<(u64, Vec<BlockTx>)>) -> Block {
    parts.sort_by_key(|(agent, _)| *agent);
    let mut transactions: Vec<BlockTx> = parts.into_iter().flat_map(|(_, txs)| txs).collect();
    let mut gas_used = 0u64;
    let mut log_index = 0u64;
    let mut logs_bloom = Bloom::default();
    for tx in &mut transactions {
        gas_used = gas_used.saturating_add(tx.receipt.gas_used);
        tx.cumulative_gas_used = gas_used;
        tx.first_log_index = log_index;
        log_index += tx.receipt.logs.len() as u64;
        for log in &tx.receipt.logs {
            logs_bloom.accrue_log(log);
        }
    }
    let hash = block_hash(header.number, transactions.iter().map(|tx| &tx.hash));
    Block {
        number: header.number,
        hash,
        parent_hash: header.parent_hash,
        timestamp: header.timestamp,
        base_fee: header.base_fee,
        gas_limit: header.gas_limit,
        gas_used,
        logs_bloom,
        transactions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_hash_names_its_number_and_its_content() {
        let a = B256::repeat_byte(1);
        let b = B256::repeat_byte(2);
        let hash = block_hash(42, [&a, &b]);
        assert_eq!(number_of(&hash), 42);
        assert_ne!(hash, block_hash(42, [&b, &a]), "order matters");
        assert_ne!(hash, block_hash(43, [&a, &b]));
        assert_eq!(number_of(&block_hash(0, [])), 0);
    }
}
