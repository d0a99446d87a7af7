//! Contract code by hash, shared by every execution on an agent.
//!
//! Code under a hash never changes (the key is the hash of the value, and Cancun SELFDESTRUCT
//! rules mean code is only ever added), so a cached copy is always right and executions need
//! not lock the code key: the account record, which they do lock, names the hash. Only code read
//! from committed state goes in, analysed once (jump destinations) for every later call.

use alloy_primitives::B256;
use parking_lot::RwLock;
use revm::bytecode::Bytecode;
use std::collections::HashMap;

/// Default bound on the bytes of code kept.
pub const DEFAULT_CODE_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug)]
pub struct CodeCache {
    entries: RwLock<Entries>,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Entries {
    by_hash: HashMap<B256, Bytecode>,
    bytes: usize,
}

impl Default for CodeCache {
    fn default() -> Self {
        Self::new(DEFAULT_CODE_CACHE_BYTES)
    }
}

impl CodeCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            max_bytes,
        }
    }

    pub fn get(&self, hash: &B256) -> Option<Bytecode> {
        self.entries.read().by_hash.get(hash).cloned()
    }

    pub fn contains(&self, hash: &B256) -> bool {
        self.entries.read().by_hash.contains_key(hash)
    }

    /// Keeps `code`, which committed state holds under `hash`. When full, starts over: a
    /// crude policy, but code sets are small and a miss costs only one read lock.
    pub fn insert(&self, hash: B256, code: Bytecode) {
        let size = code.original_byte_slice().len();
        if size > self.max_bytes {
            return;
        }
        let mut entries = self.entries.write();
        if entries.by_hash.contains_key(&hash) {
            return;
        }
        if entries.bytes + size > self.max_bytes {
            entries.by_hash.clear();
            entries.bytes = 0;
        }
        entries.bytes += size;
        entries.by_hash.insert(hash, code);
    }

    pub fn len(&self) -> usize {
        self.entries.read().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
