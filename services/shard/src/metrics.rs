//! Prometheus metrics of a shard replica, labelled with its group (`shard-N`, as Raft's):
//! lock traffic, ticket outcomes, lease expiries and recoveries, and the size of its lock table
//! and state.

use std::sync::LazyLock;

use parsec_core::ShardId;
use parsec_telemetry::registry::register;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::engine::ShardStatus;

struct Families {
    lock_requests: IntCounterVec,
    lock_waits: IntCounterVec,
    tickets: IntCounterVec,
    lease_expiries: IntCounterVec,
    recoveries: IntCounterVec,
    locked_keys: IntGaugeVec,
    waiting_requests: IntGaugeVec,
    active_tickets: IntGaugeVec,
    keys: IntGaugeVec,
    state_bytes: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    register(
        IntGaugeVec::new(Opts::new(name, help), &["group"])
            .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    lock_requests: counter(
        "parsec_shard_lock_requests_total",
        "Lock requests (one batch of keys of one ticket) by result: granted, wounded, timeout \
         (waited out its deadline) or refused",
        &["group", "result"],
    ),
    lock_waits: counter(
        "parsec_shard_lock_waits_total",
        "Lock requests that could not be granted at once and waited in a queue",
        &["group"],
    ),
    tickets: counter(
        "parsec_shard_tickets_total",
        "Tickets by outcome on this shard: prepared (two-phase vote), committed, aborted",
        &["group", "outcome"],
    ),
    lease_expiries: counter(
        "parsec_shard_lease_expiries_total",
        "Agents whose lease lapsed (or that restarted) while holding tickets here",
        &["group"],
    ),
    recoveries: counter(
        "parsec_shard_recoveries_total",
        "Orphaned tickets of dead agents resolved by this shard, by resolution",
        &["group", "resolution"],
    ),
    locked_keys: gauge(
        "parsec_shard_locked_keys",
        "Keys in the lock table (held or waited for)",
    ),
    waiting_requests: gauge(
        "parsec_shard_waiting_lock_requests",
        "Lock requests queued behind a conflicting holder",
    ),
    active_tickets: gauge(
        "parsec_shard_active_tickets",
        "Tickets holding locks or a prepared or committed record here",
    ),
    keys: gauge("parsec_shard_keys", "Keys in the committed state"),
    state_bytes: gauge(
        "parsec_shard_state_bytes",
        "Bytes of keys and values in the committed state",
    ),
});

/// One shard's series.
#[derive(Clone)]
pub struct ShardMetrics {
    group: String,
    pub waits: IntCounter,
    pub lease_expiries: IntCounter,
    locked_keys: IntGauge,
    waiting_requests: IntGauge,
    active_tickets: IntGauge,
    keys: IntGauge,
    state_bytes: IntGauge,
}

/// How a lock request ended.
#[derive(Clone, Copy, Debug)]
pub enum LockResult {
    Granted,
    Wounded,
    Timeout,
    Refused,
}

/// A ticket's outcome on this shard.
#[derive(Clone, Copy, Debug)]
pub enum TicketOutcome {
    Prepared,
    Committed,
    Aborted,
}

impl ShardMetrics {
    pub fn new(shard: ShardId) -> Self {
        let f = &*FAMILIES;
        let group = shard.to_string();
        let l = &[group.as_str()];
        // Every series at zero from the start, so that rates and dashboards show 0, not "no data".
        for result in ["granted", "wounded", "timeout", "refused"] {
            f.lock_requests.with_label_values(&[group.as_str(), result]);
        }
        for outcome in ["prepared", "committed", "aborted"] {
            f.tickets.with_label_values(&[group.as_str(), outcome]);
        }
        for resolution in ["commit", "abort", "finish"] {
            f.recoveries
                .with_label_values(&[group.as_str(), resolution]);
        }
        ShardMetrics {
            waits: f.lock_waits.with_label_values(l),
            lease_expiries: f.lease_expiries.with_label_values(l),
            locked_keys: f.locked_keys.with_label_values(l),
            waiting_requests: f.waiting_requests.with_label_values(l),
            active_tickets: f.active_tickets.with_label_values(l),
            keys: f.keys.with_label_values(l),
            state_bytes: f.state_bytes.with_label_values(l),
            group,
        }
    }

    pub fn lock(&self, result: LockResult) {
        let result = match result {
            LockResult::Granted => "granted",
            LockResult::Wounded => "wounded",
            LockResult::Timeout => "timeout",
            LockResult::Refused => "refused",
        };
        FAMILIES
            .lock_requests
            .with_label_values(&[self.group.as_str(), result])
            .inc();
    }

    pub fn ticket(&self, outcome: TicketOutcome) {
        let outcome = match outcome {
            TicketOutcome::Prepared => "prepared",
            TicketOutcome::Committed => "committed",
            TicketOutcome::Aborted => "aborted",
        };
        FAMILIES
            .tickets
            .with_label_values(&[self.group.as_str(), outcome])
            .inc();
    }

    pub fn recovered(&self, resolution: &str) {
        FAMILIES
            .recoveries
            .with_label_values(&[self.group.as_str(), resolution])
            .inc();
    }

    /// Sets the size gauges from a status report.
    pub fn sizes(&self, status: &ShardStatus) {
        self.locked_keys.set(status.locked_keys as i64);
        self.waiting_requests.set(status.waiting_requests as i64);
        self.active_tickets.set(status.tickets as i64);
        self.keys.set(status.keys as i64);
        self.state_bytes.set(status.data_bytes as i64);
    }
}
