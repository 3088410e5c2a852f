//! Who caused the CPU time: per IRQ, its handler time plus the NET_RX softirq (NAPI poll) time
//! of the NAPI instances it schedules, on the CPUs where that time was really spent.
//!
//! A NAPI instance is linked to its IRQ exactly where the kernel records it
//! (`napi_struct.irq`, 6.8+, when the driver calls `netif_napi_set_irq`, read by the probe or
//! told by the netdev netlink family's `napi-get`), or where the kernel says which NAPI
//! instance serves a queue (`queue-get`, when the driver calls `netif_queue_set_napi`) and
//! the IRQ's name says which queue it serves; else from co-occurrence: an IRQ handler that raises NET_RX has just scheduled its own NAPI instance,
//! so the instance polled in every NET_RX softirq that IRQ raised is its own. Other instances
//! show up in those softirqs only when they were already on the poll list, so for each IRQ the
//! instance polled in the most of its softirqs is its instance (each softirq counts once per
//! instance, however often the instance was repolled in it).
//!
//! Every nanosecond of softirq time lands in exactly one place: an IRQ, or a named
//! unattributed bucket (other vectors, NET_RX overhead, RPS backlog, NAPI without an IRQ), so
//! each CPU's softirq time adds up.
use std::collections::{BTreeMap, BTreeSet};

use balancer_common::{NET_RX_SOFTIRQ, NR_SOFTIRQS, NR_SYSVECS, NapiKey};
use serde::Serialize;

use crate::{
    sample::{Interval, NapiDelta, NapiIdentity},
    system::{
        QueueKind, SystemModel,
        netdev::{NetdevDump, QueueType},
    },
    vector::Softirq,
};

/// Device name the kernel gives the backlog NAPI of RPS and loopback.
pub(crate) const BACKLOG_DEVICE: &str = "(no_device)";
/// NET_RX softirqs raised by an IRQ in which an instance was polled, before co-occurrence
/// counts as a link: a queue that fired twice says nothing yet.
const MIN_COOCCURRENCE: u64 = 5;

/// How a NAPI instance was linked to an IRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkMethod {
    /// `napi_struct.irq` as the driver recorded it, read by the probe.
    Exact,
    /// The same field as netlink's `napi-get` reports it.
    NapiGet,
    /// netlink's `queue-get` (queue -> NAPI id) joined with the IRQ named for that queue.
    QueueGet,
    /// Learned from which IRQ's handler raised the softirqs it was polled in.
    CoOccurrence,
    /// The backlog NAPI of RPS and loopback: it belongs to no IRQ.
    Backlog,
    /// No link: a device without an IRQ (veth) or too little evidence yet.
    None,
}

impl LinkMethod {
    /// Whether the kernel said the link, rather than it being learned or absent.
    pub(crate) fn is_exact(self) -> bool {
        matches!(
            self,
            LinkMethod::Exact | LinkMethod::NapiGet | LinkMethod::QueueGet
        )
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinkMethod::Exact => "exact",
            LinkMethod::NapiGet => "napi-get",
            LinkMethod::QueueGet => "queue-get",
            LinkMethod::CoOccurrence => "co-occurrence",
            LinkMethod::Backlog => "backlog",
            LinkMethod::None => "none",
        }
    }

    /// In at most five columns, for `top`'s narrow tables.
    pub(crate) fn short(self) -> &'static str {
        match self {
            LinkMethod::Exact => "exact",
            LinkMethod::NapiGet => "nlirq",
            LinkMethod::QueueGet => "nlq",
            LinkMethod::CoOccurrence => "learn",
            LinkMethod::Backlog => "rps",
            LinkMethod::None => "-",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Link {
    pub(crate) irq: Option<u32>,
    pub method: LinkMethod,
    /// Co-occurrence: NET_RX softirqs raised by `irq` in which the instance was polled.
    pub(crate) evidence: u64,
    /// Co-occurrence: that count as a share of all (softirq, instance) pairs `irq` caused.
    pub(crate) confidence: f64,
}

impl Link {
    fn none(method: LinkMethod) -> Link {
        Link {
            irq: None,
            method,
            evidence: 0,
            confidence: 0.0,
        }
    }

    fn exact(irq: u32, method: LinkMethod) -> Link {
        Link {
            irq: Some(irq),
            method,
            evidence: 0,
            confidence: 1.0,
        }
    }
}

/// Exact links the netdev netlink family gives, keyed by NAPI id: `napi-get`'s IRQ where the
/// driver recorded one; else the IRQ that serves the instance's queues according to the
/// IRQ names of the model (`virtio1-input.2`, `eth0-TxRx-2`, `mlx5_comp2@pci:...`), where
/// exactly one IRQ does. Receive queues decide (a NAPI instance serving rx queue 0 and tx
/// queue 0 belongs to the rx IRQ when the two have IRQs of their own); an instance that
/// serves only transmit queues (virtio's tx NAPI) links to the transmit IRQ.
pub(crate) fn netlink_links(dump: &NetdevDump, model: &SystemModel) -> BTreeMap<u32, Link> {
    let mut out: BTreeMap<u32, Link> = dump
        .napi
        .iter()
        .filter_map(|n| Some((n.id, Link::exact(n.irq?, LinkMethod::NapiGet))))
        .collect();
    let name_of: BTreeMap<u32, &str> = model
        .netdevs
        .values()
        .filter_map(|d| Some((d.ifindex?, d.name.as_str())))
        .collect();
    // Per NAPI id, the IRQs of the rx queues and of the tx queues it serves.
    let mut rx: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut tx: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for q in &dump.queues {
        let (Some(napi), Some(dev)) = (q.napi_id, name_of.get(&q.ifindex)) else {
            continue;
        };
        let (kind, side) = match q.kind {
            QueueType::Rx => (QueueKind::Rx, &mut rx),
            QueueType::Tx => (QueueKind::Tx, &mut tx),
            QueueType::Other(_) => continue,
        };
        let irqs = side.entry(napi).or_default();
        irqs.extend(
            model
                .irqs_of_netdev(dev)
                .filter(|irq| {
                    irq.queue.is_some_and(|iq| {
                        iq.index == q.id && (iq.kind == kind || iq.kind == QueueKind::RxTx)
                    })
                })
                .map(|irq| irq.number),
        );
    }
    for napi in rx
        .keys()
        .chain(tx.keys())
        .copied()
        .collect::<BTreeSet<u32>>()
    {
        let irqs = match rx.get(&napi) {
            Some(r) if !r.is_empty() => r,
            _ => match tx.get(&napi) {
                Some(t) => t,
                None => continue,
            },
        };
        if let (Some(irq), 1) = (irqs.first(), irqs.len()) {
            out.entry(napi)
                .or_insert(Link::exact(*irq, LinkMethod::QueueGet));
        }
    }
    out
}

/// Whether every NIC queue is linked exactly by netlink (`links` from [`netlink_links`]):
/// every rx (or combined) queue IRQ of a netdev, and every NAPI instance the dump lists with
/// a queue. Then co-occurrence has nothing left to learn and the probe need not count
/// raises. `Err` names what is not linked.
pub(crate) fn linked_exactly(
    dump: &NetdevDump,
    model: &SystemModel,
    links: &BTreeMap<u32, Link>,
) -> Result<(), String> {
    let linked: BTreeSet<u32> = links
        .values()
        .filter(|l| l.method.is_exact())
        .filter_map(|l| l.irq)
        .collect();
    let unlinked_irqs: Vec<String> = model
        .irqs
        .values()
        .filter(|irq| irq.netdev.is_some())
        .filter(|irq| {
            irq.queue
                .is_some_and(|q| matches!(q.kind, QueueKind::Rx | QueueKind::RxTx))
        })
        .filter(|irq| !linked.contains(&irq.number))
        .map(|irq| irq.number.to_string())
        .collect();
    if !unlinked_irqs.is_empty() {
        return Err(format!(
            "NIC queue IRQs without an exact link: {}",
            unlinked_irqs.join(", ")
        ));
    }
    let unlinked_napi: Vec<String> = dump
        .queues
        .iter()
        .filter_map(|q| q.napi_id)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .filter(|id| !links.get(id).is_some_and(|l| l.method.is_exact()))
        .map(|id| id.to_string())
        .collect();
    if unlinked_napi.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "NAPI instances without an exact link: {}",
            unlinked_napi.join(", ")
        ))
    }
}

/// Links NAPI instances to IRQs, accumulating co-occurrence evidence across intervals (a
/// link learned under traffic holds when the queue is quiet).
#[derive(Clone, Debug, Default)]
pub struct Linker {
    pairs: BTreeMap<(NapiKey, u32), u64>,
}

impl Linker {
    pub fn observe(&mut self, iv: &Interval) {
        for (key, n) in &iv.pairs {
            *self.pairs.entry(*key).or_default() += n;
        }
    }

    /// Forgets evidence about NAPI instances that no longer exist.
    pub(crate) fn retain(&mut self, alive: impl Fn(NapiKey) -> bool) {
        self.pairs.retain(|(napi, _), _| alive(*napi));
    }

    /// The link of every NAPI instance in `identities`, without netlink's.
    pub fn links(
        &self,
        identities: &BTreeMap<NapiKey, NapiIdentity>,
        model: &SystemModel,
    ) -> BTreeMap<NapiKey, Link> {
        self.links_with(identities, model, &BTreeMap::new())
    }

    /// The link of every NAPI instance in `identities`: `napi_struct.irq` from the probe,
    /// else the instance's entry in `netlink` (from [`netlink_links`], by NAPI id), else
    /// co-occurrence; the backlog is the backlog.
    pub(crate) fn links_with(
        &self,
        identities: &BTreeMap<NapiKey, NapiIdentity>,
        model: &SystemModel,
        netlink: &BTreeMap<u32, Link>,
    ) -> BTreeMap<NapiKey, Link> {
        let learned = self.learn(identities, model);
        identities
            .iter()
            .map(|(id, ident)| {
                let link = if ident.device == BACKLOG_DEVICE {
                    Link::none(LinkMethod::Backlog)
                } else if let Some(irq) = ident.irq {
                    Link::exact(irq, LinkMethod::Exact)
                } else if let Some(link) = ident.napi_id.and_then(|n| netlink.get(&n)) {
                    *link
                } else {
                    learned
                        .get(id)
                        .copied()
                        .unwrap_or(Link::none(LinkMethod::None))
                };
                (*id, link)
            })
            .collect()
    }

    /// For each IRQ, the instance polled in the most of the softirqs it raised; then for each
    /// instance, the IRQ with the most such softirqs. A pair is only considered when the IRQ's
    /// device is unknown or is the instance's device.
    fn learn(
        &self,
        identities: &BTreeMap<NapiKey, NapiIdentity>,
        model: &SystemModel,
    ) -> BTreeMap<NapiKey, Link> {
        let compatible = |napi: NapiKey, irq: u32| {
            let Some(ident) = identities.get(&napi) else {
                return false;
            };
            if ident.device == BACKLOG_DEVICE || ident.device.is_empty() {
                return false;
            }
            match model.irqs.get(&irq).and_then(|i| i.netdev.as_deref()) {
                Some(dev) => dev == ident.device,
                None => true,
            }
        };
        let mut per_irq: BTreeMap<u32, Vec<(NapiKey, u64)>> = BTreeMap::new();
        for ((napi, irq), n) in &self.pairs {
            if compatible(*napi, *irq) {
                per_irq.entry(*irq).or_default().push((*napi, *n));
            }
        }
        let mut best: BTreeMap<NapiKey, Link> = BTreeMap::new();
        for (irq, cands) in per_irq {
            let total: u64 = cands.iter().map(|(_, n)| n).sum();
            let top = cands.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let mut winners = cands.iter().filter(|(_, n)| *n == top);
            let (Some((napi, n)), None) = (winners.next(), winners.next()) else {
                continue; // a tie says nothing
            };
            if *n < MIN_COOCCURRENCE {
                continue;
            }
            let link = Link {
                irq: Some(irq),
                method: LinkMethod::CoOccurrence,
                evidence: *n,
                confidence: *n as f64 / total as f64,
            };
            match best.get(napi) {
                Some(old) if old.evidence >= link.evidence => {}
                _ => {
                    best.insert(*napi, link);
                }
            }
        }
        best
    }
}

/// One CPU over the interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuLoad {
    pub cpu: u32,
    pub(crate) node: Option<u32>,
    pub(crate) online: bool,
    /// Measured handler time.
    pub(crate) hardirq_ns: u64,
    /// Measured time in x86 system vectors (local timer, IPIs, ...), indexed like
    /// `balancer_common::SYSVEC_NAMES`; hardirq time that is no IRQ's.
    pub(crate) sysvec_ns: [u64; NR_SYSVECS],
    pub(crate) sysvec_runs: [u64; NR_SYSVECS],
    /// Measured softirq time per vector (hardirq time inside excluded).
    pub softirq_ns: [u64; NR_SOFTIRQS],
    pub(crate) softirq_raises: [u64; NR_SOFTIRQS],
    pub(crate) softirq_runs: [u64; NR_SOFTIRQS],
    /// Poll time in NAPI kthreads and in busy-poll loops on this CPU: task time, not part
    /// of `softirq_ns` (the kernel charges it to the polling task).
    pub threaded_ns: u64,
    pub(crate) busy_poll_ns: u64,
    /// What /proc/stat says for the same interval, in ns; `None` when it has no row for the
    /// CPU.
    pub(crate) stat_irq_ns: Option<u64>,
    pub(crate) stat_softirq_ns: Option<u64>,
    /// /proc/stat: time not idle (nor iowait).
    pub(crate) stat_busy_ns: Option<u64>,
    /// /proc/stat: all time the CPU accounted, the base for its percentages.
    pub(crate) stat_total_ns: Option<u64>,
}

impl CpuLoad {
    pub fn softirq_total_ns(&self) -> u64 {
        self.softirq_ns.iter().sum()
    }
}

/// One IRQ on one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct IrqCpu {
    /// From /proc/interrupts.
    pub(crate) interrupts: u64,
    /// Handler runs seen by the probe.
    handler_runs: u64,
    pub(crate) hardirq_ns: u64,
    /// NET_RX poll time of its NAPI instances on this CPU.
    pub(crate) softirq_ns: u64,
    /// Poll time of its NAPI instances in their kthreads and in busy-poll loops on this
    /// CPU: task time, shown apart and not in [`IrqLoad::weight_ns`].
    pub(crate) threaded_ns: u64,
    pub(crate) busy_poll_ns: u64,
}

/// An IRQ's handler runs and interrupts on one CPU: (CPU, runs, interrupts).
pub type Coverage = (u32, u64, u64);

/// One IRQ over the interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IrqLoad {
    pub(crate) irq: u32,
    pub interrupts: u64,
    pub(crate) hardirq_ns: u64,
    pub(crate) softirq_ns: u64,
    /// Poll time of its instances in NAPI kthreads and busy-poll loops (task time).
    pub(crate) threaded_ns: u64,
    pub(crate) busy_poll_ns: u64,
    pub(crate) per_cpu: BTreeMap<u32, IrqCpu>,
    /// NAPI instances linked to it.
    pub(crate) napi: Vec<NapiKey>,
}

impl IrqLoad {
    /// Real CPU time this IRQ cost: its handlers plus the polls it caused in softirq. Its
    /// threaded and busy polls are left out: they run where their task runs, not where the
    /// IRQ goes, so moving the IRQ does not move them.
    pub(crate) fn weight_ns(&self) -> u64 {
        self.hardirq_ns + self.softirq_ns
    }
}

/// One NAPI instance on one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NapiCpu {
    pub polls: u64,
    pub packets: u64,
    pub(crate) budget_exhausted: u64,
    /// Poll time in NET_RX softirqs, with the rounds' preambles shared (`preamble_ns`).
    pub ns: u64,
    /// Packets and measured time of the polls that were the first of their round.
    pub(crate) first_poll_packets: u64,
    pub(crate) first_poll_ns: u64,
    /// What sharing the rounds' preambles changed `ns` by (see [`first_poll_spread`]).
    pub(crate) preamble_ns: i64,
    /// Polls outside NET_RX softirq that got no time (no start mark: a kthread before it was
    /// listed, a busy loop that rescheduled, a kernel without the programs).
    pub untimed_polls: u64,
    /// Timed polls in the instance's NAPI kthread, and their time (task time).
    pub threaded_polls: u64,
    pub threaded_ns: u64,
    /// Timed busy polls, by tasks in a busy-poll loop, and their time (task time).
    pub busy_polls: u64,
    pub busy_poll_ns: u64,
}

impl NapiCpu {
    /// Every poll: in softirq, in a kthread, busy, untimed.
    pub(crate) fn all_polls(&self) -> u64 {
        self.polls + self.threaded_polls + self.busy_polls + self.untimed_polls
    }

    /// Every timed poll's time.
    pub(crate) fn all_ns(&self) -> u64 {
        self.ns + self.threaded_ns + self.busy_poll_ns
    }
}

/// One NAPI instance over the interval.
#[derive(Clone, Debug, Serialize)]
pub struct NapiLoad {
    /// Kernel address of its `struct napi_struct` and its `napi_id`: the key that identifies
    /// it here (an address alone is reused by the next instance).
    pub(crate) id: NapiKey,
    pub(crate) napi_id: Option<u32>,
    pub device: String,
    pub link: Link,
    /// The poll kthread of threaded NAPI, from netlink's `napi-get`.
    pub(crate) thread_pid: Option<u32>,
    pub per_cpu: BTreeMap<u32, NapiCpu>,
}

impl NapiLoad {
    pub fn total(&self) -> NapiCpu {
        self.per_cpu
            .values()
            .fold(NapiCpu::default(), |a, c| NapiCpu {
                polls: a.polls + c.polls,
                packets: a.packets + c.packets,
                budget_exhausted: a.budget_exhausted + c.budget_exhausted,
                ns: a.ns + c.ns,
                first_poll_packets: a.first_poll_packets + c.first_poll_packets,
                first_poll_ns: a.first_poll_ns + c.first_poll_ns,
                preamble_ns: a.preamble_ns + c.preamble_ns,
                untimed_polls: a.untimed_polls + c.untimed_polls,
                threaded_polls: a.threaded_polls + c.threaded_polls,
                threaded_ns: a.threaded_ns + c.threaded_ns,
                busy_polls: a.busy_polls + c.busy_polls,
                busy_poll_ns: a.busy_poll_ns + c.busy_poll_ns,
            })
    }
}

/// Softirq time that belongs to no IRQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bucket {
    /// A whole vector other than NET_RX (timers, RCU, scheduler, ...).
    Vector,
    /// NET_RX time outside any poll: GRO flush, RPS IPIs, the softirq's own work.
    NetRxOverhead,
    /// Polls of the backlog NAPI: RPS and loopback.
    RpsBacklog,
    /// Polls of NAPI instances with no IRQ: veth, or a link not learned yet.
    NapiWithoutIrq,
}

impl Bucket {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Bucket::Vector => "vector",
            Bucket::NetRxOverhead => "net-rx-overhead",
            Bucket::RpsBacklog => "rps-backlog",
            Bucket::NapiWithoutIrq => "napi-without-irq",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unattributed {
    pub cpu: u32,
    pub vec: Softirq,
    pub bucket: Bucket,
    pub ns: u64,
}

/// The whole picture of one interval.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Attribution {
    pub(crate) duration_ns: u64,
    pub cpus: Vec<CpuLoad>,
    pub irqs: BTreeMap<u32, IrqLoad>,
    pub napi: Vec<NapiLoad>,
    pub unattributed: Vec<Unattributed>,
    /// Per CPU, poll time beyond the NET_RX time measured (polls of a softirq that straddles
    /// the interval's edge); non-zero values are small and say by how much a CPU's NET_RX
    /// split overshoots.
    pub(crate) netrx_excess_ns: BTreeMap<u32, u64>,
    /// Things that happened: IRQs appearing or vanishing, CPUs going offline, map overflows.
    pub events: Vec<String>,
}

impl Attribution {
    /// Builds the picture of `iv` on the machine `model`, with NAPI links from `links`.
    pub fn build(
        iv: &Interval,
        model: &SystemModel,
        links: &BTreeMap<NapiKey, Link>,
    ) -> Attribution {
        let mut a = Attribution {
            duration_ns: iv.duration_ns,
            ..Attribution::default()
        };
        a.cpus = cpu_loads(iv, model);
        for ((n, cpu), count) in &iv.interrupts {
            let l = a.irq_mut(*n);
            l.interrupts += count;
            l.per_cpu.entry(*cpu).or_default().interrupts += count;
        }
        for ((n, cpu), s) in &iv.hardirq {
            let l = a.irq_mut(*n);
            l.hardirq_ns += s.ns;
            let c = l.per_cpu.entry(*cpu).or_default();
            c.hardirq_ns += s.ns;
            c.handler_runs += s.runs;
        }
        // IRQs in the model but quiet this interval still get a (zero) row, so views can
        // list every IRQ.
        for n in model.irqs.keys() {
            a.irq_mut(*n);
        }

        let polled = a.add_napi(iv, links);
        a.add_softirqs(iv, &polled);
        // Vectors by name: the order the report's rows have always had.
        a.unattributed
            .sort_by(|x, y| (x.cpu, x.vec.name(), x.bucket).cmp(&(y.cpu, y.vec.name(), y.bucket)));

        a.events = events(iv);
        a
    }

    fn irq_mut(&mut self, n: u32) -> &mut IrqLoad {
        self.irqs.entry(n).or_insert_with(|| IrqLoad {
            irq: n,
            ..IrqLoad::default()
        })
    }

    /// The NAPI rows, their poll time booked to their linked IRQ (or a bucket) and their task
    /// time to the CPUs; returns each CPU's NET_RX poll time, for the softirq split.
    fn add_napi(&mut self, iv: &Interval, links: &BTreeMap<NapiKey, Link>) -> BTreeMap<u32, u64> {
        let mut polled: BTreeMap<u32, u64> = BTreeMap::new();
        // (CPU, threaded ns, busy-poll ns) per NAPI delta: task time, kept off the softirq
        // split.
        let mut task_ns: Vec<(u32, u64, u64)> = Vec::new();
        let mut napi: BTreeMap<NapiKey, NapiLoad> = BTreeMap::new();
        let spread = first_poll_spread(iv);
        for ((id, cpu), measured) in &iv.napi {
            let d = &NapiDelta {
                ns: spread.get(&(*id, *cpu)).copied().unwrap_or(measured.ns),
                ..*measured
            };
            let ident = iv.napi_identity.get(id).cloned().unwrap_or_default();
            let link = links
                .get(id)
                .copied()
                .unwrap_or(Link::none(LinkMethod::None));
            let entry = napi.entry(*id).or_insert_with(|| NapiLoad {
                id: *id,
                napi_id: ident.napi_id,
                device: ident.device.clone(),
                link,
                thread_pid: ident.thread_pid,
                per_cpu: BTreeMap::new(),
            });
            let c = entry.per_cpu.entry(*cpu).or_default();
            c.polls += d.polls;
            c.packets += d.work + d.untimed_work;
            c.budget_exhausted += d.budget_exhausted;
            c.ns += d.ns;
            c.first_poll_packets += d.first_work;
            c.first_poll_ns += d.first_ns;
            c.preamble_ns += d.ns as i64 - measured.ns as i64;
            // The kernel counts every poll outside NET_RX as untimed and the timed ones again
            // as threaded or busy; here each poll is in one count.
            c.untimed_polls += d
                .untimed_polls
                .saturating_sub(d.threaded_polls + d.busy_polls);
            c.threaded_polls += d.threaded_polls;
            c.threaded_ns += d.threaded_ns;
            c.busy_polls += d.busy_polls;
            c.busy_poll_ns += d.busy_ns;
            *polled.entry(*cpu).or_default() += d.ns;
            task_ns.push((*cpu, d.threaded_ns, d.busy_ns));

            let bucket = match (link.method, link.irq) {
                (LinkMethod::Backlog, _) => Some(Bucket::RpsBacklog),
                (_, Some(n)) => {
                    let l = self.irq_mut(n);
                    l.softirq_ns += d.ns;
                    l.threaded_ns += d.threaded_ns;
                    l.busy_poll_ns += d.busy_ns;
                    let c = l.per_cpu.entry(*cpu).or_default();
                    c.softirq_ns += d.ns;
                    c.threaded_ns += d.threaded_ns;
                    c.busy_poll_ns += d.busy_ns;
                    if !l.napi.contains(id) {
                        l.napi.push(*id);
                    }
                    None
                }
                (_, None) => Some(Bucket::NapiWithoutIrq),
            };
            if let Some(bucket) = bucket
                && d.ns > 0
            {
                add_unattributed(&mut self.unattributed, *cpu, Softirq::NetRx, bucket, d.ns);
            }
        }
        self.napi = napi.into_values().collect();
        for (cpu, threaded, busy) in task_ns {
            if let Some(c) = self.cpus.iter_mut().find(|c| c.cpu == cpu) {
                c.threaded_ns += threaded;
                c.busy_poll_ns += busy;
            }
        }

        polled
    }

    /// Softirq time not in polls: NET_RX overhead and the other vectors, as buckets; polls
    /// beyond a CPU's NET_RX time as its excess.
    fn add_softirqs(&mut self, iv: &Interval, polled: &BTreeMap<u32, u64>) {
        for ((cpu, vec), s) in &iv.softirq {
            let Some(vector) = Softirq::from_index(*vec as usize) else {
                continue;
            };
            if s.ns == 0 {
                continue;
            }
            if vector == Softirq::NetRx {
                let polls = polled.get(cpu).copied().unwrap_or(0);
                let overhead = s.ns.saturating_sub(polls);
                if overhead > 0 {
                    add_unattributed(
                        &mut self.unattributed,
                        *cpu,
                        vector,
                        Bucket::NetRxOverhead,
                        overhead,
                    );
                }
                if polls > s.ns {
                    self.netrx_excess_ns.insert(*cpu, polls - s.ns);
                }
            } else {
                add_unattributed(&mut self.unattributed, *cpu, vector, Bucket::Vector, s.ns);
            }
        }
        // Polls on a CPU whose NET_RX softirq never ended within the interval.
        for (cpu, polls) in polled {
            if *polls > 0 && !iv.softirq.contains_key(&(*cpu, NET_RX_SOFTIRQ)) {
                self.netrx_excess_ns.insert(*cpu, *polls);
            }
        }
    }

    /// Interrupts of all numbered IRQs.
    pub(crate) fn total_interrupts(&self) -> u64 {
        self.irqs.values().map(|l| l.interrupts).sum()
    }

    /// Share of the interrupts `/proc/interrupts` counted that the probe saw a handler run
    /// for (each IRQ's runs capped at its interrupts: a shared IRQ runs one handler per
    /// device), over IRQs that fired; `None` when none fired. Below 1: interrupts the
    /// programs missed (recursion, attached mid-interval) or handlers that did not run.
    pub fn coverage(&self) -> Option<f64> {
        let (mut seen, mut total) = (0u64, 0u64);
        for c in self.irqs.values().flat_map(|l| l.per_cpu.values()) {
            seen += c.handler_runs.min(c.interrupts);
            total += c.interrupts;
        }
        (total > 0).then(|| seen as f64 / total as f64)
    }

    /// The IRQs whose handler runs fell short of their interrupts on some CPU, each with
    /// its (CPU, handler runs, interrupts) on every CPU: where [`Self::coverage`] lost what
    /// it lost, and whether the runs were seen on another CPU.
    pub fn uncovered(&self) -> Vec<(u32, Vec<Coverage>)> {
        self.irqs
            .values()
            .filter(|l| l.per_cpu.values().any(|c| c.handler_runs < c.interrupts))
            .map(|l| {
                let cells = l.per_cpu.iter();
                let cells = cells.map(|(cpu, c)| (*cpu, c.handler_runs, c.interrupts));
                (l.irq, cells.collect())
            })
            .collect()
    }

    /// Real time of all IRQs.
    pub(crate) fn total_weight_ns(&self) -> u64 {
        self.irqs.values().map(IrqLoad::weight_ns).sum()
    }

    /// Softirq time on `cpu` attributed to IRQs.
    pub fn attributed_softirq_ns(&self, cpu: u32) -> u64 {
        self.irqs
            .values()
            .filter_map(|l| l.per_cpu.get(&cpu))
            .map(|c| c.softirq_ns)
            .sum()
    }

    /// Softirq time on `cpu` in unattributed buckets.
    pub fn unattributed_ns(&self, cpu: u32) -> u64 {
        self.unattributed
            .iter()
            .filter(|u| u.cpu == cpu)
            .map(|u| u.ns)
            .sum()
    }
}

/// Packets of its other polls a CPU needs before its first polls' excess is spread: the rate
/// they give is what a first poll is weighed against.
const MIN_SPREAD_WORK: u64 = 64;

/// Each (instance, CPU)'s NET_RX poll time with the rounds' preambles spread by packets,
/// where a CPU polled more than one instance that took packets.
///
/// A poll's time runs from the previous poll's event (or the softirq's entry) to its own, and
/// `net_rx_action` frees the skbs other CPUs handed back (`skb_defer_free_flush`) before each
/// poll: before a round's first poll, all that built up since the last round, packets of every
/// instance allocated here. Booked as measured, that lands on whichever instance the round
/// polled first, and two equal queues on one CPU read 2-3x apart (docs/benchmarks.md). The
/// other polls' time per packet is the rate without it; the first polls' time above that rate
/// is the excess, given to the CPU's instances by packets. A CPU's total is unchanged.
/// Instances that took no packet (a tx-only NAPI cleaning completions) keep their time and
/// stay out of the rate: their polls cost without packets to weigh them by.
fn first_poll_spread(iv: &Interval) -> BTreeMap<(NapiKey, u32), u64> {
    let mut by_cpu: BTreeMap<u32, Vec<(NapiKey, &NapiDelta)>> = BTreeMap::new();
    for ((id, cpu), d) in &iv.napi {
        if d.polls > 0 && d.work > 0 {
            by_cpu.entry(*cpu).or_default().push((*id, d));
        }
    }
    let mut out = BTreeMap::new();
    for (cpu, deltas) in by_cpu {
        let rest_ns: u64 = deltas
            .iter()
            .map(|(_, d)| d.ns.saturating_sub(d.first_ns))
            .sum();
        let rest_work: u64 = deltas
            .iter()
            .map(|(_, d)| d.work.saturating_sub(d.first_work))
            .sum();
        let work: u64 = deltas.iter().map(|(_, d)| d.work).sum();
        if rest_work < MIN_SPREAD_WORK || deltas.len() < 2 {
            continue;
        }
        let excess: Vec<u64> = deltas
            .iter()
            .map(|(_, d)| {
                let expected = (d.first_work as u128 * rest_ns as u128 / rest_work as u128) as u64;
                d.first_ns.min(d.ns).saturating_sub(expected)
            })
            .collect();
        let total: u64 = excess.iter().sum();
        if total == 0 {
            continue;
        }
        // Shares by cumulative packets, so they add up to `total` exactly.
        let (mut cum, mut given) = (0u64, 0u64);
        for ((id, d), own) in deltas.into_iter().zip(excess) {
            cum += d.work;
            let upto = (total as u128 * cum as u128 / work as u128) as u64;
            out.insert((id, cpu), d.ns - own + (upto - given));
            given = upto;
        }
    }
    out
}

fn add_unattributed(out: &mut Vec<Unattributed>, cpu: u32, vec: Softirq, bucket: Bucket, ns: u64) {
    match out
        .iter_mut()
        .find(|u| u.cpu == cpu && u.vec == vec && u.bucket == bucket)
    {
        Some(u) => u.ns += ns,
        None => out.push(Unattributed {
            cpu,
            vec,
            bucket,
            ns,
        }),
    }
}

fn cpu_loads(iv: &Interval, model: &SystemModel) -> Vec<CpuLoad> {
    let mut cpus: BTreeMap<u32, CpuLoad> = BTreeMap::new();
    fn get<'a>(
        cpus: &'a mut BTreeMap<u32, CpuLoad>,
        iv: &Interval,
        model: &SystemModel,
        id: u32,
    ) -> &'a mut CpuLoad {
        cpus.entry(id).or_insert_with(|| CpuLoad {
            cpu: id,
            node: model.node_of_cpu(id),
            online: iv.online.contains(id),
            ..CpuLoad::default()
        })
    }
    for id in iv.online.iter() {
        get(&mut cpus, iv, model, id);
    }
    for ((_, c), s) in &iv.hardirq {
        get(&mut cpus, iv, model, *c).hardirq_ns += s.ns;
    }
    for ((c, vec), s) in &iv.sysvec {
        let (l, v) = (get(&mut cpus, iv, model, *c), *vec as usize);
        if v < NR_SYSVECS {
            l.sysvec_ns[v] += s.ns;
            l.sysvec_runs[v] += s.runs;
        }
    }
    for ((c, vec), s) in &iv.softirq {
        let (l, v) = (get(&mut cpus, iv, model, *c), *vec as usize);
        if v < NR_SOFTIRQS {
            l.softirq_ns[v] += s.ns;
            l.softirq_raises[v] += s.raises;
            l.softirq_runs[v] += s.runs;
        }
    }
    for (c, t) in &iv.stat {
        let l = get(&mut cpus, iv, model, *c);
        let total = t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal;
        l.stat_irq_ns = Some(t.irq);
        l.stat_softirq_ns = Some(t.softirq);
        l.stat_busy_ns = Some(total - t.idle - t.iowait);
        l.stat_total_ns = Some(total);
    }
    cpus.into_values().collect()
}

fn events(iv: &Interval) -> Vec<String> {
    let mut ev = Vec::new();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    if !iv.irqs_appeared.is_empty() {
        ev.push(format!("IRQs appeared: {}", list(&iv.irqs_appeared)));
    }
    if !iv.irqs_vanished.is_empty() {
        ev.push(format!("IRQs vanished: {}", list(&iv.irqs_vanished)));
    }
    if !iv.went_offline.is_empty() {
        ev.push(format!("CPUs went offline: {}", list(&iv.went_offline)));
    }
    if !iv.came_online.is_empty() {
        ev.push(format!("CPUs came online: {}", list(&iv.came_online)));
    }
    // Unpaired handler events are not an event here: a duty-cycled daemon's every attach and
    // detach can cut a handler in two. `report` shows their count in its coverage.
    let [
        napi_full,
        read,
        irq_range,
        pairs_full,
        _ambiguous,
        _unpaired,
    ] = iv.probe_errors;
    if napi_full > 0 {
        ev.push(format!(
            "{napi_full} polls not counted: the NAPI map was full (more NAPI instances than \
             expected)"
        ));
    }
    if irq_range > 0 {
        ev.push(format!(
            "{irq_range} handler runs not counted: an IRQ number beyond the probe's IRQ array"
        ));
    }
    if pairs_full > 0 {
        ev.push(format!(
            "{pairs_full} co-occurrence pairs not counted: the pair map was full"
        ));
    }
    if read > 0 {
        ev.push(format!(
            "{read} eBPF reads of tracepoint or kernel data failed"
        ));
    }
    ev
}

/// Fixture data shared by the unit tests of attribution and its views.
#[cfg(test)]
pub(crate) mod testdata {
    use std::path::Path;

    use balancer_common::{IrqStat, SoftirqStat};

    use super::*;
    use crate::{cpumask::CpuSet, sample::NapiDelta, system::ReadOptions};

    pub(crate) const X: NapiKey = NapiKey::new(0xffff_0001, 0); // eth1 rx queue 0's instance, IRQ 36 (virtio1-input.0)
    pub(crate) const Y: NapiKey = NapiKey::new(0xffff_0002, 0); // eth1 rx queue 1's instance, IRQ 38
    pub(crate) const B: NapiKey = NapiKey::new(0xffff_0003, 0); // backlog
    pub(crate) const V: NapiKey = NapiKey::new(0xffff_0004, 0); // a veth: no IRQ

    /// The 4-CPU, 2-node kernel VM: eth1 (virtio1) on node 1.
    pub(crate) fn vm_model() -> SystemModel {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vm-4cpu-2node");
        SystemModel::read(&root, &ReadOptions::default()).unwrap()
    }

    pub(crate) fn ident(dev: &str, irq: Option<u32>) -> NapiIdentity {
        NapiIdentity {
            device: dev.to_string(),
            irq,
            ..NapiIdentity::default()
        }
    }

    pub(crate) fn napi(polls: u64, ns: u64) -> NapiDelta {
        NapiDelta {
            polls,
            work: polls * 10,
            budget_exhausted: polls / 10,
            ns,
            ..NapiDelta::default()
        }
    }

    /// One second: eth1 queue 0 polls 25 ms on CPU 2 while its IRQ 36 fires 100 times on CPU
    /// 0; queue 1 fires 900 times on CPU 1 for 3 ms of polls; a veth and the backlog poll too.
    pub(crate) fn interval() -> Interval {
        Interval {
            duration_ns: 1_000_000_000,
            online: CpuSet::from_cpus([0, 1, 2, 3]),
            hardirq: BTreeMap::from([
                (
                    (36, 0),
                    IrqStat {
                        runs: 100,
                        ns: 200_000,
                    },
                ),
                (
                    (38, 1),
                    IrqStat {
                        runs: 900,
                        ns: 1_800_000,
                    },
                ),
            ]),
            softirq: BTreeMap::from([
                (
                    (2, 3),
                    SoftirqStat {
                        raises: 10,
                        runs: 10,
                        ns: 30_000_000,
                    },
                ),
                (
                    (1, 3),
                    SoftirqStat {
                        raises: 900,
                        runs: 900,
                        ns: 5_000_000,
                    },
                ),
                (
                    (1, 1),
                    SoftirqStat {
                        raises: 250,
                        runs: 250,
                        ns: 700_000,
                    },
                ),
            ]),
            napi: BTreeMap::from([
                ((X, 2), napi(5000, 25_000_000)),
                ((Y, 1), napi(900, 3_000_000)),
                ((B, 1), napi(100, 1_000_000)),
                ((V, 2), napi(10, 4_000_000)),
            ]),
            napi_identity: BTreeMap::from([
                (X, ident("eth1", Some(36))),
                (Y, ident("eth1", Some(38))),
                (B, ident(BACKLOG_DEVICE, None)),
                (V, ident("veth0", None)),
            ]),
            interrupts: BTreeMap::from([((36, 0), 100), ((38, 1), 900)]),
            ..Interval::default()
        }
    }

    /// Every measurement active, as on a 6.8+ kernel with BTF.
    pub(crate) fn status() -> crate::probe::ProbeStatus {
        let on = |d: &str| crate::probe::Feature {
            active: true,
            detail: d.to_string(),
        };
        crate::probe::ProbeStatus {
            hardirq: on("hardirq"),
            softirq: on("softirq"),
            softirq_raise: on("raise"),
            napi: on("napi"),
            napi_irq_exact: on("napi_struct.irq at byte 416 (BTF)"),
            system_vectors: on("irq_vectors: local_timer"),
            threaded_napi: on("sched:sched_switch (tp_btf)"),
            busy_poll: on("fentry/fexit __napi_busy_loop"),
            program_types: BTreeMap::from([(
                "irq:softirq_entry".to_string(),
                crate::probe::ProgramType::BtfTracePoint,
            )]),
            programs: "tp_btf".to_string(),
            napi_map_entries: 1024,
            field_reads: "no classic programs: arguments, no records".to_string(),
        }
    }

    /// A kernel before 6.8.
    pub(crate) fn netlink_status() -> crate::system::netdev::NetdevStatus {
        crate::system::netdev::NetdevStatus::inactive(
            "the kernel has no netdev generic netlink family",
        )
    }

    /// The attribution of [`interval`] on [`vm_model`].
    pub(crate) fn attribution() -> (Attribution, SystemModel) {
        let model = vm_model();
        let iv = interval();
        let links = Linker::default().links(&iv.napi_identity, &model);
        (Attribution::build(&iv, &model, &links), model)
    }
}

#[cfg(test)]
mod tests {
    use balancer_common::SoftirqStat;

    use super::{testdata::*, *};
    use crate::cpumask::CpuSet;

    /// The names views print are the names the JSON carries (serde's), for every variant.
    #[test]
    fn link_methods_and_buckets_print_as_they_serialise() {
        for m in [
            LinkMethod::Exact,
            LinkMethod::NapiGet,
            LinkMethod::QueueGet,
            LinkMethod::CoOccurrence,
            LinkMethod::Backlog,
            LinkMethod::None,
        ] {
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json, m.as_str(), "{m:?}");
            assert!(m.short().len() <= 5, "{m:?}");
        }
        for b in [
            Bucket::Vector,
            Bucket::NetRxOverhead,
            Bucket::RpsBacklog,
            Bucket::NapiWithoutIrq,
        ] {
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str(), "{b:?}");
        }
    }

    #[test]
    fn exact_links_win_and_backlog_is_backlog() {
        let model = vm_model();
        let ids = BTreeMap::from([
            (X, ident("eth1", Some(36))),
            (B, ident(BACKLOG_DEVICE, None)),
            (V, ident("veth0", None)),
        ]);
        let links = Linker::default().links(&ids, &model);
        assert_eq!(links[&X].method, LinkMethod::Exact);
        assert_eq!(links[&X].irq, Some(36));
        assert_eq!(links[&B].method, LinkMethod::Backlog);
        assert_eq!(links[&V].method, LinkMethod::None);
        assert_eq!(links[&V].irq, None);
    }

    #[test]
    fn cooccurrence_picks_each_irqs_own_instance() {
        let model = vm_model();
        let ids = BTreeMap::from([(X, ident("eth1", None)), (Y, ident("eth1", None))]);
        let mut linker = Linker::default();
        // X repolls under load and so shows up in softirqs that IRQ 38 raised too, but in
        // IRQ 38's softirqs its own instance Y is always polled.
        let iv = Interval {
            pairs: BTreeMap::from([((X, 36), 50), ((X, 38), 30), ((Y, 38), 40)]),
            ..Interval::default()
        };
        linker.observe(&iv);
        let links = linker.links(&ids, &model);
        assert_eq!(links[&X].irq, Some(36), "{:?}", links[&X]);
        assert_eq!(links[&X].method, LinkMethod::CoOccurrence);
        assert_eq!(links[&X].evidence, 50);
        assert_eq!(links[&Y].irq, Some(38), "{:?}", links[&Y]);
        assert!((links[&Y].confidence - 40.0 / 70.0).abs() < 1e-9);
    }

    #[test]
    fn cooccurrence_needs_evidence_and_a_matching_device() {
        let model = vm_model();
        let ids = BTreeMap::from([(X, ident("eth1", None)), (Y, ident("eth0", None))]);
        let mut linker = Linker::default();
        linker.observe(&Interval {
            // IRQ 36 belongs to eth1: an eth0 instance can never be its own. Three softirqs
            // are below the evidence threshold.
            pairs: BTreeMap::from([((Y, 36), 100), ((X, 38), 3)]),
            ..Interval::default()
        });
        let links = linker.links(&ids, &model);
        assert_eq!(links[&Y].method, LinkMethod::None);
        assert_eq!(links[&X].method, LinkMethod::None);
        // Evidence accumulates across intervals.
        linker.observe(&Interval {
            pairs: BTreeMap::from([((X, 38), 3)]),
            ..Interval::default()
        });
        assert_eq!(linker.links(&ids, &model)[&X].irq, Some(38));
    }

    #[test]
    fn ties_say_nothing() {
        let model = vm_model();
        let ids = BTreeMap::from([(X, ident("eth1", None)), (Y, ident("eth1", None))]);
        let mut linker = Linker::default();
        linker.observe(&Interval {
            pairs: BTreeMap::from([((X, 36), 10), ((Y, 36), 10)]),
            ..Interval::default()
        });
        let links = linker.links(&ids, &model);
        assert_eq!(links[&X].method, LinkMethod::None);
        assert_eq!(links[&Y].method, LinkMethod::None);
    }

    use crate::system::netdev::{NapiInfo, QueueInfo};

    const ETH1: u32 = 3; // eth1's ifindex in the VM fixture

    fn rxq(id: u32, napi: u32) -> QueueInfo {
        QueueInfo {
            ifindex: ETH1,
            id,
            kind: QueueType::Rx,
            napi_id: Some(napi),
        }
    }

    fn txq(id: u32, napi: u32) -> QueueInfo {
        QueueInfo {
            kind: QueueType::Tx,
            ..rxq(id, napi)
        }
    }

    fn napi_info(id: u32, irq: Option<u32>) -> NapiInfo {
        NapiInfo {
            ifindex: ETH1,
            id,
            irq,
            pid: None,
        }
    }

    fn with_napi_id(dev: &str, napi_id: u32) -> NapiIdentity {
        NapiIdentity {
            napi_id: Some(napi_id),
            ..ident(dev, None)
        }
    }

    /// Four rx queues whose IRQs all fire on CPU 0 and whose polls all run there: every
    /// IRQ's softirqs poll every instance, so co-occurrence ties; queue-get tells them apart.
    #[test]
    fn queue_get_tells_apart_queues_sharing_a_cpu() {
        let mut model = vm_model();
        for irq in [36, 38, 40, 42] {
            model.irqs.get_mut(&irq).unwrap().effective_affinity = Some(CpuSet::from_cpus([0]));
        }
        let dump = NetdevDump {
            napi: (0..4).map(|q| napi_info(8193 + q, None)).collect(),
            queues: (0..4).map(|q| rxq(q, 8193 + q)).collect(),
        };
        let ids: BTreeMap<NapiKey, NapiIdentity> = (0..4u32)
            .map(|q| {
                (
                    NapiKey::new(0x1000 + u64::from(q), 8193 + q),
                    with_napi_id("eth1", 8193 + q),
                )
            })
            .collect();
        let mut linker = Linker::default();
        let mut pairs = BTreeMap::new();
        for napi in ids.keys() {
            for irq in [36, 38, 40, 42] {
                pairs.insert((*napi, irq), 20);
            }
        }
        linker.observe(&Interval {
            pairs,
            ..Interval::default()
        });
        let learned = linker.links(&ids, &model);
        assert!(learned.values().all(|l| l.method == LinkMethod::None));

        let netlink = netlink_links(&dump, &model);
        let links = linker.links_with(&ids, &model, &netlink);
        let got: Vec<(Option<u32>, LinkMethod)> =
            links.values().map(|l| (l.irq, l.method)).collect();
        assert_eq!(
            got,
            [36, 38, 40, 42].map(|irq| (Some(irq), LinkMethod::QueueGet))
        );
        assert!(links.values().all(|l| l.confidence == 1.0));
    }

    /// Raises are needed only while some NIC queue lacks an exact link.
    #[test]
    fn linked_exactly_needs_every_rx_queue_and_every_listed_instance() {
        let mut model = vm_model();
        // One NIC (the dump below describes eth1 only).
        model
            .irqs
            .retain(|_, i| i.netdev.as_deref().is_none_or(|d| d == "eth1"));
        let rx_irqs: Vec<u32> = model
            .irqs
            .values()
            .filter(|i| i.netdev.is_some())
            .filter(|i| {
                i.queue
                    .is_some_and(|q| matches!(q.kind, QueueKind::Rx | QueueKind::RxTx))
            })
            .map(|i| i.number)
            .collect();
        assert!(!rx_irqs.is_empty());
        let all = (0..rx_irqs.len() as u32).map(|q| rxq(q, 8193 + q));
        let dump = NetdevDump {
            napi: vec![],
            queues: all.collect(),
        };
        let links = netlink_links(&dump, &model);
        assert_eq!(linked_exactly(&dump, &model, &links), Ok(()));
        // One rx queue whose NAPI the driver did not record: co-occurrence must stay on.
        let partial = NetdevDump {
            napi: vec![],
            queues: dump.queues[1..].to_vec(),
        };
        let links = netlink_links(&partial, &model);
        let err = linked_exactly(&partial, &model, &links).unwrap_err();
        assert!(err.contains(&rx_irqs[0].to_string()), "{err}");
        // Without netlink nothing is linked exactly.
        assert!(linked_exactly(&NetdevDump::default(), &model, &BTreeMap::new()).is_err());
    }

    /// This host's virtio_net (kernel 6.18) links its rx queue to its NAPI instance but
    /// records no IRQ: captured replies joined with the captured host tree link NAPI 257 to
    /// `virtio2-input.0`, not to the output IRQ of the same queue pair.
    #[test]
    fn captured_virtio_queue_joins_its_input_irq() {
        use crate::system::{ReadOptions, netdev};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let read = |f: &str| std::fs::read(dir.join("netlink/host-virtio").join(f)).unwrap();
        let dump = NetdevDump {
            napi: netdev::parse_napi_dump(&read("napi-get.bin")).unwrap(),
            queues: netdev::parse_queue_dump(&read("queue-get.bin")).unwrap(),
        };
        let model = SystemModel::read(&dir.join("host"), &ReadOptions::default()).unwrap();
        assert_eq!(model.netdevs["eth0"].ifindex, Some(4));
        assert_eq!(model.irqs[&38].actions, ["virtio2-input.0"]);
        assert_eq!(
            netlink_links(&dump, &model),
            BTreeMap::from([(257, Link::exact(38, LinkMethod::QueueGet))])
        );
    }

    /// napi_struct.irq from the probe first, then napi-get's irq, then queue-get.
    #[test]
    fn kernel_recorded_irqs_come_before_the_queue_join() {
        let model = vm_model();
        let dump = NetdevDump {
            napi: vec![napi_info(8193, Some(36)), napi_info(8194, Some(38))],
            queues: vec![rxq(0, 8193), rxq(2, 8194)],
        };
        let netlink = netlink_links(&dump, &model);
        assert_eq!(netlink[&8193], Link::exact(36, LinkMethod::NapiGet));
        // napi-get says 38 although the queue's name says 40: the kernel's record wins.
        assert_eq!(netlink[&8194], Link::exact(38, LinkMethod::NapiGet));

        let ids = BTreeMap::from([
            (
                X,
                NapiIdentity {
                    irq: Some(40),
                    ..with_napi_id("eth1", 8193)
                },
            ),
            (Y, with_napi_id("eth1", 8194)),
        ]);
        let links = Linker::default().links_with(&ids, &model, &netlink);
        assert_eq!(links[&X], Link::exact(40, LinkMethod::Exact));
        assert_eq!(links[&Y], Link::exact(38, LinkMethod::NapiGet));
    }

    /// A queue the model has no IRQ for, a device the model does not know, a NAPI instance
    /// serving two queues with two IRQs: no link. An instance without IRQ or queue in
    /// netlink keeps co-occurrence.
    #[test]
    fn no_guessing_where_the_join_is_not_unique() {
        let model = vm_model();
        let dump = NetdevDump {
            napi: vec![napi_info(8200, None)],
            queues: vec![
                rxq(5, 8193),
                QueueInfo {
                    ifindex: 77,
                    ..rxq(0, 8194)
                },
                rxq(1, 8195),
                rxq(2, 8195),
                QueueInfo {
                    napi_id: None,
                    ..rxq(3, 0)
                },
            ],
        };
        let netlink = netlink_links(&dump, &model);
        assert!(netlink.is_empty(), "{netlink:?}");

        let ids = BTreeMap::from([(X, with_napi_id("eth1", 8200))]);
        let mut linker = Linker::default();
        linker.observe(&Interval {
            pairs: BTreeMap::from([((X, 42), 9)]),
            ..Interval::default()
        });
        let links = linker.links_with(&ids, &model, &netlink);
        assert_eq!(links[&X].method, LinkMethod::CoOccurrence);
        assert_eq!(links[&X].irq, Some(42));
    }

    /// Transmit IRQs (`virtio1-output.N`) never take a receive queue's instance; an
    /// instance serving only a transmit queue (virtio's tx NAPI) links to its IRQ, and one
    /// serving rx and tx queue 0 belongs to the rx IRQ. A combined IRQ (`eth1-TxRx-2`,
    /// `mlx5_comp2@...`) serves both.
    #[test]
    fn rx_queues_decide_and_tx_only_instances_link_to_tx_irqs() {
        let mut model = vm_model();
        model.irqs.get_mut(&40).unwrap().queue = Some(crate::system::Queue {
            kind: QueueKind::RxTx,
            index: 2,
        });
        // A combined channel has one IRQ: no separate output vector.
        model.irqs.remove(&41);
        let dump = NetdevDump {
            napi: vec![],
            queues: vec![
                rxq(0, 8193),
                txq(0, 8193),
                txq(1, 8194),
                txq(2, 8195),
                rxq(3, 8196),
            ],
        };
        let netlink = netlink_links(&dump, &model);
        let irq_of = |n: u32| netlink.get(&n).and_then(|l| l.irq);
        assert_eq!(irq_of(8193), Some(36));
        assert_eq!(irq_of(8194), Some(39));
        assert_eq!(irq_of(8195), Some(40));
        assert_eq!(irq_of(8196), Some(42));
        assert!(netlink.values().all(|l| l.method == LinkMethod::QueueGet));
    }

    /// A queue that polls on CPU 2 while its IRQ (36) is handled on CPU 0: its softirq time
    /// lands on CPU 2, where it was spent, and every CPU's softirq time adds up.
    #[test]
    fn time_lands_where_it_was_spent_and_adds_up() {
        let (a, _) = attribution();

        let q0 = &a.irqs[&36];
        assert_eq!(q0.hardirq_ns, 200_000);
        assert_eq!(q0.softirq_ns, 25_000_000);
        assert_eq!(q0.per_cpu[&2].softirq_ns, 25_000_000);
        assert_eq!(q0.per_cpu[&0].hardirq_ns, 200_000);
        assert_eq!(q0.weight_ns(), 25_200_000);
        // The count-based view has it backwards: 10% of interrupts, 86% of the time.
        let q1 = &a.irqs[&38];
        assert_eq!(q1.weight_ns(), 4_800_000);
        assert_eq!(a.total_interrupts(), 1000);
        assert!(q0.weight_ns() > 5 * q1.weight_ns());

        // CPU 2: 30 ms NET_RX = 25 ms to IRQ 36 + 4 ms veth + 1 ms overhead.
        let bucket = |cpu, b| {
            a.unattributed
                .iter()
                .find(|u| u.cpu == cpu && u.bucket == b)
                .map(|u| u.ns)
        };
        assert_eq!(bucket(2, Bucket::NapiWithoutIrq), Some(4_000_000));
        assert_eq!(bucket(2, Bucket::NetRxOverhead), Some(1_000_000));
        assert_eq!(bucket(1, Bucket::RpsBacklog), Some(1_000_000));
        assert_eq!(bucket(1, Bucket::NetRxOverhead), Some(1_000_000));
        assert_eq!(bucket(1, Bucket::Vector), Some(700_000));
        for cpu in &a.cpus {
            assert_eq!(
                a.attributed_softirq_ns(cpu.cpu) + a.unattributed_ns(cpu.cpu),
                cpu.softirq_total_ns(),
                "CPU {} adds up",
                cpu.cpu
            );
        }
        assert!(a.netrx_excess_ns.is_empty());
        // CPUs carry their nodes from the model.
        assert_eq!(a.cpus.iter().find(|c| c.cpu == 2).unwrap().node, Some(1));
    }

    #[test]
    fn polls_beyond_netrx_are_reported_not_hidden() {
        let model = vm_model();
        let iv = Interval {
            duration_ns: 1_000_000,
            online: CpuSet::from_cpus([0]),
            softirq: BTreeMap::from([(
                (0, 3),
                SoftirqStat {
                    raises: 1,
                    runs: 1,
                    ns: 1_000,
                },
            )]),
            napi: BTreeMap::from([((V, 0), napi(1, 1_500)), ((V, 1), napi(1, 700))]),
            napi_identity: BTreeMap::from([(V, ident("veth0", None))]),
            irqs_vanished: vec![31],
            went_offline: vec![3],
            probe_errors: [2, 0, 0, 0, 0, 3],
            ..Interval::default()
        };
        let links = Linker::default().links(&iv.napi_identity, &model);
        let a = Attribution::build(&iv, &model, &links);
        assert_eq!(a.netrx_excess_ns.get(&0), Some(&500));
        // CPU 1 polled but its NET_RX softirq had not ended when the interval closed.
        assert_eq!(a.netrx_excess_ns.get(&1), Some(&700));
        assert!(a.events.iter().any(|e| e.contains("IRQs vanished: 31")));
        assert!(a.events.iter().any(|e| e.contains("CPUs went offline: 3")));
        assert!(a.events.iter().any(|e| e.contains("map was full")));
        // Unpaired handler events are counted (report's coverage), not an interval event.
        assert!(!a.events.iter().any(|e| e.contains("handler")));
    }
}

#[cfg(test)]
mod task_poll_tests {
    use super::{testdata::*, *};
    use crate::sample::NapiDelta;

    /// Threaded and busy poll time goes to the instance's IRQ apart from its softirq time,
    /// into the CPU's task figures, never into its softirq split; each poll is in one count.
    #[test]
    fn task_polls_go_to_the_irq_apart_from_softirq() {
        let model = vm_model();
        let plain = interval();
        let mut iv = plain.clone();
        // X (IRQ 36) also polled 300 times on CPU 1 outside NET_RX: 200 in its kthread,
        // 60 busy, 40 with no mark.
        iv.napi.insert(
            (X, 1),
            NapiDelta {
                untimed_polls: 300,
                untimed_work: 900,
                threaded_polls: 200,
                threaded_ns: 7_000_000,
                busy_polls: 60,
                busy_ns: 1_500_000,
                ..NapiDelta::default()
            },
        );
        let links = Linker::default().links(&iv.napi_identity, &model);
        let a = Attribution::build(&iv, &model, &links);
        let b = Attribution::build(&plain, &model, &links);

        let irq = &a.irqs[&36];
        assert_eq!((irq.threaded_ns, irq.busy_poll_ns), (7_000_000, 1_500_000));
        assert_eq!(irq.softirq_ns, b.irqs[&36].softirq_ns);
        assert_eq!(irq.weight_ns(), b.irqs[&36].weight_ns());
        assert_eq!(irq.per_cpu[&1].threaded_ns, 7_000_000);
        assert_eq!(irq.per_cpu[&1].softirq_ns, 0);

        let x = a.napi.iter().find(|n| n.id == X).unwrap();
        let c = x.per_cpu[&1];
        assert_eq!(
            (c.polls, c.threaded_polls, c.busy_polls, c.untimed_polls),
            (0, 200, 60, 40)
        );
        assert_eq!(c.all_polls(), 300);
        assert_eq!(c.all_ns(), 8_500_000);
        assert_eq!(c.packets, 900);

        for (cpu, before) in a.cpus.iter().zip(&b.cpus) {
            assert_eq!(cpu.softirq_total_ns(), before.softirq_total_ns());
            assert_eq!(a.unattributed_ns(cpu.cpu), b.unattributed_ns(cpu.cpu));
            assert_eq!(
                a.attributed_softirq_ns(cpu.cpu),
                b.attributed_softirq_ns(cpu.cpu)
            );
        }
        let cpu1 = a.cpus.iter().find(|c| c.cpu == 1).unwrap();
        assert_eq!(
            (cpu1.threaded_ns, cpu1.busy_poll_ns),
            (7_000_000, 1_500_000)
        );
    }
}

#[cfg(test)]
mod first_poll_tests {
    use super::{testdata::*, *};
    use crate::{cpumask::CpuSet, sample::NapiDelta};

    /// Two equal queues on CPU 2, X polled first in every round: X's first polls carry the
    /// round's preamble (10 ms above the 1 us a packet that Y's polls cost), which is split
    /// by packets; the CPU's poll time stays 30 ms. Alone on a CPU, or beside too few other
    /// packets to give a rate, a queue keeps its time.
    #[test]
    fn a_rounds_first_poll_shares_its_preamble_by_packets() {
        let model = vm_model();
        let d = |work: u64, ns: u64, first_work: u64, first_ns: u64| NapiDelta {
            polls: 1000,
            work,
            ns,
            first_work,
            first_ns,
            ..NapiDelta::default()
        };
        let build = |napi: BTreeMap<(NapiKey, u32), NapiDelta>| {
            let iv = Interval {
                duration_ns: 1_000_000_000,
                online: CpuSet::from_cpus([0, 1, 2, 3]),
                napi,
                napi_identity: BTreeMap::from([
                    (X, ident("eth1", Some(36))),
                    (Y, ident("eth1", Some(38))),
                ]),
                ..Interval::default()
            };
            let links = Linker::default().links(&iv.napi_identity, &model);
            Attribution::build(&iv, &model, &links)
        };

        let a = build(BTreeMap::from([
            ((X, 2), d(10_000, 20_000_000, 10_000, 20_000_000)),
            ((Y, 2), d(10_000, 10_000_000, 0, 0)),
        ]));
        assert_eq!(a.irqs[&36].softirq_ns, 15_000_000);
        assert_eq!(a.irqs[&38].softirq_ns, 15_000_000);
        let x = a.napi.iter().find(|n| n.id == X).unwrap();
        assert_eq!(x.per_cpu[&2].ns, 15_000_000);
        assert_eq!(x.per_cpu[&2].preamble_ns, -5_000_000);
        assert_eq!(x.per_cpu[&2].first_poll_ns, 20_000_000);

        // Y has three times X's packets: three quarters of the excess.
        let a = build(BTreeMap::from([
            ((X, 2), d(10_000, 20_000_000, 10_000, 20_000_000)),
            ((Y, 2), d(30_000, 30_000_000, 0, 0)),
        ]));
        assert_eq!(a.irqs[&36].softirq_ns, 12_500_000);
        assert_eq!(a.irqs[&38].softirq_ns, 37_500_000);

        // Alone on CPU 2 (Y on CPU 3): as measured.
        let a = build(BTreeMap::from([
            ((X, 2), d(10_000, 20_000_000, 10_000, 20_000_000)),
            ((Y, 3), d(10_000, 10_000_000, 10_000, 10_000_000)),
        ]));
        assert_eq!(a.irqs[&36].softirq_ns, 20_000_000);
        assert_eq!(a.irqs[&38].softirq_ns, 10_000_000);

        // A tx-only instance (no packets) polled first keeps its time and is not in the rate.
        let a = build(BTreeMap::from([
            ((X, 2), d(10_000, 20_000_000, 10_000, 20_000_000)),
            ((Y, 2), d(10_000, 10_000_000, 0, 0)),
            ((V, 2), d(0, 4_000_000, 0, 4_000_000)),
        ]));
        assert_eq!(a.irqs[&36].softirq_ns, 15_000_000);
        assert_eq!(a.irqs[&38].softirq_ns, 15_000_000);
        let v = a.napi.iter().find(|n| n.id == V).unwrap();
        assert_eq!(v.per_cpu[&2].ns, 4_000_000);

        // Beside 10 packets of other polls: no rate to weigh the first polls by.
        let a = build(BTreeMap::from([
            ((X, 2), d(10_000, 20_000_000, 10_000, 20_000_000)),
            ((Y, 2), d(10, 10_000, 0, 0)),
        ]));
        assert_eq!(a.irqs[&36].softirq_ns, 20_000_000);
        assert_eq!(a.irqs[&38].softirq_ns, 10_000);
    }
}
