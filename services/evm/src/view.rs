//! revm's (synchronous) `Database` over a map of key values that were fetched beforehand.
//!
//! revm cannot wait for a lock in the middle of an opcode, so an execution runs against the
//! values already fetched and records every key it asks for. A key not fetched yet reads as
//! absent (empty account, zero slot, no code) and is reported in [`View::missing`]; the caller
//! fetches those keys and runs again. Speculating instead of stopping lets one run discover
//! every key that does not depend on a missing value, so most executions need one or two
//! fetch rounds instead of one round per key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use alloy_primitives::{Address, B256, KECCAK256_EMPTY, U256, keccak256};
use parsec_core::{Key, Value};
use revm::bytecode::Bytecode;
use revm::database_interface::{DBErrorMarker, Database};
use revm::state::AccountInfo;

use crate::code_cache::CodeCache;
use crate::state::{self, StateError};

/// Committed state that does not make sense. Never caused by a client: a bug or corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("corrupt value under key {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: StateError,
    },
    #[error("account names code {0} that is not stored")]
    MissingCode(B256),
    #[error("stored code under {0} does not hash to it")]
    CodeHashMismatch(B256),
    #[error("stored code under {hash}: {reason}")]
    BadCode { hash: B256, reason: String },
}

impl DBErrorMarker for ViewError {}

/// One execution's window onto fetched values. It owns them for the duration of a run (the
/// values move in and out, they are not copied), so that a revm instance can be kept per
/// thread and reused (see [`crate::machine`]).
#[derive(Default)]
pub struct View {
    fetched: HashMap<Key, Value>,
    code_cache: Option<Arc<CodeCache>>,
    /// Every key the execution asked for, with the value it was given.
    observed: HashMap<Key, Value>,
    /// The keys among them that were not fetched (they were given the empty value, or
    /// `missing_word` for a storage slot).
    missing: HashSet<Key>,
    /// What a storage slot that was not fetched reads as (see [`Speculation`]).
    missing_word: U256,
}

/// What a key that was not fetched reads as in a discovery run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// Absent, as in an empty state: storage slots read as zero.
    Absent,
    /// Storage slots read as 2^128: enough to pass balance and allowance checks, small enough
    /// that adding real amounts does not overflow, so that the run goes on down the path a
    /// funded transaction takes and finds the keys it writes.
    Funded,
}

/// The word a missing slot reads as under [`Speculation::Funded`].
pub const FUNDED_WORD: U256 = U256::from_limbs([0, 0, 1, 0]);

/// What a run saw: the fetched values handed back, and the keys it read.
pub struct Seen {
    pub fetched: HashMap<Key, Value>,
    /// The keys the execution read, with the values it saw.
    pub observed: HashMap<Key, Value>,
    /// The keys the execution read that had not been fetched.
    pub missing: HashSet<Key>,
}

impl View {
    pub fn new(
        fetched: HashMap<Key, Value>,
        code_cache: Arc<CodeCache>,
        speculation: Speculation,
    ) -> Self {
        Self {
            fetched,
            code_cache: Some(code_cache),
            observed: HashMap::new(),
            missing: HashSet::new(),
            missing_word: match speculation {
                Speculation::Absent => U256::ZERO,
                Speculation::Funded => FUNDED_WORD,
            },
        }
    }

    pub fn finish(self) -> Seen {
        Seen {
            fetched: self.fetched,
            observed: self.observed,
            missing: self.missing,
        }
    }

    fn cached_code(&self, hash: &B256) -> Option<Bytecode> {
        self.code_cache.as_ref().and_then(|cache| cache.get(hash))
    }

    fn get(&mut self, key: Key) -> (Value, bool) {
        let (value, known) = match self.fetched.get(&key) {
            Some(value) => (value.clone(), true),
            None => (Value::new(), false),
        };
        if !known {
            self.missing.insert(key.clone());
        }
        self.observed.insert(key, value.clone());
        (value, known)
    }
}

fn corrupt(key: &Key, source: StateError) -> ViewError {
    ViewError::Corrupt {
        key: parsec_core::display_key(key),
        source,
    }
}

impl Database for View {
    type Error = ViewError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        let key = state::account_key(&address);
        let (value, _) = self.get(key.clone());
        if value.is_empty() {
            return Ok(None);
        }
        let record = state::decode_account(&value).map_err(|e| corrupt(&key, e))?;
        let info = AccountInfo::default()
            .with_balance(record.balance)
            .with_nonce(record.nonce);
        Ok(Some(match self.cached_code(&record.code_hash) {
            Some(code) => info.with_code_and_hash(code, record.code_hash),
            // `None` code: revm asks `code_by_hash` when it needs the code.
            None if record.has_code() => info.with_code_hash(record.code_hash),
            None => info,
        }))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ViewError> {
        if code_hash == KECCAK256_EMPTY || code_hash == B256::ZERO {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.cached_code(&code_hash) {
            return Ok(code);
        }
        let (bytes, known) = self.get(state::code_key(&code_hash));
        if !known {
            // Speculative: the next round fetches it.
            return Ok(Bytecode::default());
        }
        if bytes.is_empty() {
            return Err(ViewError::MissingCode(code_hash));
        }
        if keccak256(&bytes) != code_hash {
            return Err(ViewError::CodeHashMismatch(code_hash));
        }
        let code = Bytecode::new_raw_checked(bytes.into()).map_err(|e| ViewError::BadCode {
            hash: code_hash,
            reason: e.to_string(),
        })?;
        if let Some(cache) = &self.code_cache {
            cache.insert(code_hash, code.clone());
        }
        Ok(code)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ViewError> {
        let key = state::storage_key(&address, &index);
        let (value, known) = self.get(key.clone());
        if !known && !self.missing_word.is_zero() {
            // Recorded as seen, so that the diff writes only what the run changed.
            self.observed
                .insert(key, state::encode_word(&self.missing_word));
            return Ok(self.missing_word);
        }
        state::decode_word(&value).map_err(|e| corrupt(&key, e))
    }

    fn block_hash(&mut self, _number: u64) -> Result<B256, ViewError> {
        // Logical blocks have no hash chain the EVM could see yet; Ethereum answers zero for
        // blocks it does not know.
        Ok(B256::ZERO)
    }
}
