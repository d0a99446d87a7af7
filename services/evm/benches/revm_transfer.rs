//! Microbenchmarks of executing one ERC-20 `transfer` (the OpenZeppelin token of
//! `parsec bench erc20`), deployed once in setup:
//! - by plain revm over an in-memory `CacheDB<EmptyDB>`, committing into it (the floor);
//! - by Parsec's `Executor` over an in-memory `KeyAccess`, with and without the lock-free
//!   prefetch the agents use, committing its write-set into a map (what the executor adds on
//!   top of revm: key discovery, lock rounds, re-runs, the write-set and the receipt).
//!
//! Every iteration is the next nonce of one sender, to the next of `RECIPIENTS` recipients. Each
//! recipient gets one transfer during setup, so every measured transfer updates two non-zero
//! balances: the steady state of a token in use.
#![allow(clippy::unwrap_used)]

mod support;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, Signature, TxKind, U256};
use async_trait::async_trait;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use parsec_agent::runner::{AccessError, KeyAccess};
use parsec_core::{Key, LockMode, Value, WriteSet};
use parsec_evm::state::{self, AccountRecord};
use parsec_evm::{
    BlockInfo, EvmConfig, ExecOptions, Executed, Executor, ReadError, SignedTx, StateReader,
};
use revm::database::{CacheDB, EmptyDB};
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, MainBuilder, MainContext};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;
use support::{DEPLOY_GAS, GWEI, RECIPIENTS, TRANSFER_GAS, recipient, token_creation_code};

/// Tokens minted to the sender: enough for any number of one-unit transfers.
const SUPPLY: u64 = u64::MAX;

fn evm_config() -> EvmConfig {
    EvmConfig {
        // Not the zero address, as a real deployment; with no tip it is only read.
        fee_recipient: Address::repeat_byte(0xfe),
        ..EvmConfig::default()
    }
}

fn block() -> BlockInfo {
    BlockInfo {
        number: 1,
        timestamp: 1_700_000_000,
        base_fee: GWEI,
        prevrandao: B256::ZERO,
    }
}

/// Ether enough for gas of far more transactions than a run sends.
fn sender_ether() -> U256 {
    U256::from(10).pow(U256::from(30))
}

/// Signs transactions of one sender in nonce order, paying the base fee and no tip.
struct Sender {
    address: Address,
    nonce: u64,
    chain_id: u64,
}

impl Sender {
    /// The next transaction of this sender as the executor receives it. The signature is a
    /// placeholder: the executor trusts `SignedTx::sender` (checking signatures is
    /// `decode_transaction`'s job, measured in `tx_decode`), and signing each iteration would
    /// cost more than the transfer itself.
    fn next(&mut self, to: TxKind, input: Bytes, gas_limit: u64) -> SignedTx {
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce,
            gas_limit,
            max_fee_per_gas: u128::from(GWEI),
            max_priority_fee_per_gas: 0,
            to,
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        self.nonce += 1;
        let signed = tx.into_signed(Signature::new(U256::from(1), U256::from(1), false));
        let envelope = TxEnvelope::from(signed);
        SignedTx {
            hash: *envelope.tx_hash(),
            size: envelope.encode_2718_len(),
            envelope,
            sender: self.address,
        }
    }

    fn deploy(&mut self) -> SignedTx {
        let code = token_creation_code(U256::from(SUPPLY));
        self.next(TxKind::Create, code, DEPLOY_GAS)
    }

    fn transfer(&mut self, token: Address, i: usize) -> SignedTx {
        let input = support::transfer_input(recipient(i % RECIPIENTS));
        self.next(TxKind::Call(token), input, TRANSFER_GAS)
    }
}

fn sender(config: &EvmConfig) -> Sender {
    Sender {
        address: Address::repeat_byte(0x5e),
        nonce: 0,
        chain_id: config.chain_id,
    }
}

fn plain_revm(c: &mut Criterion) {
    let config = evm_config();
    let mut sender = sender(&config);
    let mut db = CacheDB::new(EmptyDB::default());
    db.insert_account_info(sender.address, AccountInfo::from_balance(sender_ether()));
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(config.cfg_env())
        .with_block(config.block_env(&block()))
        .build_mainnet();

    let token = sender.address.create(sender.nonce);
    let deployed = evm.transact_commit(sender.deploy().tx_env()).unwrap();
    assert!(deployed.is_success(), "{deployed:?}");
    for i in 0..RECIPIENTS {
        let result = evm
            .transact_commit(sender.transfer(token, i).tx_env())
            .unwrap();
        // One Transfer event: the call reached the token.
        assert!(
            result.is_success() && result.logs().len() == 1,
            "{result:?}"
        );
    }

    let mut i = 0;
    c.benchmark_group("revm_transfer")
        .bench_function("plain_revm_cachedb", |b| {
            b.iter_batched(
                || {
                    i += 1;
                    sender.transfer(token, i).tx_env()
                },
                |tx| {
                    let result = evm.transact_commit(tx).unwrap();
                    assert!(result.is_success());
                    black_box(result)
                },
                BatchSize::SmallInput,
            )
        });
}

/// Committed state, as a shard holds it: absent is empty.
#[derive(Default)]
struct MemStore {
    data: HashMap<Key, Value>,
}

impl MemStore {
    fn get(&self, key: &Key) -> Value {
        self.data.get(key).cloned().unwrap_or_default()
    }

    fn apply(&mut self, writes: &WriteSet) {
        for (key, value) in writes {
            if value.is_empty() {
                self.data.remove(key);
            } else {
                self.data.insert(key.clone(), value.clone());
            }
        }
    }
}

#[async_trait]
impl StateReader for MemStore {
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Value>, ReadError> {
        Ok(keys.iter().map(|key| self.get(key)).collect())
    }
}

/// Locks that are always granted at once: the executor's cost without any shard's.
struct MemAccess<'a> {
    store: &'a MemStore,
}

#[async_trait]
impl KeyAccess for MemAccess<'_> {
    async fn lock(&mut self, keys: Vec<Key>, _mode: LockMode) -> Result<Vec<Value>, AccessError> {
        Ok(keys.iter().map(|key| self.store.get(key)).collect())
    }
}

/// Executes `tx` over `store` and commits its writes. The futures never wait (everything is in
/// memory), so a plain `block_on` runs them without a Tokio runtime.
fn execute(executor: &Executor, store: &mut MemStore, tx: &SignedTx, prefetch: bool) -> Executed {
    let reader: &dyn StateReader = &*store;
    let options = ExecOptions {
        reader: prefetch.then_some(reader),
        hints: &[],
    };
    let mut access = MemAccess { store: &*store };
    let executed = block_on(executor.execute(tx, &block(), &mut access, options)).unwrap();
    assert!(executed.receipt.status, "{:?}", executed.receipt);
    store.apply(&executed.writes);
    executed
}

fn parsec_executor(c: &mut Criterion) {
    let mut group = c.benchmark_group("revm_transfer");
    for (name, prefetch) in [("executor_locking", false), ("executor_prefetch", true)] {
        let config = evm_config();
        let mut sender = sender(&config);
        let executor = Executor::new(config);
        let mut store = MemStore::default();
        let funded = AccountRecord {
            nonce: 0,
            balance: sender_ether(),
            code_hash: KECCAK256_EMPTY,
        };
        store.data.insert(
            state::account_key(&sender.address),
            state::encode_account(&funded),
        );

        let token = sender.address.create(sender.nonce);
        execute(&executor, &mut store, &sender.deploy(), prefetch);
        for i in 0..RECIPIENTS {
            let executed = execute(&executor, &mut store, &sender.transfer(token, i), prefetch);
            // One Transfer event: the call reached the token.
            assert_eq!(executed.receipt.logs.len(), 1, "{:?}", executed.receipt);
        }

        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    i += 1;
                    sender.transfer(token, i)
                },
                |tx| black_box(execute(&executor, &mut store, &tx, prefetch)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_secs(2));
    targets = plain_revm, parsec_executor
}
criterion_main!(benches);
