//! What a benchmark prints.

use serde::Serialize;

/// The outcome of a benchmark run. `--json` prints it as one object.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: String,
    /// Transactions acknowledged as committed.
    pub committed: u64,
    /// Transactions the contract refused (e.g. insufficient funds): nothing written.
    pub failed: u64,
    /// Calls that ended in an agent or transport error.
    pub errors: u64,
    /// Extra attempts caused by wounds and lock timeouts.
    pub retries: u64,
    pub duration_s: f64,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Shard RPCs per committed transaction, measured over the load phase.
    pub rpcs_per_tx: Option<f64>,
    /// The end-of-run audit: total balance unchanged.
    pub total_ok: bool,
    /// Every wallet holds exactly what the committed payments say: the acknowledged ones plus
    /// those that ended in an error but are found committed in the ledger (`None` when the
    /// workload cannot tell).
    pub wallets_ok: Option<bool>,
    pub expected_total: u128,
    pub observed_total: u128,
    /// What the measured window cost in CPU (workloads that measure it).
    pub cost: Option<Cost>,
}

/// CPU per committed transaction over the measured window, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Cost {
    /// Summed over the server processes the bench was told about (none: `None`).
    pub server_cpu_us: Option<f64>,
    /// The load generator itself (`None` where `/proc` cannot tell).
    pub client_cpu_us: Option<f64>,
    /// The work no platform can avoid, measured in the same run (see [`crate::floor`]).
    pub floor: Option<crate::floor::Floor>,
}

impl Cost {
    /// Server CPU per transaction as a multiple of the floor.
    pub fn overhead(&self) -> Option<f64> {
        match (self.server_cpu_us, self.floor) {
            (Some(cpu), Some(floor)) if floor.total_us() > 0.0 => Some(cpu / floor.total_us()),
            _ => None,
        }
    }
}

impl Report {
    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: {} committed, {} refused, {} errors, {} retries in {:.1} s\n\
             throughput {:.0} tx/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms\n",
            self.workload,
            self.committed,
            self.failed,
            self.errors,
            self.retries,
            self.duration_s,
            self.tps,
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
        );
        if let Some(rpcs) = self.rpcs_per_tx {
            out.push_str(&format!("shard RPCs per transaction: {rpcs:.2}\n"));
        }
        if let Some(cost) = &self.cost {
            out.push_str("cpu per transaction:");
            if let Some(client) = cost.client_cpu_us {
                out.push_str(&format!(" client {client:.0} µs"));
            }
            if let Some(server) = cost.server_cpu_us {
                out.push_str(&format!(" servers {server:.0} µs"));
            }
            if let Some(floor) = cost.floor {
                out.push_str(&format!(
                    "; floor {:.0} µs (recovery {:.0} + revm {:.0})",
                    floor.total_us(),
                    floor.recover_us,
                    floor.execute_us
                ));
            }
            if let Some(overhead) = cost.overhead() {
                out.push_str(&format!("; servers = {overhead:.1}x the floor"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "audit: total {} (expected {}) {}",
            self.observed_total,
            self.expected_total,
            if self.total_ok { "OK" } else { "MISMATCH" }
        ));
        match self.wallets_ok {
            Some(true) => out.push_str("; every wallet exact"),
            Some(false) => out.push_str("; WALLET MISMATCH"),
            None => out.push_str("; per-wallet check skipped (errors)"),
        }
        out
    }
}
