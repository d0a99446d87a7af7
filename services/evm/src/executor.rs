//! One Ethereum transaction executed by revm over the keys of a [`KeyAccess`].
//!
//! revm's database is synchronous, so keys are discovered rather than locked on demand: an
//! execution runs against the values fetched so far (see [`crate::view`]), the keys it asked
//! for that are not locked yet are locked in one batch (write mode for the keys the run
//! wrote, read mode for the rest; at most one `lock` call per mode), and it runs again, until
//! a run touched only locked keys. A run whose every read turned out to be the locked value
//! stands without running again. Writes of keys locked for read are upgraded before
//! returning. The first lock round takes the keys a transaction predictably needs (sender,
//! recipient, fee recipient, access list, the caller's hints).
//!
//! With a [`StateReader`], the keys are first discovered with lock-free reads of committed
//! state (DESIGN.md §6: "execute once optimistically to discover the key set and then lock it
//! in one round per shard"), so that most transactions lock once.
//!
//! A failed lock (wounded, aborted) ends the execution at once with its [`AccessError`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use alloy_primitives::{Address, Bytes, Log, U256};
use parsec_agent::runner::{AccessError, KeyAccess};
use parsec_core::{Key, LockMode, Value, WriteSet};
use revm::context::result::{EVMError, ExecutionResult, InvalidTransaction, Output};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::state::EvmState;

use crate::code_cache::CodeCache;
use crate::config::{BlockInfo, EvmConfig};
use crate::diff;
use crate::machine;
use crate::reader::{ReadError, StateReader};
use crate::state;
use crate::tx::{SignedTx, TxError};
use crate::view::{Speculation, View, ViewError};

/// Most keys in one `lock` call (the agent refuses more than 256 per request).
const LOCK_BATCH: usize = 256;
/// Bound on lock rounds. Every round locks at least one new key and gas bounds the keys a
/// transaction can touch, so this only stops a runaway loop; it is high because a contract
/// that walks a linked list in storage legitimately discovers one key per round.
const MAX_LOCK_ROUNDS: u32 = 4096;
/// Optimistic read rounds before locking what is known so far (discovery then goes on by
/// locks).
const MAX_READ_ROUNDS: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The transaction is invalid in the state it ran against: nothing is written, the agent
    /// reports the error to the client.
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// A lock failed (wounded, aborted); the agent retries with the same ticket or gives up.
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("corrupt state: {0}")]
    State(#[from] ViewError),
    #[error("execution still discovering keys after {0} rounds")]
    Unsettled(u32),
    #[error("internal EVM error: {0}")]
    Internal(String),
}

/// What the JSON-RPC layer needs for `eth_getTransactionReceipt` (block fields are its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub tx_hash: alloy_primitives::B256,
    pub tx_type: u8,
    pub from: Address,
    pub to: Option<Address>,
    pub nonce: u64,
    /// EIP-658 status: false when the transaction reverted or halted (its effects rolled back,
    /// only the nonce and the fee stay).
    pub status: bool,
    pub gas_used: u64,
    pub effective_gas_price: u128,
    /// For a contract creation, the address it created at (as geth, also when it failed).
    pub contract_address: Option<Address>,
    pub logs: Vec<Log>,
    /// Return data, or the revert data of a reverted transaction.
    pub output: Bytes,
    /// Why a halted transaction halted (out of gas, invalid opcode, …).
    pub halt_reason: Option<String>,
}

/// How an execution went, for metrics and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Rounds of `lock` calls (each one or two calls: write keys, read keys).
    pub lock_rounds: u32,
    pub lock_calls: u32,
    /// Rounds of lock-free reads of the optimistic discovery.
    pub read_rounds: u32,
    /// revm executions.
    pub runs: u32,
    /// Every key locked, in its final mode: pass it as `hints` when retrying after a wound.
    pub locked: Vec<(Key, LockMode)>,
}

/// An executed transaction: its writes (to commit) and its receipt.
#[derive(Clone, Debug)]
pub struct Executed {
    pub writes: WriteSet,
    pub receipt: Receipt,
    pub stats: ExecStats,
}

/// Optional inputs of [`Executor::execute`].
#[derive(Default, Clone, Copy)]
pub struct ExecOptions<'a> {
    /// Lock-free reads for optimistic key discovery before locking.
    pub reader: Option<&'a dyn StateReader>,
    /// Keys to lock in the first round along with the predictable ones (e.g. the key set of a
    /// previous, wounded attempt).
    pub hints: &'a [(Key, LockMode)],
}

/// Executes transactions; cheap to share (`Arc`), holds the code cache.
#[derive(Debug, Default)]
pub struct Executor {
    config: EvmConfig,
    code: Arc<CodeCache>,
}

/// A run and the keys it and its speculative twin need (see [`Executor::probe`]).
pub(crate) struct Probe {
    pub run: Run,
    pub needs: BTreeMap<Key, LockMode>,
    pub missing: BTreeSet<Key>,
}

/// One revm execution over fetched values.
pub(crate) struct Run {
    pub outcome: Result<(ExecutionResult, EvmState), EVMError<ViewError>>,
    pub observed: HashMap<Key, Value>,
    pub missing: HashSet<Key>,
    pub writes: WriteSet,
}

impl Run {
    /// What this run needs locked beyond `locked`: its reads in read mode, its writes in write
    /// mode (an upgrade for a key read-locked so far).
    fn needs(&self, locked: &HashMap<Key, LockMode>) -> BTreeMap<Key, LockMode> {
        let mut needs = BTreeMap::new();
        for key in self.observed.keys() {
            if !locked.contains_key(key) {
                needs.insert(key.clone(), LockMode::Read);
            }
        }
        for key in self.writes.keys() {
            if locked.get(key) != Some(&LockMode::Write) {
                needs.insert(key.clone(), LockMode::Write);
            }
        }
        needs
    }

    /// Whether the run saw exactly the locked values and holds every lock it needs.
    fn stands(&self, locked: &HashMap<Key, LockMode>, values: &HashMap<Key, Value>) -> bool {
        self.needs(locked).is_empty()
            && self
                .observed
                .iter()
                .all(|(key, seen)| values.get(key).is_some_and(|v| v == seen))
    }
}

impl Executor {
    pub fn new(config: EvmConfig) -> Self {
        Self::with_code_cache(config, Arc::new(CodeCache::default()))
    }

    /// An executor sharing `code` with others (one cache per agent).
    pub fn with_code_cache(config: EvmConfig, code: Arc<CodeCache>) -> Self {
        Self { config, code }
    }

    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    pub fn code_cache(&self) -> &Arc<CodeCache> {
        &self.code
    }

    /// Executes `tx` in `block` as Ethereum would, locking every key it reads or writes
    /// through `access`. Returns the writes to commit and the receipt; an invalid transaction
    /// (nonce, funds, …) is an [`ExecError::Invalid`] and writes nothing.
    #[tracing::instrument(level = "debug", skip_all, fields(tx = %tx.hash))]
    pub async fn execute(
        &self,
        tx: &SignedTx,
        block: &BlockInfo,
        access: &mut dyn KeyAccess,
        options: ExecOptions<'_>,
    ) -> Result<Executed, ExecError> {
        let env = Env::new(&self.config, block);
        let tx_env = tx.tx_env();
        let mut stats = ExecStats::default();
        // Values runs see: locked values, else lock-free guesses, else (absent) empty.
        let mut values: HashMap<Key, Value> = HashMap::new();
        let mut locked: HashMap<Key, LockMode> = HashMap::new();
        let mut plan = self.predicted_keys(tx, block);
        for (key, mode) in options.hints {
            merge(&mut plan, key.clone(), *mode);
        }

        let mut last_run = None;
        if let Some(reader) = options.reader {
            let run = self
                .discover(reader, &env, &tx_env, &mut values, &plan, &mut stats)
                .await?;
            for (key, mode) in run.needs(&locked) {
                merge(&mut plan, key, mode);
            }
            last_run = Some(run);
        }

        loop {
            if stats.lock_rounds >= MAX_LOCK_ROUNDS {
                return Err(ExecError::Unsettled(stats.lock_rounds));
            }
            lock_round(access, plan, &mut locked, &mut values, &mut stats).await?;
            if let Some(run) = last_run.take()
                && run.stands(&locked, &values)
            {
                return self.finish(tx, block, run, &values, locked, stats);
            }
            let probe = self.probe(&env, &tx_env, &mut values, &locked, &mut stats)?;
            if probe.needs.is_empty() {
                return self.finish(tx, block, probe.run, &values, locked, stats);
            }
            tracing::trace!(keys = probe.needs.len(), "run touched unlocked keys");
            plan = probe.needs;
            last_run = Some(probe.run);
        }
    }

    /// Runs over lock-free reads until a run finds every key it asks for; returns that run.
    async fn discover(
        &self,
        reader: &dyn StateReader,
        env: &Env,
        tx_env: &TxEnv,
        values: &mut HashMap<Key, Value>,
        plan: &BTreeMap<Key, LockMode>,
        stats: &mut ExecStats,
    ) -> Result<Run, ExecError> {
        let mut to_read: Vec<Key> = plan.keys().cloned().collect();
        let none = HashMap::new();
        loop {
            let read = reader.read(to_read.clone()).await?;
            stats.read_rounds += 1;
            values.extend(to_read.into_iter().zip(read));
            let probe = self.probe(env, tx_env, values, &none, stats)?;
            if probe.missing.is_empty() || stats.read_rounds >= MAX_READ_ROUNDS {
                return Ok(probe.run);
            }
            to_read = probe.missing.into_iter().collect();
        }
    }

    /// Keys every execution of `tx` reads, locked in the first round: the sender (always
    /// written), the recipient (written when value moves), the fee recipient (revm credits it,
    /// written when there is a tip, read otherwise), and the access list.
    fn predicted_keys(&self, tx: &SignedTx, block: &BlockInfo) -> BTreeMap<Key, LockMode> {
        let mut keys = BTreeMap::new();
        merge(&mut keys, state::account_key(&tx.sender), LockMode::Write);
        if let Some(to) = tx.to() {
            let mode = if tx.value().is_zero() {
                LockMode::Read
            } else {
                LockMode::Write
            };
            merge(&mut keys, state::account_key(&to), mode);
        }
        let tipped = tx.effective_gas_price(block.base_fee) > u128::from(block.base_fee);
        let mode = if tipped {
            LockMode::Write
        } else {
            LockMode::Read
        };
        merge(
            &mut keys,
            state::account_key(&self.config.fee_recipient),
            mode,
        );
        if let Some(list) = alloy_consensus::Transaction::access_list(&tx.envelope) {
            for item in list.iter() {
                merge(&mut keys, state::account_key(&item.address), LockMode::Read);
                for slot in &item.storage_keys {
                    let slot = U256::from_be_bytes(slot.0);
                    merge(
                        &mut keys,
                        state::storage_key(&item.address, &slot),
                        LockMode::Read,
                    );
                }
            }
        }
        keys
    }

    /// A run over `values` and, when it found storage slots missing, a second run that reads
    /// them as [`Speculation::Funded`]: the first may have stopped at a failed balance check,
    /// the second goes on and finds the keys a successful path reads and writes (an ERC-20
    /// transfer's recipient slot). Returns the first run, what both need locked and what both
    /// found missing. The second run only widens the key set; its outcome is never used.
    pub(crate) fn probe(
        &self,
        env: &Env,
        tx_env: &TxEnv,
        values: &mut HashMap<Key, Value>,
        locked: &HashMap<Key, LockMode>,
        stats: &mut ExecStats,
    ) -> Result<Probe, ExecError> {
        let run = self.run(env, tx_env, values, Speculation::Absent)?;
        stats.runs += 1;
        let mut needs = run.needs(locked);
        let mut missing: BTreeSet<Key> = run.missing.iter().cloned().collect();
        if run
            .missing
            .iter()
            .any(|key| key.first() == Some(&state::STORAGE))
        {
            let funded = self.run(env, tx_env, values, Speculation::Funded)?;
            stats.runs += 1;
            for (key, mode) in funded.needs(locked) {
                merge(&mut needs, key, mode);
            }
            missing.extend(funded.missing);
        }
        Ok(Probe {
            run,
            needs,
            missing,
        })
    }

    /// One revm execution over `values`, which it borrows for the run.
    pub(crate) fn run(
        &self,
        env: &Env,
        tx_env: &TxEnv,
        values: &mut HashMap<Key, Value>,
        speculation: Speculation,
    ) -> Result<Run, ExecError> {
        let view = View::new(std::mem::take(values), Arc::clone(&self.code), speculation);
        let (outcome, view) = machine::transact(&env.cfg, &env.block, tx_env.clone(), view);
        let seen = view.finish();
        *values = seen.fetched;
        let outcome = match outcome {
            // Corrupt committed state: no later round can fix it.
            Err(EVMError::Database(error)) => return Err(ExecError::State(error)),
            Err(other) => Err(other),
            Ok(done) => Ok((done.result, done.state)),
        };
        let writes = match &outcome {
            Ok((_, changes)) => diff::write_set(changes, &seen.observed, &self.code),
            Err(_) => WriteSet::new(),
        };
        Ok(Run {
            outcome,
            observed: seen.observed,
            missing: seen.missing,
            writes,
        })
    }

    fn finish(
        &self,
        tx: &SignedTx,
        block: &BlockInfo,
        run: Run,
        values: &HashMap<Key, Value>,
        locked: HashMap<Key, LockMode>,
        mut stats: ExecStats,
    ) -> Result<Executed, ExecError> {
        let (result, _) = match run.outcome {
            Ok(done) => done,
            Err(error) => return Err(self.evm_error(error, tx, block, values)),
        };
        stats.locked = locked.into_iter().collect();
        stats.locked.sort();
        let receipt = receipt(tx, block, result);
        tracing::debug!(
            status = receipt.status,
            gas = receipt.gas_used,
            writes = run.writes.len(),
            lock_rounds = stats.lock_rounds,
            runs = stats.runs,
            "executed"
        );
        Ok(Executed {
            writes: run.writes,
            receipt,
            stats,
        })
    }

    fn evm_error(
        &self,
        error: EVMError<ViewError>,
        tx: &SignedTx,
        block: &BlockInfo,
        values: &HashMap<Key, Value>,
    ) -> ExecError {
        match error {
            EVMError::Transaction(invalid) => ExecError::Invalid(
                ErrorContext::of(tx, &self.config, block, values).tx_error(invalid),
            ),
            EVMError::Database(error) => ExecError::State(error),
            other => ExecError::Internal(other.to_string()),
        }
    }
}

/// The revm configuration and block of one execution.
pub(crate) struct Env {
    pub cfg: CfgEnv,
    pub block: BlockEnv,
}

impl Env {
    pub fn new(config: &EvmConfig, info: &BlockInfo) -> Self {
        Self {
            cfg: config.cfg_env(),
            block: config.block_env(info),
        }
    }
}

fn merge(keys: &mut BTreeMap<Key, LockMode>, key: Key, mode: LockMode) {
    let entry = keys.entry(key).or_insert(mode);
    *entry = LockMode::max(*entry, mode);
}

/// Locks `plan` (keys not held in the mode they need) in one call, each key in its mode, cut
/// into batches the agent accepts.
async fn lock_round(
    access: &mut dyn KeyAccess,
    plan: BTreeMap<Key, LockMode>,
    locked: &mut HashMap<Key, LockMode>,
    values: &mut HashMap<Key, Value>,
    stats: &mut ExecStats,
) -> Result<(), ExecError> {
    let wanted: Vec<(Key, LockMode)> = plan
        .into_iter()
        .filter(|(key, mode)| !locked.get(key).is_some_and(|held| held.covers(*mode)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    stats.lock_rounds += 1;
    for batch in wanted.chunks(LOCK_BATCH) {
        let got = access.lock_each(batch.to_vec()).await?;
        stats.lock_calls += 1;
        if got.len() != batch.len() {
            return Err(ExecError::Internal(format!(
                "locked {} keys, received {} values",
                batch.len(),
                got.len()
            )));
        }
        for ((key, mode), value) in batch.iter().zip(got) {
            let held = locked.entry(key.clone()).or_insert(*mode);
            *held = LockMode::max(*held, *mode);
            values.insert(key.clone(), value);
        }
    }
    Ok(())
}

fn receipt(tx: &SignedTx, block: &BlockInfo, result: ExecutionResult) -> Receipt {
    let gas_used = result.tx_gas_used();
    let (status, output, logs, halt_reason) = match result {
        ExecutionResult::Success { output, logs, .. } => {
            let data = match output {
                Output::Call(data) | Output::Create(data, _) => data,
            };
            (true, data, logs, None)
        }
        ExecutionResult::Revert { output, logs, .. } => (false, output, logs, None),
        ExecutionResult::Halt { reason, logs, .. } => {
            (false, Bytes::new(), logs, Some(reason.to_string()))
        }
    };
    Receipt {
        tx_hash: tx.hash,
        tx_type: tx.tx_type(),
        from: tx.sender,
        to: tx.to(),
        nonce: tx.nonce(),
        status,
        gas_used,
        effective_gas_price: tx.effective_gas_price(block.base_fee),
        contract_address: tx.to().is_none().then(|| tx.sender.create(tx.nonce())),
        // A failed transaction's logs are rolled back with everything else.
        logs: if status { logs } else { Vec::new() },
        output,
        halt_reason,
    }
}

/// What a validation error message names.
pub(crate) struct ErrorContext {
    pub sender: Address,
    pub nonce: u64,
    pub tx_type: u8,
    pub chain_id: Option<u64>,
    pub want_chain_id: u64,
    pub max_fee: u128,
    pub tip: u128,
    pub base_fee: u64,
    pub balance: U256,
}

impl ErrorContext {
    fn of(
        tx: &SignedTx,
        config: &EvmConfig,
        block: &BlockInfo,
        values: &HashMap<Key, Value>,
    ) -> Self {
        use alloy_consensus::Transaction as _;
        Self {
            sender: tx.sender,
            nonce: tx.nonce(),
            tx_type: tx.tx_type(),
            chain_id: tx.envelope.chain_id(),
            want_chain_id: config.chain_id,
            max_fee: tx.envelope.max_fee_per_gas(),
            tip: tx.envelope.max_priority_fee_per_gas().unwrap_or_default(),
            base_fee: block.base_fee,
            balance: balance_of(values, &tx.sender),
        }
    }

    /// revm's validation error in geth's words.
    pub fn tx_error(&self, invalid: InvalidTransaction) -> TxError {
        let sender = self.sender;
        match invalid {
            InvalidTransaction::NonceTooLow { tx, state } => {
                TxError::NonceTooLow { sender, tx, state }
            }
            InvalidTransaction::NonceTooHigh { tx, state } => {
                TxError::NonceTooHigh { sender, tx, state }
            }
            InvalidTransaction::NonceOverflowInTransaction => TxError::NonceMax {
                sender,
                nonce: self.nonce,
            },
            InvalidTransaction::LackOfFundForMaxFee { fee, balance } => {
                TxError::InsufficientFunds {
                    sender,
                    have: *balance,
                    want: *fee,
                }
            }
            InvalidTransaction::OverflowPaymentInTransaction => TxError::InsufficientFunds {
                sender,
                have: self.balance,
                want: U256::MAX,
            },
            InvalidTransaction::GasPriceLessThanBasefee => TxError::FeeCapTooLow {
                sender,
                fee_cap: self.max_fee,
                base_fee: self.base_fee,
            },
            InvalidTransaction::PriorityFeeGreaterThanMaxFee => TxError::TipAboveFeeCap {
                sender,
                tip: self.tip,
                fee_cap: self.max_fee,
            },
            InvalidTransaction::CallerGasLimitMoreThanBlock => TxError::ExceedsBlockGasLimit,
            InvalidTransaction::CallGasCostMoreThanGasLimit {
                initial_gas,
                gas_limit,
            } => TxError::IntrinsicGasTooLow {
                gas: gas_limit,
                needed: initial_gas,
            },
            InvalidTransaction::GasFloorMoreThanGasLimit {
                gas_floor,
                gas_limit,
            } => TxError::FloorDataGas {
                gas: gas_limit,
                needed: gas_floor,
            },
            InvalidTransaction::RejectCallerWithCode => TxError::SenderNoEoa { sender },
            InvalidTransaction::TxGasLimitGreaterThanCap { gas_limit, cap } => {
                TxError::GasLimitTooHigh {
                    gas: gas_limit,
                    cap,
                }
            }
            InvalidTransaction::InvalidChainId | InvalidTransaction::MissingChainId => {
                TxError::InvalidChainId {
                    have: self.chain_id.unwrap_or_default(),
                    want: self.want_chain_id,
                }
            }
            InvalidTransaction::Eip2930NotSupported
            | InvalidTransaction::Eip1559NotSupported
            | InvalidTransaction::Eip4844NotSupported
            | InvalidTransaction::Eip7702NotSupported
            | InvalidTransaction::Eip7873NotSupported => TxError::TypeNotSupported(self.tx_type),
            other => TxError::Other(other.to_string()),
        }
    }
}

/// `address`'s balance among fetched values (zero when absent or not fetched).
pub(crate) fn balance_of(values: &HashMap<Key, Value>, address: &Address) -> U256 {
    values
        .get(&state::account_key(address))
        .and_then(|v| state::decode_account(v).ok())
        .map(|a| a.balance)
        .unwrap_or_default()
}
