//! Benchmark: what the probes cost, end to end, per NET_RX softirq. Run as root:
//! `cargo xtask bench probes`.
//!
//! `kernel.bpf_stats` counts only a program's own run time; it hides the tracepoint dispatch
//! and, for classic tracepoints, the record the kernel builds for them. So the main figure is
//! what a user pays: a 1-byte UDP `sendto` to a bound, unread loopback socket raises NET_RX and
//! runs it, with one backlog poll, inside the call (raise, entry, poll, exit). Pinned to one
//! CPU, the time per call is measured in blocks with and without each set of programs
//! attached, in pairs; the median difference is the full cost per softirq.
//!
//! Sets: balancer as shipped (BTF-typed tracepoints), forced to raw and to classic
//! tracepoints, empty BTF-typed programs on the same events (the floor: dispatch alone), and
//! bpftrace timing softirqs per vector (two classic tracepoints). The `bpf_stats` figures
//! (program time only) follow, labelled as such.
//!
//! Per interrupt: the same paired blocks around `membarrier(PRIVATE_EXPEDITED)`, which sends
//! one call-function IPI to the other CPU, where a thread of ours spins, and waits for its
//! handler: the entry/exit pair of a system vector, timed by balancer's programs the way a
//! device IRQ's handler is (a device IRQ cannot be raised synchronously here: the only
//! devices are the host's own).
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::loaded_programs;
use balancer::probe::{Probe, ProbeOptions, ProgramType};
use balancer_tests::is_root;

/// Calls per run of the bpf_stats table, after as many again to warm up.
const CALLS: u32 = 100_000;
/// Calls per block of the end-to-end figure, and paired blocks per set.
const BLOCK: u32 = 5_000;
const PAIRS: usize = 60;
/// Rounds of the per-softirq table, and ABBA pairs per set in each.
const ROUNDS: usize = 15;
const PAIRS_PER_ROUND: usize = 6;
/// Blocks measured with bpftrace attached in each round, between two without.
const BPFTRACE_BLOCKS: usize = 3;
/// The CPU the loop runs on.
const CPU: usize = 1;
const BPFTRACE_SCRIPT: &str = "tracepoint:irq:softirq_entry { @start[cpu] = nsecs; }
tracepoint:irq:softirq_exit /@start[cpu]/ {
  @ns[args->vec] = sum(nsecs - @start[cpu]); delete(@start[cpu]);
}";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    /// As shipped where netlink links every NIC queue exactly: no raise program.
    NoRaise,
    Balancer(ProgramType),
    Empty,
    /// Empty programs but for one clock read at each boundary (entry, poll, exit).
    ClockFloor,
    Bpftrace,
}

impl Set {
    fn name(self) -> String {
        match self {
            Set::NoRaise => "balancer, no raise".into(),
            Set::Balancer(ProgramType::BtfTracePoint) => "balancer".into(),
            Set::Balancer(t) => format!("balancer/{}", t.as_str()),
            Set::Empty => "empty tp_btf".into(),
            Set::ClockFloor => "empty + 3 clocks".into(),
            Set::Bpftrace => "bpftrace".into(),
        }
    }
}

/// What is attached while a set runs; dropping it detaches.
enum Attached {
    None,
    Probe(Box<Probe>),
    Bpftrace(Child),
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Bpftrace(child) = self {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

/// Balancer's programs (or the empty ones), loaded and attached.
fn load_probe(set: Set) -> anyhow::Result<Option<Probe>> {
    let opts = match set {
        Set::Balancer(program_type) => ProbeOptions {
            program_type,
            ..ProbeOptions::default()
        },
        Set::Empty => ProbeOptions {
            empty: true,
            ..ProbeOptions::default()
        },
        Set::ClockFloor => ProbeOptions {
            empty: true,
            clock_floor: true,
            ..ProbeOptions::default()
        },
        Set::NoRaise => {
            let mut p = Probe::load(&ProbeOptions::default())?;
            p.set_raise_counting(false, "benchmark")?;
            return Ok(Some(p));
        }
        Set::Bpftrace => return Ok(None),
    };
    Ok(Some(Probe::load(&opts)?))
}

fn attach(set: Set) -> anyhow::Result<Attached> {
    Ok(match set {
        Set::Balancer(_) | Set::Empty | Set::ClockFloor | Set::NoRaise => match load_probe(set)? {
            Some(p) => Attached::Probe(Box::new(p)),
            None => Attached::None,
        },
        Set::Bpftrace => {
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
            std::thread::sleep(Duration::from_millis(300));
            Attached::Bpftrace(bt)
        }
    })
}

fn pin(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// ns per synchronous NET_RX softirq: `CALLS` one-byte datagrams to a socket nobody reads.
fn loop_ns(tx: &UdpSocket, to: std::net::SocketAddr) -> anyhow::Result<f64> {
    for _ in 0..CALLS {
        tx.send_to(&[0], to).context("sendto")?;
    }
    let t = Instant::now();
    for _ in 0..CALLS {
        tx.send_to(&[0], to).context("sendto")?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(CALLS))
}

/// ns per call over one block, after a short warm-up.
fn block_ns(tx: &UdpSocket, to: std::net::SocketAddr) -> anyhow::Result<f64> {
    for _ in 0..BLOCK / 10 {
        tx.send_to(&[0], to).context("sendto")?;
    }
    let t = Instant::now();
    for _ in 0..BLOCK {
        tx.send_to(&[0], to).context("sendto")?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(BLOCK))
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
/// The CPU the IPI goes to, where a thread of ours spins.
const IPI_CPU: usize = 0;

fn membarrier(cmd: libc::c_long) -> anyhow::Result<()> {
    // SAFETY: membarrier(2) takes two integers and touches no memory of ours.
    if unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) } != 0 {
        bail!("membarrier({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// ns per `membarrier` over one block, after a short warm-up.
fn ipi_block_ns() -> anyhow::Result<f64> {
    for _ in 0..BLOCK / 10 {
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)?;
    }
    let t = Instant::now();
    for _ in 0..BLOCK {
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(BLOCK))
}

/// The median on/off difference of `set` over `pairs` ABBA pairs of `block`, and the
/// median time without: on is everything attached, off everything detached.
fn paired(
    probe: &mut Probe,
    pairs: usize,
    block: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64)> {
    paired_states(probe, pairs, Probe::attach, block)
}

/// As [`paired`], with `on` putting the probe in the state measured against all detached.
fn paired_states(
    probe: &mut Probe,
    pairs: usize,
    mut on: impl FnMut(&mut Probe) -> anyhow::Result<()>,
    mut block: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<(f64, f64)> {
    let mut diffs = Vec::new();
    let mut base = Vec::new();
    for i in 0..pairs {
        let on_first = i % 2 == 1;
        let mut measure = |state_on: bool| -> anyhow::Result<f64> {
            if state_on {
                on(probe)?;
            } else {
                probe.detach()?;
            }
            block()
        };
        let (first, second) = (measure(on_first)?, measure(!on_first)?);
        let (with, without) = if on_first {
            (first, second)
        } else {
            (second, first)
        };
        diffs.push(with - without);
        base.push(without);
    }
    Ok((median(&mut base), median(&mut diffs)))
}

/// Cost per call-function IPI (a system vector's entry and exit), balancer against the empty
/// programs' floor.
fn per_interrupt() -> anyhow::Result<()> {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)?;
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> anyhow::Result<()> {
            pin(IPI_CPU)?;
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let result = (|| -> anyhow::Result<()> {
        // Each call must raise one IPI on IPI_CPU: checked with our own counters first.
        let probe = Probe::load(&ProbeOptions::default())?;
        let ipis = |c: &balancer::probe::Counters| -> u64 {
            c.sysvecs
                .iter()
                .filter(|((cpu, vec), _)| {
                    *cpu == IPI_CPU as u32
                        && balancer_common::SYSVEC_NAMES[*vec as usize].starts_with("call_function")
                })
                .map(|(_, s)| s.runs)
                .sum()
        };
        let before = probe.read()?;
        for _ in 0..10_000 {
            membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)?;
        }
        let after = probe.read()?;
        drop(probe);
        let per_call = (ipis(&after) - ipis(&before)) as f64 / 10_000.0;
        println!();
        println!(
            "per membarrier call: {per_call:.3} call-function IPIs on CPU {IPI_CPU} (10,000 calls)"
        );
        if per_call < 0.95 {
            // membarrier interrupts only CPUs running a thread of ours: the spinner was
            // preempted, and a figure would mix calls with and without an IPI.
            bail!("CPU {IPI_CPU} is busy with other tasks: run the benchmark on a quiet machine");
        }
        let mut rows = Vec::new();
        for set in [Set::Balancer(ProgramType::BtfTracePoint), Set::Empty] {
            let Some(mut probe) = load_probe(set)? else {
                continue;
            };
            let (b, d) = paired(&mut probe, PAIRS, ipi_block_ns)?;
            eprintln!("{:<20} {b:8.1} ns/IPI without, +{d:.1} with", set.name());
            rows.push((set, b, d));
        }
        println!(
            "End to end, per interrupt (call-function IPI to CPU {IPI_CPU} from CPU {CPU}, \
             membarrier; medians of {PAIRS} paired blocks of {BLOCK} calls)"
        );
        println!("{:<20} {:>14} {:>10}", "SET", "NS/CALL (OFF)", "+NS ON");
        for (set, b, d) in &rows {
            println!("{:<20} {b:>14.1} {d:>10.1}", set.name());
        }
        if let [(_, _, ours), (_, _, floor)] = rows[..] {
            println!(
                "balancer / empty-program floor, per interrupt: {:.2}",
                ours / floor
            );
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    spinner
        .join()
        .map_err(|_| anyhow::anyhow!("spinner panicked"))??;
    result
}

/// What the daemon leaves attached between its windows (`Probe::pause`: the system vectors'
/// programs, returning at their flag) costs the softirq loop, against everything detached:
/// medians of [`PAIRS`] ABBA pairs of blocks.
fn paused_cost() -> anyhow::Result<()> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    let mut probe = Probe::load(&ProbeOptions::default())?;
    let (base, diff) = paired_states(
        &mut probe,
        PAIRS,
        |p| {
            p.attach()?;
            p.pause()
        },
        || block_ns(&tx, to),
    )?;
    println!(
        "Between windows (system-vector programs attached and paused) against all detached, \
         per call of the softirq loop; medians of {PAIRS} paired blocks of {BLOCK} calls"
    );
    println!("{base:.1} ns/call detached, {diff:+.1} ns paused");
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Debug, Default, Clone)]
struct ProgStat {
    name: String,
    runs: u64,
    ns: u64,
}

fn ids_now() -> BTreeSet<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

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

fn main() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the probe benchmark loads eBPF programs: run it as root");
    }
    pin(CPU)?;
    // PROBE_BENCH=program-only: only the bpf_stats table (quick, for work on the programs).
    match std::env::var("PROBE_BENCH").as_deref() {
        Ok("program-only") => return program_only(),
        // PROBE_BENCH=interrupt: only the per-interrupt table.
        Ok("interrupt") => return per_interrupt(),
        // PROBE_BENCH=daemon: only what the daemon's duty cycle costs the loop's CPU.
        Ok("daemon") => return daemon_cost(),
        // PROBE_BENCH=paused: what the programs left attached between windows cost.
        Ok("paused") => return paused_cost(),
        // PROBE_BENCH=softirq: only the end-to-end table per NET_RX softirq.
        Ok("softirq") => return per_softirq(),
        _ => {}
    }
    per_softirq()?;
    per_interrupt()?;
    daemon_cost()?;
    program_only()
}

/// Cost per call-function IPI (a system vector's entry and exit), balancer against the empty
/// programs' floor.
fn per_softirq() -> anyhow::Result<()> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;

    // Each call must run exactly one NET_RX softirq with one poll: checked with our own
    // counters before anything is timed.
    {
        let probe = Probe::load(&ProbeOptions::default())?;
        let before = probe.read()?;
        for _ in 0..10_000 {
            tx.send_to(&[0], to)?;
        }
        let after = probe.read()?;
        let runs = |c: &balancer::probe::Counters| {
            c.softirqs
                .get(&(CPU as u32, balancer_common::NET_RX_SOFTIRQ))
                .map_or(0, |s| s.runs)
        };
        let polls = |c: &balancer::probe::Counters| -> u64 {
            c.napi
                .iter()
                .filter(|((_, cpu), _)| *cpu == CPU as u32)
                .map(|(_, s)| s.polls)
                .sum()
        };
        println!(
            "per call on CPU {CPU}: {:.3} NET_RX softirqs, {:.3} polls (10,000 calls)",
            (runs(&after) - runs(&before)) as f64 / 10_000.0,
            (polls(&after) - polls(&before)) as f64 / 10_000.0
        );
    }

    // Paired blocks: with our own programs the links go on and off between blocks of calls
    // (ABBA order), so a pair is measured within milliseconds and drift from the rest of the
    // machine cancels. bpftrace cannot be switched that way: it starts and stops around its
    // blocks. This machine's speed wanders by a third over minutes, so every set is measured
    // in every round, bpftrace included: the medians over the rounds compare sets measured
    // over the same minutes.
    let sets = [
        Set::Balancer(ProgramType::BtfTracePoint),
        Set::NoRaise,
        Set::Balancer(ProgramType::RawTracePoint),
        Set::Balancer(ProgramType::TracePoint),
        Set::Empty,
        Set::ClockFloor,
    ];
    let mut probes = Vec::new();
    for set in sets {
        if let Some(mut probe) = load_probe(set)? {
            probe.detach()?;
            probes.push((set, probe));
        }
    }
    // Per set: (time without, cost) of each round.
    let mut rounds: Vec<(Set, Vec<f64>, Vec<f64>)> = probes
        .iter()
        .map(|(set, _)| (*set, Vec::new(), Vec::new()))
        .chain([(Set::Bpftrace, Vec::new(), Vec::new())])
        .collect();
    for round in 0..ROUNDS {
        for (i, (_, probe)) in probes.iter_mut().enumerate() {
            let (b, d) = paired(probe, PAIRS_PER_ROUND, || block_ns(&tx, to))?;
            rounds[i].1.push(b);
            rounds[i].2.push(d);
        }
        let without = block_ns(&tx, to)?;
        let attached = attach(Set::Bpftrace)?;
        let mut with = 0.0;
        for _ in 0..BPFTRACE_BLOCKS {
            with += block_ns(&tx, to)? / BPFTRACE_BLOCKS as f64;
        }
        drop(attached);
        let after = block_ns(&tx, to)?;
        let last = rounds.len() - 1;
        rounds[last].1.push(without);
        rounds[last].2.push(with - (without + after) / 2.0);
        eprintln!(
            "round {round}: {}",
            rounds
                .iter()
                .map(|(set, _, d)| format!("{} +{:.0}", set.name(), d[round]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let of = |set: Set| rounds.iter().find(|r| r.0 == set).map(|r| r.2.clone());
    let cost = |set: Set| of(set).map_or(f64::NAN, |mut d| median(&mut d));
    let ratio = |a: Set, b: Set| cost(a) / cost(b);
    println!();
    println!(
        "End to end, per NET_RX softirq (1-byte UDP sendto on loopback, pinned to CPU {CPU}; \
         {ROUNDS} rounds, each of {PAIRS_PER_ROUND} paired blocks of {BLOCK} calls per set and \
         one bpftrace start; medians over the rounds)"
    );
    println!("{:<20} {:>14} {:>10}", "SET", "NS/CALL (OFF)", "+NS ON");
    for (set, base, diffs) in &rounds {
        let (mut b, mut d) = (base.clone(), diffs.clone());
        println!(
            "{:<20} {:>14.1} {:>10.1}",
            set.name(),
            median(&mut b),
            median(&mut d)
        );
    }
    let ours = Set::Balancer(ProgramType::BtfTracePoint);
    println!(
        "balancer / bpftrace: {:.2} (target <= 0.30); balancer / \
         empty-program floor: {:.2} (fallback target <= 1.30); floor / bpftrace: {:.2}; floor \
         with the 3 clock reads / bpftrace: {:.2}; balancer / that floor: {:.2}; the 3 clock \
         reads: {:.1} ns",
        ratio(ours, Set::Bpftrace),
        ratio(ours, Set::Empty),
        ratio(Set::Empty, Set::Bpftrace),
        ratio(Set::ClockFloor, Set::Bpftrace),
        ratio(ours, Set::ClockFloor),
        cost(Set::ClockFloor) - cost(Set::Empty),
    );
    Ok(())
}

/// Seconds per phase of the daemon figure (`PROBE_BENCH_PHASE_SECS`), and phase pairs.
const DAEMON_PHASE_SECS: f64 = 10.0;
const DAEMON_PAIRS: usize = 6;

/// What a running `balancer daemon --dry-run` costs the CPU it measures, end to end: the loop
/// on [`CPU`] in phases of [`DAEMON_PHASE_SECS`] with a daemon (pinned to the other CPU)
/// running, against phases with none, ABBA; at the default `measure-share`, then measuring
/// continuously. Each running phase starts a daemon and waits for its programs to attach
/// first, so its start-up is not in the figure. Everything else the loop's CPU pays is in it:
/// the programs while attached, attaching and detaching (text patching and its IPIs), the
/// daemon's wake-ups. The daemon's own CPU time is printed beside, not in it.
fn daemon_cost() -> anyhow::Result<()> {
    let phase = std::env::var("PROBE_BENCH_PHASE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(DAEMON_PHASE_SECS);
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    let dir = std::env::temp_dir().join(format!("balancer-bench-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for (label, extra) in [
        ("default measure-share", ""),
        ("measure-share = 1", "measure-share = 1\n"),
    ] {
        let config = dir.join("balancer.toml");
        std::fs::write(
            &config,
            format!(
                "{extra}journal = \"{}\"\nlock-file = \"{}\"\n",
                dir.join("journal.json").display(),
                dir.join("lock").display()
            ),
        )?;
        let mut diffs = Vec::new();
        let mut base = Vec::new();
        let mut cpu_ms_per_s = Vec::new();
        let mut attached = Vec::new();
        for i in 0..DAEMON_PAIRS {
            let running_first = i % 2 == 1;
            let mut measure = |running: bool| -> anyhow::Result<f64> {
                if !running {
                    // The same /proc reads as a running phase's polls, so both pay them.
                    let me = std::process::id();
                    return phase_ns(&tx, to, phase, || {
                        let _ = bpf_links(me);
                    });
                }
                let daemon = Daemon::start(&config)?;
                let cpu0 = daemon.cpu_ns();
                // Links per poll: the system vectors' stay attached (paused) between
                // windows, so a window is a poll that sees the phase's most links.
                let mut links = Vec::new();
                let ns = phase_ns(&tx, to, phase, || {
                    links.push(bpf_links(daemon.child.id()));
                })?;
                cpu_ms_per_s.push(daemon.cpu_ns().saturating_sub(cpu0) as f64 / 1e6 / phase);
                let most = links.iter().copied().max().unwrap_or(0);
                let on = links.iter().filter(|n| **n == most && most > 0).count();
                attached.push(on as f64 / links.len().max(1) as f64);
                Ok(ns)
            };
            let (first, second) = (measure(running_first)?, measure(!running_first)?);
            let (with, without) = if running_first {
                (first, second)
            } else {
                (second, first)
            };
            eprintln!("{label}: {without:.1} ns/call without, {with:.1} with");
            diffs.push(with - without);
            base.push(without);
        }
        rows.push((
            label,
            median(&mut base),
            median(&mut diffs),
            median(&mut cpu_ms_per_s),
            median(&mut attached),
        ));
    }
    // The last daemon's log, for a figure that looks wrong.
    if let Ok(log) = std::fs::read_to_string(dir.join("balancer.log")) {
        eprintln!("--- the last daemon's log ---\n{log}---");
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!();
    println!(
        "balancer daemon --dry-run (pinned to CPU {IPI_CPU}), cost per call of the loop on CPU \
         {CPU}; medians of {DAEMON_PAIRS} paired {phase} s phases, with vs without a daemon"
    );
    println!(
        "{:<24} {:>14} {:>10} {:>10} {:>16}",
        "DAEMON", "NS/CALL (OFF)", "+NS ON", "ATTACHED", "DAEMON CPU MS/S"
    );
    for (label, b, d, cpu, att) in &rows {
        println!(
            "{label:<24} {b:>14.1} {d:>10.1} {:>9.0}% {cpu:>16.1}",
            100.0 * att
        );
    }
    if let [(_, _, duty, _, _), (_, _, continuous, _, _)] = rows[..] {
        println!(
            "duty-cycled / continuous: {:.2} (target <= 0.10)",
            duty / continuous
        );
    }
    Ok(())
}

/// ns per call over `secs` of calls; `between` runs after every 50,000 (about every 100 ms).
fn phase_ns(
    tx: &UdpSocket,
    to: std::net::SocketAddr,
    secs: f64,
    mut between: impl FnMut(),
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut calls = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        for _ in 0..1_000 {
            tx.send_to(&[0], to).context("sendto")?;
        }
        calls += 1_000;
        if calls.is_multiple_of(50_000) {
            between();
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / calls as f64)
}

/// The bpf links `pid` holds open.
fn bpf_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().contains("bpf_link"))
                .count()
        })
        .unwrap_or(0)
}

/// A `balancer daemon --dry-run` child, pinned to [`IPI_CPU`], killed on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(config: &std::path::Path) -> anyhow::Result<Daemon> {
        // The child inherits the CPU it is spawned on.
        pin(IPI_CPU)?;
        let spawned = Command::new(balancer_tests::balancer_bin())
            .args(["daemon", "--dry-run", "--foreground", "--force", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(config.with_extension("log"))
                    .context("creating the daemon's log")?,
            )
            .spawn();
        pin(CPU)?;
        let mut daemon = Daemon {
            child: spawned
                .context("starting balancer daemon (cargo build --release -p balancer)")?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while bpf_links(daemon.child.id()) == 0 {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("balancer daemon ended before attaching: {status}");
            }
            if Instant::now() > deadline {
                bail!("balancer daemon attached nothing within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(daemon)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Its user and system CPU time, from /proc/<pid>/stat.
    fn cpu_ns(&self) -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0;
        };
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return 0;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        f.iter().sum::<u64>() * 1_000_000_000 / hz
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// `kernel.bpf_stats`: each program's own run time per event. Program time only: dispatch and
/// classic tracepoints' records are not in it.
fn program_only() -> anyhow::Result<()> {
    let _stats = BpfStats::enable()?;
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    println!();
    println!("Program time only (kernel.bpf_stats_enabled=1, {CALLS} calls; no dispatch):");
    println!(
        "{:<20} {:<40} {:>10} {:>10} {:>8}",
        "SET", "EVENT", "RUNS", "NS/RUN", "MISSES"
    );
    for set in [
        Set::Balancer(ProgramType::BtfTracePoint),
        Set::Balancer(ProgramType::TracePoint),
        Set::Empty,
    ] {
        let attached = attach(set)?;
        let Attached::Probe(probe) = &attached else {
            continue;
        };
        loop_ns(&tx, to)?;
        let name = set.name();
        for p in probe
            .program_stats()?
            .into_iter()
            .filter(|p| p.run_count > 0)
        {
            println!(
                "{name:<20} {:<40} {:>10} {:>10.1} {:>8}",
                p.event,
                p.run_count,
                p.run_time_ns as f64 / p.run_count as f64,
                p.recursion_misses
            );
        }
    }
    let before = ids_now();
    let bt = attach(Set::Bpftrace)?;
    loop_ns(&tx, to)?;
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
    drop(bt);
    for p in theirs {
        println!(
            "{:<20} {:<40} {:>10} {:>10.1} {:>8}",
            "bpftrace",
            p.name,
            p.runs,
            p.ns as f64 / p.runs as f64,
            "-"
        );
    }
    Ok(())
}
