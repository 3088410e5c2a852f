//! `guest-bench`: Debian's irqbalance against balancer inside a kernel VM guest
//! (`cargo xtask bench irqbalance`, xtask/src/vm/irqbalance.rs).
//!
//! Per scenario, three phases on the same traffic (UDP flows whose source ports were probed
//! to land on chosen rx queues of the dut):
//!
//! 1. costs: the dut's IRQs spread over the CPUs but the bench's (so co-occurrence links
//!    do not mix the queues up), one `balancer report` window around the traffic: each IRQ's cost
//!    (hardirq + the NET_RX time it caused, per second of traffic). No balancer acts. Each
//!    rx queue is measured alone on each of the dut's local CPUs, the others together on a
//!    CPU off the node, and its cost is the mean ([`cost_placements`]); the off-node shared
//!    readings are printed beside them.
//! 2. irqbalance, 3. balancer: from the scenario's start state (every dut IRQ on CPU 0, or
//!    spread over node 0's CPUs), the tool runs, traffic starts, `--settle` seconds pass,
//!    then `--measure` seconds are measured.
//!
//! Each tool's placement is scored with the costs of phase 1 (summed per CPU where the phase
//! left the IRQs, the busiest CPU's sum), beside its lower bound from the same costs over the
//! dut's local CPUs. Affinity writes and oscillations are seen by polling every dut IRQ's
//! `smp_affinity_list` every 100 ms, whichever tool wrote. Results go to `--results` as
//! `TABLE`, `INFO` and `TARGET` lines, then `GUEST-DONE`.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use balancer_tests::guest::{IrqRow, interrupt_rows as interrupts, read_trimmed, run};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use balancer_tests::host_traffic::{Flow, HostTraffic};

const GUEST_MARKER: &str = "/etc/balancer-guest";
const IP: &str = "/usr/sbin/ip";
const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const DST_PORT: u16 = 9000;
/// Source ports probed for their rx queue.
const PROBE_PORTS: std::ops::Range<u16> = 20000..20064;
const METRICS: &str = "127.0.0.1:9718";
/// The bench's own threads (receiver, the tools it starts) run here: node 0,
/// away from the dut's local CPUs.
const BENCH_CPU: usize = 1;

/// Traffic of one queue, by kind: (datagrams/s, payload bytes).
const EVEN: (u32, u16) = (2500, 512);
const BULK: (u32, u16) = (6000, 1400);
const LIGHT: (u32, u16) = (1500, 64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Every dut IRQ on CPU 0.
    Cpu0,
    /// The dut's IRQs spread over node 0's CPUs (remote to the NIC).
    Node0,
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    /// Queues carrying a bulk flow; the others carry light flows, or `EVEN` when empty.
    bulk: &'static [usize],
    start: Start,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "even",
        about: "4 queues, equal flows",
        bulk: &[],
        start: Start::Cpu0,
    },
    Scenario {
        name: "one-bulk",
        about: "1 bulk queue, 3 light high-rate queues",
        bulk: &[1],
        start: Start::Cpu0,
    },
    Scenario {
        name: "two-bulk",
        about: "2 bulk queues, 2 light queues",
        bulk: &[1, 2],
        start: Start::Cpu0,
    },
    Scenario {
        name: "remote",
        about: "1 bulk, 3 light; start on node 0 (the NIC is on node 1)",
        bulk: &[1],
        start: Start::Node0,
    },
];

struct Args {
    results: Option<PathBuf>,
    dut_mac: String,
    peer_mac: String,
    settle: u64,
    measure: u64,
    kernel: String,
    irqbalance_version: String,
    scenarios: Vec<String>,
    balancer: PathBuf,
    irqbalance: PathBuf,
    /// balancer's `measure-share`, when not its default.
    measure_share: Option<f64>,
    /// Rounds of replays of each tool's final placement (and the best assignment) with no
    /// tool running; 0: none.
    replay_rounds: u32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        results: None,
        dut_mac: String::new(),
        peer_mac: String::new(),
        settle: 40,
        measure: 10,
        kernel: "?".into(),
        irqbalance_version: "?".into(),
        scenarios: Vec::new(),
        balancer: "/bin/balancer".into(),
        irqbalance: "/bin/irqbalance".into(),
        measure_share: None,
        replay_rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--results" => a.results = Some(value()?.into()),
            "--dut-mac" => a.dut_mac = value()?,
            "--peer-mac" => a.peer_mac = value()?,
            "--settle" => a.settle = value()?.parse().context("--settle")?,
            "--measure" => a.measure = value()?.parse().context("--measure")?,
            "--kernel" => a.kernel = value()?,
            "--irqbalance-version" => a.irqbalance_version = value()?,
            "--scenario" => a.scenarios = value()?.split(',').map(str::to_owned).collect(),
            "--balancer" => a.balancer = value()?.into(),
            "--irqbalance" => a.irqbalance = value()?.into(),
            "--measure-share" => {
                a.measure_share = Some(value()?.parse().context("--measure-share")?);
            }
            "--replay-rounds" => {
                a.replay_rounds = value()?.parse().context("--replay-rounds")?;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.dut_mac.is_empty() || a.peer_mac.is_empty() {
        bail!("--dut-mac and --peer-mac are required");
    }
    Ok(a)
}

/// Lines for the console and for the results port.
struct Out {
    results: Option<File>,
}

impl Out {
    fn line(&mut self, text: &str) {
        println!("{text}");
        if let Some(f) = &mut self.results {
            let _ = writeln!(f, "{text}");
            let _ = f.flush();
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("guest-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if !Path::new(GUEST_MARKER).exists() {
        eprintln!("guest-bench: not in a test guest ({GUEST_MARKER} missing); refusing to run");
        return ExitCode::FAILURE;
    }
    let results = args.results.as_ref().and_then(|p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .map_err(|e| eprintln!("guest-bench: opening {}: {e}", p.display()))
            .ok()
    });
    let mut out = Out { results };
    let code = match bench(&args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.line(&format!("ERROR {}", format!("{e:#}").replace('\n', " | ")));
            ExitCode::FAILURE
        }
    };
    out.line("GUEST-DONE");
    code
}

/// The NIC under test and its IRQs per queue.
struct Nic {
    name: String,
    rx: Vec<u32>,
    tx: Vec<u32>,
    other: Vec<u32>,
}

impl Nic {
    fn all(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .rx
            .iter()
            .chain(&self.tx)
            .chain(&self.other)
            .copied()
            .collect();
        v.sort_unstable();
        v
    }
}

fn netdev_by_mac(mac: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for e in fs::read_dir("/sys/class/net")?.filter_map(|e| e.ok()) {
            let addr = fs::read_to_string(e.path().join("address")).unwrap_or_default();
            if addr.trim().eq_ignore_ascii_case(mac) {
                return Ok(e.file_name().to_string_lossy().into_owned());
            }
        }
        if Instant::now() > deadline {
            bail!("no network device with MAC {mac}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn describe(name: &str) -> Result<Nic> {
    let device = fs::read_link(format!("/sys/class/net/{name}/device"))
        .with_context(|| format!("{name} has no device link"))?;
    let virtio = device
        .file_name()
        .context("device link without a name")?
        .to_string_lossy()
        .into_owned();
    let rows = interrupts()?;
    let by_prefix = |prefix: &str| -> Vec<u32> {
        let mut q: Vec<(u32, u32)> = rows
            .iter()
            .filter_map(|r| {
                let idx = r.name.strip_prefix(prefix)?.parse().ok()?;
                Some((idx, r.irq))
            })
            .collect();
        q.sort_unstable();
        q.into_iter().map(|(_, irq)| irq).collect()
    };
    let rx = by_prefix(&format!("{virtio}-input."));
    let tx = by_prefix(&format!("{virtio}-output."));
    let other = rows
        .iter()
        .filter(|r| r.name.starts_with(&format!("{virtio}-")))
        .map(|r| r.irq)
        .filter(|i| !rx.contains(i) && !tx.contains(i))
        .collect();
    if rx.is_empty() {
        bail!("{name} ({virtio}) has no {virtio}-input.N vectors in /proc/interrupts");
    }
    Ok(Nic {
        name: name.to_owned(),
        rx,
        tx,
        other,
    })
}

fn cpulist(path: &str) -> Result<Vec<u32>> {
    let set = balancer::cpumask::CpuSet::parse_list(&read_trimmed(path)?)
        .with_context(|| format!("parsing {path}"))?;
    Ok(set.iter().collect())
}

/// Restricts the calling thread, and what it starts from now on, to `cpus`.
fn pin(cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; the CPUs are far below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus {
            libc::CPU_SET(*c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Traffic from the guest's host-side namespace (the sender burns host CPU, not the guest's).
struct Traffic(HostTraffic);

impl Traffic {
    fn start(flows: &[Flow]) -> Result<Traffic> {
        HostTraffic::start(DUT_ADDR, flows).map(Traffic)
    }

    /// Stops the traffic; returns the datagrams sent.
    fn stop(self) -> Result<u64> {
        self.0.stop()
    }
}

/// Counts datagrams delivered to the application on the dut.
struct Receiver {
    got: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let sock =
            UdpSocket::bind(SocketAddrV4::new(DUT_ADDR, DST_PORT)).context("binding on the dut")?;
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt(2) on our socket with a c_int and its size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let got = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&got);
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                if sock.recv(&mut buf).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Receiver { got })
    }

    fn count(&self) -> u64 {
        self.got.load(Ordering::Relaxed)
    }
}

/// Interrupts per rx queue of the dut, from /proc/interrupts (virtio_net's `ethtool -S`
/// has no per-queue packet counters on 6.x).
fn rx_queue_interrupts(dut: &Nic) -> Result<BTreeMap<usize, u64>> {
    let rows = interrupts()?;
    Ok(dut
        .rx
        .iter()
        .enumerate()
        .map(|(q, irq)| {
            let n = rows
                .iter()
                .find(|r| r.irq == *irq)
                .map(|r| r.counts.iter().sum())
                .unwrap_or(0);
            (q, n)
        })
        .collect())
}

/// Per-CPU (non-idle, total) jiffies from /proc/stat.
fn cpu_times() -> Result<BTreeMap<u32, (u64, u64)>> {
    Ok(balancer_tests::guest::cpu_ticks()?
        .into_iter()
        .map(|(cpu, v)| {
            // user nice system idle iowait irq softirq steal (guest time is in user already).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (cpu, (total - idle, total))
        })
        .collect())
}

/// The busiest CPU's non-idle share between two readings, CPUs in `skip` left out.
fn busiest(
    before: &BTreeMap<u32, (u64, u64)>,
    after: &BTreeMap<u32, (u64, u64)>,
    skip: u32,
) -> (f64, u32) {
    let mut best = (0.0, 0);
    for (cpu, (busy, total)) in after {
        let Some((b0, t0)) = before.get(cpu) else {
            continue;
        };
        if *cpu == skip || total <= t0 {
            continue;
        }
        let share = busy.saturating_sub(*b0) as f64 / (total - t0) as f64;
        if share > best.0 {
            best = (share, *cpu);
        }
    }
    best
}

/// What the daemon's metrics endpoint says.
#[derive(Default)]
struct Metrics {
    intervals: u64,
    moves: u64,
    irq_seconds: BTreeMap<u32, f64>,
}

fn metrics() -> Result<Metrics> {
    let mut s = TcpStream::connect(METRICS).with_context(|| format!("connecting {METRICS}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(parse_metrics(&text))
}

fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        if key == "balancer_intervals_total" {
            m.intervals = v as u64;
        } else if key == "balancer_moves_total" {
            m.moves = v as u64;
        } else if let Some(labels) = key.strip_prefix("balancer_irq_seconds_total{") {
            let irq = labels
                .split(',')
                .find_map(|l| l.strip_prefix("irq=\""))
                .and_then(|l| l.trim_end_matches(['"', '}']).parse().ok());
            if let Some(irq) = irq {
                *m.irq_seconds.entry(irq).or_default() += v;
            }
        }
    }
    m
}

fn wait_intervals(n: u64, child: &mut Child, timeout: Duration) -> Result<Metrics> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("balancer daemon ended ({status})");
        }
        if let Ok(m) = metrics()
            && m.intervals >= n
        {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("balancer daemon did not finish {n} interval(s) within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A balancing tool running in the background, its output in a log file.
struct Tool {
    child: Child,
    log: PathBuf,
}

impl Tool {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Result<Tool> {
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Tool { child, log })
    }

    /// SIGTERM, then SIGKILL after 10 s; returns the log's last lines.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        decisions(&text)
    }
}

/// What explains a phase's placement, from a tool's log: every line but balancer's per-IRQ
/// readings, which are kept only for the first intervals (what the first placement was
/// decided on) and the last two (what it ended on); at most 200 lines, the last ones.
fn decisions(text: &str) -> String {
    let per_irq = |l: &str| l.contains(": debug: interval ") && l.contains(" interrupts, on ");
    let interval = |l: &str| -> Option<u64> {
        let rest = l.split(": debug: interval ").nth(1)?;
        rest.split(':').next()?.parse().ok()
    };
    let last = text.lines().filter_map(interval).max().unwrap_or(0);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !per_irq(l) || interval(l).is_some_and(|n| n <= 2 || n + 1 >= last))
        .collect();
    lines[lines.len().saturating_sub(200)..].join("\n")
}

fn start_balancer(g: &Bench, tag: &str) -> Result<Tool> {
    let dir = PathBuf::from(format!("/tmp/bench-balancer-{tag}"));
    fs::create_dir_all(&dir)?;
    let config = dir.join("balancer.toml");
    // The bench's own settings only; everything else is balancer's defaults.
    let mut text = format!(
        "metrics = \"{METRICS}\"\nbanned-irqs = {:?}\njournal = \"{}\"\nlock-file = \"{}\"\n\
         log-level = \"debug\"\n",
        g.banned,
        dir.join("journal.json").display(),
        dir.join("lock").display()
    );
    if let Some(share) = g.args.measure_share {
        text.push_str(&format!("measure-share = {share}\n"));
    }
    fs::write(&config, text)?;
    let mut cmd = Command::new(&g.args.balancer);
    cmd.args(["daemon", "--foreground", "--force", "--config"])
        .arg(&config);
    Tool::spawn(&mut cmd, dir.join("daemon.log"))
}

fn start_irqbalance(g: &Bench, tag: &str) -> Result<Tool> {
    // Its socket for irqbalance-ui lives here.
    fs::create_dir_all("/run/irqbalance")?;
    let mut cmd = Command::new(&g.args.irqbalance);
    cmd.args(["--foreground", "--debug"]);
    for irq in &g.banned {
        cmd.arg(format!("--banirq={irq}"));
    }
    Tool::spawn(
        &mut cmd,
        PathBuf::from(format!("/tmp/irqbalance-{tag}.log")),
    )
}

/// Affinity changes of the watched IRQs, polled every 100 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Change>>,
    start: BTreeMap<u32, String>,
}

#[derive(Debug, Clone)]
struct Change {
    at: Duration,
    irq: u32,
    to: String,
}

impl Watch {
    fn start(irqs: &[u32], t0: Instant) -> Result<Watch> {
        let read = |i: &u32| read_trimmed(&format!("/proc/irq/{i}/smp_affinity_list"));
        let start: BTreeMap<u32, String> = irqs
            .iter()
            .map(|i| Ok((*i, read(i)?)))
            .collect::<Result<_>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            let mut now = start.clone();
            thread::spawn(move || {
                let mut changes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for (irq, cur) in now.iter_mut() {
                        if let Ok(v) = read(irq)
                            && v != *cur
                        {
                            changes.push(Change {
                                at: t0.elapsed(),
                                irq: *irq,
                                to: v.clone(),
                            });
                            *cur = v;
                        }
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                changes
            })
        };
        Ok(Watch {
            stop,
            handle,
            start,
        })
    }

    fn stop(self) -> (BTreeMap<u32, String>, Vec<Change>) {
        self.stop.store(true, Ordering::Relaxed);
        (self.start, self.handle.join().unwrap_or_default())
    }
}

/// Returns to an affinity an IRQ held before in the phase (its start value included).
fn oscillations(start: &BTreeMap<u32, String>, changes: &[Change]) -> Vec<String> {
    let mut held: BTreeMap<u32, Vec<String>> =
        start.iter().map(|(i, v)| (*i, vec![v.clone()])).collect();
    let mut out = Vec::new();
    for c in changes {
        let seen = held.entry(c.irq).or_default();
        if seen.contains(&c.to) {
            out.push(format!(
                "IRQ {} back to {} at {:.0}s ({})",
                c.irq,
                c.to,
                c.at.as_secs_f64(),
                seen.join(" -> ")
            ));
        }
        seen.push(c.to.clone());
    }
    out
}

/// The busiest CPU's summed cost, with the load per CPU.
fn score(cost: &BTreeMap<u32, f64>, placement: &BTreeMap<u32, u32>) -> (f64, BTreeMap<u32, f64>) {
    let mut load: BTreeMap<u32, f64> = BTreeMap::new();
    for (irq, c) in cost {
        if let Some(cpu) = placement.get(irq) {
            *load.entry(*cpu).or_default() += c;
        }
    }
    (load.values().copied().fold(0.0, f64::max), load)
}

/// No CPU below the largest queue it must hold; the work poured evenly over `cpus` CPUs.
fn lower_bound(costs: &[f64], cpus: usize) -> f64 {
    let max = costs.iter().copied().fold(0.0, f64::max);
    let sum: f64 = costs.iter().sum();
    max.max(sum / cpus.max(1) as f64)
}

/// The best busiest-CPU sum of any assignment of the costs to `cpus` CPUs (exhaustive).
fn best_assignment(costs: &[f64], cpus: usize) -> f64 {
    best_split(costs, cpus).0
}

/// [`best_assignment`] and one assignment that reaches it: the CPU slot (0..cpus) of each
/// cost, in the order given.
fn best_split(costs: &[f64], cpus: usize) -> (f64, Vec<usize>) {
    struct Search<'a> {
        costs: &'a [f64],
        order: Vec<usize>,
        load: Vec<f64>,
        slot: Vec<usize>,
        best: f64,
        best_slot: Vec<usize>,
    }
    fn go(s: &mut Search, k: usize) {
        let Some(&i) = s.order.get(k) else {
            let max = s.load.iter().copied().fold(0.0, f64::max);
            if max < s.best {
                s.best = max;
                s.best_slot = s.slot.clone();
            }
            return;
        };
        for c in 0..s.load.len() {
            s.load[c] += s.costs[i];
            if s.load[c] < s.best {
                s.slot[i] = c;
                go(s, k + 1);
            }
            s.load[c] -= s.costs[i];
        }
    }
    // Heaviest first: the bound prunes early.
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|a, b| costs[*b].total_cmp(&costs[*a]));
    let mut s = Search {
        costs,
        order,
        load: vec![0.0; cpus.max(1)],
        slot: vec![0; costs.len()],
        best: f64::INFINITY,
        best_slot: vec![0; costs.len()],
    };
    go(&mut s, 0);
    (s.best, s.best_slot)
}

/// Where each IRQ's interrupts go now: the first CPU of its effective affinity (where the
/// kernel has none, of its requested one).
fn placement(irqs: &[u32]) -> Result<BTreeMap<u32, u32>> {
    let mut out = BTreeMap::new();
    for i in irqs {
        let eff = read_trimmed(&format!("/proc/irq/{i}/effective_affinity_list"))
            .or_else(|_| read_trimmed(&format!("/proc/irq/{i}/smp_affinity_list")))?;
        let set = balancer::cpumask::CpuSet::parse_list(&eff)?;
        if let Some(cpu) = set.first() {
            out.insert(*i, cpu);
        }
    }
    Ok(out)
}

struct Bench<'a> {
    args: &'a Args,
    dut: Nic,
    /// IRQs neither tool may move: the peer NIC's (test equipment).
    banned: Vec<u32>,
    local: Vec<u32>,
    node0: Vec<u32>,
    receiver: Receiver,
    /// A source port per rx queue.
    ports: BTreeMap<usize, u16>,
}

impl Bench<'_> {
    fn flows(&self, sc: &Scenario) -> Vec<Flow> {
        self.ports
            .iter()
            .map(|(q, port)| {
                let (pps, size) = if sc.bulk.is_empty() {
                    EVEN
                } else if sc.bulk.contains(q) {
                    BULK
                } else {
                    LIGHT
                };
                Flow {
                    src_port: *port,
                    dst_port: DST_PORT,
                    pps,
                    size,
                }
            })
            .collect()
    }

    /// Queue pair q's IRQs (rx and tx) to a CPU each.
    fn place(&self, cpu_of_queue: impl Fn(usize) -> u32) -> Result<()> {
        for (q, irq) in self.dut.rx.iter().enumerate() {
            let cpu = cpu_of_queue(q);
            for i in std::iter::once(irq).chain(self.dut.tx.get(q)) {
                fs::write(format!("/proc/irq/{i}/smp_affinity_list"), cpu.to_string())
                    .with_context(|| format!("pointing IRQ {i} at CPU {cpu}"))?;
            }
        }
        for i in &self.dut.other {
            let _ = fs::write(format!("/proc/irq/{i}/smp_affinity_list"), "0");
        }
        Ok(())
    }

    fn place_start(&self, start: Start) -> Result<()> {
        match start {
            Start::Cpu0 => self.place(|_| 0),
            Start::Node0 => {
                let n = self.node0.clone();
                self.place(move |q| n[q % n.len()])
            }
        }
    }
}

/// The per-IRQ costs of a scenario, measured with no balancer acting.
struct Costs {
    cost: BTreeMap<u32, f64>,
    ints_per_s: BTreeMap<u32, f64>,
    delivered_pps: f64,
    /// Per rx queue that shared a CPU in one placement: (its reading there, its cost alone).
    shared: BTreeMap<usize, (f64, f64)>,
    /// Per IRQ, of its instances' NET_RX polls in the first placement (where the queues of
    /// `shared` shared): the share of packets polled first in a round, and what sharing the
    /// rounds' preambles moved (share of one CPU, + or -).
    first_polls: BTreeMap<u32, (f64, f64)>,
    /// Each CPU's hardirq + softirq time per second of traffic, as the report's probes
    /// clocked it: what the placement costs each CPU, queues that share one measured together.
    cpu_irq: BTreeMap<u32, f64>,
    /// Per rx queue, its readings where it sat alone: (CPU, cost).
    alone: BTreeMap<usize, Vec<(u32, f64)>>,
}

/// Placements that measure every rx queue alone on each of the dut's local CPUs, where the
/// tools put them (CPU per queue, per placement): the queues go `local.len()` at a time, one
/// to each local CPU, the rest together on `spare`, and each group is rotated over the local
/// CPUs (on two, the second placement is the first's mirror image). Measured alone on CPU 0,
/// off the dut's node, a light queue read 1.7-2x what the same flow read alone on a local
/// CPU (7.x, runs 9 and 10), and a placement and its mirror image replay points apart, so
/// one CPU per queue would score the CPUs. Without a spare CPU the rest share the local
/// CPUs, and a queue never alone keeps its first reading.
fn cost_placements(queues: usize, local: &[u32], spare: Option<u32>) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let n = local.len();
    for first in (0..queues).step_by(n.max(1)) {
        for turn in 0..n {
            let p: Vec<u32> = (0..queues)
                .map(|q| match q.checked_sub(first) {
                    Some(i) if i < n => local[(i + turn) % n],
                    _ => spare.unwrap_or(local[q % n]),
                })
                .collect();
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Whether queue `q` is the only one on its CPU in placement `p` (CPU per queue).
fn alone_on_its_cpu(p: &[u32], q: usize) -> bool {
    p.iter().filter(|c| **c == p[q]).count() == 1
}

/// The costs of every placement of [`cost_placements`]: each rx queue's is the mean of its
/// readings where it sat alone on a CPU (its first reading when it never did).
fn measure_costs(g: &Bench, sc: &Scenario) -> Result<Costs> {
    // None on the bench's CPU: the receiver runs there (the one run with a queue on it
    // delivered 367 packets/s, on a heavily loaded host).
    let online = cpulist("/sys/devices/system/cpu/online")?;
    let local: Vec<u32> = g
        .local
        .iter()
        .copied()
        .filter(|c| *c != BENCH_CPU as u32 && online.contains(c))
        .collect();
    let spare = online
        .iter()
        .copied()
        .find(|c| *c != BENCH_CPU as u32 && !local.contains(c));
    let placements = cost_placements(g.dut.rx.len(), &local, spare);
    if placements.is_empty() {
        bail!("no local CPU of the dut but the bench's to measure its queues on");
    }
    let mut runs = Vec::new();
    for p in &placements {
        runs.push(measure_placed(g, sc, p)?);
    }
    Ok(combine_costs(&placements, runs, &g.dut.rx, &local))
}

/// One scenario's costs from the runs of `placements` (run k measured placement k): an rx
/// queue's cost and interrupt rate are the means of its runs alone on a `local` CPU (the
/// first run's when it never was); other IRQs' the means of all runs. The first run's
/// readings of the queues that shared a CPU there go to `shared`, its first polls to
/// `first_polls`, its per-CPU loads to `cpu_irq`.
fn combine_costs(
    placements: &[Vec<u32>],
    mut runs: Vec<Costs>,
    rx: &[u32],
    local: &[u32],
) -> Costs {
    let alone = alone_on_its_cpu;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let pps: Vec<f64> = runs.iter().map(|r| r.delivered_pps).collect();
    let mut costs = Costs {
        cost: BTreeMap::new(),
        ints_per_s: BTreeMap::new(),
        delivered_pps: mean(&pps),
        shared: BTreeMap::new(),
        first_polls: runs
            .first_mut()
            .map(|r| std::mem::take(&mut r.first_polls))
            .unwrap_or_default(),
        cpu_irq: runs
            .first_mut()
            .map(|r| std::mem::take(&mut r.cpu_irq))
            .unwrap_or_default(),
        alone: BTreeMap::new(),
    };
    let irqs: BTreeSet<u32> = runs.iter().flat_map(|r| r.cost.keys().copied()).collect();
    for irq in irqs {
        let all: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.cost.get(&irq).copied())
            .collect();
        let ints: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.ints_per_s.get(&irq).copied())
            .collect();
        costs.cost.insert(irq, mean(&all));
        costs.ints_per_s.insert(irq, mean(&ints));
    }
    let (Some(first_placement), Some(first_run)) = (placements.first(), runs.first()) else {
        return costs;
    };
    for (q, irq) in rx.iter().enumerate() {
        let readings: Vec<(u32, f64, f64)> = placements
            .iter()
            .zip(&runs)
            .filter(|(p, _)| q < p.len() && alone(p, q) && local.contains(&p[q]))
            .filter_map(|(p, r)| {
                let ints = r.ints_per_s.get(irq).copied().unwrap_or(0.0);
                Some((p[q], *r.cost.get(irq)?, ints))
            })
            .collect();
        let Some(&first_cost) = first_run.cost.get(irq) else {
            continue;
        };
        if readings.is_empty() {
            costs.cost.insert(*irq, first_cost);
            if let Some(i) = first_run.ints_per_s.get(irq) {
                costs.ints_per_s.insert(*irq, *i);
            }
            continue;
        }
        let own = mean(&readings.iter().map(|r| r.1).collect::<Vec<_>>());
        if q < first_placement.len() && !alone(first_placement, q) {
            costs.shared.insert(q, (first_cost, own));
        }
        costs.cost.insert(*irq, own);
        costs.ints_per_s.insert(
            *irq,
            mean(&readings.iter().map(|r| r.2).collect::<Vec<_>>()),
        );
        costs
            .alone
            .insert(q, readings.iter().map(|r| (r.0, r.1)).collect());
    }
    costs
}

/// One placement's costs: each IRQ's, measured with no balancer acting.
fn measure_placed(g: &Bench, sc: &Scenario, cpu_of_queue: &[u32]) -> Result<Costs> {
    g.place(|q| cpu_of_queue[q])?;
    // One `balancer report` window holding the whole traffic: its probes cost what they cost,
    // but no daemon works in userspace meanwhile (under single-threaded TCG, a dry-run daemon
    // measuring continuously cut the delivered packets to 1-2k/s and so starved the queues
    // it was measuring).
    let warm = g.args.settle.min(5);
    let window = warm + g.args.measure + 6;
    let json = PathBuf::from(format!("/tmp/bench-costs-{}.json", sc.name));
    let mut report = Command::new(&g.args.balancer)
        .args(["report", "--json", "--duration", &window.to_string()])
        .stdin(Stdio::null())
        .stdout(File::create(&json)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting balancer report")?;
    let r = (|| -> Result<(f64, Costs)> {
        // Probes attach while nothing flows (attaching under traffic has oopsed TCG guests);
        // the report's first snapshot follows its last attach.
        balancer_tests::wait_attached(&mut report, Duration::from_secs(60))?;
        thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let traffic = Traffic::start(&g.flows(sc))?;
        let r = (|| -> Result<Costs> {
            thread::sleep(Duration::from_secs(warm));
            let (t0, i0, r0) = (Instant::now(), interrupts()?, g.receiver.count());
            thread::sleep(Duration::from_secs(g.args.measure));
            let (i1, r1) = (interrupts()?, g.receiver.count());
            let secs = t0.elapsed().as_secs_f64();
            let sum = |rows: &[IrqRow], irq: u32| -> u64 {
                rows.iter()
                    .find(|r| r.irq == irq)
                    .map(|r| r.counts.iter().sum())
                    .unwrap_or(0)
            };
            Ok(Costs {
                cost: BTreeMap::new(),
                ints_per_s: g
                    .dut
                    .all()
                    .iter()
                    .map(|i| (*i, sum(&i1, *i).saturating_sub(sum(&i0, *i)) as f64 / secs))
                    .collect(),
                delivered_pps: r1.saturating_sub(r0) as f64 / secs,
                shared: BTreeMap::new(),
                first_polls: BTreeMap::new(),
                cpu_irq: BTreeMap::new(),
                alone: BTreeMap::new(),
            })
        })();
        traffic.stop()?;
        Ok((started.elapsed().as_secs_f64(), r?))
    })();
    let out = report
        .wait_with_output()
        .context("waiting for balancer report")?;
    let (traffic_secs, mut costs) = r?;
    if !out.status.success() {
        bail!(
            "balancer report failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = fs::read_to_string(&json)?;
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing the report")?;
    let weight: BTreeMap<u32, u64> = v["irqs"]
        .as_array()
        .context("the report has no irqs")?
        .iter()
        .filter_map(|r| {
            Some((
                u32::try_from(r["irq"].as_u64()?).ok()?,
                r["weight_ns"].as_u64()?,
            ))
        })
        .collect();
    // Nearly all of the window's IRQ time is the traffic's: per second of traffic.
    let window_secs = v["meta"]["duration_s"]
        .as_f64()
        .context("the report has no meta.duration_s")?;
    costs.cpu_irq = v["cpus"]
        .as_array()
        .context("the report has no cpus")?
        .iter()
        .filter_map(|c| {
            let pct = c["hardirq_pct"].as_f64()? + c["softirq_total_pct"].as_f64()?;
            Some((
                u32::try_from(c["cpu"].as_u64()?).ok()?,
                pct / 100.0 * window_secs / traffic_secs,
            ))
        })
        .collect();
    for n in v["napi"].as_array().into_iter().flatten() {
        let (Some(irq), Some(packets)) = (n["irq"].as_u64(), n["packets"].as_u64()) else {
            continue;
        };
        let cpus = n["cpus"].as_array().into_iter().flatten();
        let (first, preamble) = cpus.fold((0u64, 0i64), |(f, p), c| {
            (
                f + c["first_poll_packets"].as_u64().unwrap_or(0),
                p + c["preamble_ns"].as_i64().unwrap_or(0),
            )
        });
        if let Ok(irq) = u32::try_from(irq) {
            costs.first_polls.insert(
                irq,
                (
                    first as f64 / packets.max(1) as f64,
                    preamble as f64 / 1e9 / traffic_secs,
                ),
            );
        }
    }
    costs.cost = g
        .dut
        .all()
        .iter()
        .map(|i| {
            (
                *i,
                weight.get(i).copied().unwrap_or(0) as f64 / 1e9 / traffic_secs,
            )
        })
        .collect();
    Ok(costs)
}

/// A replayed placement: the CPU of each rx queue, and its busiest CPU (load, CPU) in each
/// round.
struct Replayed {
    at: Vec<u32>,
    rounds: Vec<(f64, u32)>,
}

impl Replayed {
    fn mean(&self) -> f64 {
        self.rounds.iter().map(|r| r.0).sum::<f64>() / self.rounds.len().max(1) as f64
    }

    /// "18.0% (CPU 2; q0:3 q1:2 q2:3 q3:2; rounds 17.1, 18.9%)".
    fn cell(&self) -> String {
        let at: Vec<String> = self
            .at
            .iter()
            .enumerate()
            .map(|(q, c)| format!("q{q}:{c}"))
            .collect();
        let cpus: BTreeSet<u32> = self.rounds.iter().map(|r| r.1).collect();
        let cpus: Vec<String> = cpus.iter().map(u32::to_string).collect();
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|r| format!("{:.1}", 100.0 * r.0))
            .collect();
        format!(
            "{} (CPU {}; {}; rounds {}%)",
            pct(self.mean()),
            cpus.join("/"),
            at.join(" "),
            rounds.join(", ")
        )
    }
}

/// The busiest CPU but the bench's in per-CPU loads: (load, CPU).
fn busiest_cpu(load: &BTreeMap<u32, f64>) -> (f64, u32) {
    load.iter()
        .filter(|(c, _)| **c != BENCH_CPU as u32)
        .map(|(c, l)| (*l, *c))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The two tools' final placements (rx queue -> CPU) and the best assignment of the alone
/// costs to the local CPUs, each replayed with no tool running, `rounds` times in turn (so
/// that the host's drift falls on every placement alike; one window per placement read
/// mirror-image placements 18.4 and 24.1% apart). Every second round replays the mirror
/// image ([`mirrored`]): the same pairs on mirrored CPUs replayed 7 points apart in round
/// means (6.1, run 7), so one orientation would score the CPUs, not the pairing. The
/// additive score overstates a CPU that carries several queues (their costs do not add up:
/// NET_RX polls them in one round), so this measures each placement as it is. A placement
/// met twice is measured once per round.
fn replay(
    g: &Bench,
    sc: &Scenario,
    costs: &Costs,
    phases: [&Phase; 2],
    rounds: u32,
) -> Result<[Replayed; 3]> {
    let rx_cost: Vec<f64> = g
        .dut
        .rx
        .iter()
        .map(|i| costs.cost.get(i).copied().unwrap_or(0.0))
        .collect();
    let (_, slots) = best_split(&rx_cost, g.local.len());
    let best: Vec<u32> = slots.iter().map(|s| g.local[*s]).collect();
    let at = |p: &Phase| -> Vec<u32> {
        g.dut
            .rx
            .iter()
            .map(|i| p.placement.get(i).copied().unwrap_or(0))
            .collect()
    };
    let wanted = [at(phases[0]), at(phases[1]), best];
    let mut seen: BTreeMap<Vec<u32>, Vec<(f64, u32)>> = BTreeMap::new();
    for round in 0..rounds.max(1) {
        let mut done = BTreeSet::new();
        for cpus in &wanted {
            if done.insert(cpus.clone()) {
                let at = if round % 2 == 1 {
                    mirrored(cpus, &g.local)
                } else {
                    cpus.clone()
                };
                let b = busiest_cpu(&measure_placed(g, sc, &at)?.cpu_irq);
                seen.entry(cpus.clone()).or_default().push(b);
            }
        }
    }
    Ok(wanted.map(|cpus| Replayed {
        rounds: seen.get(&cpus).cloned().unwrap_or_default(),
        at: cpus,
    }))
}

/// `cpus` with the local CPUs' roles reversed (on two local CPUs, swapped); other CPUs stay.
fn mirrored(cpus: &[u32], local: &[u32]) -> Vec<u32> {
    cpus.iter()
        .map(|c| match local.iter().position(|l| l == c) {
            Some(i) => local[local.len() - 1 - i],
            None => *c,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Irqbalance,
    Balancer,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Irqbalance => "irqbalance",
            Which::Balancer => "balancer",
        }
    }
}

struct Phase {
    placement: BTreeMap<u32, u32>,
    busiest_share: (f64, u32),
    writes: usize,
    writes_window: usize,
    oscillations: Vec<String>,
    delivered_pps: f64,
    /// The tool's own CPU time (user + system, all threads) per second of the window.
    tool_cpu: f64,
}

fn run_phase(g: &Bench, sc: &Scenario, which: Which) -> Result<Phase> {
    g.place_start(sc.start)?;
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let all = g.dut.all();
    let watch = Watch::start(&all, t0)?;
    let tag = format!("{}-{}", sc.name, which.name());
    let mut tool = match which {
        Which::Irqbalance => start_irqbalance(g, &tag)?,
        Which::Balancer => start_balancer(g, &tag)?,
    };
    let r = (|| {
        match which {
            // Its first interval ends with its probes attached, before any traffic.
            Which::Balancer => drop(wait_intervals(
                1,
                &mut tool.child,
                Duration::from_secs(120),
            )?),
            Which::Irqbalance => {
                thread::sleep(Duration::from_secs(2));
                if let Some(status) = tool.child.try_wait()? {
                    bail!("irqbalance ended at once ({status})");
                }
            }
        }
        let traffic = Traffic::start(&g.flows(sc))?;
        let r = (|| {
            thread::sleep(Duration::from_secs(g.args.settle));
            let pid = tool.child.id();
            let (w0, s0, r0) = (t0.elapsed(), cpu_times()?, g.receiver.count());
            let (m0, c0) = (Instant::now(), process_cpu_secs(pid)?);
            thread::sleep(Duration::from_secs(g.args.measure));
            let (s1, r1, c1) = (cpu_times()?, g.receiver.count(), process_cpu_secs(pid)?);
            let secs = m0.elapsed().as_secs_f64();
            let w1 = t0.elapsed();
            Ok((
                w0,
                w1,
                busiest(&s0, &s1, BENCH_CPU as u32),
                r1.saturating_sub(r0) as f64 / secs,
                placement(&all)?,
                (c1 - c0) / secs,
            ))
        })();
        traffic.stop()?;
        r
    })();
    if which == Which::Balancer {
        thread::sleep(Duration::from_secs(1));
    }
    let log = tool.stop();
    let (start, changes) = watch.stop();
    let (w0, w1, busiest_share, delivered_pps, placement, tool_cpu) =
        r.map_err(|e| anyhow!("{e:#}; {} log: {}", which.name(), log.replace('\n', " | ")))?;
    let in_phase: Vec<Change> = changes.into_iter().filter(|c| c.at <= w1).collect();
    println!(
        "guest-bench: {tag}: changes {:?}\n--- {} log ---\n{log}\n---",
        in_phase,
        which.name()
    );
    Ok(Phase {
        placement,
        busiest_share,
        writes: in_phase.len(),
        writes_window: in_phase.iter().filter(|c| c.at >= w0).count(),
        oscillations: oscillations(&start, &in_phase),
        delivered_pps,
        tool_cpu,
    })
}

/// A process's user + system CPU time so far (all its threads), in seconds.
fn process_cpu_secs(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command name"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    let ticks = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|x| x.parse().ok())
            .with_context(|| format!("{path}: field {} unreadable", i + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / hz)
}

/// Finds a source port per rx queue: each port's datagrams land on one queue (the tap's
/// flow hash), seen in the per-queue counters.
fn probe_ports(g: &Bench) -> Result<BTreeMap<usize, u16>> {
    let queues = g.dut.rx.len();
    let mut ports = BTreeMap::new();
    let mut tried = Vec::new();
    for port in PROBE_PORTS {
        if ports.len() == queues {
            break;
        }
        let before = rx_queue_interrupts(&g.dut)?;
        let traffic = Traffic::start(&[Flow {
            src_port: port,
            dst_port: DST_PORT,
            pps: 400,
            size: 64,
        }])?;
        thread::sleep(Duration::from_millis(300));
        traffic.stop()?;
        thread::sleep(Duration::from_millis(200));
        let after = rx_queue_interrupts(&g.dut)?;
        let delta: BTreeMap<usize, u64> = after
            .iter()
            .map(|(q, v)| (*q, v.saturating_sub(before.get(q).copied().unwrap_or(0))))
            .collect();
        let total: u64 = delta.values().sum();
        let Some((q, n)) = delta.iter().max_by_key(|(_, n)| **n) else {
            bail!("{} has no rx queues", g.dut.name);
        };
        tried.push(format!("{port}->q{q} ({n}/{total})"));
        // Mostly one queue: the control connection's own segments land on one too.
        if *n >= 30 && *n * 10 >= total * 7 {
            ports.entry(*q).or_insert(port);
        }
    }
    if ports.len() < queues {
        bail!(
            "no source port found for every rx queue in {PROBE_PORTS:?}: {}",
            tried.join(" ")
        );
    }
    Ok(ports)
}

fn setup(args: &Args) -> Result<(Nic, Vec<u32>)> {
    let dut = netdev_by_mac(&args.dut_mac)?;
    let peer = netdev_by_mac(&args.peer_mac)?;
    let dut_nic = describe(&dut)?;
    // The peer NIC stays down and idle: its IRQs are banned for both tools all the same.
    let peer_nic = describe(&peer)?;
    run(Command::new(IP).args(["link", "set", "lo", "up"]))?;
    run(Command::new(IP).args(["addr", "add", &format!("{DUT_ADDR}/24"), "dev", &dut]))?;
    run(Command::new(IP).args(["link", "set", &dut, "up"]))?;
    Ok((dut_nic, peer_nic.all()))
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn bench(args: &Args, out: &mut Out) -> Result<()> {
    pin(&[BENCH_CPU])?;
    let (dut, banned) = setup(args)?;
    let local = cpulist(&format!(
        "/sys/class/net/{}/device/../local_cpulist",
        dut.name
    ))?;
    let node0 = cpulist("/sys/devices/system/node/node0/cpulist")?;
    let receiver = Receiver::start()?;
    let mut g = Bench {
        args,
        dut,
        banned,
        local,
        node0,
        receiver,
        ports: BTreeMap::new(),
    };
    // The link needs a moment after coming up before the host answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !HostTraffic::available() {
        if Instant::now() > deadline {
            bail!(
                "no host traffic server answers at {}",
                balancer_tests::host_traffic::HOST_ADDR
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    g.ports = probe_ports(&g)?;
    out.line(&format!(
        "INFO kernel {}, irqbalance {}, balancer measure-share {}, traffic from the guest's \
         host-side namespace, {} s settle + {} s measured per phase; dut {} rx IRQs {:?} tx IRQs {:?}, local CPUs \
         {:?}; source port per rx queue {:?}; flows: even {} pps x {} B, bulk {} x {} B, light \
         {} x {} B",
        args.kernel,
        args.irqbalance_version,
        args.measure_share
            .map_or("default".to_owned(), |s| s.to_string()),
        args.settle,
        args.measure,
        g.dut.name,
        g.dut.rx,
        g.dut.tx,
        g.local,
        g.ports,
        EVEN.0,
        EVEN.1,
        BULK.0,
        BULK.1,
        LIGHT.0,
        LIGHT.1
    ));
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut cost_lines = Vec::new();
    let mut shared_lines = Vec::new();
    let mut replay_rows = Vec::new();
    for sc in SCENARIOS
        .iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == s.name))
    {
        out.line(&format!("INFO scenario {}: {}", sc.name, sc.about));
        let costs = measure_costs(&g, sc).with_context(|| format!("{}: costs", sc.name))?;
        let rx_costs: Vec<String> = g
            .dut
            .rx
            .iter()
            .enumerate()
            .map(|(q, i)| {
                let each: Vec<String> = costs
                    .alone
                    .get(&q)
                    .into_iter()
                    .flatten()
                    .map(|(cpu, c)| format!("{:.1} on {cpu}", 100.0 * c))
                    .collect();
                format!(
                    "q{q} {} ({}{:.0} int/s)",
                    pct(costs.cost.get(i).copied().unwrap_or(0.0)),
                    if each.is_empty() {
                        String::new()
                    } else {
                        format!("{}; ", each.join(", "))
                    },
                    costs.ints_per_s.get(i).copied().unwrap_or(0.0)
                )
            })
            .collect();
        let tx_cost: f64 = g.dut.tx.iter().filter_map(|i| costs.cost.get(i)).sum();
        let line = format!(
            "| {} | {} | tx IRQs together {} | {:.0} |",
            sc.name,
            rx_costs.join(", "),
            pct(tx_cost),
            costs.delivered_pps
        );
        out.line(&format!("INFO costs {line}"));
        if !costs.shared.is_empty() {
            let split: Vec<String> = costs
                .shared
                .iter()
                .map(|(q, (shared, own))| {
                    let first = g.dut.rx.get(*q).and_then(|i| costs.first_polls.get(i));
                    let first = first.map_or(String::new(), |(f, p)| {
                        format!(
                            "; {:.0}% of its packets in a round's first poll, preamble {:+.1}%",
                            100.0 * f,
                            100.0 * p
                        )
                    });
                    format!("q{q} {} (alone {}{first})", pct(*shared), pct(*own))
                })
                .collect();
            out.line(&format!(
                "INFO {} sharing a CPU read: {}",
                sc.name,
                split.join(", ")
            ));
            shared_lines.push(format!("| {} | {} |", sc.name, split.join(", ")));
        }
        cost_lines.push(line);
        let values: Vec<f64> = costs.cost.values().copied().collect();
        let lb = lower_bound(&values, g.local.len());
        let best = best_assignment(&values, g.local.len());
        let heavy: Vec<u32> = {
            let max = values.iter().copied().fold(0.0, f64::max);
            g.dut
                .rx
                .iter()
                .copied()
                .filter(|i| costs.cost.get(i).copied().unwrap_or(0.0) >= 0.5 * max)
                .collect()
        };
        let mut scored = Vec::new();
        for which in [Which::Irqbalance, Which::Balancer] {
            let p = run_phase(&g, sc, which)
                .with_context(|| format!("{}: {}", sc.name, which.name()))?;
            let (s, _) = score(&costs.cost, &p.placement);
            let rx_at: Vec<String> = g
                .dut
                .rx
                .iter()
                .enumerate()
                .map(|(q, i)| {
                    format!(
                        "q{q}:{}",
                        p.placement.get(i).map_or("?".to_owned(), |c| c.to_string())
                    )
                })
                .collect();
            let heavy_local = heavy
                .iter()
                .all(|i| p.placement.get(i).is_some_and(|c| g.local.contains(c)));
            let row = format!(
                "| {} | {} | {} | {} | {} | {} (CPU {}) | {} / {} | {} | {:.0} | {} | {} | {} |",
                sc.name,
                which.name(),
                pct(s),
                pct(lb),
                pct(best),
                pct(p.busiest_share.0),
                p.busiest_share.1,
                p.writes,
                p.writes_window,
                p.oscillations.len(),
                p.delivered_pps,
                rx_at.join(" "),
                if heavy_local { "yes" } else { "no" },
                pct(p.tool_cpu)
            );
            out.line(&format!("TABLE {row}"));
            if !p.oscillations.is_empty() {
                out.line(&format!(
                    "INFO {} {}: {}",
                    sc.name,
                    which.name(),
                    p.oscillations.join("; ")
                ));
            }
            rows.push(row);
            scored.push((s, p));
        }
        let (ib, bal) = (&scored[0], &scored[1]);
        let met = |ok: bool| if ok { "MET" } else { "NOT-MET" };
        if args.replay_rounds > 0 {
            let [ri, rb, best] = replay(&g, sc, &costs, [&ib.1, &bal.1], args.replay_rounds)
                .with_context(|| format!("{}: replay", sc.name))?;
            let row = format!(
                "| {} | {} | {} | {} |",
                sc.name,
                ri.cell(),
                rb.cell(),
                best.cell()
            );
            out.line(&format!("INFO replayed {row}"));
            replay_rows.push(row);
            let (i, b, o) = (ri.mean(), rb.mean(), best.mean());
            targets.push(format!(
                "TARGET {} replayed placement never worse than irqbalance's: {} (balancer {}, \
                 irqbalance {}, means of {} rounds; each CPU's IRQ time measured with the \
                 queues where the tool left them and no tool running)",
                sc.name,
                met(b <= i + 1e-9),
                pct(b),
                pct(i),
                args.replay_rounds
            ));
            targets.push(format!(
                "TARGET {} replayed placement within 5% of the best assignment's: {} \
                 (balancer {}, the best assignment by alone costs {}, {:+.1}%)",
                sc.name,
                met(b <= 1.05 * o + 1e-9),
                pct(b),
                pct(o),
                if o > 0.0 { 100.0 * (b / o - 1.0) } else { 0.0 }
            ));
        }
        targets.push(format!(
            "TARGET {} placement within 5% of the lower bound: {} (balancer {} vs bound {}, \
             {:+.1}%; the best assignment of these costs to the local CPUs is {}, balancer \
             {:+.1}% over it)",
            sc.name,
            met(bal.0 <= 1.05 * lb + 1e-9),
            pct(bal.0),
            pct(lb),
            if lb > 0.0 {
                100.0 * (bal.0 / lb - 1.0)
            } else {
                0.0
            },
            pct(best),
            if best > 0.0 {
                100.0 * (bal.0 / best - 1.0)
            } else {
                0.0
            }
        ));
        targets.push(format!(
            "TARGET {} placement never worse than irqbalance: {} (balancer {}, irqbalance {})",
            sc.name,
            met(bal.0 <= ib.0 + 1e-9),
            pct(bal.0),
            pct(ib.0)
        ));
        targets.push(format!(
            "TARGET {} at most half irqbalance's affinity writes: {} (balancer {}, irqbalance {})",
            sc.name,
            met(2 * bal.1.writes <= ib.1.writes),
            bal.1.writes,
            ib.1.writes
        ));
        targets.push(format!(
            "TARGET {} no IRQ returns to a CPU it left: {} (balancer {}, irqbalance {})",
            sc.name,
            met(bal.1.oscillations.is_empty()),
            bal.1.oscillations.len(),
            ib.1.oscillations.len()
        ));
    }
    out.line("TABLE");
    out.line(
        "TABLE Per-queue costs (no balancer acting), share of one CPU: each rx queue measured \
         alone on each of the dut's local CPUs (the other queues together on a CPU off the \
         node), the mean of its readings, each reading in brackets:",
    );
    out.line("TABLE");
    out.line("TABLE | scenario | rx queues | tx | delivered pkt/s |");
    out.line("TABLE |---|---|---|---|");
    for l in &cost_lines {
        out.line(&format!("TABLE {l}"));
    }
    if !shared_lines.is_empty() {
        out.line("TABLE");
        out.line(
            "TABLE The readings of the queues that shared the off-node CPU in the first \
             placement (not scored):",
        );
        out.line("TABLE");
        out.line("TABLE | scenario | shared reading (alone) |");
        out.line("TABLE |---|---|");
        for l in &shared_lines {
            out.line(&format!("TABLE {l}"));
        }
    }
    out.line("TABLE");
    out.line(
        "TABLE | scenario | tool | placement (busiest CPU by costs) | lower bound | best \
         possible | busiest CPU, measured | affinity writes (phase / window) | oscillations | \
         delivered pkt/s | rx IRQs at the end | heavy queues local | tool's own CPU |",
    );
    out.line("TABLE |---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        out.line(&format!("TABLE {r}"));
    }
    if !replay_rows.is_empty() {
        out.line("TABLE");
        out.line(
            "TABLE Replayed with no tool running: the rx queues (with their tx IRQs) put where \
             each tool left them, and where the best assignment of the alone costs puts them, \
             the same traffic, one report window per placement and round, the rounds in \
             turn, every second one on the mirror image (the local CPUs swapped); the busiest CPU's hardirq + softirq time per second of traffic (the \
             bench's CPU left out), the mean of the rounds and each round. Queues that share \
             a CPU are measured together here, not added:",
        );
        out.line("TABLE");
        out.line("TABLE | scenario | irqbalance's | balancer's | best assignment |");
        out.line("TABLE |---|---|---|---|");
        for r in &replay_rows {
            out.line(&format!("TABLE {r}"));
        }
    }
    for t in &targets {
        out.line(t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_the_best_assignment() {
        // One bulk queue and three light ones on two CPUs: the bulk queue alone is the bound.
        let c = [0.30, 0.05, 0.05, 0.05];
        assert!((lower_bound(&c, 2) - 0.30).abs() < 1e-9);
        assert!((best_assignment(&c, 2) - 0.30).abs() < 1e-9);
        // Two bulk, two light: the sum poured over two CPUs; the best pairs bulk with light.
        let c = [0.30, 0.30, 0.05, 0.05];
        assert!((lower_bound(&c, 2) - 0.35).abs() < 1e-9);
        assert!((best_assignment(&c, 2) - 0.35).abs() < 1e-9);
        // Three equal queues on two CPUs: the bound (1.5) is below what any placement does.
        let c = [0.1, 0.1, 0.1];
        assert!((lower_bound(&c, 2) - 0.15).abs() < 1e-9);
        assert!((best_assignment(&c, 2) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn the_best_split_says_where_each_cost_goes() {
        let c = [0.05, 0.30, 0.05, 0.30];
        let (best, slot) = best_split(&c, 2);
        assert!((best - 0.35).abs() < 1e-9);
        // Each bulk cost with a light one, on different slots.
        assert_ne!(slot[1], slot[3]);
        assert_ne!(slot[0], slot[2]);
        let mut load = [0.0; 2];
        for (i, s) in slot.iter().enumerate() {
            load[*s] += c[i];
        }
        assert!(load.iter().all(|l| (l - 0.35).abs() < 1e-9), "{load:?}");
        assert!(
            (busiest_cpu(&BTreeMap::from([(0, 0.1), (1, 0.9), (3, 0.2)])).0 - 0.2).abs() < 1e-9,
            "the bench's CPU is left out"
        );
    }

    #[test]
    fn a_replay_is_scored_by_the_mean_of_its_rounds() {
        let r = Replayed {
            at: vec![3, 2],
            rounds: vec![(0.171, 2), (0.189, 3)],
        };
        assert!((r.mean() - 0.18).abs() < 1e-9);
        assert_eq!(r.cell(), "18.0% (CPU 2/3; q0:3 q1:2; rounds 17.1, 18.9%)");
    }

    #[test]
    fn a_mirror_image_swaps_the_local_cpus_only() {
        assert_eq!(mirrored(&[2, 3, 3, 0], &[2, 3]), vec![3, 2, 2, 0]);
        assert_eq!(mirrored(&[4, 5, 6, 1], &[4, 5, 6]), vec![6, 5, 4, 1]);
        let p = [0, 2, 3, 2];
        assert_eq!(mirrored(&mirrored(&p, &[2, 3]), &[2, 3]), p.to_vec());
    }

    #[test]
    fn every_queue_is_measured_alone_on_every_local_cpu() {
        let alone = alone_on_its_cpu;
        assert_eq!(
            cost_placements(4, &[2, 3], Some(0)),
            vec![
                vec![2, 3, 0, 0],
                vec![3, 2, 0, 0],
                vec![0, 0, 2, 3],
                vec![0, 0, 3, 2]
            ]
        );
        for (queues, local) in [(4, vec![2, 3]), (3, vec![2, 3]), (5, vec![4, 5, 6])] {
            let ps = cost_placements(queues, &local, Some(0));
            for q in 0..queues {
                let on: BTreeSet<u32> = ps
                    .iter()
                    .filter(|p| alone(p, q) && local.contains(&p[q]))
                    .map(|p| p[q])
                    .collect();
                // A queue left over for two local CPUs is alone on each in turn, by the
                // mirror image.
                assert_eq!(on, local.iter().copied().collect(), "q{q}: {ps:?}");
            }
        }
        // No spare CPU: the others share the local CPUs; nothing panics, every queue placed.
        let ps = cost_placements(4, &[2, 3], None);
        assert!(
            ps.iter()
                .all(|p| p.len() == 4 && p.iter().all(|c| [2, 3].contains(c)))
        );
        assert!(cost_placements(4, &[], Some(0)).is_empty());
        // One local CPU: a group of one, its mirror image the same placement.
        assert_eq!(
            cost_placements(2, &[2], Some(0)),
            vec![vec![2, 0], vec![0, 2]]
        );
    }

    fn run(cost: &[(u32, f64)], pps: f64) -> Costs {
        Costs {
            cost: cost.iter().copied().collect(),
            ints_per_s: cost.iter().map(|(i, c)| (*i, 1000.0 * c)).collect(),
            delivered_pps: pps,
            shared: BTreeMap::new(),
            first_polls: BTreeMap::new(),
            cpu_irq: BTreeMap::new(),
            alone: BTreeMap::new(),
        }
    }

    #[test]
    fn a_queues_cost_is_the_mean_of_its_own_alone_readings() {
        // IRQs 40, 42 (rx q0, q1), 41 (tx). q0 alone on 2 then on 3, q1 on 3 then on 2,
        // then both together on CPU 0.
        let ps = vec![vec![2, 3], vec![3, 2], vec![0, 0]];
        let runs = vec![
            run(&[(40, 0.10), (42, 0.20), (41, 0.01)], 100.0),
            run(&[(40, 0.14), (42, 0.24), (41, 0.03)], 200.0),
            // Both on CPU 0: shared readings, which must not enter the alone costs.
            run(&[(40, 0.50), (42, 0.50), (41, 0.05)], 300.0),
        ];
        let c = combine_costs(&ps, runs, &[40, 42], &[2, 3]);
        assert!((c.cost[&40] - 0.12).abs() < 1e-12, "{:?}", c.cost);
        assert!((c.cost[&42] - 0.22).abs() < 1e-12, "{:?}", c.cost);
        assert!(
            (c.cost[&41] - 0.03).abs() < 1e-12,
            "tx: the mean of all runs"
        );
        assert!((c.ints_per_s[&40] - 120.0).abs() < 1e-9);
        assert!((c.delivered_pps - 200.0).abs() < 1e-9);
        assert_eq!(c.alone[&0], vec![(2, 0.10), (3, 0.14)]);
        assert!(c.shared.is_empty(), "nothing shared in the first placement");

        // The queues that share a CPU in the first placement keep that reading beside.
        let ps = vec![vec![0, 0], vec![2, 3]];
        let runs = vec![
            run(&[(40, 0.05), (42, 0.06)], 1.0),
            run(&[(40, 0.09), (42, 0.07)], 1.0),
        ];
        let c = combine_costs(&ps, runs, &[40, 42], &[2, 3]);
        assert_eq!(c.shared[&0], (0.05, 0.09));
        assert!((c.cost[&42] - 0.07).abs() < 1e-12);
        // Never alone on a local CPU: the first reading.
        let c = combine_costs(&[vec![0, 0]], vec![run(&[(40, 0.05)], 1.0)], &[40], &[2, 3]);
        assert!((c.cost[&40] - 0.05).abs() < 1e-12);
    }

    #[test]
    fn score_sums_per_cpu() {
        let cost = BTreeMap::from([(30, 0.2), (31, 0.1), (32, 0.05)]);
        let at = BTreeMap::from([(30, 2), (31, 2), (32, 3)]);
        let (s, load) = score(&cost, &at);
        assert!((s - 0.3).abs() < 1e-9);
        assert_eq!(load.len(), 2);
    }

    #[test]
    fn a_return_to_a_left_cpu_is_an_oscillation() {
        let start = BTreeMap::from([(30, "0".to_owned()), (31, "0".to_owned())]);
        let ch = |s: u64, irq, to: &str| Change {
            at: Duration::from_secs(s),
            irq,
            to: to.into(),
        };
        let changes = [
            ch(1, 30, "2"),
            ch(2, 31, "3"),
            ch(9, 30, "3"),
            ch(20, 30, "2"),
        ];
        let o = oscillations(&start, &changes);
        assert_eq!(o.len(), 1, "{o:?}");
        assert!(o[0].starts_with("IRQ 30 back to 2"));
        assert!(oscillations(&start, &changes[..3]).is_empty());
        assert_eq!(
            oscillations(&start, &[ch(1, 31, "2"), ch(2, 31, "0")]).len(),
            1
        );
    }

    #[test]
    fn proc_files_parse() {
        let m = parse_metrics(
            "# HELP x\nbalancer_intervals_total 3\nbalancer_irq_seconds_total{irq=\"30\",cpu=\"0\",mode=\"hardirq\"} 0.5\n\
             balancer_irq_seconds_total{irq=\"30\",cpu=\"1\",mode=\"softirq\"} 0.25\n",
        );
        assert_eq!(m.intervals, 3);
        assert!((m.irq_seconds[&30] - 0.75).abs() < 1e-9);
    }
}
