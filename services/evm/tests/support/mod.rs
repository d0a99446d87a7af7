//! TEST FIXTURE ONLY: an in-memory [`Chain`] for the JSON-RPC tests. The production backend is
//! the agent's (over the broker and the ticket machine's block clock); this one runs the real
//! [`Executor`] over the tests' in-memory key store (`common::Store`), one transaction at a
//! time, and seals one block per transaction (or on demand). It funds the first ten accounts
//! of the Hardhat development mnemonic, as `parsec dev` does.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256, Bloom, Bytes, U256, keccak256};
use alloy_signer_local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use async_trait::async_trait;
use parsec_evm::chain::{AccountState, Block, BlockTx, Chain, ChainError, SendError, TxLookup};
use parsec_evm::state;
use parsec_evm::{
    BlockInfo, CallError, CallRequest, CallSuccess, EvmConfig, ExecOptions, Executor,
    decode_transaction,
};
use tokio::sync::{Mutex, broadcast, watch};

use crate::common::{MemAccess, Store};

pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Balance of each funded development account.
pub const DEV_BALANCE: u128 = 10_000 * 1_000_000_000_000_000_000;
pub const BASE_FEE: u64 = 1_000_000_000;
/// How long a future-nonce transaction waits for its predecessors (the agent holds it briefly
/// too, DESIGN.md §5).
const NONCE_GAP_WAIT: Duration = Duration::from_secs(5);

/// The first `n` accounts of the development mnemonic (m/44'/60'/0'/0/i).
pub fn dev_signers(n: u32) -> Vec<PrivateKeySigner> {
    (0..n)
        .map(|i| {
            MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .index(i)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect()
}

struct Sealed {
    store: Store,
    blocks: Vec<Arc<Block>>,
    by_hash: HashMap<B256, u64>,
    txs: HashMap<B256, (u64, usize)>,
    /// Committed, not yet sealed (when not sealing per transaction).
    unsealed: Vec<BlockTx>,
}

pub struct FixtureChain {
    executor: Executor,
    state: Mutex<Sealed>,
    sealed_tx: broadcast::Sender<Arc<Block>>,
    /// Bumped on every commit, so that held future-nonce transactions look again.
    commits: watch::Sender<u64>,
    accounts: Vec<Address>,
    seal_each_tx: bool,
}

pub fn config() -> EvmConfig {
    EvmConfig {
        fee_recipient: Address::repeat_byte(0xfe),
        ..EvmConfig::default()
    }
}

impl FixtureChain {
    /// Seals a block per transaction.
    pub fn new() -> Arc<Self> {
        Self::with_sealing(true)
    }

    /// `seal_each_tx: false`: transactions wait for [`FixtureChain::seal`].
    pub fn with_sealing(seal_each_tx: bool) -> Arc<Self> {
        let accounts: Vec<Address> = dev_signers(10).iter().map(|s| s.address()).collect();
        let mut store = Store::default();
        for account in &accounts {
            store.fund(*account, U256::from(DEV_BALANCE));
        }
        let genesis = Arc::new(Block {
            number: 0,
            hash: keccak256(b"parsec fixture genesis"),
            parent_hash: B256::ZERO,
            timestamp: now(),
            base_fee: BASE_FEE,
            gas_limit: config().block_gas_limit,
            gas_used: 0,
            logs_bloom: Bloom::ZERO,
            transactions: Vec::new(),
        });
        let (sealed_tx, _) = broadcast::channel(64);
        Arc::new(Self {
            executor: Executor::new(config()),
            state: Mutex::new(Sealed {
                store,
                by_hash: HashMap::from([(genesis.hash, 0)]),
                blocks: vec![genesis],
                txs: HashMap::new(),
                unsealed: Vec::new(),
            }),
            sealed_tx,
            commits: watch::channel(0).0,
            accounts,
            seal_each_tx,
        })
    }

    /// Seals the committed transactions (possibly none) into a new block.
    pub async fn seal(&self) -> Arc<Block> {
        let mut state = self.state.lock().await;
        self.seal_locked(&mut state)
    }

    fn seal_locked(&self, state: &mut Sealed) -> Arc<Block> {
        let parent = state.blocks.last().cloned().unwrap();
        let transactions = std::mem::take(&mut state.unsealed);
        let number = parent.number + 1;
        let mut preimage = Vec::new();
        preimage.extend_from_slice(&number.to_be_bytes());
        preimage.extend_from_slice(parent.hash.as_slice());
        for tx in &transactions {
            preimage.extend_from_slice(tx.hash.as_slice());
        }
        let mut bloom = Bloom::ZERO;
        for log in transactions.iter().flat_map(|t| &t.receipt.logs) {
            bloom.accrue_log(log);
        }
        let block = Arc::new(Block {
            number,
            hash: keccak256(&preimage),
            parent_hash: parent.hash,
            timestamp: now().max(parent.timestamp),
            base_fee: BASE_FEE,
            gas_limit: config().block_gas_limit,
            gas_used: transactions.last().map_or(0, |t| t.cumulative_gas_used),
            logs_bloom: bloom,
            transactions,
        });
        for (index, tx) in block.transactions.iter().enumerate() {
            state.txs.insert(tx.hash, (number, index));
        }
        state.by_hash.insert(block.hash, number);
        state.blocks.push(Arc::clone(&block));
        // No subscriber is fine.
        let _ = self.sealed_tx.send(Arc::clone(&block));
        block
    }

    fn block_info(state: &Sealed) -> BlockInfo {
        let head = state.blocks.last().unwrap();
        BlockInfo {
            number: head.number + 1,
            timestamp: now().max(head.timestamp),
            base_fee: BASE_FEE,
            prevrandao: B256::ZERO,
        }
    }

    /// Executes and commits `raw` once its nonce is next; `Ok(None)` when it must wait.
    async fn try_send(&self, raw: &[u8]) -> Result<Option<B256>, SendError> {
        let tx = decode_transaction(raw, self.executor.config())?;
        let mut state = self.state.lock().await;
        let nonce = state.store.nonce(tx.sender);
        if tx.nonce() > nonce {
            return Ok(None);
        }
        let block = Self::block_info(&state);
        let executed = {
            let mut access = MemAccess::new(&state.store);
            self.executor
                .execute(&tx, &block, &mut access, ExecOptions::default())
                .await?
        };
        state.store.apply(&executed.writes);
        let cumulative =
            state.unsealed.last().map_or(0, |t| t.cumulative_gas_used) + executed.receipt.gas_used;
        let first_log_index = state
            .unsealed
            .iter()
            .map(|t| t.receipt.logs.len() as u64)
            .sum();
        state.unsealed.push(BlockTx {
            envelope: tx.envelope,
            hash: tx.hash,
            sender: tx.sender,
            receipt: executed.receipt,
            cumulative_gas_used: cumulative,
            first_log_index,
        });
        if self.seal_each_tx {
            self.seal_locked(&mut state);
        }
        self.commits.send_modify(|n| *n += 1);
        Ok(Some(tx.hash))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn chain_error(error: impl std::fmt::Display) -> ChainError {
    ChainError(error.to_string())
}

#[async_trait]
impl Chain for FixtureChain {
    fn config(&self) -> &EvmConfig {
        self.executor.config()
    }

    fn accounts(&self) -> Vec<Address> {
        self.accounts.clone()
    }

    fn base_fee(&self) -> u64 {
        BASE_FEE
    }

    async fn head(&self) -> Result<u64, ChainError> {
        Ok(self.state.lock().await.blocks.len() as u64 - 1)
    }

    async fn block_by_number(&self, number: u64) -> Result<Option<Arc<Block>>, ChainError> {
        let state = self.state.lock().await;
        Ok(usize::try_from(number)
            .ok()
            .and_then(|n| state.blocks.get(n).cloned()))
    }

    async fn block_by_hash(&self, hash: B256) -> Result<Option<Arc<Block>>, ChainError> {
        let state = self.state.lock().await;
        Ok(state
            .by_hash
            .get(&hash)
            .map(|n| Arc::clone(&state.blocks[*n as usize])))
    }

    async fn account(&self, address: Address) -> Result<AccountState, ChainError> {
        let state = self.state.lock().await;
        let account = state::decode_account(&state.store.get(&state::account_key(&address)))
            .map_err(chain_error)?;
        Ok(AccountState {
            nonce: account.nonce,
            balance: account.balance,
            code: state.store.code(address),
        })
    }

    async fn storage(&self, address: Address, slot: U256) -> Result<U256, ChainError> {
        let state = self.state.lock().await;
        state::decode_word(&state.store.get(&state::storage_key(&address, &slot)))
            .map_err(chain_error)
    }

    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        Ok(self.state.lock().await.store.nonce(address))
    }

    async fn call(&self, request: CallRequest) -> Result<CallSuccess, CallError> {
        let state = self.state.lock().await;
        let block = Self::block_info(&state);
        self.executor.call(&request, &block, &state.store).await
    }

    async fn estimate_gas(&self, request: CallRequest) -> Result<u64, CallError> {
        let state = self.state.lock().await;
        let block = Self::block_info(&state);
        self.executor
            .estimate_gas(&request, &block, &state.store)
            .await
    }

    async fn send_raw_transaction(&self, raw: Bytes) -> Result<B256, SendError> {
        let mut commits = self.commits.subscribe();
        let deadline = tokio::time::Instant::now() + NONCE_GAP_WAIT;
        loop {
            commits.mark_unchanged();
            if let Some(hash) = self.try_send(&raw).await? {
                return Ok(hash);
            }
            // A future nonce: wait for a commit (its predecessor's, maybe) and look again.
            if tokio::time::timeout_at(deadline, commits.changed())
                .await
                .is_err()
            {
                let tx = decode_transaction(&raw, self.executor.config())?;
                let state = self.pending_nonce(tx.sender).await.unwrap_or_default();
                return Err(SendError::NonceGap {
                    sender: tx.sender,
                    tx: tx.nonce(),
                    state,
                    waited_ms: NONCE_GAP_WAIT.as_millis() as u64,
                });
            }
        }
    }

    async fn transaction(&self, hash: B256) -> Result<Option<TxLookup>, ChainError> {
        let state = self.state.lock().await;
        Ok(state.txs.get(&hash).map(|(number, index)| TxLookup {
            block: Arc::clone(&state.blocks[*number as usize]),
            index: *index,
        }))
    }

    fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<Block>> {
        self.sealed_tx.subscribe()
    }
}

/// A server on the fixture chain, on 127.0.0.1 with a free port.
pub struct TestServer {
    pub chain: Arc<FixtureChain>,
    pub handle: parsec_evm::rpc::RpcHandle,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_chain(FixtureChain::new(), parsec_evm::rpc::RpcOptions::default()).await
    }

    pub async fn with_chain(
        chain: Arc<FixtureChain>,
        options: parsec_evm::rpc::RpcOptions,
    ) -> Self {
        let listen = "127.0.0.1:0".parse().unwrap();
        let handle = parsec_evm::rpc::serve(chain.clone(), listen, options)
            .await
            .unwrap();
        Self { chain, handle }
    }

    pub fn url(&self) -> String {
        self.handle.http_url()
    }

    /// POSTs `body` as it is and returns the parsed reply.
    pub async fn post(&self, body: &str) -> serde_json::Value {
        let reply = reqwest::Client::new()
            .post(self.url())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        reply.json().await.unwrap()
    }

    /// One JSON-RPC call; the whole reply (`result` or `error`).
    pub async fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(&body.to_string()).await
    }

    /// One JSON-RPC call that must succeed; its `result`.
    pub async fn result(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let reply = self.rpc(method, params).await;
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }
}
