//! CPU time of processes, read from `/proc`, to charge a benchmark's window to the processes
//! that served it.

/// Linux reports process times in clock ticks of `USER_HZ`, which is 100 on every architecture
/// the kernel supports to user space (it is fixed, unlike `CONFIG_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds `pid` has used (`None` for "self" means this process), or
/// `None` if it does not run (or this is not Linux).
pub fn process_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// The summed CPU seconds of `pids` (processes that vanished count as zero).
pub fn total_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| process_cpu_seconds(Some(*pid)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times_after_a_tricky_command_name() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(3.25));
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin: u64 = (0..5_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(spin > 0);
        assert!(process_cpu_seconds(None).is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }
}
