//! The resident memory of the cluster's processes over a run, read from /proc, and whether each
//! is still the process it was at the start (no crash, no restart).

use std::time::Duration;

use serde::Serialize;

/// A process of the cluster, by name and pid.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// What one process's memory did during the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryTrack {
    pub name: String,
    pub pid: u32,
    /// Resident set (KiB) once the warm-up was over.
    pub warm_kib: Option<u64>,
    pub max_kib: u64,
    /// Resident set at the end.
    pub end_kib: Option<u64>,
    /// Every sample: seconds since the start, KiB.
    pub samples: Vec<(f64, u64)>,
    /// Whether the same process was alive at every sample.
    pub survived: bool,
}

impl MemoryTrack {
    fn new(watched: &Watched) -> Self {
        Self {
            name: watched.name.clone(),
            pid: watched.pid,
            survived: true,
            ..Self::default()
        }
    }

    /// Growth from the warm sample to the end, in KiB (negative: it shrank).
    pub fn growth_kib(&self) -> Option<i64> {
        Some(self.end_kib? as i64 - self.warm_kib? as i64)
    }
}

/// The resident set of `pid` in KiB; `None` when it is gone (or a zombie).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let zombie = status
        .lines()
        .find_map(|line| line.strip_prefix("State:"))
        .is_some_and(|state| state.trim_start().starts_with('Z'));
    if zombie {
        return None;
    }
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples every process every `every` until `run` ends; the sample at or after `warm` is the
/// baseline of each process's growth.
pub async fn watch<T>(
    processes: &[Watched],
    every: Duration,
    warm: Duration,
    run: impl Future<Output = T>,
) -> (T, Vec<MemoryTrack>) {
    let started = tokio::time::Instant::now();
    let mut tracks: Vec<MemoryTrack> = processes.iter().map(MemoryTrack::new).collect();
    let sample = |tracks: &mut Vec<MemoryTrack>| {
        let at = started.elapsed();
        for track in tracks.iter_mut() {
            match rss_kib(track.pid) {
                Some(kib) => {
                    track.samples.push((at.as_secs_f64(), kib));
                    track.max_kib = track.max_kib.max(kib);
                    if at >= warm && track.warm_kib.is_none() {
                        track.warm_kib = Some(kib);
                    }
                    track.end_kib = Some(kib);
                }
                None => {
                    track.survived = false;
                    track.end_kib = None;
                }
            }
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(run);
    let output = loop {
        tokio::select! {
            output = &mut run => break output,
            _ = tick.tick() => sample(&mut tracks),
        }
    };
    sample(&mut tracks);
    (output, tracks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_set_and_a_dead_pid_has_none() {
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_run_is_sampled_until_it_ends() {
        let me = Watched {
            name: "me".into(),
            pid: std::process::id(),
        };
        let gone = Watched {
            name: "gone".into(),
            pid: u32::MAX,
        };
        let (value, tracks) = watch(
            &[me, gone],
            Duration::from_millis(5),
            Duration::ZERO,
            async { 7 },
        )
        .await;
        assert_eq!(value, 7);
        assert!(tracks[0].survived && tracks[0].warm_kib.is_some() && tracks[0].end_kib.is_some());
        assert!(!tracks[1].survived);
    }
}
