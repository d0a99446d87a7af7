//! The runner's window onto a transaction: [`KeyAccess`] over a broker [`Transaction`].
//!
//! The agent caches contract code by key, so that a call does not spend a round trip fetching it.
//! The cached copy is still checked: the read lock on the code's key rides along with the
//! contract's first key request, and the agent compares the value it gets with the code it ran
//! before committing.

use crate::runner::{AccessError, KeyAccess};
use async_trait::async_trait;
use parsec_broker::{BrokerError, Transaction};
use parsec_core::{Key, LockMode, Value};

/// Most keys a contract may ask for in one step.
pub const MAX_KEYS_PER_REQUEST: usize = 256;

pub struct TransactionAccess {
    txn: Transaction,
    read_only: bool,
    /// The code key, while its lock is still to be taken along with the next request.
    deferred_code_key: Option<Key>,
    /// The code's committed value, once locked.
    locked_code: Option<Value>,
    /// The broker error behind the last `AccessError`, for the retry decision.
    failure: Option<BrokerError>,
}

impl TransactionAccess {
    pub fn new(txn: Transaction, read_only: bool) -> Self {
        Self {
            txn,
            read_only,
            deferred_code_key: None,
            locked_code: None,
            failure: None,
        }
    }

    /// Locks the contract's code key now and returns the code.
    pub async fn lock_code(&mut self, key: Key) -> Result<Value, BrokerError> {
        let mut values = self.txn.lock(&[(key, LockMode::Read)]).await?;
        let code = values.pop().unwrap_or_default();
        self.locked_code = Some(code.clone());
        Ok(code)
    }

    /// Takes the code key's lock along with the contract's first request (or at the end).
    pub fn defer_code_lock(&mut self, key: Key) {
        self.deferred_code_key = Some(key);
    }

    /// Locks the code key if that is still pending, and returns the locked code.
    pub async fn locked_code(&mut self) -> Result<Value, BrokerError> {
        match (self.deferred_code_key.take(), &self.locked_code) {
            (Some(key), _) => self.lock_code(key).await,
            (None, Some(code)) => Ok(code.clone()),
            (None, None) => Ok(Value::new()),
        }
    }

    pub fn take_failure(&mut self) -> Option<BrokerError> {
        self.failure.take()
    }

    pub fn into_transaction(self) -> Transaction {
        self.txn
    }
}

#[async_trait]
impl KeyAccess for TransactionAccess {
    async fn lock(&mut self, keys: Vec<Key>, mode: LockMode) -> Result<Vec<Value>, AccessError> {
        self.lock_each(keys.into_iter().map(|key| (key, mode)).collect())
            .await
    }

    async fn lock_each(
        &mut self,
        mut requests: Vec<(Key, LockMode)>,
    ) -> Result<Vec<Value>, AccessError> {
        if requests.len() > MAX_KEYS_PER_REQUEST {
            return Err(AccessError::Invalid(format!(
                "{} keys in one request; at most {MAX_KEYS_PER_REQUEST}",
                requests.len()
            )));
        }
        if self.read_only {
            for (_, mode) in &mut requests {
                *mode = LockMode::Read;
            }
        }
        let wanted = requests.len();
        let code_key = self.deferred_code_key.take();
        if let Some(key) = &code_key {
            requests.push((key.clone(), LockMode::Read));
        }
        match self.txn.lock(&requests).await {
            Ok(mut values) => {
                if code_key.is_some() {
                    self.locked_code = values.pop();
                }
                values.truncate(wanted);
                Ok(values)
            }
            Err(error) => {
                let access = if error.is_wound() {
                    AccessError::Wounded
                } else {
                    AccessError::Aborted(error.to_string())
                };
                self.failure = Some(error);
                Err(access)
            }
        }
    }
}
