//! The request lifecycle: ticket → run → lock → commit, retried with the same ticket when an
//! older transaction wounds it.

use crate::access::TransactionAccess;
use crate::metrics::FailureOutcome;
use crate::runner::{AccessError, RunError, Runner};
use bytes::Bytes;
use parking_lot::Mutex;
use parsec_broker::{Broker, BrokerError, CommitOutcome};
use parsec_core::{Key, LockMode, Settings, Ticket, Value, WriteSet};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Longest contract key accepted.
pub const MAX_CONTRACT_KEY_BYTES: usize = 1024;
/// Largest contract argument accepted.
pub const MAX_PARAM_BYTES: usize = 1 << 20;
/// Largest contract accepted by deploy.
pub const MAX_CODE_BYTES: usize = 1 << 20;
/// Contracts whose code the agent keeps (checked at every call, see `access`).
const CODE_CACHE_ENTRIES: usize = 10_000;
/// Bytes of code the agent keeps: contracts may be up to 1 MiB each, and anyone may deploy.
const CODE_CACHE_BYTES: usize = 64 << 20;

/// Contract code by key, bounded in entries and bytes: when either bound would be passed, it
/// starts over (the next calls re-read their code, under the lock they take anyway).
#[derive(Default)]
struct CodeCache {
    by_key: HashMap<Key, Value>,
    bytes: usize,
}

impl CodeCache {
    fn get(&self, key: &Key) -> Option<Value> {
        self.by_key.get(key).cloned()
    }

    fn insert(&mut self, key: Key, code: Value) {
        let size = key.len() + code.len();
        let full = self.by_key.len() >= CODE_CACHE_ENTRIES || self.bytes + size > CODE_CACHE_BYTES;
        if full && !self.by_key.contains_key(&key) {
            self.by_key.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.by_key.insert(key.clone(), code) {
            self.bytes -= key.len() + old.len();
        }
        self.bytes += size;
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key) {
            self.bytes -= key.len() + old.len();
        }
    }
}

/// A contract call.
#[derive(Clone, Debug)]
pub struct Call {
    pub contract: Key,
    pub param: Bytes,
    pub read_only: bool,
}

/// A committed call.
#[derive(Clone, Debug)]
pub struct CallResult {
    pub ticket: Ticket,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
    /// Normal call: the committed writes. Read-only call: what the contract returned.
    pub writes: WriteSet,
    pub outcome: CommitOutcome,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("no contract is stored under key {0}")]
    ContractNotFound(String),
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Broker(BrokerError),
    #[error("gave up after {attempts} attempts in {elapsed:?}: {last}")]
    Timeout {
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("agent overloaded: {0} calls in flight")]
    Overloaded(usize),
}

/// Why one attempt ended without committing.
pub enum AttemptError<E = AgentError> {
    /// Run it again with the same ticket.
    Retry { reason: String, backoff: bool },
    /// Give up: `E` goes back to the caller.
    Fatal(E),
}

impl<E: From<AgentError>> AttemptError<E> {
    /// A broker failure: retried when the broker says it may be (wound, timeout, failover).
    pub fn broker(error: BrokerError) -> Self {
        match broker_failure(error) {
            AttemptError::Retry { reason, backoff } => AttemptError::Retry { reason, backoff },
            AttemptError::Fatal(error) => AttemptError::Fatal(E::from(error)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub transaction_timeout: Duration,
    pub max_in_flight: usize,
}

impl From<&Settings> for AgentSettings {
    fn from(s: &Settings) -> Self {
        Self {
            transaction_timeout: Duration::from_millis(s.transaction_timeout_ms),
            max_in_flight: 16_384,
        }
    }
}

/// Runs contract calls as transactions.
pub struct Agent {
    broker: Arc<Broker>,
    runner: Arc<dyn Runner>,
    settings: AgentSettings,
    code_cache: Mutex<CodeCache>,
    in_flight: Semaphore,
}

impl Agent {
    pub fn new(broker: Arc<Broker>, runner: Arc<dyn Runner>, settings: AgentSettings) -> Arc<Self> {
        Arc::new(Self {
            broker,
            runner,
            in_flight: Semaphore::new(settings.max_in_flight),
            settings,
            code_cache: Mutex::default(),
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The runner's name (the `runner` label of the agent's metrics).
    pub fn runner_name(&self) -> &'static str {
        self.runner.name()
    }

    /// Runs `call` until it commits, fails for good, or times out.
    #[tracing::instrument(level = "debug", skip_all, fields(contract = %parsec_core::display_key(&call.contract)))]
    pub async fn execute(&self, call: Call) -> Result<CallResult, AgentError> {
        validate_key("contract key", &call.contract)?;
        if call.param.len() > MAX_PARAM_BYTES {
            return Err(AgentError::InvalidArgument(format!(
                "param of {} bytes exceeds {MAX_PARAM_BYTES}",
                call.param.len()
            )));
        }
        self.with_retries(|ticket, attempt| self.attempt_call(&call, ticket, attempt))
            .await
    }

    /// Stores `code` under `key` after checking that it is a valid contract.
    #[tracing::instrument(level = "debug", skip_all, fields(key = %parsec_core::display_key(&key)))]
    pub async fn deploy(&self, key: Key, code: Bytes) -> Result<CallResult, AgentError> {
        validate_key("contract key", &key)?;
        if code.len() > MAX_CODE_BYTES {
            return Err(AgentError::InvalidArgument(format!(
                "contract of {} bytes exceeds {MAX_CODE_BYTES}",
                code.len()
            )));
        }
        self.runner.validate(&code).map_err(AgentError::Run)?;
        let result = self
            .with_retries(|ticket, attempt| self.attempt_deploy(&key, &code, ticket, attempt))
            .await?;
        self.cache_code(key, code);
        Ok(result)
    }

    /// Committed values of `keys`, without a ticket or locks.
    pub async fn read(&self, keys: &[Key]) -> Result<Vec<Value>, AgentError> {
        if keys.len() > crate::access::MAX_KEYS_PER_REQUEST {
            return Err(AgentError::InvalidArgument(format!(
                "{} keys in one read; at most {}",
                keys.len(),
                crate::access::MAX_KEYS_PER_REQUEST
            )));
        }
        for key in keys {
            validate_key("key", key)?;
        }
        self.broker.read(keys).await.map_err(AgentError::Broker)
    }

    async fn with_retries<F, Fut>(&self, attempt_once: F) -> Result<CallResult, AgentError>
    where
        F: Fn(Ticket, u32) -> Fut,
        Fut: Future<Output = Result<CallResult, AttemptError>>,
    {
        self.transact(self.runner.name(), attempt_once).await
    }

    /// Runs a transaction of any runtime (`runner` names it in metrics): takes a ticket and
    /// calls `attempt_once(ticket, attempt)` until it commits (`Ok`), fails for good
    /// ([`AttemptError::Fatal`]) or the transaction timeout passes. Each attempt starts its own
    /// broker transaction with [`Broker::begin`]`(ticket, attempt)` and must commit or roll it
    /// back.
    pub async fn transact<T, E, F, Fut>(
        &self,
        runner: &'static str,
        attempt_once: F,
    ) -> Result<T, E>
    where
        E: From<AgentError> + FailureOutcome,
        F: Fn(Ticket, u32) -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
    {
        // Counted as failed if it ends early (overloaded, no ticket, timeout, caller gone).
        let measured = crate::metrics::Measured::start(runner);
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| AgentError::Overloaded(self.settings.max_in_flight))?;
        let started = Instant::now();
        let ticket = self.broker.ticket().await.map_err(AgentError::Broker)?;
        let mut attempt = 0u32;
        loop {
            match attempt_once(ticket, attempt).await {
                Ok(result) => return Ok(measured.committed(result)),
                Err(AttemptError::Fatal(error)) => return Err(measured.failed(error)),
                Err(AttemptError::Retry { reason, backoff }) => {
                    measured.retry(&reason);
                    attempt += 1;
                    if started.elapsed() >= self.settings.transaction_timeout {
                        let timeout = AgentError::Timeout {
                            attempts: attempt,
                            elapsed: started.elapsed(),
                            last: reason,
                        };
                        return Err(measured.failed(E::from(timeout)));
                    }
                    tracing::debug!(%ticket, attempt, %reason, "retrying");
                    if backoff {
                        tokio::time::sleep(self.broker.backoff(attempt)).await;
                    }
                }
            }
        }
    }

    /// Write-locks `keys`, gives their committed values (in order) to `update` and commits the
    /// writes it returns, as one transaction retried like any other; `runner` names it in
    /// metrics. For bookkeeping writes outside any contract (block parts, genesis funding):
    /// it returns once lock-free reads on every shard see them.
    pub async fn update_keys(
        &self,
        runner: &'static str,
        keys: &[Key],
        update: impl Fn(Vec<Value>) -> WriteSet,
    ) -> Result<CommitOutcome, AgentError> {
        let requests: Vec<(Key, LockMode)> = keys
            .iter()
            .map(|key| (key.clone(), LockMode::Write))
            .collect();
        self.transact(runner, |ticket, attempt| {
            let requests = &requests;
            let update = &update;
            async move {
                let mut txn = self.broker.begin(ticket, attempt);
                let values = txn.lock(requests).await.map_err(AttemptError::broker)?;
                // Callers publish what they wrote as soon as this returns.
                txn.commit_visible(update(values))
                    .await
                    .map_err(AttemptError::broker)
            }
        })
        .await
    }

    async fn attempt_call(
        &self,
        call: &Call,
        ticket: Ticket,
        attempt: u32,
    ) -> Result<CallResult, AttemptError> {
        let mut access = TransactionAccess::new(self.broker.begin(ticket, attempt), call.read_only);
        let cached = self.code_cache.lock().get(&call.contract);
        let code = match cached {
            Some(code) => {
                access.defer_code_lock(call.contract.clone());
                code
            }
            None => {
                let code = access
                    .lock_code(call.contract.clone())
                    .await
                    .map_err(broker_failure)?;
                if code.is_empty() {
                    access.into_transaction().rollback().await;
                    return Err(AttemptError::Fatal(AgentError::ContractNotFound(
                        parsec_core::display_key(&call.contract),
                    )));
                }
                self.cache_code(call.contract.clone(), code.clone());
                code
            }
        };

        let run = self
            .runner
            .run(&code, &call.param, call.read_only, &mut access)
            .await;
        let failure = access.take_failure();
        let output = match run {
            Ok(output) => output,
            Err(error) => {
                access.into_transaction().rollback().await;
                return Err(run_failure(error, failure));
            }
        };

        // The code we ran must be the code that is committed under the key.
        let locked = access.locked_code().await.map_err(broker_failure)?;
        if locked != code {
            access.into_transaction().rollback().await;
            if locked.is_empty() {
                self.code_cache.lock().remove(&call.contract);
                return Err(AttemptError::Fatal(AgentError::ContractNotFound(
                    parsec_core::display_key(&call.contract),
                )));
            }
            self.cache_code(call.contract.clone(), locked);
            return Err(AttemptError::Retry {
                reason: "contract code changed".into(),
                backoff: false,
            });
        }

        let txn = access.into_transaction();
        let to_commit = if call.read_only {
            WriteSet::new()
        } else {
            output.writes.clone()
        };
        let outcome = txn.commit(to_commit).await.map_err(broker_failure)?;
        Ok(CallResult {
            ticket,
            attempts: attempt + 1,
            writes: output.writes,
            outcome,
        })
    }

    async fn attempt_deploy(
        &self,
        key: &Key,
        code: &Bytes,
        ticket: Ticket,
        attempt: u32,
    ) -> Result<CallResult, AttemptError> {
        let mut txn = self.broker.begin(ticket, attempt);
        txn.lock(&[(key.clone(), LockMode::Write)])
            .await
            .map_err(broker_failure)?;
        let writes: WriteSet = [(key.clone(), code.clone())].into_iter().collect();
        let outcome = txn.commit(writes.clone()).await.map_err(broker_failure)?;
        Ok(CallResult {
            ticket,
            attempts: attempt + 1,
            writes,
            outcome,
        })
    }

    fn cache_code(&self, key: Key, code: Value) {
        self.code_cache.lock().insert(key, code);
    }
}

fn validate_key(what: &str, key: &[u8]) -> Result<(), AgentError> {
    if key.is_empty() || key.len() > MAX_CONTRACT_KEY_BYTES {
        return Err(AgentError::InvalidArgument(format!(
            "{what} must be 1..={MAX_CONTRACT_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

fn broker_failure(error: BrokerError) -> AttemptError {
    if error.is_retryable() {
        AttemptError::Retry {
            reason: error.to_string(),
            backoff: true,
        }
    } else {
        AttemptError::Fatal(AgentError::Broker(error))
    }
}

fn run_failure(error: RunError, failure: Option<BrokerError>) -> AttemptError {
    match (error, failure) {
        (RunError::Access(_), Some(broker)) => broker_failure(broker),
        (RunError::Access(AccessError::Wounded), None) => AttemptError::Retry {
            reason: "wounded".into(),
            backoff: true,
        },
        (RunError::Access(AccessError::Aborted(reason)), None) => AttemptError::Retry {
            reason,
            backoff: true,
        },
        (error, _) => AttemptError::Fatal(AgentError::Run(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_cache_is_bounded_in_bytes_and_entries() {
        let mut cache = CodeCache::default();
        let big = Value::from(vec![b'x'; 1 << 20]);
        for i in 0..200u32 {
            cache.insert(Key::from(i.to_be_bytes().to_vec()), big.clone());
            assert!(cache.bytes <= CODE_CACHE_BYTES, "{} bytes", cache.bytes);
        }
        assert!(cache.by_key.len() <= 64, "{} entries", cache.by_key.len());
        let key = Key::from_static(b"k");
        cache.insert(key.clone(), Value::from_static(b"v1"));
        cache.insert(key.clone(), Value::from_static(b"v22"));
        let before = cache.bytes;
        cache.remove(&key);
        assert_eq!(
            before - cache.bytes,
            1 + 3,
            "a replaced entry is counted once"
        );
        for i in 0..(CODE_CACHE_ENTRIES as u32 + 10) {
            cache.insert(
                Key::from(i.to_be_bytes().to_vec()),
                Value::from_static(b"c"),
            );
        }
        assert!(cache.by_key.len() <= CODE_CACHE_ENTRIES);
    }
}
