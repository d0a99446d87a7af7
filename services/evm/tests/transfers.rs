//! ETH transfers of every transaction type with exact fee accounting, and transactions that
//! must be refused with geth's wording and nothing written.
#![allow(clippy::unwrap_used)]

mod common;

use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, Bytes, Signature, TxKind, U256};
use common::*;
use parsec_agent::runner::AccessError;
use parsec_core::LockMode;
use parsec_evm::state;
use parsec_evm::{EvmConfig, ExecError, TxError, decode_transaction};

fn eth(n: u128) -> U256 {
    U256::from(n * ETH)
}

/// A chain where `alice` holds 10 ETH.
fn funded() -> (Chain, Wallet) {
    let mut chain = Chain::new();
    let alice = Wallet::new(1);
    chain.store.fund(alice.address(), eth(10));
    (chain, alice)
}

const BOB: Address = Address::repeat_byte(0xb0);

#[tokio::test]
async fn eip1559_transfer_pays_base_fee_burnt_and_tip_to_the_recipient() {
    let (mut chain, mut alice) = funded();
    let fee = Fee {
        max_fee: 3 * GWEI,
        tip: 2 * GWEI,
        ..Fee::default()
    };
    let raw = alice.eip1559(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, fee);
    let done = chain.send_ok(&raw).await;

    let receipt = &done.receipt;
    assert_eq!(receipt.gas_used, 21_000);
    assert_eq!(receipt.tx_type, 2);
    // base fee 1 gwei + tip min(2, 3 - 1) gwei
    assert_eq!(receipt.effective_gas_price, 3 * GWEI);
    let paid = U256::from(21_000 * 3 * GWEI);
    assert_eq!(
        chain.store.balance(alice.address()),
        eth(10) - eth(1) - paid
    );
    assert_eq!(chain.store.nonce(alice.address()), 1);
    assert_eq!(chain.store.balance(BOB), eth(1));
    assert_eq!(
        chain.store.balance(fee_recipient()),
        U256::from(21_000 * 2 * GWEI)
    );
    // Sender, recipient, fee recipient.
    assert_eq!(done.writes.len(), 3);
}

#[tokio::test]
async fn eip1559_tip_is_capped_by_the_fee_cap() {
    let (mut chain, mut alice) = funded();
    let fee = Fee {
        max_fee: GWEI + 5,
        tip: GWEI,
        ..Fee::default()
    };
    let raw = alice.eip1559(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, fee);
    let done = chain.send_ok(&raw).await;
    assert_eq!(done.receipt.effective_gas_price, GWEI + 5);
    assert_eq!(chain.store.balance(fee_recipient()), U256::from(21_000 * 5));
}

#[tokio::test]
async fn legacy_eip155_and_pre_eip155_transfers() {
    let (mut chain, mut alice) = funded();
    let price = 5 * GWEI;
    let raw = alice.legacy(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        price,
        Some(parsec_evm::DEFAULT_CHAIN_ID),
    );
    let done = chain.send_ok(&raw).await;
    assert_eq!(done.receipt.tx_type, 0);
    assert_eq!(done.receipt.effective_gas_price, price);
    let raw = alice.legacy(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, price, None);
    chain.send_ok(&raw).await;

    let paid = U256::from(2 * 21_000 * price);
    assert_eq!(chain.store.balance(alice.address()), eth(8) - paid);
    assert_eq!(chain.store.nonce(alice.address()), 2);
    assert_eq!(chain.store.balance(BOB), eth(2));
    // Tip = price - base fee.
    assert_eq!(
        chain.store.balance(fee_recipient()),
        U256::from(2 * 21_000 * (price - GWEI))
    );
}

#[tokio::test]
async fn unprotected_legacy_transactions_can_be_refused() {
    let mut alice = Wallet::new(1);
    let raw = alice.legacy(
        TxKind::Call(BOB),
        U256::ZERO,
        Bytes::new(),
        21_000,
        GWEI,
        None,
    );
    let config = EvmConfig {
        allow_unprotected_txs: false,
        ..EvmConfig::default()
    };
    let error = decode_transaction(&raw, &config).unwrap_err();
    assert_eq!(error, TxError::Unprotected);
    assert!(error.to_string().contains("only replay-protected"));
}

#[tokio::test]
async fn eip2930_transfer_charges_the_access_list() {
    let (mut chain, mut alice) = funded();
    let list = AccessList(vec![AccessListItem {
        address: BOB,
        storage_keys: vec![B256::ZERO, B256::repeat_byte(1)],
    }]);
    let price = 2 * GWEI;
    // 21000 + 2400 per address + 1900 per slot.
    let gas = 21_000 + 2_400 + 2 * 1_900;
    let low = alice.eip2930(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        gas - 1,
        price,
        list.clone(),
    );
    let error = chain.send(&low).await.unwrap_err();
    assert!(
        error.to_string().starts_with("intrinsic gas too low"),
        "{error}"
    );
    alice.nonce = 0;
    let raw = alice.eip2930(TxKind::Call(BOB), eth(1), Bytes::new(), gas, price, list);
    let done = chain.send_ok(&raw).await;
    assert_eq!(done.receipt.tx_type, 1);
    assert_eq!(done.receipt.gas_used, gas);
    assert_eq!(
        chain.store.balance(alice.address()),
        eth(9) - U256::from(u128::from(gas) * price)
    );
}

/// Runs `raw` and checks that it is refused and that nothing was written.
async fn refused(chain: &mut Chain, raw: &[u8]) -> ExecError {
    let before = chain.store.data.clone();
    let error = chain.send(raw).await.unwrap_err();
    assert_eq!(chain.store.data, before, "nothing written on {error}");
    error
}

#[tokio::test]
async fn nonces_start_at_zero_and_must_match() {
    let (mut chain, mut alice) = funded();
    alice.nonce = 1;
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let error = refused(&mut chain, &raw).await;
    assert!(matches!(
        error,
        ExecError::Invalid(TxError::NonceTooHigh {
            tx: 1,
            state: 0,
            ..
        })
    ));
    assert!(error.to_string().starts_with("nonce too high"), "{error}");

    alice.nonce = 0;
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    chain.send_ok(&raw).await;
    let error = refused(&mut chain, &raw).await;
    assert!(matches!(
        error,
        ExecError::Invalid(TxError::NonceTooLow {
            tx: 0,
            state: 1,
            ..
        })
    ));
    assert!(error.to_string().starts_with("nonce too low"), "{error}");
}

#[tokio::test]
async fn insufficient_funds_is_refused() {
    let (mut chain, mut alice) = funded();
    // 10 ETH - value 10 ETH leaves nothing for gas.
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(10),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let error = refused(&mut chain, &raw).await;
    assert!(
        error
            .to_string()
            .starts_with("insufficient funds for gas * price + value"),
        "{error}"
    );
    // An account that never existed.
    let mut nobody = Wallet::new(9);
    let raw = nobody.eip1559(
        TxKind::Call(BOB),
        U256::from(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let error = refused(&mut chain, &raw).await;
    assert!(matches!(
        error,
        ExecError::Invalid(TxError::InsufficientFunds { .. })
    ));
}

#[tokio::test]
async fn value_plus_fee_overflowing_u256_is_insufficient_funds() {
    // The C++ reference wraps value + gas * price (reference §6.4); revm's checked arithmetic
    // refuses it.
    let (mut chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        U256::MAX - U256::from(21_000),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let error = refused(&mut chain, &raw).await;
    assert!(
        matches!(error, ExecError::Invalid(TxError::InsufficientFunds { .. })),
        "{error}"
    );
    assert_eq!(chain.store.balance(BOB), U256::ZERO);
}

#[tokio::test]
async fn fee_cap_below_base_fee_is_refused() {
    let (mut chain, mut alice) = funded();
    let fee = Fee {
        max_fee: GWEI - 1,
        tip: 0,
        ..Fee::default()
    };
    let raw = alice.eip1559(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, fee);
    let error = refused(&mut chain, &raw).await;
    assert!(
        error
            .to_string()
            .starts_with("max fee per gas less than block base fee"),
        "{error}"
    );
}

#[tokio::test]
async fn zero_base_fee_and_zero_price_are_allowed() {
    let mut chain = Chain::new();
    chain.block.base_fee = 0;
    let mut alice = Wallet::new(1);
    chain.store.fund(alice.address(), eth(1));
    let fee = Fee {
        max_fee: 0,
        tip: 0,
        ..Fee::default()
    };
    let raw = alice.eip1559(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, fee);
    let done = chain.send_ok(&raw).await;
    assert_eq!(done.receipt.effective_gas_price, 0);
    assert_eq!(chain.store.balance(alice.address()), U256::ZERO);
    assert_eq!(chain.store.balance(BOB), eth(1));
    // No tip: the fee recipient is read, never written or write-locked.
    let recipient = state::account_key(&fee_recipient());
    assert!(!done.writes.contains_key(&recipient));
    assert!(done.stats.locked.contains(&(recipient, LockMode::Read)));
}

#[tokio::test]
async fn wrong_chain_id_is_refused() {
    let (mut chain, mut alice) = funded();
    let fee = Fee {
        chain_id: 1,
        ..Fee::default()
    };
    let raw = alice.eip1559(TxKind::Call(BOB), eth(1), Bytes::new(), 21_000, fee);
    let error = refused(&mut chain, &raw).await;
    assert!(matches!(
        error,
        ExecError::Invalid(TxError::InvalidChainId {
            have: 1,
            want: 0xcbdc
        })
    ));
    assert!(error.to_string().contains("invalid chain id"));
    let raw = alice.legacy(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        GWEI,
        Some(1),
    );
    assert!(matches!(
        refused(&mut chain, &raw).await,
        ExecError::Invalid(TxError::InvalidChainId { have: 1, .. })
    ));
}

/// Re-encodes a signed EIP-1559 transaction with another signature.
fn resign(raw: &[u8], f: impl Fn(&Signature) -> Signature) -> Bytes {
    use alloy_consensus::{SignableTransaction as _, TxEnvelope};
    use alloy_eips::eip2718::{Decodable2718, Encodable2718};
    let TxEnvelope::Eip1559(signed) = TxEnvelope::decode_2718_exact(raw).unwrap() else {
        panic!("not an EIP-1559 transaction");
    };
    let signature = f(signed.signature());
    let envelope: TxEnvelope = signed.strip_signature().into_signed(signature).into();
    envelope.encoded_2718().into()
}

#[tokio::test]
async fn bad_signatures_are_refused() {
    let (mut chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let n = U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap();
    let cases: Vec<(&str, Bytes)> = vec![
        // The malleable twin (n - s, other parity) recovers the same key: EIP-2 forbids it.
        (
            "high s",
            resign(&raw, |s| Signature::new(s.r(), n - s.s(), !s.v())),
        ),
        (
            "zero r",
            resign(&raw, |s| Signature::new(U256::ZERO, s.s(), s.v())),
        ),
        (
            "zero s",
            resign(&raw, |s| Signature::new(s.r(), U256::ZERO, s.v())),
        ),
        ("r = n", resign(&raw, |s| Signature::new(n, s.s(), s.v()))),
    ];
    for (what, bad) in cases {
        let error = refused(&mut chain, &bad).await;
        assert!(
            matches!(error, ExecError::Invalid(TxError::InvalidSignature)),
            "{what}: {error}"
        );
        assert_eq!(error.to_string(), "invalid transaction v, r, s values");
    }
    // A valid-looking signature of something else recovers another sender, which has no funds.
    let other = resign(&raw, |s| {
        Signature::new(s.r() - U256::from(1), s.s(), s.v())
    });
    match chain.send(&other).await {
        Err(ExecError::Invalid(TxError::InvalidSender | TxError::InsufficientFunds { .. })) => {}
        other => panic!("unexpected {other:?}"),
    }
    // The untouched original still goes through.
    chain.send_ok(&raw).await;
}

#[tokio::test]
async fn garbage_and_truncated_rlp_are_refused() {
    let (mut chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    for len in 0..raw.len() {
        let error = refused(&mut chain, &raw[..len]).await;
        assert!(
            matches!(error, ExecError::Invalid(_)),
            "prefix {len}: {error}"
        );
    }
    let mut trailing = raw.to_vec();
    trailing.push(0);
    assert!(matches!(
        refused(&mut chain, &trailing).await,
        ExecError::Invalid(TxError::Rlp(_))
    ));
    for garbage in [&b"\xff\xff\xff"[..], b"hello", &[0xc0], &[0x02, 0x00]] {
        assert!(matches!(
            refused(&mut chain, garbage).await,
            ExecError::Invalid(_)
        ));
    }
    // Blob (3) and set-code (4) transactions and unknown types.
    for ty in [3u8, 4, 0x7f] {
        let mut typed = raw.to_vec();
        typed[0] = ty;
        let error = refused(&mut chain, &typed).await;
        assert_eq!(error.to_string(), "transaction type not supported");
    }
    // Oversized.
    let big = alice.eip1559(
        TxKind::Call(BOB),
        U256::ZERO,
        vec![1u8; 200_000].into(),
        16_000_000,
        Fee::default(),
    );
    assert!(
        refused(&mut chain, &big)
            .await
            .to_string()
            .starts_with("oversized data")
    );
}

#[tokio::test]
async fn intrinsic_gas_and_gas_caps_are_checked_before_execution() {
    let (mut chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        20_999,
        Fee::default(),
    );
    assert!(matches!(
        refused(&mut chain, &raw).await,
        ExecError::Invalid(TxError::IntrinsicGasTooLow {
            gas: 20_999,
            needed: 21_000
        })
    ));
    // Calldata costs 16 gas per non-zero byte (and the EIP-7623 floor is more).
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        vec![1u8; 100].into(),
        22_600,
        Fee::default(),
    );
    let error = refused(&mut chain, &raw).await;
    assert!(
        matches!(error, ExecError::Invalid(TxError::FloorDataGas { .. })),
        "{error}"
    );
    // EIP-7825 (Osaka): at most 2^24 gas per transaction.
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        (1 << 24) + 1,
        Fee::default(),
    );
    assert!(
        refused(&mut chain, &raw)
            .await
            .to_string()
            .starts_with("transaction gas limit too high")
    );
    // EIP-3860: initcode of at most 49152 bytes.
    let raw = alice.eip1559(
        TxKind::Create,
        U256::ZERO,
        vec![0u8; 49_153].into(),
        10_000_000,
        Fee::default(),
    );
    assert!(
        refused(&mut chain, &raw)
            .await
            .to_string()
            .starts_with("max initcode size exceeded")
    );
}

#[tokio::test]
async fn a_transfer_locks_once_with_predictable_keys() {
    let (mut chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let done = chain.send_ok(&raw).await;
    assert_eq!(done.stats.lock_rounds, 1, "{:?}", chain.last_calls);
    assert_eq!(done.stats.runs, 1);
    // Sender, recipient (value moves) and fee recipient (paid a tip): one write-mode call.
    assert_eq!(chain.last_calls.len(), 1);
    assert_eq!(chain.last_calls[0].1, LockMode::Write);
    assert_eq!(chain.last_calls[0].0.len(), 3);
}

#[tokio::test]
async fn a_wound_stops_the_execution_at_the_first_failed_lock() {
    let (chain, mut alice) = funded();
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let tx = decode_transaction(&raw, chain.executor.config()).unwrap();
    let mut access = MemAccess::failing_on(&chain.store, 1, AccessError::Wounded);
    let error = chain
        .executor
        .execute(&tx, &chain.block, &mut access, Default::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ExecError::Access(AccessError::Wounded)));
    assert_eq!(access.calls.len(), 1, "no lock asked after the wound");
}

#[tokio::test]
async fn sending_to_oneself_and_zero_value_transfers() {
    let (mut chain, mut alice) = funded();
    let me = alice.address();
    let raw = alice.eip1559(
        TxKind::Call(me),
        eth(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    chain.send_ok(&raw).await;
    let paid = U256::from(21_000 * 2 * GWEI);
    assert_eq!(chain.store.balance(me), eth(10) - paid);
    let raw = alice.eip1559(
        TxKind::Call(BOB),
        U256::ZERO,
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let done = chain.send_ok(&raw).await;
    // EIP-161: touching an empty account does not create it.
    assert!(chain.store.get(&state::account_key(&BOB)).is_empty());
    assert!(!done.writes.contains_key(&state::account_key(&BOB)));
}
