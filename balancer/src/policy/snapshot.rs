//! The policy's input: one interval of the machine, reduced to what placement decisions
//! need. Built from the system model and the attribution by [`Snapshot::build`], or directly
//! by the simulator.
use std::collections::BTreeMap;

use balancer_common::NapiKey;

use serde::Serialize;

use crate::{
    attribution::{Attribution, Bucket},
    cpumask::CpuSet,
    system::{QueueKind, SystemModel},
};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub duration_ns: u64,
    /// Width of the kernel's masks.
    pub nr_cpu_ids: u32,
    pub cpus: BTreeMap<u32, CpuSnap>,
    pub irqs: BTreeMap<u32, IrqSnap>,
    pub napi: Vec<NapiSnap>,
    pub queues: Vec<QueueSnap>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuSnap {
    pub id: u32,
    pub node: Option<u32>,
    pub online: bool,
    /// SMT siblings including this CPU (empty when unknown).
    pub siblings: CpuSet,
    /// Isolated or nohz_full: never a target.
    pub isolated: bool,
    /// Time not idle: /proc/stat, or the measured IRQ time when that is larger or missing.
    pub busy_ns: u64,
    /// Measured hardirq + softirq time.
    pub irq_ns: u64,
    /// Softirq time of the RPS backlog (spread packets), part of `irq_ns`.
    pub rps_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IrqCpuSnap {
    pub interrupts: u64,
    /// Hardirq + attributed poll time on this CPU, with its share (by poll time) of the
    /// CPU's NET_RX time outside polls: what moves with the IRQ.
    pub ns: u64,
    /// Of which poll (softirq) time and that share.
    pub poll_ns: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IrqSnap {
    pub number: u32,
    /// Action names, comma-separated.
    pub name: String,
    pub device: Option<String>,
    pub driver: Option<String>,
    pub netdev: Option<String>,
    /// Queue kind and index.
    pub queue: Option<(QueueKind, u32)>,
    /// The device's node after proximity overrides.
    pub node: Option<u32>,
    pub local_cpus: Option<CpuSet>,
    pub smp_affinity: Option<CpuSet>,
    pub effective: Option<CpuSet>,
    /// Known managed (writes fail with EIO).
    pub managed: bool,
    pub interrupts: u64,
    pub per_cpu: BTreeMap<u32, IrqCpuSnap>,
    /// Linked NAPI instances (ids into [`Snapshot::napi`]).
    pub napi: Vec<NapiKey>,
}

impl IrqSnap {
    /// Where its interrupts go: the effective affinity, else the requested one.
    pub(crate) fn home(&self) -> CpuSet {
        self.effective
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.smp_affinity.clone())
            .unwrap_or_default()
    }

    pub(crate) fn total_ns(&self) -> u64 {
        self.per_cpu.values().map(|c| c.ns).sum()
    }

    /// Time spent on the CPUs of `set`.
    pub(crate) fn ns_on(&self, set: &CpuSet) -> u64 {
        self.per_cpu
            .iter()
            .filter(|(c, _)| set.contains(**c))
            .map(|(_, l)| l.ns)
            .sum()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PollSnap {
    /// All polls: in softirq, in a task (threaded NAPI, busy polling), timed or not.
    pub polls: u64,
    /// Time of the timed ones, softirq and task time.
    pub ns: u64,
    pub budget_exhausted: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct NapiSnap {
    pub id: NapiKey,
    pub napi_id: Option<u32>,
    pub device: String,
    pub irq: Option<u32>,
    /// The device runs NAPI in kthreads (`napi/<dev>-<id>`).
    pub threaded: bool,
    pub per_cpu: BTreeMap<u32, PollSnap>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueSnap {
    pub netdev: String,
    pub index: u32,
    pub irq: Option<u32>,
    pub rps_cpus: CpuSet,
}

impl Snapshot {
    /// The policy's view of one measured interval.
    pub(crate) fn build(model: &SystemModel, a: &Attribution) -> Snapshot {
        let mut s = Snapshot {
            duration_ns: a.duration_ns,
            nr_cpu_ids: model.nr_cpu_ids,
            ..Snapshot::default()
        };
        for (id, cpu) in &model.cpus {
            s.cpus.insert(
                *id,
                CpuSnap {
                    id: *id,
                    node: cpu.node,
                    online: cpu.online,
                    siblings: cpu.thread_siblings.clone(),
                    isolated: model.isolated.contains(*id) || model.nohz_full.contains(*id),
                    ..CpuSnap::default()
                },
            );
        }
        for load in &a.cpus {
            let c = s.cpus.entry(load.cpu).or_insert_with(|| CpuSnap {
                id: load.cpu,
                node: load.node,
                ..CpuSnap::default()
            });
            c.online = load.online;
            c.irq_ns = load.hardirq_ns + load.softirq_total_ns();
            c.busy_ns = load.stat_busy_ns.unwrap_or(0).max(c.irq_ns);
        }
        for u in &a.unattributed {
            if u.bucket == Bucket::RpsBacklog
                && let Some(c) = s.cpus.get_mut(&u.cpu)
            {
                c.rps_ns += u.ns;
            }
        }
        let overhead = netrx_overhead(a);
        for (n, irq) in &model.irqs {
            let load = a.irqs.get(n);
            let per_cpu = load
                .map(|l| {
                    l.per_cpu
                        .iter()
                        .map(|(cpu, c)| {
                            let share = overhead.get(cpu).map_or(0, |o| o.share(c.softirq_ns));
                            (
                                *cpu,
                                IrqCpuSnap {
                                    interrupts: c.interrupts,
                                    ns: c.hardirq_ns + c.softirq_ns + share,
                                    poll_ns: c.softirq_ns + share,
                                },
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            s.irqs.insert(
                *n,
                IrqSnap {
                    number: *n,
                    name: irq.actions.join(","),
                    device: irq.device.clone(),
                    driver: irq.driver.clone(),
                    netdev: irq.netdev.clone(),
                    queue: irq.queue.map(|q| (q.kind, q.index)),
                    node: irq.node,
                    local_cpus: irq.local_cpus.clone(),
                    smp_affinity: irq.smp_affinity.clone(),
                    effective: irq.effective_affinity.clone(),
                    managed: irq.managed == Some(true),
                    interrupts: load.map_or(0, |l| l.interrupts),
                    per_cpu,
                    napi: load.map(|l| l.napi.clone()).unwrap_or_default(),
                },
            );
        }
        s.napi = napi_snaps(model, a);
        s.queues = queue_snaps(model);
        s
    }

    /// Busy fraction of one CPU over the interval.
    pub(crate) fn load(&self, cpu: u32) -> f64 {
        self.frac(self.cpus.get(&cpu).map_or(0, |c| c.busy_ns))
    }

    pub(crate) fn frac(&self, ns: u64) -> f64 {
        if self.duration_ns == 0 {
            0.0
        } else {
            ns as f64 / self.duration_ns as f64
        }
    }
}

/// One CPU's NET_RX time outside polls, and the poll time it is shared over.
struct Overhead {
    ns: u64,
    polled_ns: u64,
}

impl Overhead {
    /// The part of the overhead that `poll_ns` of polls on this CPU brought.
    fn share(&self, poll_ns: u64) -> u64 {
        if self.polled_ns == 0 {
            return 0;
        }
        (self.ns as u128 * poll_ns.min(self.polled_ns) as u128 / self.polled_ns as u128) as u64
    }
}

/// Per CPU, NET_RX time outside polls (the round's work after its last poll event: the GRO
/// flush after a full budget, deferred skb frees, RPS IPIs, the loop) with the timed poll
/// time of every instance there. That work moves with the queues polled: in the VM a
/// saturated queue read 88% of CPU 3 while CPU 3 was 95% busy; the policy counted the 7% as
/// staying and moved the queue to an idle CPU for a "gain" of 6 points, and CPU 2 then read
/// 95%. Shared by poll time, the IRQs' weights carry it; what backlog and unlinked polls
/// brought stays with the CPU.
fn netrx_overhead(a: &Attribution) -> BTreeMap<u32, Overhead> {
    let mut out: BTreeMap<u32, Overhead> = BTreeMap::new();
    for u in &a.unattributed {
        if u.bucket == Bucket::NetRxOverhead {
            out.entry(u.cpu)
                .or_insert(Overhead {
                    ns: 0,
                    polled_ns: 0,
                })
                .ns += u.ns;
        }
    }
    for napi in &a.napi {
        for (cpu, c) in &napi.per_cpu {
            if let Some(o) = out.get_mut(cpu) {
                o.polled_ns += c.ns;
            }
        }
    }
    out
}

/// The policy's view of each NAPI instance: where it polls, its IRQ, whether it is threaded.
fn napi_snaps(model: &SystemModel, a: &Attribution) -> Vec<NapiSnap> {
    let mut out = Vec::new();
    for napi in &a.napi {
        let threaded = model
            .netdevs
            .get(&napi.device)
            .and_then(|d| d.threaded)
            .unwrap_or(false);
        out.push(NapiSnap {
            id: napi.id,
            napi_id: napi.napi_id,
            device: napi.device.clone(),
            irq: napi.link.irq,
            threaded,
            per_cpu: napi
                .per_cpu
                .iter()
                .map(|(cpu, c)| {
                    (
                        *cpu,
                        PollSnap {
                            // Every poll and every timed poll's time, in softirq or in
                            // a task (threaded NAPI, busy polling): where the instance's
                            // work runs, which is what sticking is about.
                            polls: c.all_polls(),
                            ns: c.all_ns(),
                            budget_exhausted: c.budget_exhausted,
                        },
                    )
                })
                .collect(),
        });
    }
    out
}

/// Every rx queue with its IRQ and its `rps_cpus`.
fn queue_snaps(model: &SystemModel) -> Vec<QueueSnap> {
    let mut out = Vec::new();
    for dev in model.netdevs.values() {
        for q in &dev.rx_queues {
            let irq = model
                .irqs_of_netdev(&dev.name)
                .find(|i| {
                    i.queue.is_some_and(|qq| {
                        qq.index == q.index && matches!(qq.kind, QueueKind::Rx | QueueKind::RxTx)
                    })
                })
                .map(|i| i.number);
            out.push(QueueSnap {
                netdev: dev.name.clone(),
                index: q.index,
                irq,
                rps_cpus: q.rps_cpus.clone().unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::testdata;

    /// NET_RX time outside polls goes to the IRQs by their poll time on that CPU; what
    /// backlog and unlinked polls brought stays unattributed.
    #[test]
    fn netrx_overhead_moves_with_the_queues_polled() {
        let (a, model) = testdata::attribution();
        let s = Snapshot::build(&model, &a);
        // CPU 2: 30 ms of NET_RX, IRQ 36's instance polled 25 ms, veth (no IRQ) 4 ms:
        // 1 ms outside polls, 25/29 of it IRQ 36's.
        let on2 = s.irqs[&36].per_cpu[&2];
        assert_eq!(on2.poll_ns, 25_000_000 + 862_068);
        assert_eq!(on2.ns, on2.poll_ns);
        // CPU 1: 5 ms, IRQ 38's instance 3 ms, the backlog 1 ms: 3/4 of 1 ms.
        let on1 = s.irqs[&38].per_cpu[&1];
        assert_eq!(on1.poll_ns, 3_000_000 + 750_000);
        assert_eq!(on1.ns, 1_800_000 + on1.poll_ns);
        // IRQ 36's handler ran on CPU 0, where nothing polled: no share there.
        assert_eq!(s.irqs[&36].per_cpu[&0].ns, 200_000);
        // The CPUs' own loads are the measured ones, whatever the split.
        assert_eq!(s.cpus[&2].irq_ns, 30_000_000);
    }
}
