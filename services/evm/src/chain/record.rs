//! What the chain stores in the shards besides Ethereum state: each agent's part of each block
//! (the transactions it committed there, with their receipts) and, per transaction, which part
//! holds it. Encoded with postcard; the structs are this module's alone, so the stored format
//! does not move when alloy's types do.

use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, Log, keccak256};
use parsec_core::{Key, Value};
use serde::{Deserialize, Serialize};

use crate::chain::block::BlockTx;
use crate::executor::Receipt;
use crate::state::{self, BLOCK, TX_BY_HASH};

/// The key of `agent`'s part of block `number`.
pub fn part_key(number: u64, agent: u64) -> Key {
    let mut body = [0u8; 16];
    body[..8].copy_from_slice(&number.to_be_bytes());
    body[8..].copy_from_slice(&agent.to_be_bytes());
    state::reserved_key(BLOCK, &body)
}

/// The key under which a transaction's [`TxLocation`] is stored.
pub fn location_key(hash: &B256) -> Key {
    state::reserved_key(TX_BY_HASH, hash.as_slice())
}

/// Which part holds a transaction: written with the part, before the agent reports the block
/// done, so it is there by the time the block seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    pub block: u64,
    pub agent: u64,
}

impl TxLocation {
    pub fn encode(&self) -> Value {
        Value::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        postcard::from_bytes(value).map_err(|e| RecordError(format!("transaction location: {e}")))
    }
}

/// A stored record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt chain record: {0}")]
pub struct RecordError(pub String);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredLog {
    address: [u8; 20],
    topics: Vec<[u8; 32]>,
    data: Vec<u8>,
}

/// One committed transaction of a part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartTx {
    /// EIP-2718 encoding: the transaction hash is its keccak.
    raw: Vec<u8>,
    sender: [u8; 20],
    status: bool,
    gas_used: u64,
    effective_gas_price: u128,
    logs: Vec<StoredLog>,
}

impl PartTx {
    pub fn new(envelope: &TxEnvelope, receipt: &Receipt) -> Self {
        Self {
            raw: envelope.encoded_2718(),
            sender: receipt.from.into_array(),
            status: receipt.status,
            gas_used: receipt.gas_used,
            effective_gas_price: receipt.effective_gas_price,
            logs: receipt
                .logs
                .iter()
                .map(|log| StoredLog {
                    address: log.address.into_array(),
                    topics: log.topics().iter().map(|t| t.0).collect(),
                    data: log.data.data.to_vec(),
                })
                .collect(),
        }
    }

    pub fn hash(&self) -> B256 {
        keccak256(&self.raw)
    }

    /// The transaction with its receipt; block-level fields (cumulative gas, log index) are
    /// the assembler's.
    pub fn decode(&self) -> Result<BlockTx, RecordError> {
        let envelope = TxEnvelope::decode_2718(&mut self.raw.as_slice())
            .map_err(|e| RecordError(format!("stored transaction: {e}")))?;
        let hash = keccak256(&self.raw);
        let sender = Address::from(self.sender);
        let to = alloy_consensus::Transaction::to(&envelope);
        let nonce = alloy_consensus::Transaction::nonce(&envelope);
        let logs = self
            .logs
            .iter()
            .map(|log| {
                Log::new(
                    Address::from(log.address),
                    log.topics.iter().map(|t| B256::from(*t)).collect(),
                    Bytes::from(log.data.clone()),
                )
                .ok_or_else(|| RecordError("a stored log has more than four topics".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let receipt = Receipt {
            tx_hash: hash,
            tx_type: envelope.tx_type() as u8,
            from: sender,
            to,
            nonce,
            status: self.status,
            gas_used: self.gas_used,
            effective_gas_price: self.effective_gas_price,
            contract_address: to.is_none().then(|| sender.create(nonce)),
            logs,
            output: Bytes::new(),
            halt_reason: None,
        };
        Ok(BlockTx {
            envelope,
            hash,
            sender,
            receipt,
            cumulative_gas_used: 0,
            first_log_index: 0,
        })
    }
}

pub fn encode_part(part: &[PartTx]) -> Value {
    Value::from(postcard::to_allocvec(part).unwrap_or_default())
}

pub fn decode_part(value: &[u8]) -> Result<Vec<PartTx>, RecordError> {
    postcard::from_bytes(value).map_err(|e| RecordError(format!("block part: {e}")))
}
