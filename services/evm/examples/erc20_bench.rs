//! ERC-20 transfers per second through the executor over an in-memory key store: figures, not
//! a test. Run with
//!
//! ```text
//! cargo run --release -p parsec-evm --example erc20_bench -- [accounts] [transfers]
//! ```
//!
//! Prints, per core: sender recovery (decode + ecrecover), plain revm over a `CacheDB` (the
//! ceiling), the executor with key discovery by locks, and with optimistic lock-free prefetch,
//! with the average lock rounds, lock calls and executions per transfer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{B256, Bytes, KECCAK256_EMPTY, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolValue};
use async_trait::async_trait;
use parsec_agent::runner::{AccessError, KeyAccess};
use parsec_core::{Key, LockMode, Value, WriteSet};
use parsec_evm::state::{self, AccountRecord};
use parsec_evm::{
    BlockInfo, EvmConfig, ExecOptions, Executor, ReadError, SignedTx, StateReader,
    decode_transaction,
};
use revm::database::{CacheDB, EmptyDB};
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, MainBuilder, MainContext};

alloy_sol_types::sol! {
    function transfer(address to, uint256 amount) external returns (bool);
}

#[derive(Default)]
struct Store(BTreeMap<Key, Value>);

impl Store {
    fn apply(&mut self, writes: &WriteSet) {
        for (key, value) in writes {
            if value.is_empty() {
                self.0.remove(key);
            } else {
                self.0.insert(key.clone(), value.clone());
            }
        }
    }
    fn get(&self, key: &Key) -> Value {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl StateReader for Store {
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Value>, ReadError> {
        Ok(keys.iter().map(|k| self.get(k)).collect())
    }
}

struct Access<'a>(&'a Store);

#[async_trait]
impl KeyAccess for Access<'_> {
    async fn lock(&mut self, keys: Vec<Key>, _: LockMode) -> Result<Vec<Value>, AccessError> {
        Ok(keys.iter().map(|k| self.0.get(k)).collect())
    }
}

fn sign(signer: &PrivateKeySigner, nonce: u64, to: TxKind, input: Bytes, gas: u64) -> Bytes {
    let tx = TxEip1559 {
        chain_id: parsec_evm::DEFAULT_CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 0,
        max_priority_fee_per_gas: 0,
        to,
        value: U256::ZERO,
        access_list: Default::default(),
        input,
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    envelope.encoded_2718().into()
}

/// A stopwatch for wall time and for this thread's time on a CPU, so that figures taken on a
/// busy, shared machine still say what one core does (`/proc/thread-self/schedstat`, Linux).
struct Watch {
    wall: Instant,
    cpu_ns: Option<u64>,
}

impl Watch {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu_ns: cpu_ns(),
        }
    }

    /// "N tx/s wall, M tx/s per CPU-second".
    fn rates(&self, n: usize) -> String {
        let wall = n as f64 / self.wall.elapsed().as_secs_f64();
        match (self.cpu_ns, cpu_ns()) {
            (Some(a), Some(b)) if b > a => {
                let cpu = n as f64 / ((b - a) as f64 / 1e9);
                format!("{wall:>8.0} tx/s wall, {cpu:>8.0} tx/s per CPU-second")
            }
            _ => format!("{wall:>8.0} tx/s wall"),
        }
    }
}

fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let accounts = args.first().copied().unwrap_or(256);
    let transfers = args.get(1).copied().unwrap_or(20_000);

    // Zero fees, as a CBDC would run, so the fee recipient is never written.
    let config = EvmConfig::default();
    let block = BlockInfo::default();
    let artifact: serde_json::Value =
        serde_json::from_str(include_str!("../contracts/artifacts/ParsecToken.json")).unwrap();
    let mut code = alloy_primitives::hex::decode(artifact["bytecode"].as_str().unwrap()).unwrap();
    code.extend(("Bench".to_string(), "B".to_string(), U256::from(u128::MAX)).abi_encode_params());

    let signers: Vec<PrivateKeySigner> = (0..accounts)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            PrivateKeySigner::from_bytes(&B256::from(seed)).unwrap()
        })
        .collect();
    let owner = &signers[0];
    let token = owner.address().create(0);

    // Setup: deploy, then hand every account tokens.
    let mut setup = vec![sign(owner, 0, TxKind::Create, code.into(), 3_000_000)];
    for (i, signer) in signers.iter().enumerate().skip(1) {
        let input = transferCall {
            to: signer.address(),
            amount: U256::from(1_000_000_000u64),
        };
        setup.push(sign(
            owner,
            i as u64,
            TxKind::Call(token),
            input.abi_encode().into(),
            100_000,
        ));
    }
    // The measured load: round-robin transfers, every account sending in turn.
    println!("signing {transfers} transfers from {accounts} accounts …");
    let mut nonces = vec![0u64; accounts];
    nonces[0] = accounts as u64;
    let load: Vec<Bytes> = (0..transfers)
        .map(|n| {
            let from = n % accounts;
            let to = signers[(from + 1 + n / accounts) % accounts].address();
            let nonce = nonces[from];
            nonces[from] += 1;
            let input = transferCall {
                to,
                amount: U256::from(1),
            };
            sign(
                &signers[from],
                nonce,
                TxKind::Call(token),
                input.abi_encode().into(),
                100_000,
            )
        })
        .collect();

    let watch = Watch::start();
    let decoded: Vec<SignedTx> = load
        .iter()
        .map(|raw| decode_transaction(raw, &config).unwrap())
        .collect();
    println!(
        "decode + sender recovery:            {}",
        watch.rates(transfers)
    );

    // Plain revm, the ceiling.
    let mut db = CacheDB::new(EmptyDB::default());
    for signer in &signers {
        db.insert_account_info(
            signer.address(),
            AccountInfo::from_balance(U256::from(u64::MAX)),
        );
    }
    for raw in &setup {
        let tx = decode_transaction(raw, &config).unwrap();
        let mut evm = Context::mainnet()
            .with_db(&mut db)
            .with_cfg(config.cfg_env())
            .with_block(config.block_env(&block))
            .build_mainnet();
        assert!(evm.transact_commit(tx.tx_env()).unwrap().is_success());
    }
    let watch = Watch::start();
    {
        let mut evm = Context::mainnet()
            .with_db(&mut db)
            .with_cfg(config.cfg_env())
            .with_block(config.block_env(&block))
            .build_mainnet();
        for tx in &decoded {
            assert!(evm.transact_commit(tx.tx_env()).unwrap().is_success());
        }
    }
    println!(
        "plain revm (CacheDB):                {}",
        watch.rates(transfers)
    );

    for prefetch in [false, true] {
        let executor = Executor::new(config.clone());
        let mut store = Store::default();
        for signer in &signers {
            let record = AccountRecord {
                nonce: 0,
                balance: U256::from(u64::MAX),
                code_hash: KECCAK256_EMPTY,
            };
            store.0.insert(
                state::account_key(&signer.address()),
                state::encode_account(&record),
            );
        }
        for raw in &setup {
            let tx = decode_transaction(raw, &config).unwrap();
            let done = executor
                .execute(&tx, &block, &mut Access(&store), ExecOptions::default())
                .await
                .unwrap();
            assert!(done.receipt.status);
            store.apply(&done.writes);
        }
        let (mut rounds, mut calls, mut runs, mut reads) = (0u64, 0u64, 0u64, 0u64);
        let watch = Watch::start();
        for tx in &decoded {
            let reader: &dyn StateReader = &store;
            let options = ExecOptions {
                reader: prefetch.then_some(reader),
                hints: &[],
            };
            let done = executor
                .execute(tx, &block, &mut Access(&store), options)
                .await
                .unwrap();
            assert!(done.receipt.status);
            rounds += u64::from(done.stats.lock_rounds);
            calls += u64::from(done.stats.lock_calls);
            runs += u64::from(done.stats.runs);
            reads += u64::from(done.stats.read_rounds);
            store.apply(&done.writes);
        }
        let per = |x: u64| x as f64 / transfers as f64;
        println!(
            "executor, {:<26} {}\n    per transfer: {:.2} read rounds, {:.2} lock rounds, {:.2} lock calls, {:.2} executions",
            if prefetch {
                "optimistic prefetch:"
            } else {
                "discovery by locks:"
            },
            watch.rates(transfers),
            per(reads),
            per(rounds),
            per(calls),
            per(runs),
        );
    }
}
