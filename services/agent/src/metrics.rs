//! Prometheus metrics of an agent's transactions: outcomes by runner, retries by reason,
//! end-to-end latency, transactions in flight and wounds suffered.

use std::sync::LazyLock;
use std::time::Instant;

use crate::agent::AgentError;
use parsec_telemetry::LATENCY_BUCKETS;
use parsec_telemetry::registry::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

struct Families {
    transactions: IntCounterVec,
    retries: IntCounterVec,
    wounds: IntCounterVec,
    duration: HistogramVec,
    inflight: IntGaugeVec,
}

fn unreachable_definition(name: &str, e: prometheus::Error) -> ! {
    unreachable!("constant metric definition {name}: {e}")
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    transactions: register(
        IntCounterVec::new(
            Opts::new(
                "parsec_agent_transactions_total",
                "Transactions finished, by runner and outcome (committed, aborted: the contract \
                 or the request was refused, failed: the platform gave up)",
            ),
            &["runner", "outcome"],
        )
        .unwrap_or_else(|e| unreachable_definition("parsec_agent_transactions_total", e)),
    ),
    retries: register(
        IntCounterVec::new(
            Opts::new(
                "parsec_agent_retries_total",
                "Attempts of a transaction run again with the same ticket, by runner and reason",
            ),
            &["runner", "reason"],
        )
        .unwrap_or_else(|e| unreachable_definition("parsec_agent_retries_total", e)),
    ),
    wounds: register(
        IntCounterVec::new(
            Opts::new(
                "parsec_agent_wounds_total",
                "Attempts wounded by an older transaction (wound-wait), by runner",
            ),
            &["runner"],
        )
        .unwrap_or_else(|e| unreachable_definition("parsec_agent_wounds_total", e)),
    ),
    duration: register(
        HistogramVec::new(
            HistogramOpts::new(
                "parsec_agent_transaction_duration_seconds",
                "Time from accepting a transaction to its outcome (every attempt included), by \
                 runner and outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["runner", "outcome"],
        )
        .unwrap_or_else(|e| unreachable_definition("parsec_agent_transaction_duration_seconds", e)),
    ),
    inflight: register(
        IntGaugeVec::new(
            Opts::new(
                "parsec_agent_inflight_transactions",
                "Transactions accepted and not finished, by runner",
            ),
            &["runner"],
        )
        .unwrap_or_else(|e| unreachable_definition("parsec_agent_inflight_transactions", e)),
    ),
});

/// Registers the agent's families so that they are exported (at zero) before the first
/// transaction: dashboards and alerts then find the series.
pub fn register_all(runner: &str) {
    let f = &*FAMILIES;
    for outcome in ["committed", "aborted", "failed"] {
        f.transactions.with_label_values(&[runner, outcome]);
    }
    for reason in REASONS {
        f.retries.with_label_values(&[runner, reason]);
    }
    f.wounds.with_label_values(&[runner]);
    f.inflight.with_label_values(&[runner]);
}

/// How a transaction ended, for the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// The request or the contract was refused (bad input, contract error, not found).
    Aborted,
    /// The platform could not finish it (timeouts, unreachable shards, overload).
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
            Outcome::Failed => "failed",
        }
    }
}

/// Refusals of the request or the contract are aborts; the platform failing is a failure.
/// How a transaction that ended with this error counts: aborted (refused for good, nothing
/// written) or failed (could not finish). Each runtime's error type says.
pub trait FailureOutcome {
    fn outcome(&self) -> Outcome;
}

impl FailureOutcome for AgentError {
    fn outcome(&self) -> Outcome {
        outcome_of(self)
    }
}

pub fn outcome_of(error: &AgentError) -> Outcome {
    match error {
        AgentError::InvalidArgument(_) | AgentError::ContractNotFound(_) | AgentError::Run(_) => {
            Outcome::Aborted
        }
        AgentError::Broker(_) | AgentError::Timeout { .. } | AgentError::Overloaded(_) => {
            Outcome::Failed
        }
    }
}

/// Every value of the `reason` label.
const REASONS: [&str; 6] = [
    "wounded",
    "timeout",
    "unreachable",
    "refused",
    "code_changed",
    "other",
];

/// A retry reason as a small fixed set of label values (the reason itself is free text).
pub fn reason_label(reason: &str) -> &'static str {
    if reason.contains("wounded") {
        "wounded"
    } else if reason.contains("did not answer") || reason.contains("timed out") {
        "timeout"
    } else if reason.contains("unreachable") {
        "unreachable"
    } else if reason.contains("refused") {
        "refused"
    } else if reason.contains("code changed") {
        "code_changed"
    } else {
        "other"
    }
}

/// One transaction being measured: counts it in flight until [`Self::finish`] (or drop, when
/// the caller went away: counted as failed).
pub struct Measured {
    runner: &'static str,
    started: Instant,
    finished: bool,
}

impl Measured {
    pub fn start(runner: &'static str) -> Self {
        FAMILIES.inflight.with_label_values(&[runner]).inc();
        Measured {
            runner,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn retry(&self, reason: &str) {
        let reason = reason_label(reason);
        let f = &*FAMILIES;
        f.retries.with_label_values(&[self.runner, reason]).inc();
        if reason == "wounded" {
            f.wounds.with_label_values(&[self.runner]).inc();
        }
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    /// Records a commit and passes its result through.
    pub fn committed<T>(self, result: T) -> T {
        self.finish(Outcome::Committed);
        result
    }

    /// Records a transaction that ended with `error` and passes the error through.
    pub fn failed<E: FailureOutcome>(self, error: E) -> E {
        self.finish(error.outcome());
        error
    }

    fn record(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let f = &*FAMILIES;
        let labels = [self.runner, outcome.label()];
        f.transactions.with_label_values(&labels).inc();
        f.duration
            .with_label_values(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        f.inflight.with_label_values(&[self.runner]).dec();
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.record(Outcome::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn outcomes_retries_and_inflight_are_counted() {
        let runner = "metrics-test";
        let before = parsec_telemetry::render();
        let committed =
            format!("parsec_agent_transactions_total{{outcome=\"committed\",runner=\"{runner}\"}}");
        let failed =
            format!("parsec_agent_transactions_total{{outcome=\"failed\",runner=\"{runner}\"}}");
        let inflight = format!("parsec_agent_inflight_transactions{{runner=\"{runner}\"}}");
        let wounds = format!("parsec_agent_wounds_total{{runner=\"{runner}\"}}");

        let a = Measured::start(runner);
        let b = Measured::start(runner);
        let during = parsec_telemetry::render();
        assert_eq!(value(&during, &inflight), value(&before, &inflight) + 2.0);
        a.retry("wounded by Some(t-1) on shard-0");
        a.retry("shard-1 did not answer within 1s");
        a.finish(Outcome::Committed);
        drop(b); // the caller went away
        let after = parsec_telemetry::render();
        assert_eq!(value(&after, &inflight), value(&before, &inflight));
        assert_eq!(value(&after, &committed), value(&before, &committed) + 1.0);
        assert_eq!(value(&after, &failed), value(&before, &failed) + 1.0);
        assert_eq!(value(&after, &wounds), value(&before, &wounds) + 1.0);
        assert!(after.contains(&format!(
            "parsec_agent_retries_total{{reason=\"timeout\",runner=\"{runner}\"}} 1"
        )));
    }

    #[test]
    fn reasons_are_a_fixed_set() {
        assert_eq!(reason_label("wounded"), "wounded");
        assert_eq!(
            reason_label("shard-2 unreachable: connection refused"),
            "unreachable"
        );
        assert_eq!(reason_label("contract code changed"), "code_changed");
        assert_eq!(reason_label("anything a contract says"), "other");
    }
}
