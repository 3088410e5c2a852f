//! `proc/stat` per-CPU times, parsed with procfs-core's `KernelStats`.
//!
//! `KernelStats::cpu_time` is in line order with no CPU id, and with CPUs offline the lines
//! skip ids, so the `cpuN` labels are read here and zipped with it.
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use procfs_core::{ExplicitSystemInfo, FromBufReadSI, KernelStats};
use serde::Serialize;

use super::SystemError;

/// Time a CPU spent in each state since boot, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuTimes {
    pub(crate) user: u64,
    pub(crate) nice: u64,
    pub(crate) system: u64,
    pub(crate) idle: u64,
    pub(crate) iowait: u64,
    pub irq: u64,
    pub(crate) softirq: u64,
    pub(crate) steal: u64,
}

/// The kernel's USER_HZ, the unit of `proc/stat`.
fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

pub fn read(root: &Path) -> Result<BTreeMap<u32, CpuTimes>, SystemError> {
    let path = root.join("proc/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| SystemError::io(&path, e))?;
    parse(&text).map_err(|e| match e {
        SystemError::Format { message, .. } => SystemError::Parse { path, message },
        other => other,
    })
}

/// Per-CPU times keyed by CPU id, with USER_HZ from this machine.
fn parse(text: &str) -> Result<BTreeMap<u32, CpuTimes>, SystemError> {
    parse_with_hz(text, user_hz())
}

fn parse_with_hz(text: &str, hz: u64) -> Result<BTreeMap<u32, CpuTimes>, SystemError> {
    let hz = hz.max(1);
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: hz,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let stats = KernelStats::from_buf_read(Cursor::new(text.as_bytes()), &info).map_err(|e| {
        SystemError::Format {
            what: "proc/stat",
            message: e.to_string(),
        }
    })?;
    // The same lines KernelStats took as per-CPU ("cpu" but not "cpu "), in order.
    let mut labels = Vec::with_capacity(stats.cpu_time.len());
    for line in text.lines() {
        if line.starts_with("cpu") && !line.starts_with("cpu ") {
            let label = line.split_ascii_whitespace().next().unwrap_or("");
            let id = label
                .strip_prefix("cpu")
                .and_then(|n| n.parse::<u32>().ok());
            labels.push(id.ok_or_else(|| SystemError::Format {
                what: "proc/stat",
                message: format!("bad cpu label {label:?}"),
            })?);
        }
    }
    if labels.len() != stats.cpu_time.len() {
        return Err(SystemError::Format {
            what: "proc/stat",
            message: "cpu lines and labels disagree".into(),
        });
    }
    let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000) / hz;
    Ok(labels
        .into_iter()
        .zip(stats.cpu_time)
        .map(|(id, t)| {
            (
                id,
                CpuTimes {
                    user: ns(t.user),
                    nice: ns(t.nice),
                    system: ns(t.system),
                    idle: ns(t.idle),
                    iowait: ns(t.iowait.unwrap_or(0)),
                    irq: ns(t.irq.unwrap_or(0)),
                    softirq: ns(t.softirq.unwrap_or(0)),
                    steal: ns(t.steal.unwrap_or(0)),
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 2 30 4000 5 6 7 8 0 0
cpu0 50 1 15 2000 2 3 4 4 0 0
cpu2 50 1 15 2000 3 3 3 4 0 0
intr 12345 1 2 3
ctxt 999
btime 1700000000
processes 42
procs_running 1
procs_blocked 0
softirq 1 2 3 4 5 6 7 8 9 10 11
";

    #[test]
    fn keeps_cpu_ids_with_gaps() {
        let m = parse_with_hz(STAT, 100).unwrap();
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
        let c0 = m[&0];
        assert_eq!(c0.user, 500_000_000);
        assert_eq!(c0.idle, 20_000_000_000);
        assert_eq!(c0.irq, 30_000_000);
        assert_eq!(c0.softirq, 40_000_000);
        assert_eq!(c0.steal, 40_000_000);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse_with_hz("", 100).is_err());
        assert!(parse_with_hz("cpu0 x\n", 100).is_err());
        assert!(parse_with_hz(&STAT.replace("cpu2", "cpuX"), 100).is_err());
        assert!(
            parse_with_hz(
                &STAT.replace("cpu2 50", "cpu2 99999999999999999999999"),
                100
            )
            .is_err()
        );
        // Huge tick counts saturate rather than overflow.
        let big = STAT.replace("cpu0 50", "cpu0 18446744073709551615");
        assert_eq!(parse_with_hz(&big, 100).unwrap()[&0].user, u64::MAX / 100);
    }
}
