//! The process-wide Prometheus registry.
//!
//! One registry per process, not one per component: `parsec dev` runs several shards, Raft
//! groups and an agent in one process, and they must share metric families (told apart by
//! labels), since a family can be registered only once.

use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

type Hook = Box<dyn Fn() -> bool + Send + Sync>;
static HOOKS: LazyLock<Mutex<Vec<Hook>>> = LazyLock::new(Mutex::default);

/// Latency buckets in seconds, from 100 µs (an in-process lock grant) to 10 s (a write that
/// waited out a leader election).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The registry `/metrics` serves.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Registers `metric` in the process registry and returns it. Metrics are created once per
/// process (in a `LazyLock`), so registration fails only on a programming error (two families
/// with one name): that is logged, and the metric still works, unexported, rather than taking a
/// request path down.
pub fn register<C: Collector + Clone + 'static>(metric: C) -> C {
    if let Err(error) = REGISTRY.register(Box::new(metric.clone())) {
        tracing::error!(%error, "metric not registered");
    }
    metric
}

/// Runs `refresh(&target)` before every scrape for as long as `target` lives: gauges that are
/// cheaper to read on demand than to maintain on every change (lock-table size, key count,
/// free disk) are set here. The hook is dropped once `target` is.
pub fn on_scrape<T: Send + Sync + 'static>(
    target: &Arc<T>,
    refresh: impl Fn(&T) + Send + Sync + 'static,
) {
    let target: Weak<T> = Arc::downgrade(target);
    HOOKS.lock().push(Box::new(move || match target.upgrade() {
        Some(target) => {
            refresh(&target);
            true
        }
        None => false,
    }));
}

/// Refreshes the on-demand gauges, then encodes every metric in the Prometheus text format.
pub fn render() -> String {
    HOOKS.lock().retain(|hook| hook());
    let mut buffer = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&REGISTRY.gather(), &mut buffer) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus::{IntGauge, Opts};

    #[test]
    fn scrape_hooks_refresh_gauges_while_their_target_lives() {
        let gauge =
            register(IntGauge::with_opts(Opts::new("parsec_test_hook_gauge", "test")).unwrap());
        let target = Arc::new(42_i64);
        let g = gauge.clone();
        on_scrape(&target, move |value| g.set(*value));
        assert!(render().contains("parsec_test_hook_gauge 42"));
        drop(target);
        gauge.set(7);
        // The hook is gone with its target: the gauge keeps what was last set.
        assert!(render().contains("parsec_test_hook_gauge 7"));
    }
}
