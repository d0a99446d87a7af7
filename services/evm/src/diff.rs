//! revm's state diff → the keys to write.
//!
//! Mirrors what revm's own `CacheDB::commit` does with a diff, in our key space: untouched
//! accounts are skipped, a self-destructed account (Cancun: only one created in the same
//! transaction) is deleted with the slots it wrote, new code is stored under its hash. A key is
//! written only when its new value differs from the value the execution read, so a reverted
//! transaction writes exactly the sender (nonce and fee) and, if it was paid a tip, the fee
//! recipient.

use std::collections::HashMap;

use alloy_primitives::KECCAK256_EMPTY;
use parsec_core::{Key, Value, WriteSet};
use revm::state::EvmState;

use crate::code_cache::CodeCache;
use crate::state::{self, AccountRecord};

/// The writes of one execution whose reads were `observed` (missing keys read as empty).
/// Code already in `committed_code` (read from committed state) is not written again, so that
/// deployments of the same code do not all write-lock one key.
pub fn write_set(
    changes: &EvmState,
    observed: &HashMap<Key, Value>,
    committed_code: &CodeCache,
) -> WriteSet {
    let mut writes = WriteSet::new();
    let mut put = |key: Key, value: Value| {
        let unchanged = observed
            .get(&key)
            .map_or(value.is_empty(), |old| *old == value);
        if !unchanged {
            writes.insert(key, value);
        }
    };
    for (address, account) in changes {
        if !account.is_touched() {
            continue;
        }
        if account.is_selfdestructed() {
            put(state::account_key(address), Value::new());
            for slot in account.storage.keys() {
                put(state::storage_key(address, slot), Value::new());
            }
            continue;
        }
        let info = &account.info;
        let record = AccountRecord {
            nonce: info.nonce,
            balance: info.balance,
            code_hash: info.code_hash,
        };
        put(state::account_key(address), state::encode_account(&record));
        for (slot, value) in account.changed_storage_slots() {
            put(
                state::storage_key(address, slot),
                state::encode_word(&value.present_value),
            );
        }
        if account.is_created()
            && info.code_hash != KECCAK256_EMPTY
            && !committed_code.contains(&info.code_hash)
            && let Some(code) = &info.code
        {
            put(
                state::code_key(&info.code_hash),
                Value::copy_from_slice(code.original_byte_slice()),
            );
        }
    }
    writes
}
