//! Prometheus metrics and readiness of a Raft member, labelled with its group (`shard-0`,
//! `ticket-machine`, … — the names the operator uses).
//!
//! Most figures come from openraft's metrics watch, followed by one task per member; the
//! latencies are measured where they happen (durable log writes in the log store, commit and
//! apply of write batches in the batcher) once [`export`] has named the group.

use std::sync::{Arc, LazyLock};

use parsec_telemetry::registry::register;
use parsec_telemetry::{Component, Health, LATENCY_BUCKETS};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::node::RaftNode;
use crate::types::RaftMetrics;

struct Families {
    is_leader: IntGaugeVec,
    has_leader: IntGaugeVec,
    term: IntGaugeVec,
    leader_changes: IntCounterVec,
    commit_index: IntGaugeVec,
    applied_index: IntGaugeVec,
    last_log_index: IntGaugeVec,
    log_entries: IntGaugeVec,
    snapshot_index: IntGaugeVec,
    snapshot_bytes: IntGaugeVec,
    voters: IntGaugeVec,
    fsyncs: IntCounterVec,
    fsync_seconds: HistogramVec,
    write_seconds: HistogramVec,
}

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    register(
        IntGaugeVec::new(Opts::new(name, help), &["group"])
            .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

fn counter(name: &str, help: &str) -> IntCounterVec {
    register(
        IntCounterVec::new(Opts::new(name, help), &["group"])
            .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

fn histogram(name: &str, help: &str) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            &["group"],
        )
        .unwrap_or_else(|e| unreachable!("constant metric definition {name}: {e}")),
    )
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    is_leader: gauge(
        "parsec_raft_is_leader",
        "1 while this member leads its group",
    ),
    has_leader: gauge(
        "parsec_raft_has_leader",
        "1 while this member knows a leader of its group",
    ),
    term: gauge("parsec_raft_term", "Current Raft term of this member"),
    leader_changes: counter(
        "parsec_raft_leader_changes_total",
        "Times this member saw its group's leader change (including the first leader it saw)",
    ),
    commit_index: gauge(
        "parsec_raft_commit_index",
        "Last log index this member knows to be committed",
    ),
    applied_index: gauge(
        "parsec_raft_applied_index",
        "Last log index applied to the state machine on this member",
    ),
    last_log_index: gauge(
        "parsec_raft_last_log_index",
        "Last log index in this member's log",
    ),
    log_entries: gauge(
        "parsec_raft_log_entries",
        "Entries in this member's log (not yet purged after a snapshot)",
    ),
    snapshot_index: gauge(
        "parsec_raft_snapshot_index",
        "Last log index included in this member's latest snapshot",
    ),
    snapshot_bytes: gauge(
        "parsec_raft_snapshot_bytes",
        "Size in bytes of this member's latest snapshot",
    ),
    voters: gauge(
        "parsec_raft_voters",
        "Voters in the group's membership, as this member sees it",
    ),
    fsyncs: counter(
        "parsec_raft_fsyncs_total",
        "Durable (fsynced) writes of this member's log",
    ),
    fsync_seconds: histogram(
        "parsec_raft_fsync_seconds",
        "Duration of a durable (fsynced) write of the Raft log",
    ),
    write_seconds: histogram(
        "parsec_raft_write_duration_seconds",
        "Time from proposing a batch of commands on the leader to its commit and apply",
    ),
});

/// One member's series, bound to its group label once.
struct Series {
    is_leader: IntGauge,
    has_leader: IntGauge,
    term: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    last_log_index: IntGauge,
    log_entries: IntGauge,
    snapshot_index: IntGauge,
    voters: IntGauge,
}

impl Series {
    fn new(group: &str) -> Self {
        let f = &*FAMILIES;
        let l = &[group];
        Series {
            is_leader: f.is_leader.with_label_values(l),
            has_leader: f.has_leader.with_label_values(l),
            term: f.term.with_label_values(l),
            commit_index: f.commit_index.with_label_values(l),
            applied_index: f.applied_index.with_label_values(l),
            last_log_index: f.last_log_index.with_label_values(l),
            log_entries: f.log_entries.with_label_values(l),
            snapshot_index: f.snapshot_index.with_label_values(l),
            voters: f.voters.with_label_values(l),
        }
    }
}

fn index(value: Option<u64>) -> i64 {
    value.map_or(-1, |i| i as i64)
}

/// Whether a member is ready to serve: it knows a leader and has, at least once since it
/// started, applied everything it knew to be committed (a restarted member replaying a long
/// log is not ready until it has).
#[derive(Default)]
pub struct ReadyTracker {
    caught_up: bool,
}

impl ReadyTracker {
    /// `Ok` when ready, else why not.
    pub fn observe(&mut self, metrics: &RaftMetrics, committed: Option<u64>) -> Result<(), String> {
        if let Err(fatal) = &metrics.running_state {
            return Err(format!("raft stopped: {fatal}"));
        }
        let applied = metrics.last_applied.map(|l| l.index);
        if !self.caught_up && applied >= committed {
            self.caught_up = true;
        }
        match (metrics.current_leader, self.caught_up) {
            (None, _) => Err("no known leader".into()),
            (Some(_), false) => Err(format!(
                "replaying the log: applied {applied:?} of committed {committed:?}"
            )),
            (Some(_), true) => Ok(()),
        }
    }
}

/// Exports the metrics of `node` under `group` and reports its readiness to the process's
/// [`Health`] (component `raft:<group>`), until the node shuts down. Call once per member,
/// inside a Tokio runtime.
pub fn export<S: Send + Sync + 'static>(node: &Arc<RaftNode<S>>, group: &str) {
    let f = &*FAMILIES;
    let _ = node
        .fsync_seconds
        .set(f.fsync_seconds.with_label_values(&[group]));
    let _ = node
        .write_seconds
        .set(f.write_seconds.with_label_values(&[group]));
    let fsyncs = f.fsyncs.with_label_values(&[group]);
    let snapshot_bytes = f.snapshot_bytes.with_label_values(&[group]);
    // Counters and sizes that change without a metrics event are read at scrape time.
    parsec_telemetry::on_scrape(node, move |node| {
        fsyncs.inc_by(node.fsyncs().saturating_sub(fsyncs.get()));
        snapshot_bytes.set(node.snapshot_size() as i64);
    });
    let component = Health::global().component(format!("raft:{group}"));
    tokio::spawn(follow(
        Arc::downgrade(node),
        Series::new(group),
        f.leader_changes.with_label_values(&[group]),
        component,
    ));
}

async fn follow<S: Send + Sync + 'static>(
    node: std::sync::Weak<RaftNode<S>>,
    series: Series,
    leader_changes: prometheus::IntCounter,
    component: Component,
) {
    let Some(mut watch) = node.upgrade().map(|n| n.raft().metrics()) else {
        return;
    };
    let mut ready = ReadyTracker::default();
    let mut last_leader = None;
    loop {
        let metrics = watch.borrow_and_update().clone();
        let Some(member) = node.upgrade() else { return };
        let committed = member.committed_index();
        drop(member);
        if metrics.current_leader.is_some() && metrics.current_leader != last_leader {
            leader_changes.inc();
        }
        last_leader = metrics.current_leader;
        let leads = metrics.current_leader == Some(metrics.id)
            && metrics.state == openraft::ServerState::Leader;
        series.is_leader.set(i64::from(leads));
        series
            .has_leader
            .set(i64::from(metrics.current_leader.is_some()));
        series.term.set(metrics.current_term as i64);
        series.commit_index.set(index(committed));
        let applied = metrics.last_applied.map(|l| l.index);
        series.applied_index.set(index(applied));
        series.last_log_index.set(index(metrics.last_log_index));
        let purged = metrics.purged.map_or(0, |l| l.index + 1);
        let entries = metrics
            .last_log_index
            .map_or(0, |last| (last + 1).saturating_sub(purged));
        series.log_entries.set(entries as i64);
        series
            .snapshot_index
            .set(index(metrics.snapshot.map(|l| l.index)));
        series
            .voters
            .set(metrics.membership_config.membership().voter_ids().count() as i64);
        match ready.observe(&metrics, committed) {
            Ok(()) => component.set_ready(),
            Err(why) => component.set_not_ready(why),
        }
        if watch.changed().await.is_err() {
            // The node shut down: it no longer serves, whatever it was.
            series.is_leader.set(0);
            series.has_leader.set(0);
            component.set_not_ready("raft stopped");
            return;
        }
    }
}
