//! Installed filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`)
//! and where each one's polling stands. As in geth, a filter not polled for the timeout (5
//! minutes) is removed; expiry is checked on every use of the registry, so no timer is needed
//! and the number of filters is capped.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::rpc::ids::new_id;
use crate::rpc::log_filter::LogFilter;

/// What a filter reports on `eth_getFilterChanges`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// Hashes of blocks sealed from `next` on.
    Blocks { next: u64 },
    /// Logs matching `filter` in blocks sealed from `next` on.
    Logs { filter: LogFilter, next: u64 },
    /// Pending transactions: always none (transactions are committed before they are visible).
    PendingTransactions,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many filters installed ({0}); uninstall some or let them expire")]
pub struct TooManyFilters(pub usize);

struct Installed {
    kind: FilterKind,
    last_used: Instant,
}

pub struct FilterRegistry {
    filters: Mutex<HashMap<String, Installed>>,
    timeout: Duration,
    max: usize,
}

impl FilterRegistry {
    pub fn new(timeout: Duration, max: usize) -> Self {
        Self {
            filters: Mutex::new(HashMap::new()),
            timeout,
            max,
        }
    }

    /// Installs a filter and returns its id.
    pub fn install(&self, kind: FilterKind, now: Instant) -> Result<String, TooManyFilters> {
        let mut filters = self.filters.lock();
        self.expire(&mut filters, now);
        if filters.len() >= self.max {
            return Err(TooManyFilters(self.max));
        }
        let id = new_id();
        filters.insert(
            id.clone(),
            Installed {
                kind,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The filter `id`, marking it used; `None` if unknown or expired.
    pub fn get(&self, id: &str, now: Instant) -> Option<FilterKind> {
        let mut filters = self.filters.lock();
        self.expire(&mut filters, now);
        let installed = filters.get_mut(id)?;
        installed.last_used = now;
        Some(installed.kind.clone())
    }

    /// Moves the cursor of filter `id` to `next` (never backwards: two concurrent polls do not
    /// rewind each other).
    pub fn advance(&self, id: &str, to: u64) {
        if let Some(installed) = self.filters.lock().get_mut(id) {
            match &mut installed.kind {
                FilterKind::Blocks { next } | FilterKind::Logs { next, .. } => {
                    *next = (*next).max(to);
                }
                FilterKind::PendingTransactions => {}
            }
        }
    }

    /// Removes filter `id`; whether it was installed.
    pub fn uninstall(&self, id: &str, now: Instant) -> bool {
        let mut filters = self.filters.lock();
        self.expire(&mut filters, now);
        filters.remove(id).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.filters.lock().len()
    }

    fn expire(&self, filters: &mut HashMap<String, Installed>, now: Instant) {
        filters.retain(|_, f| now.saturating_duration_since(f.last_used) < self.timeout);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(300);

    #[test]
    fn filters_expire_after_the_timeout_unless_polled() {
        let registry = FilterRegistry::new(TIMEOUT, 10);
        let start = Instant::now();
        let polled = registry
            .install(FilterKind::Blocks { next: 1 }, start)
            .unwrap();
        let idle = registry
            .install(FilterKind::PendingTransactions, start)
            .unwrap();
        assert_ne!(polled, idle);
        let later = start + Duration::from_secs(200);
        assert!(registry.get(&polled, later).is_some());
        let after = start + Duration::from_secs(301);
        assert_eq!(registry.get(&idle, after), None, "idle for 301 s");
        assert!(registry.get(&polled, after).is_some(), "polled 101 s ago");
        assert_eq!(registry.len(), 1);
        assert!(!registry.uninstall(&idle, after));
        assert!(registry.uninstall(&polled, after));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn cursors_only_move_forward() {
        let registry = FilterRegistry::new(TIMEOUT, 10);
        let now = Instant::now();
        let id = registry
            .install(FilterKind::Blocks { next: 3 }, now)
            .unwrap();
        registry.advance(&id, 7);
        registry.advance(&id, 5);
        assert_eq!(registry.get(&id, now), Some(FilterKind::Blocks { next: 7 }));
    }

    #[test]
    fn the_number_of_filters_is_capped_but_expired_ones_make_room() {
        let registry = FilterRegistry::new(TIMEOUT, 2);
        let now = Instant::now();
        registry
            .install(FilterKind::PendingTransactions, now)
            .unwrap();
        registry
            .install(FilterKind::PendingTransactions, now)
            .unwrap();
        assert_eq!(
            registry.install(FilterKind::PendingTransactions, now),
            Err(TooManyFilters(2))
        );
        let later = now + TIMEOUT;
        assert!(
            registry
                .install(FilterKind::PendingTransactions, later)
                .is_ok()
        );
    }
}
