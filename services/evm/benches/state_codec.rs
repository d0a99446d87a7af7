//! Microbenchmarks of the Ethereum state codec (how accounts and storage live in the shard key
//! space): the key builders, and account records and storage words to and from their values.
//! The executor pays these for every key a transaction touches.
#![allow(clippy::unwrap_used)]

mod support;

use alloy_primitives::{Address, B256, KECCAK256_EMPTY, U256};
use criterion::{Criterion, criterion_group, criterion_main};
use parsec_evm::state::{
    AccountRecord, account_key, decode_account, decode_word, encode_account, encode_word,
    storage_key,
};
use std::hint::black_box;
use std::time::Duration;

fn state_codec(c: &mut Criterion) {
    let address = Address::repeat_byte(0x5e);
    // A typical ERC-20 balance slot: keccak(holder ‖ 0) in OpenZeppelin's layout.
    let slot = U256::from_be_bytes(B256::repeat_byte(0x9c).0);
    let eoa = AccountRecord {
        nonce: 42,
        balance: U256::from(10).pow(U256::from(21)),
        code_hash: KECCAK256_EMPTY,
    };
    let contract = AccountRecord {
        nonce: 1,
        balance: U256::ZERO,
        code_hash: B256::repeat_byte(0xc0),
    };
    // A token balance: a few bytes, stored without leading zeros.
    let word = U256::from(1_000_000_000_000_000_000u128);
    let (eoa_value, contract_value, word_value) = (
        encode_account(&eoa),
        encode_account(&contract),
        encode_word(&word),
    );
    assert_eq!(decode_account(&eoa_value).unwrap(), eoa);
    assert_eq!(decode_account(&contract_value).unwrap(), contract);
    assert_eq!(decode_word(&word_value).unwrap(), word);

    let mut group = c.benchmark_group("state_codec");
    group.bench_function("account_key", |b| {
        b.iter(|| account_key(black_box(&address)))
    });
    // Hashes address ‖ slot (keccak256).
    group.bench_function("storage_key", |b| {
        b.iter(|| storage_key(black_box(&address), black_box(&slot)))
    });
    group.bench_function("encode_account_eoa", |b| {
        b.iter(|| encode_account(black_box(&eoa)))
    });
    group.bench_function("encode_account_contract", |b| {
        b.iter(|| encode_account(black_box(&contract)))
    });
    group.bench_function("decode_account_eoa", |b| {
        b.iter(|| decode_account(black_box(&eoa_value)).unwrap())
    });
    group.bench_function("decode_account_contract", |b| {
        b.iter(|| decode_account(black_box(&contract_value)).unwrap())
    });
    group.bench_function("encode_word", |b| b.iter(|| encode_word(black_box(&word))));
    group.bench_function("decode_word", |b| {
        b.iter(|| decode_word(black_box(&word_value)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Eight cheap functions: shorter runs keep the file near 15 s.
    config = support::config(Duration::from_millis(1500));
    targets = state_codec
}
criterion_main!(benches);
