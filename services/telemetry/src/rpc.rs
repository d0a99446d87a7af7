//! Instruments of the Ethereum JSON-RPC front end and the EVM runner. They are registered and
//! exported by every agent; the JSON-RPC server records into them.
//!
//! Recording one JSON-RPC call (in the server's request handler, once the reply is known):
//!
//! ```
//! use std::time::Instant;
//! use parsec_telemetry::RpcMetrics;
//!
//! let started = Instant::now();
//! // ... handle `eth_sendRawTransaction` ...
//! let error_code: Option<i32> = Some(-32000); // None on success
//! RpcMetrics::global().record("eth_sendRawTransaction", started.elapsed(), error_code);
//! ```
//!
//! `method` must be a method the server knows: the caller maps any other name to `unknown`, so
//! that a client cannot create unbounded label values (names that do not look like a method
//! are mapped here as well); the code is the JSON-RPC error code.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::registry::{LATENCY_BUCKETS, register};

/// JSON-RPC requests, errors and latency by method.
pub struct RpcMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    /// Calls refused because their client was over its rate limit.
    pub rate_limited: IntCounter,
    /// Connections closed at once: the server, or their client, held its share already.
    pub refused_connections: IntCounter,
}

static RPC: LazyLock<RpcMetrics> = LazyLock::new(|| RpcMetrics {
    requests: register(counter_vec(
        "parsec_rpc_requests_total",
        "JSON-RPC requests by method",
        &["method"],
    )),
    errors: register(counter_vec(
        "parsec_rpc_errors_total",
        "JSON-RPC requests answered with an error, by method and JSON-RPC error code",
        &["method", "code"],
    )),
    duration: register(
        HistogramVec::new(
            HistogramOpts::new(
                "parsec_rpc_request_duration_seconds",
                "Time from receiving a JSON-RPC request to its reply, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    ),
    rate_limited: register(counter(
        "parsec_rpc_rate_limited_total",
        "JSON-RPC calls refused because their client was over its rate limit",
    )),
    refused_connections: register(counter(
        "parsec_rpc_refused_connections_total",
        "JSON-RPC connections closed at once: all connections, or the client's share, were in use",
    )),
});

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help))
        .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}"))
}

/// Bounds label cardinality: a method name is lowercase ASCII letters, digits and `_`, at most
/// 64 characters (every Ethereum method is); anything else is a client's garbage.
fn method_label(method: &str) -> &str {
    let plausible = !method.is_empty()
        && method.len() <= 64
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plausible { method } else { "unknown" }
}

impl RpcMetrics {
    /// The process's instruments (created and registered on first use).
    pub fn global() -> &'static RpcMetrics {
        &RPC
    }

    /// Records one call of `method` that took `elapsed` and failed with JSON-RPC error `code`
    /// (None: succeeded). Callers pass known method names or map unknown ones to "unknown".
    pub fn record(&self, method: &str, elapsed: Duration, code: Option<i32>) {
        let method = method_label(method);
        self.requests.with_label_values(&[method]).inc();
        self.duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
        if let Some(code) = code {
            let code = code.to_string();
            self.errors
                .with_label_values(&[method, code.as_str()])
                .inc();
        }
    }
}

/// EVM runner instruments.
pub struct EvmMetrics {
    /// Gas used by committed EVM transactions.
    pub gas_used: IntCounter,
    /// Transactions held by their sender's future-nonce queue, waiting for a predecessor.
    pub future_nonce_queue_depth: IntGauge,
    /// The highest sealed logical block this agent knows (`eth_blockNumber`).
    pub sealed_block: IntGauge,
    /// Blocks whose window is over but that are not sealed yet, as this agent sees it.
    pub seal_lag_blocks: IntGauge,
}

static EVM: LazyLock<EvmMetrics> = LazyLock::new(|| EvmMetrics {
    gas_used: register(
        IntCounter::with_opts(Opts::new(
            "parsec_evm_gas_used_total",
            "Gas used by committed EVM transactions",
        ))
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    ),
    future_nonce_queue_depth: register(
        IntGauge::with_opts(Opts::new(
            "parsec_evm_future_nonce_queue_depth",
            "EVM transactions held until their sender's previous nonce commits",
        ))
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    ),
    sealed_block: register(
        IntGauge::with_opts(Opts::new(
            "parsec_chain_sealed_block",
            "The highest sealed logical block this agent knows (eth_blockNumber)",
        ))
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    ),
    seal_lag_blocks: register(
        IntGauge::with_opts(Opts::new(
            "parsec_chain_seal_lag_blocks",
            "Logical blocks whose window is over but that are not sealed yet",
        ))
        .unwrap_or_else(|e| unreachable!("constant metric definition: {e}")),
    ),
});

impl EvmMetrics {
    /// The process's instruments (created and registered on first use).
    pub fn global() -> &'static EvmMetrics {
        &EVM
    }
}

/// Registers the JSON-RPC and EVM families so that they are exported (at zero) before the
/// first request: dashboards and alerts then find the series.
pub fn register_all() {
    LazyLock::force(&RPC);
    LazyLock::force(&EVM);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_requests_errors_and_latency() {
        let rpc = RpcMetrics::global();
        rpc.record("eth_getBalance", Duration::from_millis(3), None);
        rpc.record("eth_getBalance", Duration::from_millis(5), Some(-32602));
        rpc.record("bogus method\n{}", Duration::from_millis(1), Some(-32601));
        let text = crate::registry::render();
        assert!(
            text.contains("parsec_rpc_requests_total{method=\"eth_getBalance\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("parsec_rpc_errors_total{code=\"-32602\",method=\"eth_getBalance\"} 1")
        );
        assert!(text.contains("parsec_rpc_errors_total{code=\"-32601\",method=\"unknown\"} 1"));
        assert!(
            text.contains("parsec_rpc_request_duration_seconds_count{method=\"eth_getBalance\"} 2")
        );
    }
}
