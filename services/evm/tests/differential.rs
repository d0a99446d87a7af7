//! The same signed transactions executed by plain revm over an in-memory `CacheDB` and by the
//! executor over the key store end in identical balances, nonces, code, storage, logs and gas.
#![allow(clippy::unwrap_used)]

mod common;

use common::in_process;
use parsec_evm::Chain as _;
use parsec_evm::ChainSettings;
use parsec_evm::chain::SendError;

use std::collections::BTreeSet;

use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, TxKind, U256};
use alloy_sol_types::{SolCall, SolValue};
use common::*;
use parsec_evm::state;
use parsec_evm::{EvmConfig, ExecError, decode_transaction};
use revm::context::result::ExecutionResult;
use revm::database::{CacheDB, EmptyDB};
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, MainBuilder, MainContext};

/// Plain revm, committing into a `CacheDB`.
struct Reference {
    db: CacheDB<EmptyDB>,
    config: EvmConfig,
}

impl Reference {
    fn fund(&mut self, address: Address, balance: U256) {
        self.db
            .insert_account_info(address, AccountInfo::from_balance(balance));
    }

    /// `None` when the transaction is invalid.
    fn send(&mut self, raw: &[u8], block: &parsec_evm::BlockInfo) -> Option<ExecutionResult> {
        let tx = decode_transaction(raw, &self.config).ok()?;
        let mut evm = Context::mainnet()
            .with_db(&mut self.db)
            .with_cfg(self.config.cfg_env())
            .with_block(self.config.block_env(block))
            .build_mainnet();
        evm.transact_commit(tx.tx_env()).ok()
    }
}

/// Runs `txs` on both and compares every outcome and the final state.
async fn compare(txs: &[Bytes], funded: &[Address], prefetch: bool) {
    let mut chain = Chain::new();
    chain.prefetch = prefetch;
    let mut reference = Reference {
        db: CacheDB::new(EmptyDB::default()),
        config: chain.executor.config().clone(),
    };
    for address in funded {
        chain.store.fund(*address, U256::from(1_000 * ETH));
        reference.fund(*address, U256::from(1_000 * ETH));
    }
    let mut statuses = Vec::new();
    for (i, raw) in txs.iter().enumerate() {
        let expected = reference.send(raw, &chain.block);
        match (chain.send(raw).await, expected) {
            (Ok(done), Some(expected)) => {
                let receipt = &done.receipt;
                assert_eq!(receipt.status, expected.is_success(), "tx {i} status");
                assert_eq!(receipt.gas_used, expected.tx_gas_used(), "tx {i} gas");
                let logs = if expected.is_success() {
                    expected.logs().to_vec()
                } else {
                    Vec::new()
                };
                assert_eq!(receipt.logs, logs, "tx {i} logs");
                statuses.push(receipt.status);
            }
            (Err(ExecError::Invalid(_)), None) => statuses.push(false),
            (ours, theirs) => panic!("tx {i}: ours {ours:?}, revm {theirs:?}"),
        }
    }
    // Both succeeded and failed transactions were exercised.
    assert!(statuses.iter().any(|s| *s) && statuses.iter().any(|s| !*s));

    // Every account revm knows has the same balance, nonce, code and storage here.
    let mut accounts = 0;
    let mut slots = 0;
    for (address, account) in &reference.db.cache.accounts {
        let info = &account.info;
        let ours = chain.store.account(*address);
        assert_eq!(ours.balance, info.balance, "balance of {address}");
        assert_eq!(ours.nonce, info.nonce, "nonce of {address}");
        assert_eq!(ours.code_hash, info.code_hash, "code hash of {address}");
        if info.code_hash != KECCAK256_EMPTY {
            let code = reference.db.cache.contracts[&info.code_hash].original_bytes();
            assert_eq!(chain.store.code(*address), code, "code of {address}");
        }
        if !(info.balance.is_zero() && info.nonce == 0 && info.code_hash == KECCAK256_EMPTY) {
            accounts += 1;
        }
        for (slot, value) in &account.storage {
            assert_eq!(
                chain.store.storage(*address, *slot),
                *value,
                "slot {slot} of {address}"
            );
            if !value.is_zero() {
                slots += 1;
            }
        }
    }
    // …and nothing else is stored: no stray accounts or slots.
    let count = |tag: u8| chain.store.data.keys().filter(|k| k[0] == tag).count();
    assert_eq!(count(state::ACCOUNT), accounts);
    assert_eq!(count(state::STORAGE), slots);
    let code_hashes: BTreeSet<B256> = reference
        .db
        .cache
        .accounts
        .values()
        .map(|a| a.info.code_hash)
        .filter(|h| *h != KECCAK256_EMPTY)
        .collect();
    assert_eq!(count(state::CODE), code_hashes.len());
}

/// A sequence with transfers of every type, an ERC-20, reverts, out of gas, nested calls,
/// CREATE/CREATE2, SELFDESTRUCT, precompiles and invalid transactions.
fn sequence() -> (Vec<Bytes>, Vec<Address>) {
    let mut alice = Wallet::new(1);
    let mut bob = Wallet::new(2);
    let carol = Address::repeat_byte(0xc0);
    let fee = Fee::default();
    let mut txs = Vec::new();
    let call = |to| TxKind::Call(to);

    // ETH transfers: 1559, legacy (EIP-155 and not), 2930 with an access list.
    txs.push(alice.eip1559(call(carol), U256::from(ETH), Bytes::new(), 21_000, fee));
    txs.push(alice.legacy(
        call(bob.address()),
        U256::from(5),
        Bytes::new(),
        21_000,
        3 * GWEI,
        Some(0xcbdc),
    ));
    txs.push(bob.legacy(
        call(carol),
        U256::from(7),
        Bytes::new(),
        21_000,
        2 * GWEI,
        None,
    ));
    let list = AccessList(vec![AccessListItem {
        address: carol,
        storage_keys: vec![B256::ZERO],
    }]);
    txs.push(alice.eip2930(
        call(carol),
        U256::from(1),
        Bytes::new(),
        30_000,
        2 * GWEI,
        list,
    ));

    // The token and the probe.
    let args = (
        "Parsec".to_string(),
        "PRS".to_string(),
        U256::from(1_000_000u64),
    )
        .abi_encode_params();
    let token = alice.address().create(alice.nonce);
    txs.push(alice.eip1559(
        TxKind::Create,
        U256::ZERO,
        with_args(&token_artifact().bytecode, &args),
        3_000_000,
        fee,
    ));
    let probe = alice.address().create(alice.nonce);
    txs.push(alice.eip1559(
        TxKind::Create,
        U256::from(ETH),
        probe_artifact().bytecode,
        3_000_000,
        fee,
    ));

    let to_token = |w: &mut Wallet, input: Vec<u8>| {
        w.eip1559(call(token), U256::ZERO, input.into(), 200_000, fee)
    };
    txs.push(to_token(
        &mut alice,
        IToken::transferCall {
            to: bob.address(),
            amount: U256::from(500),
        }
        .abi_encode(),
    ));
    txs.push(to_token(
        &mut bob,
        IToken::transferCall {
            to: carol,
            amount: U256::from(100),
        }
        .abi_encode(),
    ));
    txs.push(to_token(
        &mut bob,
        IToken::approveCall {
            spender: alice.address(),
            amount: U256::from(50),
        }
        .abi_encode(),
    ));
    txs.push(to_token(
        &mut alice,
        IToken::transferFromCall {
            from: bob.address(),
            to: carol,
            amount: U256::from(20),
        }
        .abi_encode(),
    ));
    // Too much: custom error.
    txs.push(to_token(
        &mut alice,
        IToken::transferFromCall {
            from: bob.address(),
            to: carol,
            amount: U256::from(31),
        }
        .abi_encode(),
    ));
    txs.push(to_token(
        &mut bob,
        IToken::transferCall {
            to: carol,
            amount: U256::from(1_000),
        }
        .abi_encode(),
    ));
    // Transfer all, back to zero (storage deleted).
    txs.push(to_token(
        &mut bob,
        IToken::transferCall {
            to: carol,
            amount: U256::from(380),
        }
        .abi_encode(),
    ));
    // Not the owner.
    txs.push(to_token(
        &mut bob,
        IToken::mintCall {
            to: carol,
            amount: U256::from(1),
        }
        .abi_encode(),
    ));
    txs.push(to_token(
        &mut alice,
        IToken::mintCall {
            to: carol,
            amount: U256::from(1),
        }
        .abi_encode(),
    ));

    let to_probe = |w: &mut Wallet, value: u128, input: Vec<u8>, gas: u64| {
        w.eip1559(call(probe), U256::from(value), input.into(), gas, fee)
    };
    txs.push(to_probe(
        &mut alice,
        0,
        IProbe::storeCall {
            key: U256::from(1),
            value: U256::from(11),
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::storeThenFailCall {
            key: U256::from(2),
            value: U256::from(22),
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::failWithReasonCall {
            reason: "no".into(),
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::failWithCustomCall {
            code: U256::from(3),
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::divideCall {
            a: U256::from(3),
            b: U256::ZERO,
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut alice,
        0,
        IProbe::burnCall { n: U256::from(50) }.abi_encode(),
        120_000,
    ));
    txs.push(to_probe(
        &mut alice,
        0,
        IProbe::burnCall { n: U256::from(2) }.abi_encode(),
        200_000,
    ));
    let child = probe.create(1);
    txs.push(to_probe(
        &mut alice,
        ETH,
        IProbe::createCall {
            value: U256::from(9),
        }
        .abi_encode(),
        500_000,
    ));
    txs.push(to_probe(
        &mut alice,
        0,
        IProbe::create2Call {
            salt: B256::repeat_byte(1),
            value: U256::from(8),
        }
        .abi_encode(),
        500_000,
    ));
    txs.push(to_probe(
        &mut alice,
        0,
        IProbe::create2Call {
            salt: B256::repeat_byte(1),
            value: U256::from(8),
        }
        .abi_encode(),
        500_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::nestedCall { child }.abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        ETH / 2,
        IProbe::createAndDestroyCall { beneficiary: carol }.abi_encode(),
        500_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::destroyCall {
            child,
            beneficiary: carol,
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::shaCall {
            data: Bytes::from_static(b"abc"),
        }
        .abi_encode(),
        200_000,
    ));
    txs.push(to_probe(
        &mut bob,
        0,
        IProbe::precompileCall {
            target: Address::with_last_byte(5),
            input: [
                U256::from(1),
                U256::from(1),
                U256::from(1),
                U256::from(0x030507),
            ]
            .abi_encode()
            .into(),
        }
        .abi_encode(),
        200_000,
    ));
    // ETH straight into precompiles and into the probe (receive()).
    txs.push(alice.eip1559(
        call(Address::with_last_byte(1)),
        U256::from(1),
        Bytes::new(),
        50_000,
        fee,
    ));
    txs.push(alice.eip1559(
        call(Address::with_last_byte(2)),
        U256::from(1),
        Bytes::from_static(b"x"),
        50_000,
        fee,
    ));
    txs.push(alice.eip1559(call(probe), U256::from(3), Bytes::new(), 50_000, fee));

    // Invalid: a nonce gap, a replay, insufficient funds, a contract creation that runs out of
    // gas while depositing code.
    let mut gap = Wallet::new(1);
    gap.nonce = 100;
    txs.push(gap.eip1559(call(carol), U256::from(1), Bytes::new(), 21_000, fee));
    txs.push(txs[0].clone());
    txs.push(bob.eip1559(
        call(carol),
        U256::from(10_000 * ETH),
        Bytes::new(),
        21_000,
        fee,
    ));
    txs.push(alice.eip1559(
        TxKind::Create,
        U256::ZERO,
        token_artifact().bytecode,
        200_000,
        fee,
    ));
    txs.push(alice.eip1559(call(carol), U256::from(1), Bytes::new(), 21_000, fee));

    (
        txs,
        vec![Wallet::new(1).address(), Wallet::new(2).address()],
    )
}

#[tokio::test]
async fn executor_matches_plain_revm() {
    let (txs, funded) = sequence();
    compare(&txs, &funded, false).await;
}

#[tokio::test]
async fn executor_with_prefetch_matches_plain_revm() {
    let (txs, funded) = sequence();
    compare(&txs, &funded, true).await;
}

#[tokio::test]
async fn calls_agree_with_plain_revm() {
    // A sanity check of the read path: eth_call's view of the token after the sequence.
    let (txs, funded) = sequence();
    let mut chain = Chain::new();
    for address in &funded {
        chain.store.fund(*address, U256::from(1_000 * ETH));
    }
    for raw in &txs {
        let _ = chain.send(raw).await;
    }
    let token = Wallet::new(1).address().create(3);
    let request = parsec_evm::CallRequest {
        to: Some(token),
        input: IToken::totalSupplyCall {}.abi_encode().into(),
        ..Default::default()
    };
    let out = chain
        .executor
        .call(&request, &chain.block, &chain.store)
        .await
        .unwrap();
    assert_eq!(
        U256::abi_decode(&out.output).unwrap(),
        U256::from(1_000_001u64)
    );
}

/// The same sequence through an agent over three shards (locks, two-phase commit, the block
/// clock; in one process): the same outcomes, receipts and final state as plain revm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parsec_over_three_shards_matches_plain_revm() {
    let (txs, funded) = sequence();
    let block = block();
    let settings = ChainSettings {
        evm: config(),
        base_fee: block.base_fee,
        nonce_gap_timeout: std::time::Duration::from_millis(200),
        accounts: Vec::new(),
        ..ChainSettings::default()
    };
    let chain = in_process::chain(3, settings, &funded, U256::from(1_000 * ETH)).await;
    let mut reference = Reference {
        db: CacheDB::new(EmptyDB::default()),
        config: config(),
    };
    for address in &funded {
        reference.fund(*address, U256::from(1_000 * ETH));
    }
    let mut committed = Vec::new();
    for (i, raw) in txs.iter().enumerate() {
        let expected = reference.send(raw, &block);
        match (chain.send_raw_transaction(raw.clone()).await, expected) {
            (Ok(hash), Some(expected)) => committed.push((i, hash, expected)),
            // A nonce ahead of the account's waits for its predecessors, then fails.
            (Err(SendError::Invalid(_) | SendError::NonceGap { .. }), None) => {}
            (ours, theirs) => panic!("tx {i}: ours {ours:?}, revm {theirs:?}"),
        }
    }
    let hashes: Vec<B256> = committed.iter().map(|(_, hash, _)| *hash).collect();
    in_process::sealed(&chain, &hashes).await;
    let mut statuses = Vec::new();
    for (i, hash, expected) in &committed {
        let lookup = chain.transaction(*hash).await.unwrap().unwrap();
        let receipt = &lookup.tx().receipt;
        assert_eq!(receipt.status, expected.is_success(), "tx {i} status");
        assert_eq!(receipt.gas_used, expected.tx_gas_used(), "tx {i} gas");
        let logs = if expected.is_success() {
            expected.logs().to_vec()
        } else {
            Vec::new()
        };
        assert_eq!(receipt.logs, logs, "tx {i} logs");
        statuses.push(receipt.status);
    }
    assert!(statuses.iter().any(|s| *s) && statuses.iter().any(|s| !*s));
    for (address, account) in &reference.db.cache.accounts {
        let info = &account.info;
        let ours = chain.account(*address).await.unwrap();
        assert_eq!(ours.balance, info.balance, "balance of {address}");
        assert_eq!(ours.nonce, info.nonce, "nonce of {address}");
        if info.code_hash != KECCAK256_EMPTY {
            let code = reference.db.cache.contracts[&info.code_hash].original_bytes();
            assert_eq!(ours.code, code, "code of {address}");
        } else {
            assert!(ours.code.is_empty(), "code of {address}");
        }
        for (slot, value) in &account.storage {
            assert_eq!(
                chain.storage(*address, *slot).await.unwrap(),
                *value,
                "slot {slot} of {address}"
            );
        }
    }
}
