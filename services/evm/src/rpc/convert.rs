//! Sealed blocks, their transactions, receipts and logs in geth's JSON shapes (alloy's RPC
//! types).

use alloy_consensus::proofs::{calculate_receipt_root, calculate_transaction_root};
use alloy_consensus::transaction::{Recovered, TransactionInfo};
use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH, Eip658Value, ReceiptEnvelope, ReceiptWithBloom,
    TxEnvelope,
};
use alloy_eips::eip4895::Withdrawals;
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{B64, B256, Bloom, Bytes, Log, U256};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{BlockTransactions, Header, Transaction, TransactionReceipt};

use crate::chain::{Block, BlockTx};
use crate::config::EvmConfig;

/// A block as `eth_getBlockBy*` returns it.
pub type RpcBlock = alloy_rpc_types_eth::Block<Transaction<TxEnvelope>, Header>;
pub type RpcLog = alloy_rpc_types_eth::Log;

/// The header of `block` (also what `newHeads` sends).
///
/// The shape is post-Prague (withdrawals, blob gas, beacon root and requests fields present and
/// empty) because the EVM runs current mainnet rules. Transaction and receipt roots are computed,
/// so inclusion proofs check out; there is no state root: state lives in the shards' key space,
/// not in a Merkle-Patricia trie, so `stateRoot` is zero. The block hash is the chain's, not the
/// hash of this header.
pub fn header(block: &Block, config: &EvmConfig) -> Header {
    let envelopes: Vec<&TxEnvelope> = block.transactions.iter().map(|t| &t.envelope).collect();
    let receipts: Vec<ReceiptEnvelope<Log>> = block
        .transactions
        .iter()
        .map(|tx| receipt_envelope(tx, tx.receipt.logs.clone()))
        .collect();
    let inner = alloy_consensus::Header {
        parent_hash: block.parent_hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: config.fee_recipient,
        state_root: B256::ZERO,
        transactions_root: calculate_transaction_root(&envelopes),
        receipts_root: calculate_receipt_root(&receipts),
        logs_bloom: block.logs_bloom,
        difficulty: U256::ZERO,
        number: block.number,
        gas_limit: block.gas_limit,
        gas_used: block.gas_used,
        timestamp: block.timestamp,
        extra_data: Bytes::new(),
        mix_hash: B256::ZERO,
        nonce: B64::ZERO,
        base_fee_per_gas: Some(block.base_fee),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        // Amsterdam fields: not in the rules the EVM runs.
        block_access_list_hash: None,
        slot_number: None,
    };
    Header {
        hash: block.hash,
        inner,
        total_difficulty: None,
        size: None,
    }
}

/// `eth_getBlockBy*`: with full transactions or their hashes.
pub fn block(block: &Block, config: &EvmConfig, full: bool) -> RpcBlock {
    let mut header = header(block, config);
    header.size = Some(U256::from(encoded_size(&header.inner, block)));
    let transactions = if full {
        BlockTransactions::Full(
            (0..block.transactions.len())
                .map(|index| transaction(block, index))
                .collect(),
        )
    } else {
        BlockTransactions::Hashes(block.transactions.iter().map(|t| t.hash).collect())
    };
    RpcBlock {
        header,
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Withdrawals::default()),
    }
}

/// geth's `size`: the length of the block's RLP encoding (header, transactions, no uncles, no
/// withdrawals).
fn encoded_size(header: &alloy_consensus::Header, block: &Block) -> usize {
    let transactions: usize = block.transactions.iter().map(|t| t.envelope.length()).sum();
    let list = |payload: usize| {
        alloy_rlp::Header {
            list: true,
            payload_length: payload,
        }
        .length()
            + payload
    };
    let payload = header.length() + list(transactions) + list(0) + list(0);
    list(payload)
}

/// The transaction at `index` of `block` (the caller checked the index).
pub fn transaction(block: &Block, index: usize) -> Transaction<TxEnvelope> {
    let tx = &block.transactions[index];
    Transaction::from_transaction(
        Recovered::new_unchecked(tx.envelope.clone(), tx.sender),
        TransactionInfo {
            hash: Some(tx.hash),
            index: Some(index as u64),
            block_hash: Some(block.hash),
            block_number: Some(block.number),
            base_fee: Some(block.base_fee),
            block_timestamp: Some(block.timestamp),
        },
    )
}

/// The receipt of the transaction at `index` of `block` (the caller checked the index).
pub fn receipt(block: &Block, index: usize) -> TransactionReceipt {
    let tx = &block.transactions[index];
    let receipt = &tx.receipt;
    TransactionReceipt {
        inner: receipt_envelope(tx, tx_logs(block, index).collect()),
        transaction_hash: tx.hash,
        transaction_index: Some(index as u64),
        block_hash: Some(block.hash),
        block_number: Some(block.number),
        gas_used: receipt.gas_used,
        effective_gas_price: receipt.effective_gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: tx.sender,
        to: receipt.to,
        contract_address: receipt.contract_address,
    }
}

/// The consensus receipt of `tx` with `logs` (primitive logs for the receipts root, RPC logs
/// for JSON); its bloom is computed from its own logs.
fn receipt_envelope<L>(tx: &BlockTx, logs: Vec<L>) -> ReceiptEnvelope<L> {
    let receipt = alloy_consensus::Receipt {
        status: Eip658Value::Eip658(tx.receipt.status),
        cumulative_gas_used: tx.cumulative_gas_used,
        logs,
    };
    let with_bloom = ReceiptWithBloom {
        receipt,
        logs_bloom: logs_bloom(&tx.receipt.logs),
    };
    ReceiptEnvelope::from_typed(tx.envelope.tx_type(), with_bloom)
}

/// The bloom of `logs` (a receipt's, or a whole block's).
pub fn logs_bloom<'a>(logs: impl IntoIterator<Item = &'a Log>) -> Bloom {
    let mut bloom = Bloom::ZERO;
    for log in logs {
        bloom.accrue_log(log);
    }
    bloom
}

/// The logs of the transaction at `index`, with their block-level indexes.
pub fn tx_logs(block: &Block, index: usize) -> impl Iterator<Item = RpcLog> + '_ {
    let tx = &block.transactions[index];
    tx.receipt
        .logs
        .iter()
        .enumerate()
        .map(move |(i, log)| RpcLog {
            inner: log.clone(),
            block_hash: Some(block.hash),
            block_number: Some(block.number),
            block_timestamp: Some(block.timestamp),
            transaction_hash: Some(tx.hash),
            transaction_index: Some(index as u64),
            log_index: Some(tx.first_log_index + i as u64),
            removed: false,
        })
}

/// Every log of `block` in order.
pub fn block_logs(block: &Block) -> impl Iterator<Item = RpcLog> + '_ {
    (0..block.transactions.len()).flat_map(move |index| tx_logs(block, index))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloy_consensus::{Signed, TxLegacy};
    use alloy_primitives::{Address, LogData, Signature, TxKind, address, b256};

    use super::*;
    use crate::executor::Receipt;

    fn log(address: Address, topic: B256) -> Log {
        Log {
            address,
            data: LogData::new_unchecked(vec![topic], Bytes::from_static(b"data")),
        }
    }

    fn block_tx(nonce: u64, logs: Vec<Log>, cumulative: u64, first_log_index: u64) -> BlockTx {
        let tx = TxLegacy {
            chain_id: Some(1),
            nonce,
            gas_price: 10,
            gas_limit: 50_000,
            to: TxKind::Call(Address::repeat_byte(2)),
            value: U256::from(1),
            input: Bytes::new(),
        };
        let signed = Signed::new_unhashed(tx, Signature::test_signature());
        let hash = *signed.hash();
        let envelope = TxEnvelope::Legacy(signed);
        BlockTx {
            envelope,
            hash,
            sender: Address::repeat_byte(1),
            receipt: Receipt {
                tx_hash: hash,
                tx_type: 0,
                from: Address::repeat_byte(1),
                to: Some(Address::repeat_byte(2)),
                nonce,
                status: true,
                gas_used: 30_000,
                effective_gas_price: 10,
                contract_address: None,
                logs,
                output: Bytes::new(),
                halt_reason: None,
            },
            cumulative_gas_used: cumulative,
            first_log_index,
        }
    }

    fn sample() -> Block {
        let a = address!("00000000000000000000000000000000000000aa");
        let b = address!("00000000000000000000000000000000000000bb");
        let t1 = b256!("1111111111111111111111111111111111111111111111111111111111111111");
        let t2 = b256!("2222222222222222222222222222222222222222222222222222222222222222");
        let first = block_tx(0, vec![log(a, t1), log(b, t2)], 30_000, 0);
        let second = block_tx(1, vec![log(a, t2)], 60_000, 2);
        let logs: Vec<Log> = [&first, &second]
            .iter()
            .flat_map(|t| t.receipt.logs.clone())
            .collect();
        Block {
            number: 5,
            hash: B256::repeat_byte(5),
            parent_hash: B256::repeat_byte(4),
            timestamp: 1_700_000_000,
            base_fee: 7,
            gas_limit: 30_000_000,
            gas_used: 60_000,
            logs_bloom: logs_bloom(&logs),
            transactions: vec![first, second],
        }
    }

    #[test]
    fn receipt_logs_carry_block_level_indexes_and_a_bloom_of_their_own() {
        let block = sample();
        let second = receipt(&block, 1);
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["transactionIndex"], "0x1");
        assert_eq!(json["blockNumber"], "0x5");
        assert_eq!(json["cumulativeGasUsed"], "0xea60");
        assert_eq!(json["gasUsed"], "0x7530");
        assert_eq!(json["status"], "0x1");
        assert_eq!(json["type"], "0x0");
        assert_eq!(json["effectiveGasPrice"], "0xa");
        assert_eq!(json["logs"][0]["logIndex"], "0x2");
        assert_eq!(json["logs"][0]["transactionIndex"], "0x1");
        assert_eq!(json["contractAddress"], serde_json::Value::Null);
        let own = logs_bloom(&block.transactions[1].receipt.logs);
        assert_eq!(second.inner.logs_bloom(), &own);
        assert_ne!(own, block.logs_bloom, "per-receipt bloom, not the block's");
    }

    #[test]
    fn block_logs_are_numbered_across_transactions() {
        let block = sample();
        let indexes: Vec<(u64, u64)> = block_logs(&block)
            .map(|l| (l.transaction_index.unwrap(), l.log_index.unwrap()))
            .collect();
        assert_eq!(indexes, vec![(0, 0), (0, 1), (1, 2)]);
    }

    #[test]
    fn blocks_have_the_post_merge_shape() {
        let block = sample();
        let config = EvmConfig {
            fee_recipient: Address::repeat_byte(0xfe),
            ..EvmConfig::default()
        };
        let json = serde_json::to_value(super::block(&block, &config, false)).unwrap();
        assert_eq!(json["number"], "0x5");
        assert_eq!(json["hash"], format!("{}", block.hash));
        assert_eq!(json["miner"], format!("{:#x}", config.fee_recipient));
        assert_eq!(json["difficulty"], "0x0");
        assert_eq!(json["nonce"], "0x0000000000000000");
        assert_eq!(json["sha3Uncles"], format!("{EMPTY_OMMER_ROOT_HASH}"));
        assert_eq!(json["baseFeePerGas"], "0x7");
        assert_eq!(json["uncles"], serde_json::json!([]));
        assert_eq!(json["withdrawals"], serde_json::json!([]));
        assert_eq!(
            json["transactions"][1],
            format!("{}", block.transactions[1].hash)
        );
        let size = json["size"].as_str().unwrap();
        assert!(size.starts_with("0x") && size != "0x0");
        let full = serde_json::to_value(super::block(&block, &config, true)).unwrap();
        assert_eq!(full["transactions"][1]["blockNumber"], "0x5");
        assert_eq!(full["transactions"][1]["transactionIndex"], "0x1");
        assert_eq!(
            full["transactions"][1]["from"],
            format!("{:#x}", Address::repeat_byte(1))
        );
        // The transactions root is the trie root of the transactions, so it differs from the
        // empty root once there are transactions.
        assert_ne!(json["transactionsRoot"], format!("{EMPTY_ROOT_HASH}"));
    }
}
