//! What every load generator shares: counters, the progress bar, latency histograms, and
//! stopping early on Ctrl-C.

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared counters of the load phase.
#[derive(Default)]
pub struct Tally {
    pub committed: AtomicU64,
    pub failed: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = terminate.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn progress_bar(duration: Duration, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(
        Some(duration.as_secs().max(1)),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}")
    {
        bar.set_style(style);
    }
    bar
}

pub fn spawn_ticker(
    bar: ProgressBar,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    duration: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_millis(250));
        while !stop.load(Ordering::Relaxed) {
            interval.tick().await;
            let committed = tally.committed.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_position((elapsed as u64).min(duration.as_secs()));
            bar.set_message(format!(
                "{committed} committed, {:.0} tx/s, {} retries, {} refused, {} errors",
                committed as f64 / elapsed,
                tally.retries.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed),
            ));
        }
    })
}
