//! Free and total bytes of the file system holding a data directory, read at scrape time, so
//! that "disk nearly full" can be alerted on without the kubelet's volume metrics (local
//! clusters, bare metal).

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use prometheus::{IntGaugeVec, Opts};

use crate::registry::{on_scrape, register};

struct Gauges {
    available: IntGaugeVec,
    capacity: IntGaugeVec,
}

static GAUGES: LazyLock<Gauges> = LazyLock::new(|| Gauges {
    available: register(gauge(
        "parsec_storage_available_bytes",
        "Bytes available to this process on the file system of its data directory",
    )),
    capacity: register(gauge(
        "parsec_storage_capacity_bytes",
        "Size in bytes of the file system of the data directory",
    )),
});

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["group"]).unwrap_or_else(|e| {
        // A constant name and label set: only a typo in this file can get here.
        unreachable!("invalid metric {name}: {e}")
    })
}

/// Reports the file system of `dir` under label `group` for as long as `anchor` lives (the
/// component that owns the directory, e.g. its Raft member).
pub fn watch_data_dir<T: Send + Sync + 'static>(
    anchor: &Arc<T>,
    group: &str,
    dir: impl Into<PathBuf>,
) {
    let group = group.to_string();
    let dir: PathBuf = dir.into();
    on_scrape(anchor, move |_| {
        match nix::sys::statvfs::statvfs(dir.as_path()) {
            Ok(stat) => {
                let block = stat.fragment_size() as i64;
                let gauges = &*GAUGES;
                gauges
                    .available
                    .with_label_values(&[group.as_str()])
                    .set(stat.blocks_available() as i64 * block);
                gauges
                    .capacity
                    .with_label_values(&[group.as_str()])
                    .set(stat.blocks() as i64 * block);
            }
            Err(error) => tracing::debug!(%error, dir = %dir.display(), "statvfs failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reports_the_file_system_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = Arc::new(());
        watch_data_dir(&anchor, "disk-test", dir.path());
        let text = crate::registry::render();
        let value = |name: &str| -> i64 {
            let prefix = format!("{name}{{group=\"disk-test\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
                .parse()
                .unwrap()
        };
        let capacity = value("parsec_storage_capacity_bytes");
        let available = value("parsec_storage_available_bytes");
        assert!(
            capacity > 0 && available <= capacity,
            "{available} / {capacity}"
        );
    }
}
