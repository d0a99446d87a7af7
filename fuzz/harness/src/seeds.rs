//! Real inputs for the seed corpus (written by `examples/seeds.rs`): signed transactions of
//! every type from the development accounts, and the shipped Lua contracts. Kept in the library
//! so that the targets' own tests can use the same transactions.

use alloy_consensus::{TxEip1559, TxEip2930, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, address, b256};
use alloy_signer_local::PrivateKeySigner;
use parsec_evm::DEFAULT_CHAIN_ID;

use crate::tx_decode::signed;

/// The private keys of the first two accounts of the standard development mnemonic ("test …
/// junk"), which `parsec dev` funds.
pub const DEV_KEYS: [B256; 2] = [
    b256!("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
    b256!("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
];

/// Their addresses.
pub const DEV_ACCOUNTS: [Address; 2] = [
    address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
    address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
];

pub const GWEI: u128 = 1_000_000_000;

pub fn dev_signer(index: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&DEV_KEYS[index]).expect("a valid key")
}

/// The creation code of `services/evm/contracts`' Probe (no constructor arguments).
pub fn probe_creation_code() -> Bytes {
    let artifact: serde_json::Value = serde_json::from_str(include_str!(
        "../../../services/evm/contracts/artifacts/Probe.json"
    ))
    .expect("Probe artifact");
    let hex = artifact["bytecode"].as_str().expect("bytecode");
    hex.parse().expect("hex bytecode")
}

/// ERC-20 `transfer(to, amount)` call data.
pub fn transfer_call(to: Address, amount: u64) -> Bytes {
    let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
    data.extend_from_slice(B256::left_padding_from(to.as_slice()).as_slice());
    data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    data.into()
}

/// A transaction of each type (legacy without and with EIP-155, EIP-2930, EIP-1559; calls,
/// a contract creation, a token call), signed by development account `signer` from `nonce`
/// on, as raw EIP-2718 bytes with a name.
pub fn signed_transactions(signer: usize, nonce: u64) -> Vec<(&'static str, Bytes)> {
    let key = dev_signer(signer);
    let to = DEV_ACCOUNTS[1 - signer];
    let chain_id = DEFAULT_CHAIN_ID;
    let legacy = |chain_id: Option<u64>, nonce: u64| TxLegacy {
        chain_id,
        nonce,
        gas_price: 2 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(to),
        value: U256::from(1_000u64),
        input: Bytes::new(),
    };
    let access_list = TxEip2930 {
        chain_id,
        nonce: nonce + 2,
        gas_price: 2 * GWEI,
        gas_limit: 30_000,
        to: TxKind::Call(to),
        value: U256::from(7u64),
        input: Bytes::new(),
        access_list: AccessList(vec![AccessListItem {
            address: to,
            storage_keys: vec![B256::with_last_byte(1)],
        }]),
    };
    let dynamic = |nonce: u64, to: TxKind, gas_limit: u64, input: Bytes| TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: 2 * GWEI,
        max_priority_fee_per_gas: 0,
        to,
        value: U256::ZERO,
        access_list: AccessList::default(),
        input,
    };
    let token = Address::repeat_byte(0x70);
    let envelopes = [
        ("legacy-unprotected", signed(legacy(None, nonce), &key)),
        (
            "legacy-eip155",
            signed(legacy(Some(chain_id), nonce + 1), &key),
        ),
        ("eip2930", signed(access_list, &key)),
        (
            "eip1559-transfer",
            signed(
                dynamic(nonce + 3, TxKind::Call(to), 21_000, Bytes::new()),
                &key,
            ),
        ),
        (
            "eip1559-create",
            signed(
                dynamic(nonce + 4, TxKind::Create, 3_000_000, probe_creation_code()),
                &key,
            ),
        ),
        (
            "eip1559-token-call",
            signed(
                dynamic(
                    nonce + 5,
                    TxKind::Call(token),
                    100_000,
                    transfer_call(to, 5),
                ),
                &key,
            ),
        ),
    ];
    envelopes
        .into_iter()
        .map(|(name, envelope)| {
            let envelope = envelope.expect("a development key signs");
            (name, Bytes::from(envelope.encoded_2718()))
        })
        .collect()
}

/// The shipped Lua contracts, by file name.
pub const LUA_CONTRACTS: [(&str, &str); 4] = [
    (
        "counter",
        include_str!("../../../services/agent/contracts/counter.lua"),
    ),
    (
        "pay",
        include_str!("../../../services/agent/contracts/pay.lua"),
    ),
    (
        "mint",
        include_str!("../../../services/agent/contracts/mint.lua"),
    ),
    (
        "balances",
        include_str!("../../../services/agent/contracts/balances.lua"),
    ),
];
