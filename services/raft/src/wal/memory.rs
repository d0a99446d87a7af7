//! The log as kept in memory: every entry not purged yet, decoded, plus `last_purged`.
//!
//! Memory bound: openraft purges the log after each snapshot down to
//! `max_in_snapshot_log_to_keep` entries, and builds a snapshot every `LogsSinceLast(n)` entries
//! (`RaftConfig` defaults: 10 000 and 5 000), so this holds about `n + keep` entries (15 000 by
//! default) plus those appended while a snapshot is built; each entry is one batch of commands.
//!
//! Recovery replays the ops of the WAL through the same methods the live store calls, so the
//! state after a reopen is, by construction, the state before it.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use crate::types::{Entry, LogId};

#[derive(Debug, Default)]
pub(crate) struct LogMemory {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
}

impl LogMemory {
    pub(crate) fn insert(&mut self, entry: Entry) {
        self.entries.insert(entry.log_id.index, entry);
    }

    /// Deletes the entries with index >= `since`.
    pub(crate) fn truncate(&mut self, since: u64) {
        self.entries.split_off(&since);
    }

    /// Deletes the entries up to `upto` (inclusive), which becomes `last_purged`.
    pub(crate) fn purge(&mut self, upto: LogId) {
        if self.last_purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        self.entries = self.entries.split_off(&upto.index.saturating_add(1));
        self.last_purged = Some(upto);
    }

    pub(crate) fn last_purged(&self) -> Option<LogId> {
        self.last_purged
    }

    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    pub(crate) fn get(&self, index: u64) -> Option<&Entry> {
        self.entries.get(&index)
    }

    pub(crate) fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.entries.range(range).map(|(_, e)| e.clone()).collect()
    }
}
