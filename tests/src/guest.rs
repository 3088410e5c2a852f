//! Helpers of the programs that run inside the kernel-VM guests (`guest-checks`,
//! `guest-bench`): reading /proc and /sys, running the guest's tools.
use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// A file's content without surrounding whitespace.
pub fn read_trimmed(path: &str) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_owned())
}

/// Runs `cmd` to completion; its stderr becomes the error when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One numbered `/proc/interrupts` row: IRQ number, per-CPU counts, last field (the action
/// name).
pub struct IrqRow {
    pub irq: u32,
    pub counts: Vec<u64>,
    pub name: String,
}

/// The numbered rows of `/proc/interrupts` text (system vectors such as `NMI:` left out).
pub fn parse_interrupts(text: &str) -> Result<Vec<IrqRow>> {
    let mut lines = text.lines();
    let cpus = lines
        .next()
        .context("/proc/interrupts is empty")?
        .split_whitespace()
        .count();
    let mut rows = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(irq) = words
            .next()
            .and_then(|w| w.strip_suffix(':'))
            .and_then(|w| w.parse().ok())
        else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let counts = rest
            .iter()
            .take(cpus)
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        let name = rest.last().copied().unwrap_or("").to_owned();
        rows.push(IrqRow { irq, counts, name });
    }
    Ok(rows)
}

/// Per-CPU rows of `/proc/stat` text: CPU number -> its tick counts (user nice system idle
/// iowait irq softirq steal guest guest_nice); the `cpu` total row and other lines left out.
pub fn parse_cpu_ticks(text: &str) -> Result<BTreeMap<u32, Vec<u64>>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let Some(cpu) = w
            .next()
            .and_then(|l| l.strip_prefix("cpu"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let ticks = w
            .map(|v| {
                v.parse()
                    .with_context(|| format!("/proc/stat: cpu{cpu}: {v:?}"))
            })
            .collect::<Result<Vec<u64>>>()?;
        out.insert(cpu, ticks);
    }
    Ok(out)
}

/// This machine's per-CPU `/proc/stat` rows ([`parse_cpu_ticks`]).
pub fn cpu_ticks() -> Result<BTreeMap<u32, Vec<u64>>> {
    parse_cpu_ticks(&fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

/// The rows of this machine's `/proc/interrupts`.
pub fn interrupt_rows() -> Result<Vec<IrqRow>> {
    parse_interrupts(&fs::read_to_string("/proc/interrupts").context("reading /proc/interrupts")?)
}

/// Interrupts per IRQ, summed over CPUs.
pub fn interrupt_totals() -> Result<BTreeMap<u32, u64>> {
    Ok(interrupt_rows()?
        .into_iter()
        .map(|r| (r.irq, r.counts.iter().sum()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_rows_parse() {
        let text = "           CPU0       CPU1\n  24:        100         5  PCI-MSIX-0000:81:00.0   1-edge      virtio1-input.0\n\
                    NMI:          0          0   Non-maskable interrupts\n";
        let rows = parse_interrupts(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].irq, rows[0].counts.clone()), (24, vec![100, 5]));
        assert_eq!(rows[0].name, "virtio1-input.0");
    }

    #[test]
    fn cpu_ticks_parse() {
        let text = "cpu  10 0 5 100 1 0 2 0 0 0\ncpu0 4 0 2 50 1 0 1 0 0 0\n\
                    cpu1 6 0 3 50 0 0 1 0 0 0\nintr 99 1 2\nctxt 7\n";
        let t = parse_cpu_ticks(text).unwrap();
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(t[&1][..4], [6, 0, 3, 50]);
        assert!(parse_cpu_ticks("cpu0 4 x 2\n").is_err());
    }
}
