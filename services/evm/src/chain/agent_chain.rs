//! The production [`Chain`]: an agent running Ethereum transactions over the broker, with the
//! ticket machine's block clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;
use parking_lot::Mutex;
use parsec_agent::access::TransactionAccess;
use parsec_agent::agent::{Agent, AgentError, AttemptError};
use parsec_agent::metrics::{FailureOutcome, Outcome};
use parsec_broker::Broker;
use parsec_core::{Key, LockMode, Value};
use parsec_ticketer::BlockClockSource;
use tokio::sync::broadcast;

use crate::call::{CallError, CallRequest, CallSuccess};
use crate::chain::blocks::BlockStore;
use crate::chain::nonces::{NonceGate, QueueLimits, progressed};
use crate::chain::producer::BlockProducer;
use crate::chain::record::{PartTx, TxLocation, location_key};
use crate::chain::{AccountState, Block, Chain, ChainError, SendError, TxLookup};
use crate::config::{BlockInfo, EvmConfig};
use crate::executor::{ExecError, ExecOptions, Executor, Receipt};
use crate::reader::{ReadError, StateReader};
use crate::state::{self, AccountRecord};
use crate::tx::{SignedTx, TxError, decode_transaction};

/// Longest a block waits for a listed transaction's writes to become visible (a cross-shard
/// commit phase runs after the client's answer; it takes a Raft round unless a shard is down).
const VISIBLE_WAIT: Duration = Duration::from_secs(2);

/// How the agent's chain behaves.
#[derive(Clone, Debug)]
pub struct ChainSettings {
    pub evm: EvmConfig,
    /// Wei per gas charged as base fee (zero allowed).
    pub base_fee: u64,
    /// How long a future-nonce transaction waits for its predecessors.
    pub nonce_gap_timeout: Duration,
    /// Accounts `eth_accounts` lists.
    pub accounts: Vec<Address>,
    /// Bounds on the transactions waiting for their turn or running in this agent.
    pub queue: QueueLimits,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            evm: EvmConfig::default(),
            base_fee: 0,
            nonce_gap_timeout: Duration::from_secs(10),
            accounts: Vec::new(),
            queue: QueueLimits::default(),
        }
    }
}

/// Lock-free reads of committed state through the broker.
pub struct BrokerReader(pub Arc<Broker>);

#[async_trait]
impl StateReader for BrokerReader {
    async fn read(&self, keys: Vec<Key>) -> Result<Vec<Value>, ReadError> {
        self.0
            .read(&keys)
            .await
            .map_err(|e| ReadError(e.to_string()))
    }
}

/// An agent's chain.
pub struct AgentChain {
    agent: Arc<Agent>,
    settings: ChainSettings,
    executor: Executor,
    reader: BrokerReader,
    producer: Arc<BlockProducer>,
    blocks: BlockStore,
    nonces: Arc<NonceGate>,
    new_blocks: broadcast::Sender<Arc<Block>>,
}

impl FailureOutcome for SendError {
    fn outcome(&self) -> Outcome {
        match self {
            SendError::Invalid(_) | SendError::NonceGap { .. } => Outcome::Aborted,
            SendError::Overloaded
            | SendError::QueueFull(_)
            | SendError::Failed { .. }
            | SendError::Exec(_) => Outcome::Failed,
        }
    }
}

impl From<AgentError> for SendError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::Overloaded(_) => SendError::Overloaded,
            AgentError::Broker(error) => SendError::Failed {
                message: error.to_string(),
                uncertain: error.is_uncertain(),
            },
            other => SendError::Failed {
                message: other.to_string(),
                uncertain: false,
            },
        }
    }
}

impl AgentChain {
    /// The chain of `agent` (whose id in the block clock is `agent_id`); starts its block
    /// clock reports and block notifications.
    pub fn start(
        agent: Arc<Agent>,
        agent_id: u64,
        source: Arc<dyn BlockClockSource>,
        lease: Duration,
        settings: ChainSettings,
    ) -> Arc<Self> {
        let broker = Arc::clone(agent.broker());
        let producer = BlockProducer::new(agent_id, Arc::clone(&agent), Arc::clone(&source), lease);
        producer.spawn();
        let blocks = BlockStore::new(
            Arc::clone(&broker),
            source,
            settings.base_fee,
            settings.evm.block_gas_limit,
        );
        let (new_blocks, _) = broadcast::channel(256);
        let nonces = Arc::new(NonceGate::new(settings.queue));
        let chain = Arc::new(Self {
            executor: Executor::new(settings.evm.clone()),
            reader: BrokerReader(broker),
            agent,
            settings,
            producer,
            blocks,
            nonces,
            new_blocks,
        });
        chain.spawn_block_feed();
        chain
    }

    /// Waits until the block clock runs (the first report was answered), at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ChainError> {
        let deadline = Instant::now() + timeout;
        let mut head = self.producer.head();
        while !self.producer.view().is_running() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, head.changed()).await.is_err() {
                return Err(ChainError(
                    "the block clock did not start: is the ticket machine reachable?".into(),
                ));
            }
        }
        Ok(())
    }

    /// Gives every account in `accounts` `balance` wei if it is empty (development networks).
    pub async fn fund(&self, accounts: &[Address], balance: U256) -> Result<(), SendError> {
        let keys: Vec<Key> = accounts.iter().map(state::account_key).collect();
        let account = AccountRecord {
            balance,
            code_hash: revm::primitives::KECCAK_EMPTY,
            ..AccountRecord::default()
        };
        self.agent
            .update_keys("evm", &keys, |values| {
                keys.iter()
                    .zip(values)
                    .filter(|(_, value)| value.is_empty())
                    .map(|(key, _)| (key.clone(), state::encode_account(&account)))
                    .collect()
            })
            .await
            .map(|_| ())
            .map_err(SendError::from)
    }

    /// Publishes every block as it seals.
    fn spawn_block_feed(self: &Arc<Self>) {
        let chain = Arc::downgrade(self);
        let mut head = self.producer.head();
        tokio::spawn(async move {
            let mut published = *head.borrow_and_update();
            while head.changed().await.is_ok() {
                let Some(chain) = chain.upgrade() else {
                    return;
                };
                let sealed = *head.borrow_and_update();
                if chain.new_blocks.receiver_count() == 0 {
                    published = sealed;
                    continue;
                }
                let view = chain.producer.view();
                while published < sealed {
                    match chain.blocks.block(published + 1, &view).await {
                        Ok(block) => {
                            let _ = chain.new_blocks.send(block);
                            published += 1;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reading a sealed block failed");
                            break;
                        }
                    }
                }
            }
        });
    }

    /// The block calls and estimates run in: the one being built.
    fn pending_block(&self) -> BlockInfo {
        let view = self.producer.view();
        let number = view.sealed + 1;
        BlockInfo {
            number,
            timestamp: view.timestamp(number),
            base_fee: self.settings.base_fee,
            prevrandao: B256::ZERO,
        }
    }

    async fn read_one(&self, key: Key) -> Result<Value, ChainError> {
        let mut values = self
            .agent
            .broker()
            .read(&[key])
            .await
            .map_err(|e| ChainError(e.to_string()))?;
        Ok(values.pop().unwrap_or_default())
    }

    async fn account_record(&self, address: Address) -> Result<AccountRecord, ChainError> {
        let value = self.read_one(state::account_key(&address)).await?;
        state::decode_account(&value).map_err(|e| ChainError(e.to_string()))
    }

    /// One attempt of `tx`: stamp, execute with locks, commit.
    async fn attempt(
        &self,
        tx: &SignedTx,
        ticket: parsec_core::Ticket,
        attempt: u32,
        hints: &Mutex<Vec<(Key, LockMode)>>,
    ) -> Result<Receipt, AttemptError<SendError>> {
        let stamp = self.producer.stamp().map_err(|e| {
            AttemptError::Fatal(SendError::Failed {
                message: e.0,
                uncertain: false,
            })
        })?;
        let block = BlockInfo {
            number: stamp.block(),
            timestamp: stamp.timestamp(),
            base_fee: self.settings.base_fee,
            prevrandao: B256::ZERO,
        };
        let mut access = TransactionAccess::new(self.agent.broker().begin(ticket, attempt), false);
        let hinted = hints.lock().clone();
        let options = ExecOptions {
            reader: Some(&self.reader),
            hints: &hinted,
        };
        let executed = self
            .executor
            .execute(tx, &block, &mut access, options)
            .await;
        let executed = match executed {
            Ok(executed) => executed,
            Err(error) => {
                let failure = access.take_failure();
                access.into_transaction().rollback().await;
                return Err(match (error, failure) {
                    (ExecError::Access(_), Some(broker)) => AttemptError::broker(broker),
                    (ExecError::Access(reason), None) => AttemptError::Retry {
                        reason: reason.to_string(),
                        backoff: true,
                    },
                    (ExecError::Invalid(invalid), _) => {
                        AttemptError::Fatal(SendError::Invalid(invalid))
                    }
                    (other, _) => AttemptError::Fatal(SendError::Exec(other)),
                });
            }
        };
        *hints.lock() = executed.stats.locked.clone();
        // The transaction's location record is written with its block part, not here: here
        // it would be one more key, on a random shard, making most commits two-phase.
        let (_, visible) = access
            .into_transaction()
            .commit_then_visible(executed.writes)
            .await
            .map_err(AttemptError::broker)?;
        // The client hears at the commit point; the block (and so the receipt) waits until
        // lock-free reads see the writes, so that a client holding the receipt reads the new
        // state. Bounded: a shard that cannot be reached must not hold every block back.
        let listed = stamp.commit(PartTx::new(&tx.envelope, &executed.receipt));
        if visible.is_pending() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(VISIBLE_WAIT, visible.wait()).await;
                drop(listed);
            });
        }
        Ok(executed.receipt)
    }
}

#[async_trait]
impl Chain for AgentChain {
    fn config(&self) -> &EvmConfig {
        &self.settings.evm
    }

    fn accounts(&self) -> Vec<Address> {
        self.settings.accounts.clone()
    }

    fn base_fee(&self) -> u64 {
        self.settings.base_fee
    }

    async fn head(&self) -> Result<u64, ChainError> {
        Ok(*self.producer.head().borrow())
    }

    async fn block_by_number(&self, number: u64) -> Result<Option<Arc<Block>>, ChainError> {
        let view = self.producer.view();
        if number > view.sealed {
            return Ok(None);
        }
        self.blocks.block(number, &view).await.map(Some)
    }

    async fn block_by_hash(&self, hash: B256) -> Result<Option<Arc<Block>>, ChainError> {
        let number = crate::chain::assemble::number_of(&hash);
        Ok(self
            .block_by_number(number)
            .await?
            .filter(|block| block.hash == hash))
    }

    async fn account(&self, address: Address) -> Result<AccountState, ChainError> {
        let record = self.account_record(address).await?;
        let code = if record.has_code() {
            Bytes::from(
                self.read_one(state::code_key(&record.code_hash))
                    .await?
                    .to_vec(),
            )
        } else {
            Bytes::new()
        };
        Ok(AccountState {
            nonce: record.nonce,
            balance: record.balance,
            code,
        })
    }

    async fn storage(&self, address: Address, slot: U256) -> Result<U256, ChainError> {
        let value = self.read_one(state::storage_key(&address, &slot)).await?;
        state::decode_word(&value).map_err(|e| ChainError(e.to_string()))
    }

    async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        let committed = self.account_record(address).await?.nonce;
        Ok(self
            .nonces
            .pending_floor(&address)
            .map_or(committed, |next| next.max(committed)))
    }

    async fn call(&self, request: CallRequest) -> Result<CallSuccess, CallError> {
        self.executor
            .call(&request, &self.pending_block(), &self.reader)
            .await
    }

    async fn estimate_gas(&self, request: CallRequest) -> Result<u64, CallError> {
        self.executor
            .estimate_gas(&request, &self.pending_block(), &self.reader)
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn send_raw_transaction(&self, raw: Bytes) -> Result<B256, SendError> {
        let tx = decode_transaction(&raw, &self.settings.evm)?;
        let place = self.nonces.arrive(tx.sender, tx.nonce(), raw.len())?;
        // The gap must close within the timeout of the sender's nonce last moving: a long line
        // of its consecutive nonces ahead of this one is not a gap.
        let mut deadline = Instant::now() + self.settings.nonce_gap_timeout;
        let mut committed_nonce = None;
        let hints = Mutex::new(Vec::new());
        loop {
            let mut progress = place.watch_progress();
            let turn = place.turn().await;
            let outcome: Result<Receipt, SendError> = self
                .agent
                .transact("evm", |ticket, attempt| {
                    self.attempt(&tx, ticket, attempt, &hints)
                })
                .await;
            drop(turn);
            match outcome {
                Ok(receipt) => {
                    self.nonces.committed(tx.sender, tx.nonce());
                    parsec_telemetry::EvmMetrics::global()
                        .gas_used
                        .inc_by(receipt.gas_used);
                    tracing::debug!(tx = %tx.hash, status = receipt.status, "committed");
                    return Ok(tx.hash);
                }
                Err(SendError::Invalid(TxError::NonceTooHigh {
                    sender,
                    tx: n,
                    state,
                })) => {
                    if committed_nonce.is_some_and(|before| state > before) {
                        deadline = Instant::now() + self.settings.nonce_gap_timeout;
                    }
                    committed_nonce = Some(state);
                    // The predecessor may finish here (which wakes us) or at another agent
                    // (which only a new attempt notices): try again at least every 200 ms.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let queue = &parsec_telemetry::EvmMetrics::global().future_nonce_queue_depth;
                    if left.is_zero() {
                        return Err(SendError::NonceGap {
                            sender,
                            tx: n,
                            state,
                            waited_ms: self.settings.nonce_gap_timeout.as_millis() as u64,
                        });
                    }
                    queue.inc();
                    progressed(&mut progress, left.min(Duration::from_millis(200))).await;
                    queue.dec();
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn transaction(&self, hash: B256) -> Result<Option<TxLookup>, ChainError> {
        let value = self.read_one(location_key(&hash)).await?;
        if value.is_empty() {
            return Ok(None);
        }
        let location = TxLocation::decode(&value).map_err(|e| ChainError(e.to_string()))?;
        let Some(block) = self.block_by_number(location.block).await? else {
            return Ok(None);
        };
        // A transaction whose agent died before reporting its part is in no block.
        let index = block.transactions.iter().position(|tx| tx.hash == hash);
        Ok(index.map(|index| TxLookup { block, index }))
    }

    fn subscribe_blocks(&self) -> broadcast::Receiver<Arc<Block>> {
        self.new_blocks.subscribe()
    }
}
