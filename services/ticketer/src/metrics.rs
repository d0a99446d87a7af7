//! Prometheus metrics of the ticket machine: ranges and tickets handed out (by the serving
//! leader; in `parsec dev`, by the in-process machine).

use std::sync::LazyLock;

use parsec_telemetry::registry::register;
use prometheus::{IntCounter, Opts};

use crate::TicketRange;

struct Counters {
    ranges: IntCounter,
    tickets: IntCounter,
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(
        IntCounter::with_opts(Opts::new(name, help))
            .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    ranges: counter(
        "parsec_ticketer_ranges_total",
        "Ticket ranges handed out to brokers",
    ),
    tickets: counter(
        "parsec_ticketer_tickets_total",
        "Ticket numbers handed out (the sum of the ranges' sizes)",
    ),
});

/// Counts one range handed out.
pub fn issued(range: &TicketRange) {
    COUNTERS.ranges.inc();
    COUNTERS.tickets.inc_by(range.count);
}

/// Registers the counters so that they are exported (at zero) before the first range.
pub fn register_all() {
    LazyLock::force(&COUNTERS);
}
