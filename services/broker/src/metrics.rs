//! Prometheus metrics of the broker: how long transactions wait for their locks.

use std::sync::LazyLock;
use std::time::Duration;

use parsec_telemetry::LATENCY_BUCKETS;
use parsec_telemetry::registry::register;
use prometheus::{Histogram, HistogramOpts};

static LOCK_WAIT: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "parsec_agent_lock_wait_seconds",
                "Time one lock step of a transaction took (every shard asked, until all keys \
                 were granted or the attempt was wounded)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    )
});

/// Records one lock step.
pub fn lock_waited(elapsed: Duration) {
    LOCK_WAIT.observe(elapsed.as_secs_f64());
}

/// Registers the broker's families so that they are exported before the first transaction.
pub fn register_all() {
    LazyLock::force(&LOCK_WAIT);
}
