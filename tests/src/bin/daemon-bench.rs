//! Daemon resources (docs/benchmarks.md, "Daemon resources"): runs `balancer daemon
//! --dry-run --foreground` at its default intervals for a while (root, real probes, writes
//! nothing) and prints its CPU use (utime + stime from /proc/PID/stat) and resident memory
//! (VmRSS, VmHWM).
//!
//!     cargo build --release -p balancer && \
//!     BALANCER_BIN=target/release/balancer cargo run -p balancer-tests --release \
//!         --bin daemon-bench -- 180
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(180);
    if !balancer_tests::is_root() {
        anyhow::bail!("needs root (the daemon loads eBPF programs)");
    }
    let dir = std::env::temp_dir().join(format!("balancer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("balancer.toml");
    // Defaults, except private lock and journal paths.
    std::fs::write(
        &config,
        format!(
            "lock-file = \"{}\"\njournal = \"{}\"\n",
            dir.join("lock").display(),
            dir.join("journal.json").display()
        ),
    )?;
    let bin = balancer_tests::balancer_bin();
    let mut child = Command::new(&bin)
        .args(["daemon", "--dry-run", "--foreground", "--force", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Start-up (loading the probes) is not the steady state: measure from 5 s on.
    std::thread::sleep(Duration::from_secs(5));
    let (t0, c0) = (Instant::now(), ticks(pid).unwrap_or(0));
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, c1) = (Instant::now(), ticks(pid).unwrap_or(0));
    let rss = status_kb(pid, "VmRSS:").unwrap_or(0);
    let hwm = status_kb(pid, "VmHWM:").unwrap_or(0);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (c1 - c0) as f64 / hz;
    let wall = (t1 - t0).as_secs_f64();
    println!(
        "daemon --dry-run, default intervals, {wall:.0} s: CPU {cpu_s:.2} s = {:.3}% of one CPU; \
         VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        100.0 * cpu_s / wall,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}
