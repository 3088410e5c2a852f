//! CPU cost of `balancer top` at a 1 s refresh: the view runs in a tmux pane (120x40) for
//! `BENCH_SECS` (default 60) seconds, idle and with NAPI traffic over a veth pair between two
//! namespaces of our own; its utime+stime from /proc/<pid>/stat over that time is the figure.
//! Target: under 2% of one CPU. Root (eBPF) and tmux needed.
//!
//! `cargo xtask bench top` builds the release binary and runs this.
use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{VethPair, balancer_bin, is_root};

struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// utime + stime in clock ticks, and the resident set in KiB.
fn usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// Runs `top` for `secs` after a warm-up; returns (% of one CPU, RSS KiB).
fn measure(secs: u64) -> (f64, u64) {
    let t = Tmux(format!("balancer-top-bench-{}", std::process::id()));
    let cmd = format!("exec {} top --interval 1", balancer_bin().display());
    let out = t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(out.status.success(), "tmux: {out:?}");
    let pid: u32 =
        String::from_utf8_lossy(&t.cmd(&["display", "-p", "-t", "top", "#{pane_pid}"]).stdout)
            .trim()
            .parse()
            .expect("pane pid");
    // Start-up (eBPF load, first model read) is not what a refresh costs.
    let warm = Instant::now();
    while !String::from_utf8_lossy(&t.cmd(&["capture-pane", "-p", "-t", "top"]).stdout)
        .contains("IRQs by")
    {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "top did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, _) = usage(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, rss) = usage(pid);
    let wall = start.elapsed().as_secs_f64();
    let _ = t.cmd(&["send-keys", "-t", "top", "q"]);
    ((t1 - t0) as f64 / hz / wall * 100.0, rss)
}

fn main() {
    if !is_root() {
        eprintln!("bench top: needs root (eBPF); skipped");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("balancer top, 1 s refresh, 120x40 tmux pane, {secs} s per run");
    println!("{:<34} {:>10} {:>9}", "scenario", "CPU %", "RSS MiB");

    let (idle, rss) = measure(secs);
    println!("{:<34} {:>10.2} {:>9.1}", "idle", idle, rss as f64 / 1024.0);

    let veth = Arc::new(VethPair::create().expect("veth pair"));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, veth) = (Arc::clone(&stop), Arc::clone(&veth));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if veth.tcp_transfer(64 << 20).is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
    };
    let (busy, rss) = measure(secs);
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    println!(
        "{:<34} {:>10.2} {:>9.1}",
        "veth TCP traffic (NAPI rows)",
        busy,
        rss as f64 / 1024.0
    );
    let worst = idle.max(busy);
    println!(
        "target < 2% of one CPU: {}",
        if worst < 2.0 { "met" } else { "NOT met" }
    );
}
