//! Benchmark: cost of the eBPF programs per event, against a bpftrace script that only times
//! softirqs per vector. Run as root: `cargo xtask bench probes`.
//!
//! Both runs see the same fixed softirq load (a fixed number of bytes over a veth pair between
//! two namespaces, which polls through NAPI in NET_RX softirq), with
//! `kernel.bpf_stats_enabled` on, and read each program's `run_time_ns / run_cnt` from the
//! kernel. Nothing here is timed by the wall clock.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::programs::loaded_programs;
use balancer::probe::{Probe, ProbeOptions};
use balancer_tests::{VethPair, is_root};

const LOAD_BYTES: u64 = 1 << 30;
const BPFTRACE_SCRIPT: &str = "tracepoint:irq:softirq_entry { @start[cpu] = nsecs; }
tracepoint:irq:softirq_exit /@start[cpu]/ {
  @ns[args->vec] = sum(nsecs - @start[cpu]); delete(@start[cpu]);
}";

/// Restores kernel.bpf_stats_enabled on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    fn enable() -> anyhow::Result<BpfStats> {
        let old = std::fs::read_to_string(Self::PATH).context("reading bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling bpf_stats_enabled")?;
        Ok(BpfStats(old.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

#[derive(Debug, Default, Clone)]
struct ProgStat {
    name: String,
    runs: u64,
    ns: u64,
}

impl ProgStat {
    fn per_event(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.ns as f64 / self.runs as f64
        }
    }
}

fn ids_now() -> BTreeSet<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn main() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the probe benchmark loads eBPF programs: run it as root");
    }
    let _stats = BpfStats::enable()?;
    let pair = VethPair::create()?;
    // Warm up the path (ARP, TCP buffers) before anything is measured.
    pair.tcp_transfer(64 << 20)?;

    // Ours: all six programs attached, as shipped (direct field loads), then with every field
    // read by bpf_probe_read_kernel (what kernels with another record layout get).
    let ours = balancer_run(&pair, true)?;
    let generic = balancer_run(&pair, false)?;

    // bpftrace: the same load with only its two softirq programs.
    let before = ids_now();
    let mut bt = Command::new("bpftrace")
        .args(["-e", BPFTRACE_SCRIPT])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting bpftrace (apt-get install bpftrace)")?;
    let mut lines = BufReader::new(bt.stdout.take().context("bpftrace stdout")?).lines();
    // bpftrace prints "Attaching N probes..." once its programs are attached.
    match lines.next() {
        Some(Ok(l)) if l.starts_with("Attaching") => {}
        other => bail!("bpftrace did not start: {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    pair.tcp_transfer(LOAD_BYTES)?;
    let theirs: Vec<ProgStat> = loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !before.contains(&p.id()))
        .map(|p| ProgStat {
            name: p.name_as_str().unwrap_or("?").to_string(),
            runs: p.run_count(),
            ns: p.run_time().as_nanos() as u64,
        })
        .filter(|p| p.runs > 0)
        .collect();
    // SIGINT lets bpftrace detach and print its maps; we only need it gone.
    // SAFETY: plain kill(2) on our child's pid.
    unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
    let _ = bt.wait();
    drop(pair);

    println!(
        "eBPF program cost, {} MiB over veth, kernel.bpf_stats_enabled=1",
        LOAD_BYTES >> 20
    );
    println!(
        "{:<12} {:<22} {:>12} {:>14} {:>10}",
        "SET", "PROGRAM", "RUNS", "RUN_TIME_NS", "NS/EVENT"
    );
    for (set, progs) in [
        ("balancer", &ours),
        ("bal-probe-rd", &generic),
        ("bpftrace", &theirs),
    ] {
        for p in progs.iter() {
            println!(
                "{set:<12} {:<22} {:>12} {:>14} {:>10.1}",
                p.name,
                p.runs,
                p.ns,
                p.per_event()
            );
        }
    }
    let softirq = |progs: &[ProgStat]| -> ProgStat {
        progs
            .iter()
            .filter(|p| p.name.contains("softirq_entry") || p.name.contains("softirq_exit"))
            .fold(ProgStat::default(), |a, p| ProgStat {
                name: "softirq".into(),
                runs: a.runs + p.runs,
                ns: a.ns + p.ns,
            })
    };
    let t = softirq(&theirs);
    if t.runs == 0 {
        bail!("bpftrace recorded no softirq events");
    }
    println!();
    for (set, progs) in [("balancer", &ours), ("bal-probe-rd", &generic)] {
        let o = softirq(progs);
        if o.runs == 0 {
            bail!("{set} recorded no softirq events");
        }
        // All our programs, per softirq entry+exit event: the whole cost of being attached.
        let all: u64 = progs.iter().map(|p| p.ns).sum();
        let all_per_softirq = all as f64 / o.runs as f64;
        println!(
            "{set}: softirq entry/exit programs {:.1} ns/event vs bpftrace {:.1}, ratio {:.2}; \
             all six programs per softirq event {:.1} ns, ratio {:.2}",
            o.per_event(),
            t.per_event(),
            o.per_event() / t.per_event(),
            all_per_softirq,
            all_per_softirq / t.per_event()
        );
    }
    println!("target: ratio <= 0.50");
    Ok(())
}

/// Loads balancer's programs, runs the load, and returns their figures.
fn balancer_run(pair: &VethPair, direct_loads: bool) -> anyhow::Result<Vec<ProgStat>> {
    let probe = Probe::load(&ProbeOptions {
        direct_loads,
        ..ProbeOptions::default()
    })?;
    pair.tcp_transfer(LOAD_BYTES)?;
    Ok(probe
        .program_stats()?
        .into_iter()
        .map(|(name, runs, ns)| ProgStat { name, runs, ns })
        .collect())
}
