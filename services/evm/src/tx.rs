//! Raw signed transactions: decoding (EIP-2718 envelopes), hashing, sender recovery and the
//! checks that need no state. Errors carry geth's wording, so that ethers, viem and web3.js
//! classify them as they do against geth.

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, uint};
use revm::context::TxEnv;
use revm::context_interface::Cfg as _;
use revm::context_interface::cfg::gas::calculate_initial_tx_gas;

use crate::config::EvmConfig;

/// secp256k1's group order n.
const SECP256K1N: U256 =
    uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);
/// n / 2: EIP-2 rejects signatures with a larger s (the malleable twin of a valid one).
const SECP256K1N_HALF: U256 =
    uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// Why a transaction is refused. The messages are geth's (core/error.go, txpool/errors.go,
/// core/types), which client libraries match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("oversized data: transaction size {size}, limit {limit}")]
    OversizedData { size: usize, limit: usize },
    #[error("typed transaction too short")]
    Empty,
    #[error("rlp: {0}")]
    Rlp(String),
    #[error("transaction type not supported")]
    TypeNotSupported(u8),
    #[error("invalid chain id for signer: have {have} want {want}")]
    InvalidChainId { have: u64, want: u64 },
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    Unprotected,
    #[error("invalid transaction v, r, s values")]
    InvalidSignature,
    #[error("invalid sender")]
    InvalidSender,
    #[error(
        "max priority fee per gas higher than max fee per gas: address {sender}, maxPriorityFeePerGas: {tip}, maxFeePerGas: {fee_cap}"
    )]
    TipAboveFeeCap {
        sender: Address,
        tip: u128,
        fee_cap: u128,
    },
    #[error(
        "max fee per gas less than block base fee: address {sender}, maxFeePerGas: {fee_cap}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        sender: Address,
        fee_cap: u128,
        base_fee: u64,
    },
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGasTooLow { gas: u64, needed: u64 },
    #[error("insufficient gas for floor data gas cost: gas {gas}, minimum needed {needed}")]
    FloorDataGas { gas: u64, needed: u64 },
    #[error("max initcode size exceeded: code size {size}, limit {limit}")]
    MaxInitCodeSizeExceeded { size: usize, limit: usize },
    #[error("transaction gas limit too high (cap: {cap}, tx: {gas})")]
    GasLimitTooHigh { gas: u64, cap: u64 },
    #[error("exceeds block gas limit")]
    ExceedsBlockGasLimit,
    #[error("nonce too low: address {sender}, tx: {tx} state: {state}")]
    NonceTooLow {
        sender: Address,
        tx: u64,
        state: u64,
    },
    #[error("nonce too high: address {sender}, tx: {tx} state: {state}")]
    NonceTooHigh {
        sender: Address,
        tx: u64,
        state: u64,
    },
    #[error("nonce has max value: address {sender}, nonce: {nonce}")]
    NonceMax { sender: Address, nonce: u64 },
    #[error("insufficient funds for gas * price + value: address {sender} have {have} want {want}")]
    InsufficientFunds {
        sender: Address,
        have: U256,
        want: U256,
    },
    #[error("sender not an eoa: address {sender}")]
    SenderNoEoa { sender: Address },
    /// A rule revm enforces that has no geth counterpart above (kept verbatim).
    #[error("invalid transaction: {0}")]
    Other(String),
}

/// A decoded, signature-checked transaction with its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub envelope: TxEnvelope,
    pub hash: B256,
    pub sender: Address,
    /// Length of the raw encoding.
    pub size: usize,
}

impl SignedTx {
    /// The EIP-2718 type: 0 legacy, 1 access list, 2 dynamic fee.
    pub fn tx_type(&self) -> u8 {
        self.envelope.tx_type() as u8
    }

    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }

    /// The recipient; `None` for contract creation.
    pub fn to(&self) -> Option<Address> {
        self.envelope.to()
    }

    pub fn value(&self) -> U256 {
        self.envelope.value()
    }

    pub fn input(&self) -> &Bytes {
        self.envelope.input()
    }

    /// The price per gas actually paid at `base_fee` (the receipt's `effectiveGasPrice`).
    pub fn effective_gas_price(&self, base_fee: u64) -> u128 {
        self.envelope.effective_gas_price(Some(base_fee))
    }

    /// The transaction as revm executes it.
    pub fn tx_env(&self) -> TxEnv {
        let tx = &self.envelope;
        let (gas_price, gas_priority_fee) = match tx.max_priority_fee_per_gas() {
            Some(tip) => (tx.max_fee_per_gas(), Some(tip)),
            None => (tx.gas_price().unwrap_or_default(), None),
        };
        TxEnv {
            tx_type: self.tx_type(),
            caller: self.sender,
            gas_limit: tx.gas_limit(),
            gas_price,
            kind: tx.kind(),
            value: tx.value(),
            data: tx.input().clone(),
            nonce: tx.nonce(),
            chain_id: tx.chain_id(),
            access_list: tx.access_list().cloned().unwrap_or_default(),
            gas_priority_fee,
            ..TxEnv::default()
        }
    }
}

/// Decodes `raw` (an EIP-2718 envelope as `eth_sendRawTransaction` receives it), recovers the
/// sender and applies every check that needs no state.
pub fn decode_transaction(raw: &[u8], config: &EvmConfig) -> Result<SignedTx, TxError> {
    if raw.len() > config.max_tx_bytes {
        return Err(TxError::OversizedData {
            size: raw.len(),
            limit: config.max_tx_bytes,
        });
    }
    let first = *raw.first().ok_or(TxError::Empty)?;
    // 0xc0.. starts an RLP list: a legacy transaction. Anything else is a type byte, and only
    // the types revm runs and we can check are accepted (no blobs, no EIP-7702 delegations).
    if first < 0xc0 && !matches!(first, 1 | 2) {
        return Err(TxError::TypeNotSupported(first));
    }
    let envelope = TxEnvelope::decode_2718_exact(raw).map_err(|e| TxError::Rlp(e.to_string()))?;
    check_chain_id(&envelope, config)?;
    let signature = envelope.signature();
    let (r, s) = (signature.r(), signature.s());
    if r.is_zero() || s.is_zero() || r >= SECP256K1N || s > SECP256K1N_HALF {
        return Err(TxError::InvalidSignature);
    }
    let sender = envelope
        .recover_signer()
        .map_err(|_| TxError::InvalidSender)?;
    let tx = SignedTx {
        hash: *envelope.tx_hash(),
        envelope,
        sender,
        size: raw.len(),
    };
    check_stateless(&tx, config)?;
    Ok(tx)
}

fn check_chain_id(envelope: &TxEnvelope, config: &EvmConfig) -> Result<(), TxError> {
    match envelope.chain_id() {
        Some(have) if have != config.chain_id => Err(TxError::InvalidChainId {
            have,
            want: config.chain_id,
        }),
        Some(_) => Ok(()),
        None if config.allow_unprotected_txs => Ok(()),
        None => Err(TxError::Unprotected),
    }
}

/// Fee fields, gas limit against intrinsic gas and the caps, initcode size.
fn check_stateless(tx: &SignedTx, config: &EvmConfig) -> Result<(), TxError> {
    let envelope = &tx.envelope;
    if let Some(tip) = envelope.max_priority_fee_per_gas()
        && tip > envelope.max_fee_per_gas()
    {
        return Err(TxError::TipAboveFeeCap {
            sender: tx.sender,
            tip,
            fee_cap: envelope.max_fee_per_gas(),
        });
    }
    let cfg = config.cfg_env();
    let gas = envelope.gas_limit();
    let cap = cfg.tx_gas_limit_cap();
    if gas > cap {
        return Err(TxError::GasLimitTooHigh { gas, cap });
    }
    if gas > config.block_gas_limit {
        return Err(TxError::ExceedsBlockGasLimit);
    }
    let is_create = matches!(envelope.kind(), TxKind::Create);
    if is_create && envelope.input().len() > cfg.max_initcode_size() {
        return Err(TxError::MaxInitCodeSizeExceeded {
            size: envelope.input().len(),
            limit: cfg.max_initcode_size(),
        });
    }
    let (accounts, slots) = envelope
        .access_list()
        .map(|list| {
            list.iter().fold((0u64, 0u64), |(a, s), item| {
                (a + 1, s + item.storage_keys.len() as u64)
            })
        })
        .unwrap_or_default();
    let intrinsic = calculate_initial_tx_gas(
        config.spec,
        envelope.input(),
        is_create,
        accounts,
        slots,
        0,
        None,
    );
    let needed = intrinsic.initial_regular_gas + intrinsic.initial_state_gas;
    if gas < needed {
        return Err(TxError::IntrinsicGasTooLow { gas, needed });
    }
    if gas < intrinsic.floor_gas {
        return Err(TxError::FloorDataGas {
            gas,
            needed: intrinsic.floor_gas,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn half_order_is_half_the_order() {
        assert_eq!(SECP256K1N_HALF, SECP256K1N >> 1);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let config = EvmConfig::default();
        assert_eq!(decode_transaction(&[], &config), Err(TxError::Empty));
        for ty in [0u8, 3, 4, 5, 0x7f, 0x80, 0xbf] {
            assert_eq!(
                decode_transaction(&[ty, 0xc0], &config),
                Err(TxError::TypeNotSupported(ty)),
                "type {ty}"
            );
        }
        assert!(matches!(
            decode_transaction(&[0xc0], &config),
            Err(TxError::Rlp(_))
        ));
        assert!(matches!(
            decode_transaction(&[2, 0xc1, 0x80], &config),
            Err(TxError::Rlp(_))
        ));
        let huge = vec![0xc0; config.max_tx_bytes + 1];
        assert!(matches!(
            decode_transaction(&huge, &config),
            Err(TxError::OversizedData { .. })
        ));
    }

    #[test]
    fn messages_use_geths_wording() {
        let a = Address::ZERO;
        assert!(
            TxError::NonceTooLow {
                sender: a,
                tx: 0,
                state: 1
            }
            .to_string()
            .starts_with("nonce too low")
        );
        assert!(
            TxError::InsufficientFunds {
                sender: a,
                have: U256::ZERO,
                want: U256::from(1)
            }
            .to_string()
            .starts_with("insufficient funds for gas * price + value")
        );
        assert!(
            TxError::IntrinsicGasTooLow { gas: 1, needed: 2 }
                .to_string()
                .starts_with("intrinsic gas too low")
        );
        assert_eq!(
            TxError::TypeNotSupported(3).to_string(),
            "transaction type not supported"
        );
    }
}
