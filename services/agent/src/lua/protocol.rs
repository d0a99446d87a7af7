//! The contract protocol: what a contract may yield (keys to lock) and what it must return (a
//! write-set, or its answer in a read-only call). Everything here checks values that come
//! straight from contract code, so every violation is a [`RunError::ContractFailed`] with a
//! message that tells the author what went wrong.

use std::collections::HashSet;

use bytes::Bytes;
use mlua::{MultiValue, Table, Value};
use parsec_core::{Key, WriteSet};

use crate::runner::{RunError, RunOutput};

/// Most keys one yield may ask for.
pub const MAX_KEYS_PER_YIELD: usize = 256;
/// Longest key a contract may lock.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest value a contract may write (or return in a read-only call).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Most entries in the table a contract returns.
pub const MAX_OUTPUT_ENTRIES: usize = 1024;

fn failed(message: impl Into<String>) -> RunError {
    RunError::ContractFailed(message.into())
}

/// The keys of the `yield_no`-th yield (1-based), checked.
pub(super) fn keys_from_yield(yield_no: usize, values: MultiValue) -> Result<Vec<Key>, RunError> {
    if values.is_empty() {
        return Err(failed(format!(
            "yield #{yield_no}: expected 1 to {MAX_KEYS_PER_YIELD} key strings, got nothing"
        )));
    }
    if values.len() > MAX_KEYS_PER_YIELD {
        return Err(failed(format!(
            "yield #{yield_no}: expected at most {MAX_KEYS_PER_YIELD} keys, got {}",
            values.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            key_from_value(value)
                .map_err(|e| failed(format!("yield #{yield_no}: key #{}: {e}", i + 1)))
        })
        .collect()
}

fn key_from_value(value: &Value) -> Result<Key, String> {
    let Value::String(s) = value else {
        return Err(format!("expected a key string, got {}", value.type_name()));
    };
    let key = s.as_bytes();
    match key.len() {
        0 => Err("expected a key string, got an empty string".to_owned()),
        len if len > MAX_KEY_LEN => Err(format!("key is {len} bytes, the limit is {MAX_KEY_LEN}")),
        _ => Ok(Bytes::copy_from_slice(&key)),
    }
}

/// Turns what the finished coroutine returned into the call's output. In a normal call every
/// key must have been locked; in a read-only call the table is the contract's answer.
pub(super) fn output_from_return(
    values: MultiValue,
    read_only: bool,
    locked: &HashSet<Key>,
) -> Result<RunOutput, RunError> {
    const EXPECTED: &str = "must return a table of key/value strings";
    let mut values = values.into_iter();
    let table = match (values.next(), values.len()) {
        (Some(Value::Table(table)), 0) => table,
        (None, _) => return Err(failed(format!("{EXPECTED}, got nothing"))),
        (Some(other), 0) => return Err(failed(format!("{EXPECTED}, got {}", other.type_name()))),
        (Some(_), more) => {
            return Err(failed(format!(
                "must return exactly one table, got {} values",
                more + 1
            )));
        }
    };
    let writes = write_set_from_table(&table)?;
    if !read_only && let Some(key) = writes.keys().find(|key| !locked.contains(*key)) {
        return Err(failed(format!(
            "wrote key {} that it never locked",
            display_key(key)
        )));
    }
    Ok(RunOutput { writes })
}

/// Reads a returned table raw (no metamethod of the contract runs outside the sandbox).
fn write_set_from_table(table: &Table) -> Result<WriteSet, RunError> {
    let mut writes = WriteSet::new();
    for pair in table.pairs::<Value, Value>() {
        let (key, value) =
            pair.map_err(|e| RunError::Internal(format!("reading the returned table: {e}")))?;
        if writes.len() == MAX_OUTPUT_ENTRIES {
            return Err(failed(format!(
                "returned more than {MAX_OUTPUT_ENTRIES} entries"
            )));
        }
        let Value::String(key) = key else {
            return Err(failed(format!(
                "returned a key of type {}, keys must be strings",
                key.type_name()
            )));
        };
        let key = Bytes::copy_from_slice(&key.as_bytes());
        let Value::String(value) = value else {
            return Err(failed(format!(
                "returned a value of type {} for key {}, values must be strings",
                value.type_name(),
                display_key(&key)
            )));
        };
        let value = value.as_bytes();
        if value.len() > MAX_VALUE_LEN {
            return Err(failed(format!(
                "value for key {} is {} bytes, the limit is {MAX_VALUE_LEN}",
                display_key(&key),
                value.len()
            )));
        }
        writes.insert(key, Bytes::copy_from_slice(&value));
    }
    Ok(writes)
}

pub use parsec_core::display_key;
