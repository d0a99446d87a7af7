//! Transaction decoding (`eth_sendRawTransaction`'s first step): raw bytes → a [`SignedTx`] or
//! a clear [`TxError`].
//!
//! Two modes, by the first byte:
//! - anything but `0x00`: the bytes are a raw transaction (the corpus holds real signed ones of
//!   every type). Whatever decodes must round-trip: re-encoding gives the same bytes, the hash is
//!   the keccak of those bytes, decoding again gives the same transaction and sender, and it
//!   passes every stateless rule the decoder claims to check;
//! - `0x00`: the rest describes a transaction (type, fields, signing key) that the harness signs.
//!   A well-formed, validly signed transaction may be refused for a stateless rule (chain id,
//!   fees, gas), never as malformed, and when accepted its sender is the signer.

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{
    SignableTransaction, Signed, Transaction as _, TxEip1559, TxEip2930, TxEnvelope, TxLegacy,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, Bytes, Signature, TxKind, U256, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use arbitrary::{Arbitrary, Unstructured};
use parsec_evm::{EvmConfig, SignedTx, TxError, decode_transaction};

/// The first byte that selects the structured mode (a raw transaction never starts with it:
/// type 0 has no envelope byte).
pub const STRUCTURED: u8 = 0x00;

pub fn run(data: &[u8]) {
    match data.split_first() {
        Some((&STRUCTURED, rest)) => structured(rest),
        _ => raw(data),
    }
}

/// The configurations decoding runs under: `parsec dev`'s, and one that refuses unprotected
/// legacy transactions and large ones.
fn configs() -> [EvmConfig; 2] {
    let strict = EvmConfig {
        allow_unprotected_txs: false,
        max_tx_bytes: 4096,
        ..EvmConfig::default()
    };
    [EvmConfig::default(), strict]
}

fn raw(data: &[u8]) {
    let [lenient, strict] = configs();
    let decoded = decode_transaction(data, &lenient);
    match &decoded {
        Ok(tx) => check_accepted(data, tx, &lenient),
        Err(error) => check_refused(data, error),
    }
    match decode_transaction(data, &strict) {
        Ok(tx) => {
            check_accepted(data, &tx, &strict);
            assert_eq!(
                decoded.as_ref().ok(),
                Some(&tx),
                "the stricter config accepts more"
            );
        }
        Err(error) => {
            check_refused(data, &error);
            if let Ok(tx) = &decoded {
                let expected = if data.len() > strict.max_tx_bytes {
                    matches!(error, TxError::OversizedData { .. })
                } else {
                    tx.envelope.chain_id().is_none() && error == TxError::Unprotected
                };
                assert!(
                    expected,
                    "accepted by dev, refused by strict with {error:?}"
                );
            }
        }
    }
}

/// What must hold of every accepted transaction.
fn check_accepted(raw: &[u8], tx: &SignedTx, config: &EvmConfig) {
    assert_eq!(tx.size, raw.len());
    assert_eq!(
        tx.hash,
        keccak256(raw),
        "the hash is not the hash of the bytes"
    );
    assert_eq!(
        tx.envelope.encoded_2718(),
        raw,
        "accepted bytes do not round-trip"
    );
    assert!(tx.tx_type() <= 2, "type {} accepted", tx.tx_type());
    assert_eq!(tx.envelope.recover_signer().ok(), Some(tx.sender));
    let again = decode_transaction(raw, config).expect("decodes twice");
    assert_eq!(&again, tx, "decoding is not deterministic");
    if let Some(chain_id) = tx.envelope.chain_id() {
        assert_eq!(chain_id, config.chain_id);
    } else {
        assert!(config.allow_unprotected_txs);
    }
    assert!(tx.gas_limit() <= config.block_gas_limit);
    if let Some(tip) = tx.envelope.max_priority_fee_per_gas() {
        assert!(tip <= tx.envelope.max_fee_per_gas());
    }
    // What execution and the receipts derive from it must not panic either.
    let env = tx.tx_env();
    assert_eq!(env.caller, tx.sender);
    assert_eq!(env.nonce, tx.nonce());
    let _ = tx.effective_gas_price(0);
    let _ = tx.effective_gas_price(u64::MAX);
}

fn check_refused(raw: &[u8], error: &TxError) {
    assert!(!error.to_string().is_empty());
    match raw.first() {
        None => assert_eq!(*error, TxError::Empty),
        Some(&first) if first < 0xc0 && !matches!(first, 1 | 2) => assert!(
            matches!(
                error,
                TxError::TypeNotSupported(_) | TxError::OversizedData { .. }
            ),
            "type byte {first:#x} refused with {error:?}"
        ),
        Some(_) => {}
    }
}

/// A transaction described by the fuzzer, signed by the harness.
#[derive(Arbitrary, Debug)]
struct Described {
    kind: Kind,
    /// Index into a few fixed keys, or any 32 bytes.
    key: Key,
    /// `None`: the configured chain id.
    chain_id: Option<u64>,
    nonce: u64,
    gas_limit: u64,
    gas_price: u128,
    tip: u128,
    to: Option<[u8; 20]>,
    value: [u8; 32],
    input: Vec<u8>,
    access_list: Vec<([u8; 20], Vec<[u8; 32]>)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    LegacyUnprotected,
    Legacy,
    AccessList,
    DynamicFee,
}

#[derive(Arbitrary, Debug)]
enum Key {
    Fixed(u8),
    Any([u8; 32]),
}

impl Key {
    fn signer(&self) -> Option<PrivateKeySigner> {
        let bytes = match self {
            Key::Fixed(i) => B256::repeat_byte(1 + i % 4),
            Key::Any(bytes) => B256::from(*bytes),
        };
        // Zero and scalars at or above the group order are no keys.
        PrivateKeySigner::from_bytes(&bytes).ok()
    }
}

fn structured(data: &[u8]) {
    let Ok(described) = Described::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Some(signer) = described.key.signer() else {
        return;
    };
    let config = EvmConfig::default();
    let Some(envelope) = sign(&described, &signer, config.chain_id) else {
        return;
    };
    let raw = envelope.encoded_2718();
    match decode_transaction(&raw, &config) {
        Ok(tx) => {
            assert_eq!(tx.sender, signer.address(), "recovered the wrong sender");
            assert_eq!(tx.envelope, envelope);
            check_accepted(&raw, &tx, &config);
        }
        Err(error) => assert!(
            !matches!(
                error,
                TxError::Empty
                    | TxError::Rlp(_)
                    | TxError::TypeNotSupported(_)
                    | TxError::InvalidSignature
                    | TxError::InvalidSender
                    | TxError::Unprotected
            ),
            "a well-formed signed {:?} refused as malformed: {error:?}",
            described.kind
        ),
    }
}

fn sign(described: &Described, signer: &PrivateKeySigner, chain_id: u64) -> Option<TxEnvelope> {
    let chain_id = described.chain_id.unwrap_or(chain_id);
    let to = match described.to {
        Some(address) => TxKind::Call(Address::from(address)),
        None => TxKind::Create,
    };
    let value = U256::from_be_bytes(described.value);
    let input = Bytes::from(described.input.clone());
    let access_list = AccessList(
        described
            .access_list
            .iter()
            .map(|(address, keys)| AccessListItem {
                address: Address::from(*address),
                storage_keys: keys.iter().map(|k| B256::from(*k)).collect(),
            })
            .collect(),
    );
    match described.kind {
        Kind::LegacyUnprotected | Kind::Legacy => signed(
            TxLegacy {
                chain_id: matches!(described.kind, Kind::Legacy).then_some(chain_id),
                nonce: described.nonce,
                gas_price: described.gas_price,
                gas_limit: described.gas_limit,
                to,
                value,
                input,
            },
            signer,
        ),
        Kind::AccessList => signed(
            TxEip2930 {
                chain_id,
                nonce: described.nonce,
                gas_price: described.gas_price,
                gas_limit: described.gas_limit,
                to,
                value,
                input,
                access_list,
            },
            signer,
        ),
        Kind::DynamicFee => signed(
            TxEip1559 {
                chain_id,
                nonce: described.nonce,
                gas_limit: described.gas_limit,
                max_fee_per_gas: described.gas_price,
                max_priority_fee_per_gas: described.tip,
                to,
                value,
                access_list,
                input,
            },
            signer,
        ),
    }
}

/// `tx` signed by `signer`, in its envelope.
pub fn signed<T>(tx: T, signer: &PrivateKeySigner) -> Option<TxEnvelope>
where
    T: SignableTransaction<Signature>,
    Signed<T>: Into<TxEnvelope>,
{
    let signature = signer.sign_hash_sync(&tx.signature_hash()).ok()?;
    Some(tx.into_signed(signature).into())
}
