//! `balancer report`: sample for a while, then say where interrupt time really went.
//!
//! One [`Report`] value is built from the attribution and rendered either as JSON or as text
//! tables that fit 100 columns, so both outputs always say the same thing.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use balancer_common::{
    NET_RX_SOFTIRQ, NR_SOFTIRQS, NR_SYSVECS, NapiKey, SOFTIRQ_NAMES, SYSVEC_NAMES,
};
use serde::Serialize;

use crate::{
    Fatal,
    attribution::{Attribution, IrqLoad, LinkMethod},
    monitor::Monitor,
    probe::ProbeStatus,
    system::{self, QueueKind, ReadOptions, SystemModel, netdev::NetdevStatus},
};

/// Sample for a while, then print each IRQ's real CPU time: its hardirq handler time plus the
/// NET_RX softirq time of the NAPI instances it schedules, next to its share of interrupts.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// How long to sample, in seconds (0.1 to 86400, fractions allowed). Ctrl-C ends early
    /// and reports what was measured so far.
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS",
          value_parser = crate::config::parse_seconds)]
    pub duration: f64,
    /// Print one JSON object (keys: meta, cpus, irqs, softirqs, napi, unattributed) instead
    /// of tables.
    #[arg(long)]
    pub json: bool,
    /// Show only the N IRQs and NAPI instances with the most CPU time, N at least 1 (text:
    /// default 20; JSON: default all).
    #[arg(long, value_name = "N",
          value_parser = crate::config::parse_top)]
    pub top: Option<usize>,
    /// birq-style proximity file repairing devices' NUMA nodes (`<PCI prefix> node N`).
    #[arg(long, value_name = "FILE")]
    pub proximity: Option<PathBuf>,
    /// Text: the full layout whatever the terminal's width (as when piped); else the tables
    /// fit `COLUMNS` or the terminal, 80 columns at least.
    #[arg(long)]
    pub wide: bool,
}

/// Runs the command.
pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let root = PathBuf::from("/");
    let opts = read_options(args.proximity.as_deref())?;
    let mut monitor = Monitor::start(&root, opts)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    wait(Duration::from_secs_f64(args.duration), &stop, &mut monitor)?;

    let tick = monitor.tick()?;
    let (model, status, attribution) = (monitor.model(), monitor.status(), &tick.attribution);
    let netlink = monitor.netdev_status();
    let stat_irq_time = system::stat::read(&root)?
        .values()
        .any(|t| t.irq + t.softirq > 0);
    let top = args.top.or(if args.json { None } else { Some(20) });
    let mut report = Report::build(attribution, model, status, netlink, stat_irq_time, top);
    report.meta.coverage = Coverage {
        napi_pruned: monitor.napi_pruned(),
        ..coverage(&tick.interval, status, &monitor.program_stats()?, &root)
    };
    report.meta.coverage.interrupts_measured = attribution.coverage();

    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let width = crate::output::columns(args.wide).unwrap_or(FULL_WIDTH);
        out.write_all(report.to_text_width(width).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options with the proximity file loaded the same way for every command: a missing file or
/// any bad line is [`Fatal::USAGE`], every problem listed.
pub(crate) fn read_options(proximity: Option<&std::path::Path>) -> anyhow::Result<ReadOptions> {
    read_options_under(proximity, std::path::Path::new("/"))
}

pub(crate) fn read_options_under(
    proximity: Option<&std::path::Path>,
    root: &std::path::Path,
) -> anyhow::Result<ReadOptions> {
    let mut opts = ReadOptions::default();
    if let Some(path) = proximity {
        let prox = system::proximity::load(path, root)
            .map_err(|e| Fatal::new(Fatal::USAGE, e.to_string()))?;
        opts.proximity = Some(prox);
    }
    Ok(opts)
}

/// What the probes missed and cost over `iv`. The cost comes from `kernel.bpf_stats` when it
/// is on (program time only: dispatch not included, said so), else from the events counted
/// times the benchmark's end-to-end cost per event.
fn coverage(
    iv: &crate::sample::Interval,
    status: &ProbeStatus,
    programs: &[crate::probe::ProgramStats],
    root: &std::path::Path,
) -> Coverage {
    let stats_on = std::fs::read_to_string(root.join("proc/sys/kernel/bpf_stats_enabled"))
        .is_ok_and(|v| v.trim() == "1");
    let secs_ns = iv.duration_ns.max(1) as f64;
    let probe_cost = if stats_on {
        let ns: u64 = programs.iter().map(|p| p.run_time_ns).sum();
        ProbeCost {
            cpu_pct: ns as f64 * 100.0 / secs_ns,
            method: "kernel.bpf_stats: program run time only, not dispatch".to_string(),
        }
    } else {
        let pairs = |m: &BTreeMap<(u32, u32), balancer_common::IrqStat>| -> u64 {
            m.values().map(|s| 2 * s.runs).sum()
        };
        let softirq: u64 = iv
            .softirq
            .values()
            .map(|s| {
                2 * s.runs
                    + if status.softirq_raise.active {
                        s.raises
                    } else {
                        0
                    }
            })
            .sum();
        let polls: u64 = iv.napi.values().map(|d| d.polls + d.untimed_polls).sum();
        let events = pairs(&iv.hardirq) + pairs(&iv.sysvec) + softirq + polls;
        let kind = status
            .program_types
            .get("irq:softirq_entry")
            .copied()
            .unwrap_or(crate::probe::ProgramType::TracePoint);
        let per_event = crate::probe::calibrated_ns_per_event(kind);
        ProbeCost {
            cpu_pct: events as f64 * per_event * 100.0 / secs_ns,
            method: format!(
                "estimated: {events} events x {per_event:.0} ns ({}, from the benchmark)",
                kind.as_str()
            ),
        }
    };
    Coverage {
        interrupts_measured: None,
        recursion_misses: programs
            .iter()
            .map(|p| (p.event.clone(), p.recursion_misses))
            .collect(),
        ambiguous_netrx_raises: iv.probe_errors[balancer_common::ERR_AMBIGUOUS_RAISE as usize],
        napi_pruned: 0,
        probe_cost,
    }
}

/// Sleeps until `total` passed or `stop` is set, with a progress line on a terminal.
/// Waits out the sampling window, reading the maps once a second so that NAPI instances
/// that came and went inside it are pruned from the kernel map, not overflow it.
fn wait(total: Duration, stop: &AtomicBool, monitor: &mut Monitor) -> anyhow::Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let step = Duration::from_millis(100);
    let mut last_shown = u64::MAX;
    let mut last_read = 0;
    while !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        if elapsed.as_secs() != last_read {
            last_read = elapsed.as_secs();
            monitor.maintain()?;
        }
        if tty && elapsed.as_secs() != last_shown {
            last_shown = elapsed.as_secs();
            eprint!(
                "\rsampling {:>4.0}/{:.0} s (Ctrl-C reports early)",
                elapsed.as_secs_f64(),
                total.as_secs_f64()
            );
        }
        std::thread::sleep(step.min(total - elapsed));
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    Ok(())
}

/// Methods and conditions of the measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub kernel: Option<String>,
    pub duration_s: f64,
    pub cpus_online: String,
    pub methods: Methods,
    /// Parts that could not run, with the reason.
    pub missing: Vec<String>,
    pub warnings: Vec<String>,
    /// IRQs appearing or vanishing, CPUs going on- or offline during the sample.
    pub events: Vec<String>,
    /// Whether /proc/stat has counted any IRQ or softirq time since boot: kernels without
    /// CONFIG_IRQ_TIME_ACCOUNTING (Debian's cloud kernels) never do.
    pub stat_irq_time: bool,
    pub coverage: Coverage,
}

#[derive(Clone, Debug, Serialize)]
pub struct Methods {
    /// What the probes measure and how, as keys of their own in `methods`.
    #[serde(flatten)]
    pub probe: ProbeStatus,
    /// The netdev generic netlink family (napi-get, queue-get): whether its exact links
    /// (and threaded NAPI's kthread pids) were available, and why not.
    pub netlink_links: NetdevStatus,
    /// Link methods the NAPI instances of this report actually used.
    pub napi_irq_link: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CpuRow {
    pub cpu: u32,
    pub node: Option<u32>,
    pub online: bool,
    pub hardirq_pct: f64,
    /// Per softirq vector name.
    pub softirq_pct: BTreeMap<&'static str, f64>,
    pub softirq_total_pct: f64,
    /// Of the softirq time: the part attributed to IRQs and the part in named buckets.
    pub softirq_to_irqs_pct: f64,
    pub softirq_unattributed_pct: f64,
    /// What /proc/stat claims for the same interval; null without a /proc/stat row.
    pub stat_hardirq_pct: Option<f64>,
    pub stat_softirq_pct: Option<f64>,
    pub busy_pct: Option<f64>,
    /// Poll time in NAPI kthreads and busy-poll loops on this CPU, % of the CPU: task time,
    /// in none of the softirq figures above.
    pub threaded_pct: f64,
    pub busy_poll_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IrqCpuRow {
    pub cpu: u32,
    pub interrupts: u64,
    pub hardirq_ns: u64,
    pub softirq_ns: u64,
    /// Its instances' polls in NAPI kthreads and busy-poll loops (task time, not softirq).
    pub threaded_ns: u64,
    pub busy_poll_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IrqRow {
    pub irq: u32,
    /// Action names, comma-separated.
    pub name: String,
    pub chip: Option<String>,
    pub device: Option<String>,
    pub netdev: Option<String>,
    pub queue: Option<u32>,
    pub queue_kind: Option<QueueKind>,
    pub node: Option<u32>,
    pub smp_affinity: Option<String>,
    pub effective_affinity: Option<String>,
    pub interrupts: u64,
    pub interrupts_per_s: f64,
    pub hardirq_ns: u64,
    pub softirq_ns: u64,
    /// Poll time of its instances in NAPI kthreads and busy-poll loops: task time, apart
    /// from `softirq_ns` and not in `weight_ns` (moving the IRQ does not move it).
    pub threaded_ns: u64,
    pub busy_poll_ns: u64,
    pub weight_ns: u64,
    /// Time as % of one CPU over the interval.
    pub hardirq_pct: f64,
    pub softirq_pct: f64,
    pub weight_pct: f64,
    /// Share of all interrupts (what count-based balancers weigh) versus share of real time.
    pub interrupt_share: f64,
    pub time_share: f64,
    /// napi_id (or kernel address) of linked NAPI instances.
    pub napi: Vec<String>,
    pub cpus: Vec<IrqCpuRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SoftirqRow {
    pub cpu: u32,
    pub vec: &'static str,
    pub raises: u64,
    pub runs: u64,
    pub ns: u64,
    pub pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SysvecRow {
    pub cpu: u32,
    /// The `irq_vectors:` tracepoint's name, e.g. "local_timer", "call_function".
    pub vector: &'static str,
    pub runs: u64,
    pub ns: u64,
    pub pct: f64,
}

/// How much of what happened the probes saw, and what they cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Coverage {
    /// Share of `/proc/interrupts`' interrupts whose handler run the probes saw (each IRQ's
    /// runs capped at its interrupts); null when no IRQ fired.
    pub interrupts_measured: Option<f64>,
    /// Per event, runs the kernel skipped since the probes were attached because a BPF
    /// program was already running on that CPU (`bpf_prog_info.recursion_misses`).
    pub recursion_misses: BTreeMap<String, u64>,
    /// NET_RX softirqs raised by more than two IRQs: their polls paired with none.
    pub ambiguous_netrx_raises: u64,
    /// NAPI instances deleted from the probe's map after they stopped polling.
    pub napi_pruned: u64,
    pub probe_cost: ProbeCost,
}

/// What the probes cost over the interval, as % of one CPU (summed over CPUs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeCost {
    pub cpu_pct: f64,
    /// How it was obtained: `kernel.bpf_stats` (program run time only, no dispatch) or an
    /// estimate from the events counted times the benchmark's end-to-end cost per event.
    pub method: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct NapiCpuRow {
    pub cpu: u32,
    pub polls: u64,
    pub ns: u64,
    pub threaded_ns: u64,
    pub busy_poll_ns: u64,
    /// Share of the instance's poll time (of its polls when no time was measured).
    pub share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NapiRow {
    /// Kernel address of the napi_struct, hex.
    pub id: String,
    pub napi_id: Option<u32>,
    pub device: String,
    pub irq: Option<u32>,
    pub link: &'static str,
    pub link_evidence: u64,
    pub link_confidence: f64,
    /// The poll kthread of threaded NAPI (netlink napi-get), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_pid: Option<u32>,
    pub polls: u64,
    pub packets: u64,
    pub packets_per_s: f64,
    pub budget_exhausted_share: f64,
    /// Polls that got no time: outside NET_RX softirq with no start mark (see meta's
    /// threaded_napi and busy_poll).
    pub untimed_polls: u64,
    /// Poll time in NET_RX softirqs.
    pub ns: u64,
    pub pct: f64,
    /// Polls in the instance's NAPI kthread, and their time (task time, not softirq).
    pub threaded_polls: u64,
    pub threaded_ns: u64,
    pub threaded_pct: f64,
    /// Busy polls by tasks in a busy-poll loop, and their time (task time, not softirq).
    pub busy_polls: u64,
    pub busy_poll_ns: u64,
    pub busy_poll_pct: f64,
    pub cpus: Vec<NapiCpuRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnattributedRow {
    pub cpu: u32,
    pub vec: &'static str,
    pub bucket: &'static str,
    pub ns: u64,
    /// % of the CPU.
    pub pct: f64,
    /// % of the CPU's softirq time.
    pub softirq_share: f64,
}

/// Everything the report says.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub cpus: Vec<CpuRow>,
    pub irqs: Vec<IrqRow>,
    pub softirqs: Vec<SoftirqRow>,
    /// x86 system vectors (local timer, IPIs) per CPU: hardirq time that is no IRQ's.
    pub system_vectors: Vec<SysvecRow>,
    pub napi: Vec<NapiRow>,
    pub unattributed: Vec<UnattributedRow>,
    /// IRQs and NAPI instances left out by --top.
    pub omitted: Omitted,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Omitted {
    pub irqs: usize,
    pub napi: usize,
}

/// The TASK% cell: threaded (T) and busy-poll (B) time, `-` for none.
fn task_pct(n: &NapiRow) -> String {
    let mut cell = Vec::new();
    if n.threaded_ns > 0 {
        cell.push(format!("{:.1}T", n.threaded_pct));
    }
    if n.busy_poll_ns > 0 {
        cell.push(format!("{:.1}B", n.busy_poll_pct));
    }
    if cell.is_empty() {
        "-".to_string()
    } else {
        cell.join("+")
    }
}

fn pct(ns: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        ns as f64 * 100.0 / of as f64
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Report {
    /// Builds the report; `top` limits the IRQ and NAPI rows to the heaviest.
    /// `stat_irq_time`: whether /proc/stat counts IRQ time at all on this kernel.
    pub fn build(
        a: &Attribution,
        model: &SystemModel,
        status: &ProbeStatus,
        netlink: &NetdevStatus,
        stat_irq_time: bool,
        top: Option<usize>,
    ) -> Report {
        let dur = a.duration_ns;
        let secs = dur as f64 / 1e9;
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };

        let cpus: Vec<CpuRow> = a
            .cpus
            .iter()
            .map(|c| {
                let soft = c.softirq_total_ns();
                let to_irqs = a.attributed_softirq_ns(c.cpu);
                let stat_pct = |v: Option<u64>| v.zip(c.stat_total_ns).map(|(v, t)| pct(v, t));
                CpuRow {
                    cpu: c.cpu,
                    node: c.node,
                    online: c.online,
                    hardirq_pct: pct(c.hardirq_ns, dur),
                    softirq_pct: (0..NR_SOFTIRQS)
                        .map(|v| (SOFTIRQ_NAMES[v], pct(c.softirq_ns[v], dur)))
                        .collect(),
                    softirq_total_pct: pct(soft, dur),
                    softirq_to_irqs_pct: pct(to_irqs, dur),
                    softirq_unattributed_pct: pct(a.unattributed_ns(c.cpu), dur),
                    stat_hardirq_pct: stat_pct(c.stat_irq_ns),
                    stat_softirq_pct: stat_pct(c.stat_softirq_ns),
                    busy_pct: stat_pct(c.stat_busy_ns),
                    threaded_pct: pct(c.threaded_ns, dur),
                    busy_poll_pct: pct(c.busy_poll_ns, dur),
                }
            })
            .collect();

        let total_ints = a.total_interrupts();
        let total_weight = a.total_weight_ns();
        let mut loads: Vec<&IrqLoad> = a
            .irqs
            .values()
            .filter(|l| l.interrupts > 0 || l.weight_ns() > 0)
            .collect();
        loads.sort_by(|x, y| {
            (y.weight_ns(), y.interrupts, x.irq).cmp(&(x.weight_ns(), x.interrupts, y.irq))
        });
        let napi_name = |id: NapiKey| {
            a.napi
                .iter()
                .find(|n| n.id == id)
                .and_then(|n| n.napi_id)
                .map_or_else(|| format!("{:#x}", id.napi), |n| n.to_string())
        };
        let mut irqs: Vec<IrqRow> = loads
            .iter()
            .map(|l| {
                let info = model.irqs.get(&l.irq);
                IrqRow {
                    irq: l.irq,
                    name: info.map(|i| i.actions.join(",")).unwrap_or_default(),
                    chip: info.map(|i| i.chip.clone()),
                    device: info.and_then(|i| i.device.clone()),
                    netdev: info.and_then(|i| i.netdev.clone()),
                    queue: info.and_then(|i| i.queue.as_ref()).map(|q| q.index),
                    queue_kind: info.and_then(|i| i.queue.as_ref()).map(|q| q.kind),
                    node: info.and_then(|i| i.node),
                    smp_affinity: info
                        .and_then(|i| i.smp_affinity.as_ref())
                        .map(|s| s.to_list_string()),
                    effective_affinity: info
                        .and_then(|i| i.effective_affinity.as_ref())
                        .map(|s| s.to_list_string()),
                    interrupts: l.interrupts,
                    interrupts_per_s: per_s(l.interrupts),
                    hardirq_ns: l.hardirq_ns,
                    softirq_ns: l.softirq_ns,
                    threaded_ns: l.threaded_ns,
                    busy_poll_ns: l.busy_poll_ns,
                    weight_ns: l.weight_ns(),
                    hardirq_pct: pct(l.hardirq_ns, dur),
                    softirq_pct: pct(l.softirq_ns, dur),
                    weight_pct: pct(l.weight_ns(), dur),
                    interrupt_share: share(l.interrupts, total_ints),
                    time_share: share(l.weight_ns(), total_weight),
                    napi: l.napi.iter().map(|id| napi_name(*id)).collect(),
                    cpus: l
                        .per_cpu
                        .iter()
                        .map(|(cpu, c)| IrqCpuRow {
                            cpu: *cpu,
                            interrupts: c.interrupts,
                            hardirq_ns: c.hardirq_ns,
                            softirq_ns: c.softirq_ns,
                            threaded_ns: c.threaded_ns,
                            busy_poll_ns: c.busy_poll_ns,
                        })
                        .collect(),
                }
            })
            .collect();

        let mut napi: Vec<NapiRow> = a
            .napi
            .iter()
            .map(|n| {
                let t = n.total();
                NapiRow {
                    id: format!("{:#x}", n.id.napi),
                    napi_id: n.napi_id,
                    device: n.device.clone(),
                    irq: n.link.irq,
                    link: n.link.method.as_str(),
                    link_evidence: n.link.evidence,
                    link_confidence: n.link.confidence,
                    thread_pid: n.thread_pid,
                    polls: t.all_polls(),
                    packets: t.packets,
                    packets_per_s: per_s(t.packets),
                    budget_exhausted_share: share(t.budget_exhausted, t.all_polls()),
                    untimed_polls: t.untimed_polls,
                    ns: t.ns,
                    pct: pct(t.ns, dur),
                    threaded_polls: t.threaded_polls,
                    threaded_ns: t.threaded_ns,
                    threaded_pct: pct(t.threaded_ns, dur),
                    busy_polls: t.busy_polls,
                    busy_poll_ns: t.busy_poll_ns,
                    busy_poll_pct: pct(t.busy_poll_ns, dur),
                    cpus: n
                        .per_cpu
                        .iter()
                        .map(|(cpu, c)| NapiCpuRow {
                            cpu: *cpu,
                            polls: c.all_polls(),
                            ns: c.ns,
                            threaded_ns: c.threaded_ns,
                            busy_poll_ns: c.busy_poll_ns,
                            share: if t.all_ns() > 0 {
                                share(c.all_ns(), t.all_ns())
                            } else {
                                share(c.all_polls(), t.all_polls())
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        napi.sort_by_key(|n| std::cmp::Reverse((n.ns + n.threaded_ns + n.busy_poll_ns, n.polls)));

        let mut omitted = Omitted::default();
        if let Some(n) = top {
            omitted.irqs = irqs.len().saturating_sub(n);
            irqs.truncate(n);
            omitted.napi = napi.len().saturating_sub(n);
            napi.truncate(n);
        }

        let softirq_of: BTreeMap<u32, u64> = a
            .cpus
            .iter()
            .map(|c| (c.cpu, c.softirq_total_ns()))
            .collect();
        let softirqs = a
            .cpus
            .iter()
            .flat_map(|c| {
                (0..NR_SOFTIRQS)
                    .filter(|v| c.softirq_ns[*v] + c.softirq_raises[*v] > 0)
                    .map(move |v| (c, v))
            })
            .map(|(c, v)| SoftirqRow {
                cpu: c.cpu,
                vec: SOFTIRQ_NAMES[v],
                raises: c.softirq_raises[v],
                runs: c.softirq_runs[v],
                ns: c.softirq_ns[v],
                pct: pct(c.softirq_ns[v], dur),
            })
            .collect();
        let system_vectors = a
            .cpus
            .iter()
            .flat_map(|c| {
                (0..NR_SYSVECS)
                    .filter(|v| c.sysvec_runs[*v] > 0)
                    .map(move |v| SysvecRow {
                        cpu: c.cpu,
                        vector: SYSVEC_NAMES[v],
                        runs: c.sysvec_runs[v],
                        ns: c.sysvec_ns[v],
                        pct: pct(c.sysvec_ns[v], dur),
                    })
            })
            .collect();
        let unattributed = a
            .unattributed
            .iter()
            .map(|u| UnattributedRow {
                cpu: u.cpu,
                vec: u.vec,
                bucket: u.bucket.as_str(),
                ns: u.ns,
                pct: pct(u.ns, dur),
                softirq_share: share(u.ns, softirq_of.get(&u.cpu).copied().unwrap_or(0)),
            })
            .collect();

        let mut link_methods: Vec<&'static str> = a
            .napi
            .iter()
            .filter(|n| n.link.method.is_exact() || n.link.method == LinkMethod::CoOccurrence)
            .map(|n| n.link.method.as_str())
            .collect();
        link_methods.sort_unstable();
        link_methods.dedup();

        Report {
            meta: Meta {
                kernel: model.kernel.clone(),
                duration_s: secs,
                cpus_online: model.online_cpus().to_list_string(),
                methods: Methods {
                    probe: status.clone(),
                    netlink_links: netlink.clone(),
                    napi_irq_link: link_methods,
                },
                missing: status
                    .missing()
                    .into_iter()
                    .chain((!netlink.active).then(|| format!("netlink_links: {}", netlink.detail)))
                    .collect(),
                warnings: model.warnings.clone(),
                events: a.events.clone(),
                stat_irq_time,
                coverage: Coverage {
                    interrupts_measured: a.coverage(),
                    ..Coverage::default()
                },
            },
            cpus,
            irqs,
            softirqs,
            system_vectors,
            napi,
            unattributed,
            omitted,
        }
    }

    /// Text tables in the full layout, at most 100 columns wide.
    pub fn to_text(&self) -> String {
        self.to_text_width(FULL_WIDTH)
    }

    /// Text tables within `width` columns (80 at least): below [`FULL_WIDTH`] the tables
    /// narrow their columns, and prose breaks between words.
    pub fn to_text_width(&self, width: usize) -> String {
        let width = width.max(crate::output::MIN_COLUMNS);
        let mut o = String::new();
        let m = &self.meta;
        para(
            &mut o,
            &format!(
                "balancer report: {:.1} s on kernel {}, CPUs {}",
                m.duration_s,
                m.kernel.as_deref().unwrap_or("?"),
                m.cpus_online
            ),
            width,
        );
        let on: Vec<&str> = [
            ("hardirq", &m.methods.probe.hardirq),
            ("softirq", &m.methods.probe.softirq),
            ("napi", &m.methods.probe.napi),
        ]
        .iter()
        .filter(|(_, f)| f.active)
        .map(|(n, _)| *n)
        .collect();
        para(
            &mut o,
            &format!(
                "measured: {} ({} programs); NAPI->IRQ links used: {}",
                if on.is_empty() {
                    "nothing".to_string()
                } else {
                    on.join(", ")
                },
                m.methods.probe.programs,
                if m.methods.napi_irq_link.is_empty() {
                    "none".to_string()
                } else {
                    m.methods.napi_irq_link.join(", ")
                }
            ),
            width,
        );
        for line in &m.missing {
            para(&mut o, &format!("not measured: {line}"), width);
        }
        if !m.stat_irq_time {
            para(
                &mut o,
                "/proc/stat counts no IRQ or softirq time on this kernel (no \
                 IRQ_TIME_ACCOUNTING): STAT columns stay 0 and the measured columns are the \
                 only measure.",
                width,
            );
        }
        let c = &m.coverage;
        let misses: u64 = c.recursion_misses.values().sum();
        para(
            &mut o,
            &format!(
                "coverage: {}; {misses} events skipped by the kernel (BPF recursion)",
                c.interrupts_measured.map_or_else(
                    || "no IRQ fired".to_string(),
                    |f| format!("measured {:.1}% of interrupts", f * 100.0)
                ),
            ),
            width,
        );
        para(
            &mut o,
            &format!(
                "probe cost: {:.2}% of one CPU; {}",
                c.probe_cost.cpu_pct, c.probe_cost.method
            ),
            width,
        );
        for e in &m.events {
            para(&mut o, &format!("event: {e}"), width);
        }
        for w in &m.warnings {
            para(&mut o, &format!("warning: {w}"), width);
        }

        self.cpu_table(&mut o, width);
        self.irq_table(&mut o, width);
        self.napi_table(&mut o, width);
        self.unattributed_table(&mut o);
        self.sysvec_table(&mut o);
        o
    }

    fn sysvec_table(&self, o: &mut String) {
        if self.system_vectors.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "\nSystem vectors (local timer, IPIs): hardirq time that is no IRQ's, % of each CPU"
        );
        let _ = writeln!(
            o,
            "{:>4} {:<22} {:>10} {:>7}",
            "CPU", "VECTOR", "RUNS/s", "CPU%"
        );
        let secs = self.meta.duration_s.max(1e-9);
        for r in &self.system_vectors {
            let _ = writeln!(
                o,
                "{:>4} {:<22} {:>10.0} {:>7.3}",
                r.cpu,
                r.vector,
                r.runs as f64 / secs,
                r.pct
            );
        }
    }

    fn cpu_table(&self, o: &mut String, width: usize) {
        if width < FULL_WIDTH {
            return self.cpu_table_narrow(o);
        }
        let _ = writeln!(o, "\nCPUs: % of each CPU's time");
        let _ = writeln!(
            o,
            "{:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6} | {:>7} {:>7} {:>6}",
            "CPU",
            "NODE",
            "HARDIRQ",
            "SOFTIRQ",
            "NET_RX",
            "NET_TX",
            "TIMER",
            "SCHED",
            "RCU",
            "OTHER",
            "STATIRQ",
            "STATSI",
            "BUSY"
        );
        for c in &self.cpus {
            let v = |name: &str| c.softirq_pct.get(name).copied().unwrap_or(0.0);
            let named = v("NET_RX") + v("NET_TX") + v("TIMER") + v("SCHED") + v("RCU");
            let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
            let _ = writeln!(
                o,
                "{:>4} {:>4} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} | \
                 {:>7} {:>7} {:>6}{}",
                c.cpu,
                c.node.map_or("-".to_string(), |n| n.to_string()),
                c.hardirq_pct,
                c.softirq_total_pct,
                v("NET_RX"),
                v("NET_TX"),
                v("TIMER"),
                v("SCHED"),
                v("RCU"),
                (c.softirq_total_pct - named).max(0.0),
                opt(c.stat_hardirq_pct),
                opt(c.stat_softirq_pct),
                opt(c.busy_pct),
                if c.online { "" } else { " offline" }
            );
        }
    }

    /// The CPU table in 80 columns: TIMER, SCHED and RCU go into OTHER.
    fn cpu_table_narrow(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\nCPUs: % of each CPU's time (OTHER: softirqs but NET_RX and NET_TX)"
        );
        let _ = writeln!(
            o,
            "{:>4} {:>2} {:>7} {:>7} {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}",
            "CPU",
            "ND",
            "HARDIRQ",
            "SOFTIRQ",
            "NET_RX",
            "NET_TX",
            "OTHER",
            "STATIRQ",
            "STATSI",
            "BUSY"
        );
        for c in &self.cpus {
            let v = |name: &str| c.softirq_pct.get(name).copied().unwrap_or(0.0);
            let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
            let _ = writeln!(
                o,
                "{:>4} {:>2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6.2} | {:>7} {:>7} {:>6}{}",
                c.cpu,
                c.node.map_or("-".to_string(), |n| n.to_string()),
                c.hardirq_pct,
                c.softirq_total_pct,
                v("NET_RX"),
                v("NET_TX"),
                (c.softirq_total_pct - v("NET_RX") - v("NET_TX")).max(0.0),
                opt(c.stat_hardirq_pct),
                opt(c.stat_softirq_pct),
                opt(c.busy_pct),
                if c.online { "" } else { " offline" }
            );
        }
    }

    fn irq_table(&self, o: &mut String, width: usize) {
        let _ = writeln!(
            o,
            "\nIRQs by real CPU time (% of one CPU){}",
            if self.omitted.irqs > 0 {
                format!(", {} quieter IRQs not shown", self.omitted.irqs)
            } else {
                String::new()
            }
        );
        if width < FULL_WIDTH {
            self.irq_rows_narrow(o, width);
        } else {
            self.irq_rows_full(o);
        }
        para(
            o,
            "INTR% is each IRQ's share of interrupts, what a count-based balancer weighs; \
             TIME% its share of real IRQ time: handler plus the NET_RX softirq time it caused.",
            width,
        );
    }

    fn irq_rows_full(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "{:>4} {:<16} {:<19} {:>2} {:<9} {:<4} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6}",
            "IRQ",
            "NAME",
            "DEVICE",
            "ND",
            "AFFINITY",
            "EFF",
            "IRQ/s",
            "HARD%",
            "SOFT%",
            "TOTAL%",
            "INTR%",
            "TIME%"
        );
        for r in &self.irqs {
            let dev = device_label(r);
            let _ = writeln!(
                o,
                "{:>4} {:<16} {:<19} {:>2} {:<9} {:<4} {:>6} {:>6.2} {:>6.2} {:>6.2} {:>5.1} {:>6.1}",
                r.irq,
                fit(&r.name, 16),
                fit(&dev, 19),
                r.node.map_or("-".to_string(), |n| n.to_string()),
                fit(r.smp_affinity.as_deref().unwrap_or("-"), 9),
                fit(r.effective_affinity.as_deref().unwrap_or("-"), 4),
                si(r.interrupts_per_s),
                r.hardirq_pct,
                r.softirq_pct,
                r.weight_pct,
                r.interrupt_share * 100.0,
                r.time_share * 100.0
            );
        }
    }

    /// IRQ rows in `width` columns, as `balancer top` narrows them: INTR% and TIME% stay,
    /// TOTAL% (HARD% + SOFT%) goes, affinities narrow, NAME and DEVICE share what is left
    /// and DEVICE shows only the queue where the whole label does not fit.
    fn irq_rows_narrow(&self, o: &mut String, width: usize) {
        // IRQ ND AFF EFF IRQ/s HARD% SOFT% INTR% TIME% and the 10 spaces between 11 columns.
        const FIXED: usize = 4 + 2 + 5 + 3 + 6 + 6 + 6 + 5 + 6 + 10;
        let flex = width.saturating_sub(FIXED).max(2);
        let name_w = flex * 3 / 5;
        let dev_w = flex - name_w;
        let _ = writeln!(
            o,
            "{:>4} {:<name_w$} {:<dev_w$} {:>2} {:<5} {:<3} {:>6} {:>6} {:>6} {:>5} {:>6}",
            "IRQ",
            "NAME",
            fit("DEVICE", dev_w),
            "ND",
            "AFF",
            "EFF",
            "IRQ/s",
            "HARD%",
            "SOFT%",
            "INTR%",
            "TIME%"
        );
        for r in &self.irqs {
            let mut dev = device_label(r);
            if dev.chars().count() > dev_w && r.netdev.is_some() {
                // device_label puts the queue after the PCI address.
                dev = dev.rsplit(' ').next().unwrap_or(&dev).to_string();
            }
            let _ = writeln!(
                o,
                "{:>4} {:<name_w$} {:<dev_w$} {:>2} {:<5} {:<3} {:>6} {:>6.2} {:>6.2} {:>5.1} {:>6.1}",
                r.irq,
                fit(&r.name, name_w),
                fit(&dev, dev_w),
                fit(&r.node.map_or("-".to_string(), |n| n.to_string()), 2),
                fit(r.smp_affinity.as_deref().unwrap_or("-"), 5),
                fit(r.effective_affinity.as_deref().unwrap_or("-"), 3),
                si(r.interrupts_per_s),
                r.hardirq_pct,
                r.softirq_pct,
                r.interrupt_share * 100.0,
                r.time_share * 100.0
            );
        }
    }

    fn napi_table(&self, o: &mut String, width: usize) {
        if self.napi.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "\nNAPI instances{}",
            if self.omitted.napi > 0 {
                format!(", {} quieter not shown", self.omitted.napi)
            } else {
                String::new()
            }
        );
        // Narrow: shorter id, device and link columns; CPUS takes the rest of the line.
        let narrow = width < FULL_WIDTH;
        let (id_w, dev_w, link_w) = if narrow { (6, 10, 9) } else { (8, 12, 13) };
        let _ = writeln!(
            o,
            "{:>id_w$} {:<dev_w$} {:>4} {:<link_w$} {:>7} {:>7} {:>5} {:>6} {:>6}  CPUS",
            "NAPI_ID", "DEVICE", "IRQ", "LINK", "PKT/s", "POLLS/s", "FULL%", "CPU%", "TASK%"
        );
        let mut task_time = false;
        let secs = self.meta.duration_s;
        for n in &self.napi {
            let cpus: Vec<String> = n
                .cpus
                .iter()
                .filter(|c| c.share >= 0.005)
                .map(|c| format!("{}:{:.0}%", c.cpu, c.share * 100.0))
                .collect();
            let row = format!(
                "{:>id_w$} {:<dev_w$} {:>4} {:<link_w$} {:>7} {:>7} {:>5.1} {:>6.2} {:>6}  ",
                fit(&n.napi_id.map_or("-".to_string(), |i| i.to_string()), id_w),
                fit(&n.device, dev_w),
                n.irq.map_or("-".to_string(), |i| i.to_string()),
                fit(n.link, link_w),
                si(n.packets_per_s),
                si(if secs > 0.0 {
                    n.polls as f64 / secs
                } else {
                    0.0
                }),
                n.budget_exhausted_share * 100.0,
                n.pct,
                task_pct(n),
            );
            let cpus_w = if narrow {
                width.saturating_sub(row.chars().count())
            } else {
                30
            };
            let _ = writeln!(o, "{row}{}", fit(&cpus.join(" "), cpus_w));
            task_time |= n.threaded_ns + n.busy_poll_ns > 0;
        }
        if task_time {
            para(
                o,
                "TASK%: poll time in NAPI kthreads (T) and busy-poll loops (B), % of one CPU: \
                 task time, counted to the instance's IRQ apart from its softirq time and in \
                 no CPU's softirq split",
                width,
            );
        }
    }

    fn unattributed_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\nSoftirq time per CPU: attributed to IRQs + unattributed"
        );
        let _ = writeln!(
            o,
            "{:>4} {:<8} {:<17} {:>7} {:>10}",
            "CPU", "VECTOR", "TO", "CPU%", "OF SOFTIRQ"
        );
        for c in self.cpus.iter().filter(|c| c.softirq_total_pct > 0.0) {
            let of = |p: f64| {
                if c.softirq_total_pct > 0.0 {
                    p * 100.0 / c.softirq_total_pct
                } else {
                    0.0
                }
            };
            if c.softirq_to_irqs_pct > 0.0 {
                let _ = writeln!(
                    o,
                    "{:>4} {:<8} {:<17} {:>7.2} {:>9.1}%",
                    c.cpu,
                    SOFTIRQ_NAMES[NET_RX_SOFTIRQ as usize],
                    "IRQs (NAPI polls)",
                    c.softirq_to_irqs_pct,
                    of(c.softirq_to_irqs_pct)
                );
            }
            for u in self.unattributed.iter().filter(|u| u.cpu == c.cpu) {
                let _ = writeln!(
                    o,
                    "{:>4} {:<8} {:<17} {:>7.2} {:>9.1}%",
                    u.cpu,
                    u.vec,
                    if u.bucket == "vector" {
                        "(whole vector)"
                    } else {
                        u.bucket
                    },
                    u.pct,
                    u.softirq_share * 100.0
                );
            }
            let sum = c.softirq_to_irqs_pct + c.softirq_unattributed_pct;
            let _ = writeln!(
                o,
                "{:>4} {:<8} {:<17} {:>7.2} {:>9.1}%",
                c.cpu,
                "all",
                "sum",
                sum,
                of(sum)
            );
        }
    }
}

/// "00:03.0 eth0/rx0": the short PCI address (domain 0000 left out) and the queue.
pub(crate) fn device_label(r: &IrqRow) -> String {
    let dev = r
        .device
        .as_deref()
        .map(|d| d.strip_prefix("0000:").unwrap_or(d).to_string());
    let queue = match (&r.netdev, r.queue, r.queue_kind) {
        (Some(nd), Some(q), Some(kind)) => Some(format!("{nd}/{}{q}", kind_prefix(kind))),
        (Some(nd), _, _) => Some(nd.clone()),
        _ => None,
    };
    match (dev, queue) {
        (Some(d), Some(q)) => format!("{d} {q}"),
        (Some(d), None) => d,
        (None, Some(q)) => q,
        (None, None) => "-".to_string(),
    }
}

fn kind_prefix(kind: QueueKind) -> &'static str {
    match kind {
        QueueKind::Rx => "rx",
        QueueKind::Tx => "tx",
        QueueKind::RxTx => "q",
        _ => "",
    }
}

/// The width of the full text layout, the one piped output and `--wide` get.
pub const FULL_WIDTH: usize = 100;

/// Writes `text` as lines of at most `width` columns, broken between words (a word longer
/// than a line is cut).
fn para(o: &mut String, text: &str, width: usize) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            let _ = writeln!(o, "{}", fit(&line, width));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    let _ = writeln!(o, "{}", fit(&line, width));
}

/// Cuts `s` to `width` characters, marking the cut.
pub(crate) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// 1234567 -> "1.2M", with at most 6 characters.
pub(crate) fn si(x: f64) -> String {
    if x < 1_000.0 {
        format!("{x:.0}")
    } else if x < 1_000_000.0 {
        format!("{:.1}k", x / 1e3)
    } else if x < 1e9 {
        format!("{:.1}M", x / 1e6)
    } else {
        format!("{:.1}G", x / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::testdata;

    /// As on a kernel without napi:napi_poll.
    fn status() -> ProbeStatus {
        ProbeStatus {
            napi: crate::probe::Feature {
                active: false,
                detail: "tracepoint napi:napi_poll not in this kernel".into(),
            },
            ..testdata::status()
        }
    }

    fn report(top: Option<usize>) -> Report {
        let (a, model) = testdata::attribution();
        Report::build(
            &a,
            &model,
            &status(),
            &testdata::netlink_status(),
            false,
            top,
        )
    }

    #[test]
    fn irqs_sort_by_real_time_with_both_shares() {
        let r = report(None);
        let order: Vec<u32> = r.irqs.iter().map(|i| i.irq).collect();
        assert_eq!(
            order,
            vec![36, 38],
            "quiet IRQs are left out, heaviest first"
        );
        let q0 = &r.irqs[0];
        assert_eq!(q0.name, "virtio1-input.0");
        assert_eq!(q0.netdev.as_deref(), Some("eth1"));
        assert_eq!((q0.queue, q0.queue_kind), (Some(0), Some(QueueKind::Rx)));
        assert_eq!(q0.node, Some(1));
        assert!((q0.interrupt_share - 0.1).abs() < 1e-9);
        assert!((q0.time_share - 25.2 / 30.0).abs() < 1e-9);
        assert!((q0.weight_pct - 2.52).abs() < 1e-9);
        assert!((q0.interrupts_per_s - 100.0).abs() < 1e-9);
        assert_eq!(q0.cpus.len(), 2, "handled on CPU 0, polled on CPU 2");
    }

    #[test]
    fn napi_rows_say_link_and_where_they_polled() {
        let r = report(None);
        let x = r
            .napi
            .iter()
            .find(|n| n.device == "eth1" && n.irq == Some(36))
            .unwrap();
        assert_eq!(x.link, "exact");
        assert_eq!(x.cpus.len(), 1);
        assert_eq!(x.cpus[0].cpu, 2);
        assert!((x.cpus[0].share - 1.0).abs() < 1e-9);
        assert!((x.budget_exhausted_share - 0.1).abs() < 1e-9);
        let b = r.napi.iter().find(|n| n.device == "(no_device)").unwrap();
        assert_eq!((b.link, b.irq), ("backlog", None));
        assert_eq!(r.meta.methods.napi_irq_link, vec!["exact"]);
        // napi_poll reported missing in the status shows up in meta.missing.
        assert!(r.meta.missing.iter().any(|m| m.starts_with("napi:")));
    }

    /// Threaded and busy poll time is in the NAPI row, the IRQ row and the CPU row apart
    /// from softirq time, marked T and B in the text with a line saying where it went.
    #[test]
    fn task_poll_time_is_shown_apart() {
        let model = testdata::vm_model();
        let mut iv = testdata::interval();
        iv.napi.insert(
            (testdata::X, 1),
            crate::sample::NapiDelta {
                untimed_polls: 10,
                threaded_polls: 6,
                threaded_ns: iv.duration_ns / 50,
                busy_polls: 4,
                busy_ns: iv.duration_ns / 100,
                ..Default::default()
            },
        );
        let links = crate::attribution::Linker::default().links(&iv.napi_identity, &model);
        let a = Attribution::build(&iv, &model, &links);
        let r = Report::build(
            &a,
            &model,
            &status(),
            &testdata::netlink_status(),
            false,
            None,
        );
        let x = r.napi.iter().find(|n| n.irq == Some(36)).unwrap();
        assert_eq!((x.threaded_polls, x.busy_polls, x.untimed_polls), (6, 4, 0));
        assert!((x.threaded_pct - 2.0).abs() < 1e-9 && (x.busy_poll_pct - 1.0).abs() < 1e-9);
        assert_eq!(task_pct(x), "2.0T+1.0B");
        let irq = r.irqs.iter().find(|i| i.irq == 36).unwrap();
        assert_eq!(irq.threaded_ns, iv.duration_ns / 50);
        let cpu1 = r.cpus.iter().find(|c| c.cpu == 1).unwrap();
        assert!((cpu1.busy_poll_pct - 1.0).abs() < 1e-9);
        let text = r.to_text();
        assert!(text.contains("2.0T+1.0B"), "{text}");
        assert!(text.contains("in no CPU's softirq split"), "{text}");
        let narrow = r.to_text_width(80);
        assert!(narrow.contains("2.0T+1.0B"), "{narrow}");
        assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
        let v = serde_json::to_value(&r).unwrap();
        let row = v["napi"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["irq"] == 36)
            .unwrap();
        assert_eq!(row["busy_poll_ns"], iv.duration_ns / 100);
    }

    /// Links netlink made are named for their method and counted as used; a threaded
    /// instance's kthread pid is in its row; meta says whether netlink links were there.
    #[test]
    fn netlink_links_and_thread_pids_show() {
        use crate::{
            attribution::{Link, Linker, netlink_links},
            system::netdev::{NapiInfo, NetdevDump, QueueInfo, QueueType},
        };
        let model = testdata::vm_model();
        let mut iv = testdata::interval();
        for (key, napi_id) in [(testdata::X, 8193), (testdata::Y, 8194), (testdata::V, 300)] {
            let ident = iv.napi_identity.get_mut(&key).unwrap();
            ident.irq = None;
            ident.napi_id = Some(napi_id);
        }
        let info = |id, irq, pid| NapiInfo {
            ifindex: 3,
            id,
            irq,
            pid,
        };
        let dump = NetdevDump {
            napi: vec![
                info(8193, Some(36), None),
                info(8194, None, None),
                info(300, None, Some(4242)),
            ],
            queues: vec![QueueInfo {
                ifindex: 3,
                id: 1,
                kind: QueueType::Rx,
                napi_id: Some(8194),
            }],
        };
        iv.add_netdev(&dump);
        let links: BTreeMap<NapiKey, Link> =
            Linker::default().links_with(&iv.napi_identity, &model, &netlink_links(&dump, &model));
        let a = Attribution::build(&iv, &model, &links);
        let netlink = NetdevStatus::of_dump(&dump);
        let r = Report::build(&a, &model, &status(), &netlink, false, None);
        assert_eq!(r.meta.methods.napi_irq_link, vec!["napi-get", "queue-get"]);
        let v = serde_json::to_value(&r).unwrap();
        let row = |id: NapiKey| {
            v["napi"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["id"] == format!("{:#x}", id.napi))
                .unwrap()
                .clone()
        };
        assert_eq!(
            (
                row(testdata::X)["link"].clone(),
                row(testdata::X)["irq"].clone()
            ),
            ("napi-get".into(), 36.into())
        );
        assert_eq!(
            (
                row(testdata::Y)["link"].clone(),
                row(testdata::Y)["irq"].clone()
            ),
            ("queue-get".into(), 38.into())
        );
        assert_eq!(row(testdata::V)["thread_pid"], 4242);
        assert!(row(testdata::X).get("thread_pid").is_none());
        assert_eq!(v["meta"]["methods"]["netlink_links"]["active"], true);
        assert!(
            !r.meta
                .missing
                .iter()
                .any(|m| m.starts_with("netlink_links"))
        );
        let text = r.to_text();
        assert!(
            text.contains("NAPI->IRQ links used: napi-get, queue-get"),
            "{text}"
        );

        // Without the family, meta says why.
        let r = report(None);
        assert!(
            r.meta
                .missing
                .iter()
                .any(|m| m.starts_with("netlink_links: "))
        );
        assert!(!r.meta.methods.netlink_links.active);
    }

    #[test]
    fn per_cpu_softirq_splits_add_up() {
        let r = report(None);
        for c in &r.cpus {
            let sum = c.softirq_to_irqs_pct + c.softirq_unattributed_pct;
            assert!((sum - c.softirq_total_pct).abs() < 1e-9, "CPU {}", c.cpu);
        }
        let cpu2 = r.cpus.iter().find(|c| c.cpu == 2).unwrap();
        assert!((cpu2.softirq_pct["NET_RX"] - 3.0).abs() < 1e-9);
        assert!((cpu2.softirq_to_irqs_pct - 2.5).abs() < 1e-9);
        let shares: f64 = r
            .unattributed
            .iter()
            .filter(|u| u.cpu == 2)
            .map(|u| u.softirq_share)
            .sum();
        assert!((shares - 5.0 / 30.0).abs() < 1e-9);
    }

    #[test]
    fn top_limits_and_counts_what_it_left_out() {
        let r = report(Some(1));
        assert_eq!(r.irqs.len(), 1);
        assert_eq!(r.omitted.irqs, 1);
        assert_eq!(r.napi.len(), 1);
        assert_eq!(r.omitted.napi, 3);
        assert!(r.to_text().contains("1 quieter IRQs not shown"));
    }

    #[test]
    fn text_fits_100_columns_and_names_what_is_missing() {
        let text = report(None).to_text();
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
        assert!(text.contains("not measured: napi: tracepoint napi:napi_poll"));
        assert!(text.contains("no IRQ_TIME_ACCOUNTING"));
        let irq_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("36 "))
            .unwrap();
        assert!(irq_line.contains("virtio1-input.0"), "{irq_line}");
        assert!(irq_line.contains("81:00.0 eth1/rx0"), "{irq_line}");
        assert!(text.contains("(whole vector)") && text.contains("net-rx-overhead"));
    }

    /// At 80 columns (and between 80 and the full width) every line fits and the IRQ table
    /// keeps INTR% and TIME%, whose values are the full layout's.
    #[test]
    fn text_fits_80_columns_with_both_shares() {
        let r = report(None);
        let full = r.to_text();
        for width in [80, 90, 99] {
            let text = r.to_text_width(width);
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            let head = text
                .lines()
                .find(|l| l.trim_start().starts_with("IRQ "))
                .unwrap();
            assert!(head.ends_with("INTR%  TIME%"), "{head}");
            let row = |t: &str| {
                t.lines()
                    .find(|l| l.trim_start().starts_with("36 "))
                    .unwrap()
                    .split_whitespace()
                    .rev()
                    .take(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                row(&text),
                row(&full),
                "{width}: INTR% and TIME% as in full"
            );
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("36 "))
                .unwrap();
            assert!(
                line.contains("eth1/rx0"),
                "{width}: the queue stays: {line}"
            );
            assert!(text.contains("(whole vector)") && text.contains("INTR% is each"));
        }
        // Below 80 the layout stays at 80.
        assert_eq!(r.to_text_width(40), r.to_text_width(80));
        assert_eq!(r.to_text_width(FULL_WIDTH), full);
    }

    #[test]
    fn para_breaks_between_words() {
        let mut o = String::new();
        para(&mut o, "aaa bbb ccc", 7);
        assert_eq!(o, "aaa bbb\nccc\n");
        let mut o = String::new();
        para(&mut o, "abcdefghij x", 5);
        assert_eq!(o, "abcd~\nx\n");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = serde_json::to_value(report(None)).unwrap();
        for key in ["meta", "cpus", "irqs", "softirqs", "napi", "unattributed"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["irqs"][0]["irq"], 36);
        assert_eq!(v["irqs"][0]["queue_kind"], "rx");
        assert_eq!(v["napi"][0]["link"], "exact");
        assert_eq!(v["meta"]["methods"]["napi"]["active"], false);
        assert!(v["unattributed"][0]["bucket"].is_string());
        let vec = v["softirqs"].as_array().unwrap();
        assert!(
            vec.iter()
                .any(|s| s["vec"] == "NET_RX" && s["raises"] == 10)
        );
    }

    #[test]
    fn fit_and_si_stay_narrow() {
        assert_eq!(fit("mlx5_comp12@pci:0000:3b:00.0", 16), "mlx5_comp12@pci~");
        assert_eq!(fit("eth0", 16), "eth0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(2_500_000.0), "2.5M");
    }
}
