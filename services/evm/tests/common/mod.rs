//! Test support: an in-memory key store behind `KeyAccess` / `StateReader`, signed test
//! transactions, the compiled contracts, and a reference chain on plain revm.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, Signature, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use async_trait::async_trait;
use parsec_agent::runner::{AccessError, KeyAccess};
use parsec_core::{Key, LockMode, Value, WriteSet};
use parsec_evm::state::{self, AccountRecord};
use parsec_evm::{
    BlockInfo, EvmConfig, ExecError, ExecOptions, Executed, Executor, ReadError, StateReader,
    decode_transaction,
};

pub mod in_process;

pub const GWEI: u128 = 1_000_000_000;
pub const ETH: u128 = 1_000_000_000_000_000_000;

/// Committed state: a sorted map, as a shard would hold it (absent = empty).
#[derive(Default)]
pub struct Store {
    pub data: BTreeMap<Key, Value>,
    pub reads: AtomicUsize,
}

impl Store {
    pub fn get(&self, key: &Key) -> Value {
        self.data.get(key).cloned().unwrap_or_default()
    }

    pub fn apply(&mut self, writes: &WriteSet) {
        for (key, value) in writes {
            if value.is_empty() {
                self.data.remove(key);
            } else {
                self.data.insert(key.clone(), value.clone());
            }
        }
    }

    pub fn account(&self, address: Address) -> AccountRecord {
        state::decode_account(&self.get(&state::account_key(&address))).unwrap()
    }

    pub fn balance(&self, address: Address) -> U256 {
        self.account(address).balance
    }

    pub fn nonce(&self, address: Address) -> u64 {
        self.account(address).nonce
    }

    pub fn storage(&self, address: Address, slot: U256) -> U256 {
        state::decode_word(&self.get(&state::storage_key(&address, &slot))).unwrap()
    }

    pub fn code(&self, address: Address) -> Bytes {
        let account = self.account(address);
        if !account.has_code() {
            return Bytes::new();
        }
        self.get(&state::code_key(&account.code_hash)).into()
    }

    pub fn fund(&mut self, address: Address, balance: U256) {
        let record = AccountRecord {
            nonce: 0,
            balance,
            code_hash: KECCAK256_EMPTY,
        };
        self.data
            .insert(state::account_key(&address), state::encode_account(&record));
    }
}

#[async_trait]
impl StateReader for Store {
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Value>, ReadError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(keys.iter().map(|k| self.get(k)).collect())
    }
}

/// One transaction's locks over a [`Store`]: records every call, can refuse the n-th.
pub struct MemAccess<'a> {
    pub store: &'a Store,
    pub calls: Vec<(Vec<Key>, LockMode)>,
    pub held: HashMap<Key, LockMode>,
    pub fail_on_call: Option<(usize, AccessError)>,
}

impl<'a> MemAccess<'a> {
    pub fn new(store: &'a Store) -> Self {
        Self {
            store,
            calls: Vec::new(),
            held: HashMap::new(),
            fail_on_call: None,
        }
    }

    pub fn failing_on(store: &'a Store, n: usize, error: AccessError) -> Self {
        Self {
            fail_on_call: Some((n, error)),
            ..Self::new(store)
        }
    }
}

#[async_trait]
impl KeyAccess for MemAccess<'_> {
    async fn lock(&mut self, keys: Vec<Key>, mode: LockMode) -> Result<Vec<Value>, AccessError> {
        self.calls.push((keys.clone(), mode));
        if let Some((n, error)) = &self.fail_on_call
            && *n == self.calls.len()
        {
            return Err(error.clone());
        }
        for key in &keys {
            let held = self.held.entry(key.clone()).or_insert(mode);
            *held = (*held).max(mode);
        }
        Ok(keys.iter().map(|k| self.store.get(k)).collect())
    }
}

/// A funded account that signs transactions.
pub struct Wallet {
    pub signer: PrivateKeySigner,
    pub nonce: u64,
}

impl Wallet {
    pub fn new(seed: u8) -> Self {
        let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(seed)).unwrap();
        Self { signer, nonce: 0 }
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    fn sign<T: SignableTransaction<Signature>>(&self, tx: T) -> Bytes
    where
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
        let signature = self.signer.sign_hash_sync(&tx.signature_hash()).unwrap();
        let envelope: TxEnvelope = tx.into_signed(signature).into();
        envelope.encoded_2718().into()
    }

    /// An EIP-1559 transaction, using and advancing the wallet's nonce.
    pub fn eip1559(&mut self, to: TxKind, value: U256, input: Bytes, gas: u64, fee: Fee) -> Bytes {
        let tx = TxEip1559 {
            chain_id: fee.chain_id,
            nonce: self.next_nonce(),
            gas_limit: gas,
            max_fee_per_gas: fee.max_fee,
            max_priority_fee_per_gas: fee.tip,
            to,
            value,
            access_list: AccessList::default(),
            input,
        };
        self.sign(tx)
    }

    pub fn eip2930(
        &mut self,
        to: TxKind,
        value: U256,
        input: Bytes,
        gas: u64,
        gas_price: u128,
        access_list: AccessList,
    ) -> Bytes {
        let tx = TxEip2930 {
            chain_id: parsec_evm::DEFAULT_CHAIN_ID,
            nonce: self.next_nonce(),
            gas_price,
            gas_limit: gas,
            to,
            value,
            access_list,
            input,
        };
        self.sign(tx)
    }

    /// A legacy transaction; `chain_id: None` is pre-EIP-155.
    pub fn legacy(
        &mut self,
        to: TxKind,
        value: U256,
        input: Bytes,
        gas: u64,
        gas_price: u128,
        chain_id: Option<u64>,
    ) -> Bytes {
        let tx = TxLegacy {
            chain_id,
            nonce: self.next_nonce(),
            gas_price,
            gas_limit: gas,
            to,
            value,
            input,
        };
        self.sign(tx)
    }

    pub fn next_nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce - 1
    }
}

#[derive(Clone, Copy)]
pub struct Fee {
    pub chain_id: u64,
    pub max_fee: u128,
    pub tip: u128,
}

impl Default for Fee {
    fn default() -> Self {
        Self {
            chain_id: parsec_evm::DEFAULT_CHAIN_ID,
            max_fee: 2 * GWEI,
            tip: GWEI,
        }
    }
}

pub fn block() -> BlockInfo {
    BlockInfo {
        number: 7,
        timestamp: 1_700_000_000,
        base_fee: GWEI as u64,
        prevrandao: B256::ZERO,
    }
}

pub fn fee_recipient() -> Address {
    Address::repeat_byte(0xfe)
}

pub fn config() -> EvmConfig {
    EvmConfig {
        fee_recipient: fee_recipient(),
        ..EvmConfig::default()
    }
}

/// A Parsec chain in memory: the executor over a [`Store`], one transaction at a time.
pub struct Chain {
    pub store: Store,
    pub executor: Executor,
    pub block: BlockInfo,
    /// Use lock-free optimistic discovery before locking.
    pub prefetch: bool,
    /// Lock calls of the last transaction.
    pub last_calls: Vec<(Vec<Key>, LockMode)>,
}

impl Chain {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(config: EvmConfig) -> Self {
        Self {
            store: Store::default(),
            executor: Executor::new(config),
            block: block(),
            prefetch: false,
            last_calls: Vec::new(),
        }
    }

    /// Decodes and executes `raw`; on success commits its writes. Checks the locking rules on
    /// the way: every written key was write-locked.
    pub async fn send(&mut self, raw: &[u8]) -> Result<Executed, ExecError> {
        let tx = decode_transaction(raw, self.executor.config())?;
        let mut access = MemAccess::new(&self.store);
        let reader: &dyn StateReader = &self.store;
        let options = ExecOptions {
            reader: self.prefetch.then_some(reader),
            hints: &[],
        };
        let result = self
            .executor
            .execute(&tx, &self.block, &mut access, options)
            .await;
        let calls = std::mem::take(&mut access.calls);
        let held = std::mem::take(&mut access.held);
        drop(access);
        self.last_calls = calls;
        let executed = result?;
        for key in executed.writes.keys() {
            assert_eq!(
                held.get(key),
                Some(&LockMode::Write),
                "wrote {} without a write lock",
                parsec_core::display_key(key)
            );
        }
        self.store.apply(&executed.writes);
        Ok(executed)
    }

    /// Like [`Chain::send`] but the transaction must succeed (status 1).
    pub async fn send_ok(&mut self, raw: &[u8]) -> Executed {
        let executed = self.send(raw).await.unwrap();
        assert!(
            executed.receipt.status,
            "transaction failed: {:?}",
            executed.receipt
        );
        executed
    }
}

/// A compiled contract from `contracts/artifacts`.
pub struct Artifact {
    pub bytecode: Bytes,
    pub deployed: Bytes,
}

pub fn artifact(json: &str) -> Artifact {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let hex = |field: &str| -> Bytes {
        alloy_primitives::hex::decode(value[field].as_str().unwrap())
            .unwrap()
            .into()
    };
    Artifact {
        bytecode: hex("bytecode"),
        deployed: hex("deployedBytecode"),
    }
}

pub fn token_artifact() -> Artifact {
    artifact(include_str!("../../contracts/artifacts/ParsecToken.json"))
}

pub fn probe_artifact() -> Artifact {
    artifact(include_str!("../../contracts/artifacts/Probe.json"))
}

pub fn child_artifact() -> Artifact {
    artifact(include_str!("../../contracts/artifacts/Child.json"))
}

/// Creation code followed by ABI-encoded constructor arguments.
pub fn with_args(code: &Bytes, args: &[u8]) -> Bytes {
    let mut out = code.to_vec();
    out.extend_from_slice(args);
    out.into()
}

alloy_sol_types::sol! {
    interface IToken {
        function transfer(address to, uint256 amount) external returns (bool);
        function transferFrom(address from, address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address who) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function totalSupply() external view returns (uint256);
        function mint(address to, uint256 amount) external;
        event Transfer(address indexed from, address indexed to, uint256 value);
        event Approval(address indexed owner, address indexed spender, uint256 value);
        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
        error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
        error OwnableUnauthorizedAccount(address account);
    }

    interface IProbe {
        error Custom(uint256 code, address who);
        event Stored(uint256 indexed key, uint256 value);
        event Created(address indexed child, bool create2);
        function slots(uint256 key) external view returns (uint256);
        function counter() external view returns (uint256);
        function store(uint256 key, uint256 value) external;
        function bumpIf(uint256 key, uint256 expected) external;
        function failWithReason(string reason) external;
        function failWithCustom(uint256 code) external;
        function storeThenFail(uint256 key, uint256 value) external;
        function divide(uint256 a, uint256 b) external returns (uint256);
        function burn(uint256 n) external;
        function nested(address child) external returns (bool ok);
        function create(uint256 value) external payable returns (address child);
        function create2(bytes32 salt, uint256 value) external payable returns (address child);
        function createAndDestroy(address beneficiary) external payable returns (address child);
        function destroy(address child, address beneficiary) external;
        function recover(bytes32 hash, uint8 v, bytes32 r, bytes32 s) external returns (address);
        function sha(bytes data) external returns (bytes32);
        function precompile(address target, bytes input) external returns (bool ok, bytes output);
        function context() external returns (uint256 chainId, uint256 number, uint256 timestamp, uint256 baseFee, address coinbase);
        function codeHash(address account) external returns (bytes32 hash, uint256 size);
    }

    interface IChild {
        function value() external view returns (uint256);
    }
}
