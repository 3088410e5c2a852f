//! The report view: where interrupt time really went, for `balancer report`, `top` and the
//! metrics.
//!
//! One [`Report`] value is built from the attribution and rendered either as JSON or as text
//! tables that fit 100 columns, so both outputs always say the same thing.
use std::{collections::BTreeMap, fmt::Write as _};

use balancer_common::NapiKey;
use serde::Serialize;

use crate::{
    attribution::{Attribution, Bucket, IrqLoad, LinkMethod},
    cpumask::CpuSet,
    probe::ProbeStatus,
    system::{QueueKind, SystemModel, netdev::NetdevStatus},
    table::{Column, Table, fit, si},
    vector::{PerSoftirq, Softirq, SysVector},
};

/// What the probes missed and cost over `iv`. The cost comes from `kernel.bpf_stats` when it
/// is on (program time only: dispatch not included, said so), else from the events counted
/// times the benchmark's end-to-end cost per event.
pub(crate) fn coverage(
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
        unpaired_handler_events: iv.probe_errors[balancer_common::ERR_UNPAIRED_HANDLER as usize],
        napi_pruned: 0,
        probe_cost,
    }
}

/// Methods and conditions of the measurement.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Meta {
    pub(crate) kernel: Option<String>,
    pub(crate) duration_s: f64,
    pub(crate) cpus_online: String,
    methods: Methods,
    /// Parts that could not run, with the reason.
    pub(crate) missing: Vec<String>,
    warnings: Vec<String>,
    /// IRQs appearing or vanishing, CPUs going on- or offline during the sample.
    pub(crate) events: Vec<String>,
    /// Whether /proc/stat has counted any IRQ or softirq time since boot: kernels without
    /// CONFIG_IRQ_TIME_ACCOUNTING (Debian's cloud kernels) never do.
    stat_irq_time: bool,
    pub(crate) coverage: Coverage,
}

#[derive(Clone, Debug, Serialize)]
struct Methods {
    /// What the probes measure and how, as keys of their own in `methods`.
    #[serde(flatten)]
    probe: ProbeStatus,
    /// The netdev generic netlink family (napi-get, queue-get): whether its exact links
    /// (and threaded NAPI's kthread pids) were available, and why not.
    netlink_links: NetdevStatus,
    /// Link methods the NAPI instances of this report actually used, by name.
    napi_irq_link: Vec<LinkMethod>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct CpuRow {
    pub(crate) cpu: u32,
    pub(crate) node: Option<u32>,
    pub(crate) online: bool,
    pub(crate) hardirq_pct: f64,
    /// Per softirq vector (an object keyed by vector name).
    pub(crate) softirq_pct: PerSoftirq<f64>,
    pub(crate) softirq_total_pct: f64,
    /// Of the softirq time: the part attributed to IRQs and the part in named buckets.
    softirq_to_irqs_pct: f64,
    softirq_unattributed_pct: f64,
    /// What /proc/stat claims for the same interval; null without a /proc/stat row.
    stat_hardirq_pct: Option<f64>,
    stat_softirq_pct: Option<f64>,
    pub(crate) busy_pct: Option<f64>,
    /// Poll time in NAPI kthreads and busy-poll loops on this CPU, % of the CPU: task time,
    /// in none of the softirq figures above.
    threaded_pct: f64,
    busy_poll_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct IrqCpuRow {
    pub(crate) cpu: u32,
    pub(crate) interrupts: u64,
    pub(crate) hardirq_ns: u64,
    pub(crate) softirq_ns: u64,
    /// Its instances' polls in NAPI kthreads and busy-poll loops (task time, not softirq).
    threaded_ns: u64,
    busy_poll_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct IrqRow {
    pub(crate) irq: u32,
    /// Action names, comma-separated.
    pub(crate) name: String,
    pub(crate) chip: Option<String>,
    pub(crate) device: Option<String>,
    netdev: Option<String>,
    queue: Option<u32>,
    queue_kind: Option<QueueKind>,
    pub(crate) node: Option<u32>,
    /// As cpulists.
    pub(crate) smp_affinity: Option<CpuSet>,
    pub(crate) effective_affinity: Option<CpuSet>,
    pub(crate) interrupts: u64,
    pub(crate) interrupts_per_s: f64,
    pub(crate) hardirq_ns: u64,
    pub(crate) softirq_ns: u64,
    /// Poll time of its instances in NAPI kthreads and busy-poll loops: task time, apart
    /// from `softirq_ns` and not in `weight_ns` (moving the IRQ does not move it).
    threaded_ns: u64,
    busy_poll_ns: u64,
    pub(crate) weight_ns: u64,
    /// Time as % of one CPU over the interval.
    pub(crate) hardirq_pct: f64,
    pub(crate) softirq_pct: f64,
    pub(crate) weight_pct: f64,
    /// Share of all interrupts (what count-based balancers weigh) versus share of real time.
    pub(crate) interrupt_share: f64,
    pub(crate) time_share: f64,
    /// napi_id (or kernel address) of linked NAPI instances.
    napi: Vec<String>,
    pub(crate) cpus: Vec<IrqCpuRow>,
}

#[derive(Clone, Debug, Serialize)]
struct SoftirqRow {
    cpu: u32,
    vec: Softirq,
    raises: u64,
    runs: u64,
    ns: u64,
    pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct SysvecRow {
    pub(crate) cpu: u32,
    /// Serialised as the `irq_vectors:` tracepoint's name.
    pub(crate) vector: SysVector,
    pub(crate) runs: u64,
    ns: u64,
    pub(crate) pct: f64,
}

/// How much of what happened the probes saw, and what they cost.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Coverage {
    /// Share of `/proc/interrupts`' interrupts whose handler run the probes saw (each IRQ's
    /// runs capped at its interrupts); null when no IRQ fired.
    pub(crate) interrupts_measured: Option<f64>,
    /// Per event, runs the kernel skipped since the probes were attached because a BPF
    /// program was already running on that CPU (`bpf_prog_info.recursion_misses`).
    pub(crate) recursion_misses: BTreeMap<String, u64>,
    /// NET_RX softirqs raised by more than two IRQs: their polls paired with none.
    pub(crate) ambiguous_netrx_raises: u64,
    /// Handler entries or exits that did not pair (an entry while another's was open, an
    /// exit without its entry): each is a handler run not counted.
    pub(crate) unpaired_handler_events: u64,
    /// NAPI instances deleted from the probe's map after they stopped polling.
    pub(crate) napi_pruned: u64,
    pub(crate) probe_cost: ProbeCost,
}

/// What the probes cost over the interval, as % of one CPU (summed over CPUs).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ProbeCost {
    cpu_pct: f64,
    /// How it was obtained: `kernel.bpf_stats` (program run time only, no dispatch) or an
    /// estimate from the events counted times the benchmark's end-to-end cost per event.
    method: String,
}

#[derive(Clone, Debug, Serialize)]
struct NapiCpuRow {
    cpu: u32,
    polls: u64,
    ns: u64,
    /// Of the polls that were the first of their NET_RX round: packets and time as measured;
    /// and what sharing the rounds' preambles by packets changed `ns` by.
    first_poll_packets: u64,
    first_poll_ns: u64,
    preamble_ns: i64,
    threaded_ns: u64,
    busy_poll_ns: u64,
    /// Share of the instance's poll time (of its polls when no time was measured).
    share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct NapiRow {
    /// Kernel address of the napi_struct, hex.
    pub(crate) id: String,
    pub(crate) napi_id: Option<u32>,
    pub(crate) device: String,
    pub(crate) irq: Option<u32>,
    pub(crate) link: LinkMethod,
    link_evidence: u64,
    link_confidence: f64,
    /// The poll kthread of threaded NAPI (netlink napi-get), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) thread_pid: Option<u32>,
    pub(crate) polls: u64,
    packets: u64,
    pub(crate) packets_per_s: f64,
    pub(crate) budget_exhausted_share: f64,
    /// Polls that got no time: outside NET_RX softirq with no start mark (see meta's
    /// threaded_napi and busy_poll).
    untimed_polls: u64,
    /// Poll time in NET_RX softirqs.
    ns: u64,
    pub(crate) pct: f64,
    /// Polls in the instance's NAPI kthread, and their time (task time, not softirq).
    threaded_polls: u64,
    pub(crate) threaded_ns: u64,
    pub(crate) threaded_pct: f64,
    /// Busy polls by tasks in a busy-poll loop, and their time (task time, not softirq).
    busy_polls: u64,
    pub(crate) busy_poll_ns: u64,
    pub(crate) busy_poll_pct: f64,
    cpus: Vec<NapiCpuRow>,
}

#[derive(Clone, Debug, Serialize)]
struct UnattributedRow {
    cpu: u32,
    vec: Softirq,
    bucket: Bucket,
    ns: u64,
    /// % of the CPU.
    pct: f64,
    /// % of the CPU's softirq time.
    softirq_share: f64,
}

/// Everything the report says.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub(crate) meta: Meta,
    pub(crate) cpus: Vec<CpuRow>,
    pub(crate) irqs: Vec<IrqRow>,
    softirqs: Vec<SoftirqRow>,
    /// x86 system vectors (local timer, IPIs) per CPU: hardirq time that is no IRQ's.
    pub(crate) system_vectors: Vec<SysvecRow>,
    pub(crate) napi: Vec<NapiRow>,
    unattributed: Vec<UnattributedRow>,
    /// IRQs and NAPI instances left out by --top.
    omitted: Omitted,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Omitted {
    irqs: usize,
    napi: usize,
}

/// The TASK% cell: threaded (T) and busy-poll (B) time, `-` for none.
pub(crate) fn task_pct(n: &NapiRow) -> String {
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

/// `ns` as % of `of` ns.
pub(crate) fn pct(ns: u64, of: u64) -> f64 {
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

/// `x` with `decimals` places, the way the text tables print their figures.
fn num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

fn opt_num<T: ToString>(x: Option<T>) -> String {
    x.map_or_else(|| "-".to_string(), |x| x.to_string())
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
        let mut irqs = irq_rows(a, model);
        let mut napi = napi_rows(a);
        let mut omitted = Omitted::default();
        if let Some(n) = top {
            omitted.irqs = irqs.len().saturating_sub(n);
            irqs.truncate(n);
            omitted.napi = napi.len().saturating_sub(n);
            napi.truncate(n);
        }
        let mut link_methods: Vec<LinkMethod> = a
            .napi
            .iter()
            .map(|n| n.link.method)
            .filter(|m| m.is_exact() || *m == LinkMethod::CoOccurrence)
            .collect();
        // By name, as the JSON has always listed them.
        link_methods.sort_unstable_by_key(|m| m.as_str());
        link_methods.dedup();

        Report {
            meta: Meta {
                kernel: model.kernel.clone(),
                duration_s: a.duration_ns as f64 / 1e9,
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
            cpus: cpu_rows(a),
            irqs,
            softirqs: softirq_rows(a),
            system_vectors: sysvec_rows(a),
            napi,
            unattributed: unattributed_rows(a),
            omitted,
        }
    }
}

/// Per second over the interval of `a`.
fn per_s(a: &Attribution, n: u64) -> f64 {
    let secs = a.duration_ns as f64 / 1e9;
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn cpu_rows(a: &Attribution) -> Vec<CpuRow> {
    let dur = a.duration_ns;
    a.cpus
        .iter()
        .map(|c| {
            let stat_pct = |v: Option<u64>| v.zip(c.stat_total_ns).map(|(v, t)| pct(v, t));
            CpuRow {
                cpu: c.cpu,
                node: c.node,
                online: c.online,
                hardirq_pct: pct(c.hardirq_ns, dur),
                softirq_pct: PerSoftirq::from_fn(|v| pct(c.softirq_ns[v.index()], dur)),
                softirq_total_pct: pct(c.softirq_total_ns(), dur),
                softirq_to_irqs_pct: pct(a.attributed_softirq_ns(c.cpu), dur),
                softirq_unattributed_pct: pct(a.unattributed_ns(c.cpu), dur),
                stat_hardirq_pct: stat_pct(c.stat_irq_ns),
                stat_softirq_pct: stat_pct(c.stat_softirq_ns),
                busy_pct: stat_pct(c.stat_busy_ns),
                threaded_pct: pct(c.threaded_ns, dur),
                busy_poll_pct: pct(c.busy_poll_ns, dur),
            }
        })
        .collect()
}

/// Active IRQs, heaviest first.
fn irq_rows(a: &Attribution, model: &SystemModel) -> Vec<IrqRow> {
    let dur = a.duration_ns;
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
    loads
        .iter()
        .map(|l| {
            let info = model.irqs.get(&l.irq);
            let queue = info.and_then(|i| i.queue.as_ref());
            IrqRow {
                irq: l.irq,
                name: info.map(|i| i.actions.join(",")).unwrap_or_default(),
                chip: info.map(|i| i.chip.clone()),
                device: info.and_then(|i| i.device.clone()),
                netdev: info.and_then(|i| i.netdev.clone()),
                queue: queue.map(|q| q.index),
                queue_kind: queue.map(|q| q.kind),
                node: info.and_then(|i| i.node),
                smp_affinity: info.and_then(|i| i.smp_affinity.clone()),
                effective_affinity: info.and_then(|i| i.effective_affinity.clone()),
                interrupts: l.interrupts,
                interrupts_per_s: per_s(a, l.interrupts),
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
        .collect()
}

/// NAPI instances, most poll time (in any context) first.
fn napi_rows(a: &Attribution) -> Vec<NapiRow> {
    let dur = a.duration_ns;
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
                link: n.link.method,
                link_evidence: n.link.evidence,
                link_confidence: n.link.confidence,
                thread_pid: n.thread_pid,
                polls: t.all_polls(),
                packets: t.packets,
                packets_per_s: per_s(a, t.packets),
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
                        first_poll_packets: c.first_poll_packets,
                        first_poll_ns: c.first_poll_ns,
                        preamble_ns: c.preamble_ns,
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
    napi
}

fn softirq_rows(a: &Attribution) -> Vec<SoftirqRow> {
    a.cpus
        .iter()
        .flat_map(|c| {
            Softirq::ALL
                .into_iter()
                .filter(|v| c.softirq_ns[v.index()] + c.softirq_raises[v.index()] > 0)
                .map(move |v| SoftirqRow {
                    cpu: c.cpu,
                    vec: v,
                    raises: c.softirq_raises[v.index()],
                    runs: c.softirq_runs[v.index()],
                    ns: c.softirq_ns[v.index()],
                    pct: pct(c.softirq_ns[v.index()], a.duration_ns),
                })
        })
        .collect()
}

fn sysvec_rows(a: &Attribution) -> Vec<SysvecRow> {
    a.cpus
        .iter()
        .flat_map(|c| {
            SysVector::ALL
                .into_iter()
                .filter(|v| c.sysvec_runs[v.index()] > 0)
                .map(move |v| SysvecRow {
                    cpu: c.cpu,
                    vector: v,
                    runs: c.sysvec_runs[v.index()],
                    ns: c.sysvec_ns[v.index()],
                    pct: pct(c.sysvec_ns[v.index()], a.duration_ns),
                })
        })
        .collect()
}

fn unattributed_rows(a: &Attribution) -> Vec<UnattributedRow> {
    let softirq_of: BTreeMap<u32, u64> = a
        .cpus
        .iter()
        .map(|c| (c.cpu, c.softirq_total_ns()))
        .collect();
    a.unattributed
        .iter()
        .map(|u| UnattributedRow {
            cpu: u.cpu,
            vec: u.vec,
            bucket: u.bucket,
            ns: u.ns,
            pct: pct(u.ns, a.duration_ns),
            softirq_share: share(u.ns, softirq_of.get(&u.cpu).copied().unwrap_or(0)),
        })
        .collect()
}

impl Report {
    /// Text tables in the full layout, at most 100 columns wide.
    #[cfg(test)]
    fn to_text(&self) -> String {
        self.to_text_width(FULL_WIDTH)
    }

    /// Text tables within `width` columns (80 at least): below [`FULL_WIDTH`] the tables
    /// narrow their columns, and prose breaks between words.
    pub(crate) fn to_text_width(&self, width: usize) -> String {
        let width = width.max(crate::output::MIN_COLUMNS);
        let mut o = String::new();
        self.meta_text(&mut o, width);
        self.cpu_table(&mut o, width);
        self.irq_table(&mut o, width);
        self.napi_table(&mut o, width);
        self.unattributed_table(&mut o, width);
        self.sysvec_table(&mut o, width);
        o
    }

    /// What was measured and how, what was not, and what happened.
    fn meta_text(&self, o: &mut String, width: usize) {
        let m = &self.meta;
        para(
            o,
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
        let links: Vec<&str> = m.methods.napi_irq_link.iter().map(|l| l.as_str()).collect();
        para(
            o,
            &format!(
                "measured: {} ({} programs); NAPI->IRQ links used: {}",
                if on.is_empty() {
                    "nothing".to_string()
                } else {
                    on.join(", ")
                },
                m.methods.probe.programs,
                if links.is_empty() {
                    "none".to_string()
                } else {
                    links.join(", ")
                }
            ),
            width,
        );
        for line in &m.missing {
            para(o, &format!("not measured: {line}"), width);
        }
        if !m.stat_irq_time {
            para(
                o,
                "/proc/stat counts no IRQ or softirq time on this kernel (no \
                 IRQ_TIME_ACCOUNTING): STAT columns stay 0 and the measured columns are the \
                 only measure.",
                width,
            );
        }
        let c = &m.coverage;
        let misses: u64 = c.recursion_misses.values().sum();
        para(
            o,
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
            o,
            &format!(
                "probe cost: {:.2}% of one CPU; {}",
                c.probe_cost.cpu_pct, c.probe_cost.method
            ),
            width,
        );
        for e in &m.events {
            para(o, &format!("event: {e}"), width);
        }
        for w in &m.warnings {
            para(o, &format!("warning: {w}"), width);
        }
    }

    fn sysvec_table(&self, o: &mut String, width: usize) {
        if self.system_vectors.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "\nSystem vectors (local timer, IPIs): hardirq time that is no IRQ's, % of each CPU"
        );
        let table = Table::new(vec![
            Column::right("CPU", 4),
            Column::left("VECTOR", 22),
            Column::right("RUNS/s", 10),
            Column::right("CPU%", 7),
        ]);
        let secs = self.meta.duration_s.max(1e-9);
        let rows: Vec<Vec<String>> = self
            .system_vectors
            .iter()
            .map(|r| {
                vec![
                    r.cpu.to_string(),
                    r.vector.name().to_string(),
                    num(r.runs as f64 / secs, 0),
                    num(r.pct, 3),
                ]
            })
            .collect();
        o.push_str(&table.text(width, &rows));
    }

    /// Below the full width TIMER, SCHED and RCU go into OTHER.
    fn cpu_table(&self, o: &mut String, width: usize) {
        let narrow = width < FULL_WIDTH;
        let named: &[Softirq] = if narrow {
            let _ = writeln!(
                o,
                "\nCPUs: % of each CPU's time (OTHER: softirqs but NET_RX and NET_TX)"
            );
            &[Softirq::NetRx, Softirq::NetTx]
        } else {
            let _ = writeln!(o, "\nCPUs: % of each CPU's time");
            &[
                Softirq::NetRx,
                Softirq::NetTx,
                Softirq::Timer,
                Softirq::Sched,
                Softirq::Rcu,
            ]
        };
        let mut cols = vec![
            Column::right("CPU", 4),
            if narrow {
                Column::right("ND", 2)
            } else {
                Column::right("NODE", 4)
            },
            Column::right("HARDIRQ", 7),
            Column::right("SOFTIRQ", 7),
        ];
        for v in named {
            let net = matches!(v, Softirq::NetRx | Softirq::NetTx);
            cols.push(Column::right(v.name(), if net { 7 } else { 6 }));
        }
        cols.extend([
            Column::right("OTHER", 6),
            Column::right("STATIRQ", 7).sep(" | "),
            Column::right("STATSI", 7),
            Column::right("BUSY", 6),
            Column::left("", 0).grow(usize::MAX),
        ]);
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| num(x, 2));
        let rows: Vec<Vec<String>> = self
            .cpus
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.cpu.to_string(),
                    opt_num(c.node),
                    num(c.hardirq_pct, 2),
                    num(c.softirq_total_pct, 2),
                ];
                row.extend(named.iter().map(|v| num(c.softirq_pct[*v], 2)));
                let named_sum: f64 = named.iter().map(|v| c.softirq_pct[*v]).sum();
                row.extend([
                    num((c.softirq_total_pct - named_sum).max(0.0), 2),
                    opt(c.stat_hardirq_pct),
                    opt(c.stat_softirq_pct),
                    opt(c.busy_pct),
                    if c.online { "" } else { "offline" }.to_string(),
                ]);
                row
            })
            .collect();
        o.push_str(&Table::new(cols).text(width, &rows));
    }

    /// Below the full width, as `balancer top` narrows them: INTR% and TIME% stay, TOTAL%
    /// (HARD% + SOFT%) goes, affinities narrow, NAME and DEVICE share what is left and DEVICE
    /// shows only the queue where the whole label does not fit.
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
        let narrow = width < FULL_WIDTH;
        const DEVICE: usize = 2;
        let mut cols = if narrow {
            vec![
                Column::right("IRQ", 4),
                Column::left("NAME", 0).flex(0, 3),
                Column::left("DEVICE", 0).flex(0, 2).short(&["DEV"]),
                Column::right("ND", 2),
                Column::left("AFF", 5),
                Column::left("EFF", 3),
            ]
        } else {
            vec![
                Column::right("IRQ", 4),
                Column::left("NAME", 16),
                Column::left("DEVICE", 19),
                Column::right("ND", 2),
                Column::left("AFFINITY", 9),
                Column::left("EFF", 4),
            ]
        };
        cols.extend([
            Column::right("IRQ/s", 6),
            Column::right("HARD%", 6),
            Column::right("SOFT%", 6),
        ]);
        if !narrow {
            cols.push(Column::right("TOTAL%", 6));
        }
        cols.extend([Column::right("INTR%", 5), Column::right("TIME%", 6)]);
        let table = Table::new(cols);
        let mut rows: Vec<Vec<String>> = self
            .irqs
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.irq.to_string(),
                    r.name.clone(),
                    device_label(r),
                    opt_num(r.node),
                    cpus_or_dash(r.smp_affinity.as_ref()),
                    cpus_or_dash(r.effective_affinity.as_ref()),
                    si(r.interrupts_per_s),
                    num(r.hardirq_pct, 2),
                    num(r.softirq_pct, 2),
                ];
                if !narrow {
                    row.push(num(r.weight_pct, 2));
                }
                row.extend([
                    num(r.interrupt_share * 100.0, 1),
                    num(r.time_share * 100.0, 1),
                ]);
                row
            })
            .collect();
        let w = table.widths(width, &rows);
        for (row, r) in rows.iter_mut().zip(&self.irqs) {
            row[DEVICE] = device_cell(r, w[DEVICE]);
        }
        o.push_str(&table.render(&w, &rows));
        para(
            o,
            "INTR% is each IRQ's share of interrupts, what a count-based balancer weighs; \
             TIME% its share of real IRQ time: handler plus the NET_RX softirq time it caused.",
            width,
        );
    }

    /// Below the full width: shorter id, device and link columns; CPUS takes the rest of
    /// the line.
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
        let (id_w, dev_w, link_w) = if width < FULL_WIDTH {
            (6, 10, 9)
        } else {
            (8, 12, 13)
        };
        let table = Table::new(vec![
            Column::right("NAPI_ID", id_w).short(&["NAPI"]),
            Column::left("DEVICE", dev_w),
            Column::right("IRQ", 4),
            Column::left("LINK", link_w),
            Column::right("PKT/s", 7),
            Column::right("POLLS/s", 7),
            Column::right("FULL%", 5),
            Column::right("CPU%", 6),
            Column::right("TASK%", 6),
            Column::left("CPUS", 0).flex(0, 1).sep("  "),
        ]);
        let secs = self.meta.duration_s;
        let rows: Vec<Vec<String>> = self
            .napi
            .iter()
            .map(|n| {
                vec![
                    opt_num(n.napi_id),
                    n.device.clone(),
                    opt_num(n.irq),
                    n.link.as_str().to_string(),
                    si(n.packets_per_s),
                    si(if secs > 0.0 {
                        n.polls as f64 / secs
                    } else {
                        0.0
                    }),
                    num(n.budget_exhausted_share * 100.0, 1),
                    num(n.pct, 2),
                    task_pct(n),
                    poll_cpus(n),
                ]
            })
            .collect();
        o.push_str(&table.text(width, &rows));
        if self.napi.iter().any(|n| n.threaded_ns + n.busy_poll_ns > 0) {
            para(
                o,
                "TASK%: poll time in NAPI kthreads (T) and busy-poll loops (B), % of one CPU: \
                 task time, counted to the instance's IRQ apart from its softirq time and in \
                 no CPU's softirq split",
                width,
            );
        }
    }

    fn unattributed_table(&self, o: &mut String, width: usize) {
        let _ = writeln!(
            o,
            "\nSoftirq time per CPU: attributed to IRQs + unattributed"
        );
        let table = Table::new(vec![
            Column::right("CPU", 4),
            Column::left("VECTOR", 8),
            Column::left("TO", 17),
            Column::right("CPU%", 7),
            Column::right("OF SOFTIRQ", 10),
        ]);
        let mut rows: Vec<Vec<String>> = Vec::new();
        for c in self.cpus.iter().filter(|c| c.softirq_total_pct > 0.0) {
            let mut row = |vec: &str, to: &str, p: f64, of: f64| {
                rows.push(vec![
                    c.cpu.to_string(),
                    vec.to_string(),
                    to.to_string(),
                    num(p, 2),
                    format!("{}%", num(of, 1)),
                ])
            };
            let of = |p: f64| p * 100.0 / c.softirq_total_pct;
            if c.softirq_to_irqs_pct > 0.0 {
                row(
                    Softirq::NetRx.name(),
                    "IRQs (NAPI polls)",
                    c.softirq_to_irqs_pct,
                    of(c.softirq_to_irqs_pct),
                );
            }
            for u in self.unattributed.iter().filter(|u| u.cpu == c.cpu) {
                let to = match u.bucket {
                    Bucket::Vector => "(whole vector)",
                    b => b.as_str(),
                };
                row(u.vec.name(), to, u.pct, u.softirq_share * 100.0);
            }
            let sum = c.softirq_to_irqs_pct + c.softirq_unattributed_pct;
            row("all", "sum", sum, of(sum));
        }
        o.push_str(&table.text(width, &rows));
    }
}

/// Poll CPUs with their share, as "2:100% 3:5%".
pub(crate) fn poll_cpus(n: &NapiRow) -> String {
    n.cpus
        .iter()
        .filter(|c| c.share >= 0.005)
        .map(|c| format!("{}:{:.0}%", c.cpu, c.share * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A CPU set as a cpulist, `-` when unknown.
pub(crate) fn cpus_or_dash(set: Option<&CpuSet>) -> String {
    set.map_or_else(|| "-".to_string(), CpuSet::to_list_string)
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

/// The device label in `width` columns: whole where it fits, else only the queue (the part
/// that tells a NIC's IRQs apart), else cut.
pub(crate) fn device_cell(r: &IrqRow, width: usize) -> String {
    let full = device_label(r);
    if full.chars().count() <= width || r.netdev.is_none() {
        return full;
    }
    // device_label puts the queue after the PCI address.
    full.rsplit(' ').next().unwrap_or(&full).to_string()
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
pub(crate) const FULL_WIDTH: usize = 100;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attribution::testdata;

    /// The fixture interval with time outside softirq: IRQ 36's instance polls 2% of a CPU
    /// in its kthread and 1% in busy-poll loops, the veth is threaded (kthread 4242), and
    /// system vectors ran on every CPU (LOC 0.30% and 0.25% on CPUs 0 and 1, RES 0.008% on
    /// CPU 1, CAL, IWI).
    pub(crate) fn rich() -> Report {
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
        if let Some(v) = iv.napi_identity.get_mut(&testdata::V) {
            v.thread_pid = Some(4242);
        }
        for (cpu, vec, runs, ns) in [
            (0, SysVector::LocalTimer, 250, 3_000_000),
            (1, SysVector::LocalTimer, 250, 2_500_000),
            (1, SysVector::Reschedule, 40, 80_000),
            (2, SysVector::CallFunction, 12, 30_000),
            (3, SysVector::IrqWork, 1, 1_000),
        ] {
            iv.sysvec.insert(
                (cpu, vec.index() as u32),
                balancer_common::IrqStat { runs, ns },
            );
        }
        let links = crate::attribution::Linker::default().links(&iv.napi_identity, &model);
        let a = Attribution::build(&iv, &model, &links);
        Report::build(
            &a,
            &model,
            &testdata::status(),
            &testdata::netlink_status(),
            false,
            None,
        )
    }

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
        assert_eq!(x.link, LinkMethod::Exact);
        assert_eq!(x.cpus.len(), 1);
        assert_eq!(x.cpus[0].cpu, 2);
        assert!((x.cpus[0].share - 1.0).abs() < 1e-9);
        assert!((x.budget_exhausted_share - 0.1).abs() < 1e-9);
        let b = r.napi.iter().find(|n| n.device == "(no_device)").unwrap();
        assert_eq!((b.link, b.irq), (LinkMethod::Backlog, None));
        assert_eq!(r.meta.methods.napi_irq_link, vec![LinkMethod::Exact]);
        // napi_poll reported missing in the status shows up in meta.missing.
        assert!(r.meta.missing.iter().any(|m| m.starts_with("napi:")));
    }

    /// Threaded and busy poll time is in the NAPI row, the IRQ row and the CPU row apart
    /// from softirq time, marked T and B in the text with a line saying where it went.
    #[test]
    fn task_poll_time_is_shown_apart() {
        let iv = testdata::interval();
        let r = rich();
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
        assert_eq!(
            r.meta.methods.napi_irq_link,
            vec![LinkMethod::NapiGet, LinkMethod::QueueGet]
        );
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
        assert!((cpu2.softirq_pct[Softirq::NetRx] - 3.0).abs() < 1e-9);
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

    /// Every NAPI row lines up with the header, also where TASK% holds both kinds of task
    /// time (it used to push the CPUS column out of line), and ends within the width.
    #[test]
    fn napi_columns_line_up_with_task_time() {
        let r = rich();
        for width in [80, FULL_WIDTH] {
            let text = r.to_text_width(width);
            let mut lines = text
                .lines()
                .skip_while(|l| !l.starts_with("NAPI instances"));
            lines.next();
            let head = lines.next().unwrap();
            let cpus_at = head.find("CPUS").unwrap();
            let task_end = head.find("TASK%").unwrap() + "TASK%".len();
            for (row, n) in lines.zip(&r.napi) {
                assert!(row.chars().count() <= width, "{width}: {row:?}");
                let task = task_pct(n);
                assert_eq!(
                    row[..task_end].trim_end().len(),
                    task_end,
                    "{width}: TASK% ends under its header: {head:?} / {row:?}"
                );
                assert!(row[..task_end].ends_with(&task), "{width}: {row:?}");
                assert_eq!(&row[cpus_at - 2..cpus_at], "  ", "{width}: {row:?}");
            }
        }
        let sys = r.to_text();
        assert!(sys.contains("   0 local_timer"), "{sys}");
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
}
