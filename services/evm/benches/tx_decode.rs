//! Microbenchmarks of what `eth_sendRawTransaction` does before execution, on signed EIP-1559
//! ERC-20 `transfer`s: the whole of `decode_transaction` (EIP-2718 decoding, the stateless
//! checks, sender recovery), and its two main parts alone.
#![allow(clippy::unwrap_used)]

mod support;

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use criterion::{criterion_group, criterion_main};
use parsec_evm::{EvmConfig, decode_transaction};
use std::hint::black_box;
use std::time::Duration;
use support::{GWEI, TRANSFER_GAS, recipient, transfer_input};

/// Distinct transactions the benchmarks cycle through, so no iteration sees the same bytes as
/// the one before (no help from branch predictors or caches beyond what production gets).
const TXS: usize = 64;

/// `TXS` transfers signed by one sender, nonces 0.., to rotating recipients.
fn signed_transfers(config: &EvmConfig) -> (Address, Vec<Bytes>) {
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x42)).unwrap();
    let token = Address::repeat_byte(0x70);
    let raws = (0..TXS)
        .map(|nonce| {
            let tx = TxEip1559 {
                chain_id: config.chain_id,
                nonce: nonce as u64,
                gas_limit: TRANSFER_GAS,
                max_fee_per_gas: u128::from(GWEI),
                max_priority_fee_per_gas: 0,
                to: TxKind::Call(token),
                value: U256::ZERO,
                access_list: Default::default(),
                input: transfer_input(recipient(nonce)),
            };
            let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
            let envelope: TxEnvelope = tx.into_signed(signature).into();
            Bytes::from(envelope.encoded_2718())
        })
        .collect();
    (signer.address(), raws)
}

/// Cycles through `items`, one per call.
fn cycle<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T {
    let mut next = 0;
    move || {
        let item = &items[next];
        next = (next + 1) % items.len();
        item
    }
}

fn tx_decode(c: &mut criterion::Criterion) {
    let config = EvmConfig::default();
    let (sender, raws) = signed_transfers(&config);
    let envelopes: Vec<TxEnvelope> = raws
        .iter()
        .map(|raw| {
            let tx = decode_transaction(raw, &config).unwrap();
            assert_eq!(tx.sender, sender, "the sender is recovered");
            tx.envelope
        })
        .collect();

    let mut group = c.benchmark_group("tx_decode");
    let mut next_raw = cycle(&raws);
    group.bench_function("decode_transaction_erc20_transfer", |b| {
        b.iter(|| decode_transaction(black_box(next_raw()), &config).unwrap())
    });
    // Parsing alone: the EIP-2718 envelope and its RLP, including the hash of the bytes.
    let mut next_raw = cycle(&raws);
    group.bench_function("decode_2718_only", |b| {
        b.iter(|| TxEnvelope::decode_2718_exact(black_box(next_raw())).unwrap())
    });
    // Recovery alone on a decoded envelope: the signing hash (RLP + keccak) and ecrecover.
    let mut next_envelope = cycle(&envelopes);
    group.bench_function("recover_signer_only", |b| {
        b.iter(|| black_box(next_envelope()).recover_signer().unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_secs(2));
    targets = tx_decode
}
criterion_main!(benches);
