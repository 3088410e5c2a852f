//! Snapshots of every cumulative counter, and the interval between two of them.
//!
//! A snapshot takes the eBPF counters, `/proc/interrupts`, `/proc/stat` and the online CPUs at
//! one moment; an [`Interval`] is the difference of two snapshots. Counters only grow, except
//! that `/proc/interrupts` counts are 32-bit on many kernels and wrap, and a counter that
//! restarts (a map recreated, an IRQ freed and requested again) must not read as a huge
//! negative delta: [`counter_delta`] handles both.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use balancer_common::{DEV_NAME_LEN, IrqStat, NR_ERRORS, NapiKey, NapiStat, SoftirqStat};

use crate::{
    cpumask::CpuSet,
    probe::{Counters, Probe},
    system::{
        interrupts::{self, Interrupts, RowId},
        kthreads,
        netdev::NetdevDump,
        stat::{self, CpuTimes},
    },
};

/// Every cumulative counter at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) counters: Counters,
    pub(crate) interrupts: Interrupts,
    pub(crate) stat: BTreeMap<u32, CpuTimes>,
    pub(crate) online: CpuSet,
}

impl Snapshot {
    /// Reads the machine's counters under `root` and the probe's maps.
    pub(crate) fn take(probe: &Probe, root: &Path) -> anyhow::Result<Snapshot> {
        let counters = probe.read().context("reading the eBPF maps")?;
        Self::from_parts(root, counters)
    }

    /// The /proc and /sys half of a snapshot, with counters from elsewhere (tests, replays).
    pub(crate) fn from_parts(root: &Path, counters: Counters) -> anyhow::Result<Snapshot> {
        let interrupts = interrupts::read(root)?;
        let stat = stat::read(root)?;
        let online_path = root.join("sys/devices/system/cpu/online");
        let online = match std::fs::read_to_string(&online_path) {
            Ok(text) => CpuSet::parse_list(text.trim())
                .with_context(|| format!("parsing {}", online_path.display()))?,
            // Without the file, the CPUs /proc/stat lists are the online ones.
            Err(_) => CpuSet::from_cpus(stat.keys().copied()),
        };
        Ok(Snapshot {
            at: Instant::now(),
            counters,
            interrupts,
            stat,
            online,
        })
    }
}

/// What a NAPI instance is, from the poll events (merged over CPUs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NapiIdentity {
    /// Device name from the poll event; `(no_device)` for the backlog (RPS, loopback).
    pub device: String,
    /// `napi_struct.irq` when the kernel has it and the driver recorded one.
    pub(crate) irq: Option<u32>,
    /// `napi_struct.napi_id`, when known.
    pub napi_id: Option<u32>,
    /// The poll kthread (`napi/<dev>-<id>`) of a threaded instance, from netlink's
    /// `napi-get` (see [`Interval::add_netdev`]).
    pub thread_pid: Option<u32>,
}

/// Per (NAPI instance, CPU) counts over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NapiDelta {
    pub(crate) polls: u64,
    pub(crate) work: u64,
    pub(crate) budget_exhausted: u64,
    pub(crate) ns: u64,
    /// The part of `work` and `ns` in polls that were the first of their NET_RX softirq.
    pub(crate) first_work: u64,
    pub(crate) first_ns: u64,
    /// Polls outside NET_RX softirq, timed or not; the timed ones are also counted below.
    pub(crate) untimed_polls: u64,
    pub(crate) untimed_work: u64,
    /// Timed polls in a NAPI kthread: task time, not softirq time.
    pub(crate) threaded_polls: u64,
    pub(crate) threaded_ns: u64,
    /// Timed busy polls (process context): task time, not softirq time.
    pub(crate) busy_polls: u64,
    pub(crate) busy_ns: u64,
}

impl NapiDelta {
    fn is_zero(&self) -> bool {
        *self == NapiDelta::default()
    }
}

/// Differences between two snapshots. Entries whose delta is zero are left out.
#[derive(Clone, Debug, Default)]
pub struct Interval {
    pub(crate) duration_ns: u64,
    /// CPUs online at the end of the interval.
    pub(crate) online: CpuSet,
    /// CPUs that went offline or came online during the interval.
    pub(crate) went_offline: Vec<u32>,
    pub(crate) came_online: Vec<u32>,
    /// (IRQ, CPU) -> handler runs and ns.
    pub(crate) hardirq: BTreeMap<(u32, u32), IrqStat>,
    /// (CPU, system vector) -> runs and ns.
    pub(crate) sysvec: BTreeMap<(u32, u32), IrqStat>,
    /// (CPU, vector) -> raises, runs, ns.
    pub(crate) softirq: BTreeMap<(u32, u32), SoftirqStat>,
    /// (NAPI instance, CPU) -> polls, packets, ns.
    pub(crate) napi: BTreeMap<(NapiKey, u32), NapiDelta>,
    /// Every NAPI instance seen so far, active in this interval or not.
    pub napi_identity: BTreeMap<NapiKey, NapiIdentity>,
    /// (NAPI instance, IRQ) -> polls in NET_RX softirqs that IRQ raised.
    pub(crate) pairs: BTreeMap<(NapiKey, u32), u64>,
    /// (IRQ, CPU) -> interrupts, from /proc/interrupts.
    pub(crate) interrupts: BTreeMap<(u32, u32), u64>,
    /// IRQ numbers present at only one end of the interval.
    pub(crate) irqs_appeared: Vec<u32>,
    pub(crate) irqs_vanished: Vec<u32>,
    /// Per CPU, the /proc/stat times over the interval, in ns.
    pub(crate) stat: BTreeMap<u32, CpuTimes>,
    /// eBPF map-full and read errors during the interval.
    pub probe_errors: [u64; NR_ERRORS as usize],
}

impl Interval {
    /// Adds what the netdev netlink family says of the NAPI instances, joined on NAPI id:
    /// the poll kthread of threaded ones.
    pub fn add_netdev(&mut self, dump: &NetdevDump) {
        let pids: BTreeMap<u32, u32> = dump
            .napi
            .iter()
            .filter_map(|n| Some((n.id, n.pid?)))
            .collect();
        for ident in self.napi_identity.values_mut() {
            ident.thread_pid = ident.napi_id.and_then(|id| pids.get(&id).copied());
        }
    }
}

/// Difference of a cumulative counter. A 32-bit counter that wrapped (`prev` fits in 32 bits
/// and `cur` is below it) counts the wrap; any other decrease is a restart and counts from 0.
fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else if prev <= u64::from(u32::MAX) {
        cur + (u64::from(u32::MAX) + 1 - prev)
    } else {
        cur
    }
}

/// Like [`counter_delta`] for the eBPF counters, which are 64-bit: a decrease is a restart.
fn delta64(prev: u64, cur: u64) -> u64 {
    cur.checked_sub(prev).unwrap_or(cur)
}

impl Interval {
    /// The interval from `prev` to `cur`.
    pub(crate) fn between(prev: &Snapshot, cur: &Snapshot) -> Interval {
        let duration_ns = cur.at.saturating_duration_since(prev.at).as_nanos() as u64;
        let mut iv = Interval {
            duration_ns,
            online: cur.online.clone(),
            went_offline: prev.online.difference(&cur.online).iter().collect(),
            came_online: cur.online.difference(&prev.online).iter().collect(),
            ..Interval::default()
        };
        let (p, c) = (&prev.counters, &cur.counters);

        iv.hardirq = irq_deltas(&p.irqs, &c.irqs);
        iv.sysvec = irq_deltas(&p.sysvecs, &c.sysvecs);
        for (key, now) in &c.softirqs {
            let before = p.softirqs.get(key).copied().unwrap_or_default();
            let d = SoftirqStat {
                raises: delta64(before.raises, now.raises),
                runs: delta64(before.runs, now.runs),
                ns: delta64(before.ns, now.ns),
            };
            if d != SoftirqStat::default() {
                iv.softirq.insert(*key, d);
            }
        }
        for (key, now) in &c.napi {
            let d = match p.napi.get(key) {
                Some(before) => napi_delta(before, now),
                None => napi_delta(&NapiStat::EMPTY, now),
            };
            if !d.is_zero() {
                iv.napi.insert(*key, d);
            }
        }
        iv.napi_identity = identities(c);
        for (key, now) in &c.pairs {
            let d = delta64(p.pairs.get(key).copied().unwrap_or(0), *now);
            if d != 0 {
                iv.pairs.insert(*key, d);
            }
        }
        for (i, e) in iv.probe_errors.iter_mut().enumerate() {
            *e = delta64(p.errors[i], c.errors[i]);
        }

        iv.diff_interrupts(&prev.interrupts, &cur.interrupts);

        for (cpu, now) in &cur.stat {
            if let Some(before) = prev.stat.get(cpu) {
                iv.stat.insert(*cpu, stat_delta(before, now));
            }
        }
        iv
    }

    fn diff_interrupts(&mut self, prev: &Interrupts, cur: &Interrupts) {
        let before = per_cpu_counts(prev);
        let after = per_cpu_counts(cur);
        let numbers = |m: &BTreeMap<RowId, BTreeMap<u32, u64>>| -> BTreeSet<u32> {
            m.keys()
                .filter_map(|k| match k {
                    RowId::Irq(n) => Some(*n),
                    // System vectors are measured by the probes (`sysvec`), not from here.
                    RowId::Named(_) => None,
                })
                .collect()
        };
        let (was, is) = (numbers(&before), numbers(&after));
        self.irqs_appeared = is.difference(&was).copied().collect();
        self.irqs_vanished = was.difference(&is).copied().collect();
        for (key, counts) in &after {
            let RowId::Irq(n) = key else { continue };
            let old = before.get(key);
            for (cpu, now) in counts {
                let then = old.and_then(|o| o.get(cpu)).copied().unwrap_or(0);
                let d = counter_delta(then, *now);
                if d == 0 {
                    continue;
                }
                self.interrupts.insert((*n, *cpu), d);
            }
        }
    }
}

/// Row -> CPU -> count. Columns are matched by CPU id, not position, so a CPU going offline
/// (its column disappears) does not shift the others.
fn per_cpu_counts(ints: &Interrupts) -> BTreeMap<RowId, BTreeMap<u32, u64>> {
    ints.rows
        .iter()
        .map(|row| {
            let counts = ints
                .cpus
                .iter()
                .zip(&row.counts)
                .map(|(cpu, n)| (*cpu, *n))
                .collect();
            (row.id.clone(), counts)
        })
        .collect()
}

/// Handler (or system vector) runs and time between two reads, zero entries left out.
fn irq_deltas(
    prev: &BTreeMap<(u32, u32), IrqStat>,
    cur: &BTreeMap<(u32, u32), IrqStat>,
) -> BTreeMap<(u32, u32), IrqStat> {
    cur.iter()
        .filter_map(|(key, now)| {
            let before = prev.get(key).copied().unwrap_or_default();
            let d = IrqStat {
                runs: delta64(before.runs, now.runs),
                ns: delta64(before.ns, now.ns),
            };
            (d.runs != 0 || d.ns != 0).then_some((*key, d))
        })
        .collect()
}

fn napi_delta(p: &NapiStat, c: &NapiStat) -> NapiDelta {
    NapiDelta {
        polls: delta64(p.polls, c.polls),
        work: delta64(p.work, c.work),
        budget_exhausted: delta64(p.budget_exhausted, c.budget_exhausted),
        ns: delta64(p.ns, c.ns),
        first_work: delta64(p.first_work, c.first_work),
        first_ns: delta64(p.first_ns, c.first_ns),
        untimed_polls: delta64(p.untimed_polls, c.untimed_polls),
        untimed_work: delta64(p.untimed_work, c.untimed_work),
        threaded_polls: delta64(p.threaded_polls, c.threaded_polls),
        threaded_ns: delta64(p.threaded_ns, c.threaded_ns),
        busy_polls: delta64(p.busy_polls, c.busy_polls),
        busy_ns: delta64(p.busy_ns, c.busy_ns),
    }
}

/// The programs record a NAPI instance's identity in each CPU's copy of its slot when that
/// CPU first polls it; a read that failed leaves a copy without a device name, so take it
/// from a copy that has one.
fn identities(c: &Counters) -> BTreeMap<NapiKey, NapiIdentity> {
    let mut out: BTreeMap<NapiKey, NapiIdentity> = BTreeMap::new();
    for ((id, _cpu), s) in &c.napi {
        let name_len = s
            .dev_name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(DEV_NAME_LEN);
        if name_len == 0 {
            out.entry(*id).or_default();
            continue;
        }
        out.insert(
            *id,
            NapiIdentity {
                device: String::from_utf8_lossy(&s.dev_name[..name_len]).into_owned(),
                // An unset napi_struct.irq reads -1 (or 0 before the driver set it).
                irq: u32::try_from(s.irq).ok().filter(|irq| *irq > 0),
                napi_id: (s.napi_id != 0).then_some(s.napi_id),
                thread_pid: None,
            },
        );
    }
    out
}

fn stat_delta(p: &CpuTimes, c: &CpuTimes) -> CpuTimes {
    CpuTimes {
        user: delta64(p.user, c.user),
        nice: delta64(p.nice, c.nice),
        system: delta64(p.system, c.system),
        idle: delta64(p.idle, c.idle),
        iowait: delta64(p.iowait, c.iowait),
        irq: delta64(p.irq, c.irq),
        softirq: delta64(p.softirq, c.softirq),
        steal: delta64(p.steal, c.steal),
    }
}

/// Lists the machine's NAPI kthreads to the probe, which times their polls while there are
/// any. A failure only leaves threaded polls untimed, so it is logged, not raised.
pub(crate) fn sync_napi_threads(probe: &mut Probe, root: &Path) {
    if !probe.status.threaded_napi.active {
        return;
    }
    if let Err(e) = probe.set_napi_threads(&kthreads::napi_kthreads(root)) {
        log::warn!("threaded NAPI polls not timed: {e:#}");
    }
}

/// Reads snapshots from a probe and the machine and hands out intervals.
pub struct Sampler {
    probe: Probe,
    root: PathBuf,
    prev: Snapshot,
}

impl Sampler {
    /// Takes the first snapshot; the first interval starts now.
    pub fn new(mut probe: Probe, root: &Path) -> anyhow::Result<Sampler> {
        sync_napi_threads(&mut probe, root);
        let prev = Snapshot::take(&probe, root)?;
        Ok(Sampler {
            probe,
            root: root.to_path_buf(),
            prev,
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The interval since the previous call (or since `new`).
    pub fn sample(&mut self) -> anyhow::Result<Interval> {
        let cur = Snapshot::take(&self.probe, &self.root)?;
        // After the read: a kthread that appeared in this interval is timed from the next.
        sync_napi_threads(&mut self.probe, &self.root);
        let iv = Interval::between(&self.prev, &cur);
        self.probe.checkpoint();
        self.prev = cur;
        Ok(iv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_count_wraps_and_restarts() {
        assert_eq!(counter_delta(10, 25), 15);
        // A 32-bit /proc/interrupts counter wrapped.
        assert_eq!(counter_delta(u64::from(u32::MAX) - 4, 5), 10);
        // A 64-bit counter went down: restarted, count from zero.
        assert_eq!(counter_delta(1 << 40, 7), 7);
        assert_eq!(delta64(100, 40), 40);
        assert_eq!(delta64(40, 100), 60);
    }

    fn ints(cpus: &[u32], rows: &[(u32, &[u64])]) -> Interrupts {
        let text = {
            let mut t = String::new();
            for cpu in cpus {
                t.push_str(&format!("       CPU{cpu}"));
            }
            t.push('\n');
            for (irq, counts) in rows {
                t.push_str(&format!("{irq:>4}:"));
                for c in *counts {
                    t.push_str(&format!(" {c:>10}"));
                }
                t.push_str("  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n");
            }
            t.push_str(" LOC:");
            for _ in cpus {
                t.push_str("        100");
            }
            t.push_str("   Local timer interrupts\n");
            t
        };
        interrupts::parse(&text)
    }

    fn snap(at: Instant, counters: Counters, interrupts: Interrupts, online: &[u32]) -> Snapshot {
        Snapshot {
            at,
            counters,
            interrupts,
            stat: BTreeMap::new(),
            online: CpuSet::from_cpus(online.iter().copied()),
        }
    }

    #[test]
    fn interrupts_match_columns_by_cpu_id() {
        let t0 = Instant::now();
        let a = ints(&[0, 1, 2], &[(30, &[10, 20, 30]), (31, &[1, 1, 1])]);
        // CPU 1 went offline: its column is gone; IRQ 31 vanished, 32 appeared.
        let b = ints(&[0, 2], &[(30, &[15, 37]), (32, &[4, 0])]);
        let p = snap(t0, Counters::default(), a, &[0, 1, 2]);
        let c = snap(t0, Counters::default(), b, &[0, 2]);
        let iv = Interval::between(&p, &c);
        assert_eq!(iv.interrupts.get(&(30, 0)), Some(&5));
        assert_eq!(iv.interrupts.get(&(30, 2)), Some(&7));
        assert_eq!(iv.interrupts.get(&(32, 0)), Some(&4));
        assert_eq!(
            iv.interrupts.len(),
            3,
            "zero deltas left out: {:?}",
            iv.interrupts
        );
        assert_eq!(iv.irqs_appeared, vec![32]);
        assert_eq!(iv.irqs_vanished, vec![31]);
        assert_eq!(iv.went_offline, vec![1]);
        assert!(iv.came_online.is_empty());
    }

    #[test]
    fn napi_identity_comes_from_the_slot_that_has_it() {
        let mut named = NapiStat::EMPTY;
        named.dev_name[..4].copy_from_slice(b"eth0");
        named.irq = 38;
        named.napi_id = 8193;
        named.polls = 5;
        let mut other_cpu = NapiStat::EMPTY;
        other_cpu.irq = 0;
        other_cpu.polls = 3;
        let mut c = Counters::default();
        c.napi.insert((NapiKey::new(0xffff_1000, 0), 0), other_cpu);
        c.napi.insert((NapiKey::new(0xffff_1000, 0), 1), named);
        let ids = identities(&c);
        assert_eq!(
            ids[&NapiKey::new(0xffff_1000, 0)],
            NapiIdentity {
                device: "eth0".into(),
                irq: Some(38),
                napi_id: Some(8193),
                thread_pid: None,
            }
        );
        // -1 and 0 both mean "not recorded".
        let mut veth = NapiStat::EMPTY;
        veth.dev_name[..2].copy_from_slice(b"vA");
        veth.polls = 1;
        c.napi.insert((NapiKey::new(0xffff_2000, 0), 0), veth);
        assert_eq!(identities(&c)[&NapiKey::new(0xffff_2000, 0)].irq, None);
    }

    #[test]
    fn netlink_gives_threaded_instances_their_kthread() {
        use crate::system::netdev::{NapiInfo, NetdevDump};
        let ident = |napi_id| NapiIdentity {
            device: "veth0".into(),
            napi_id,
            ..NapiIdentity::default()
        };
        let mut iv = Interval {
            napi_identity: BTreeMap::from([
                (NapiKey::new(1, 260), ident(Some(260))),
                (NapiKey::new(2, 261), ident(Some(261))),
                (NapiKey::new(3, 0), ident(None)),
            ]),
            ..Interval::default()
        };
        iv.add_netdev(&NetdevDump {
            napi: vec![
                NapiInfo {
                    ifindex: 2,
                    id: 260,
                    irq: None,
                    pid: Some(4242),
                },
                NapiInfo {
                    ifindex: 2,
                    id: 261,
                    irq: None,
                    pid: None,
                },
            ],
            queues: vec![],
        });
        let pids: Vec<Option<u32>> = iv.napi_identity.values().map(|i| i.thread_pid).collect();
        assert_eq!(pids, vec![Some(4242), None, None]);
    }

    #[test]
    fn probe_counters_become_deltas() {
        let t0 = Instant::now();
        let mut a = Counters::default();
        a.irqs.insert((30, 1), IrqStat { runs: 10, ns: 1000 });
        a.pairs.insert((NapiKey::new(7, 0), 30), 4);
        let mut b = a.clone();
        b.irqs.insert((30, 1), IrqStat { runs: 15, ns: 1600 });
        b.irqs.insert((31, 0), IrqStat { runs: 1, ns: 50 });
        b.pairs.insert((NapiKey::new(7, 0), 30), 9);
        b.softirqs.insert(
            (0, 3),
            SoftirqStat {
                raises: 2,
                runs: 2,
                ns: 900,
            },
        );
        let empty = ints(&[0, 1], &[]);
        let iv = Interval::between(
            &snap(t0, a, empty.clone(), &[0, 1]),
            &snap(t0, b, empty, &[0, 1]),
        );
        assert_eq!(iv.hardirq[&(30, 1)], IrqStat { runs: 5, ns: 600 });
        assert_eq!(iv.hardirq[&(31, 0)], IrqStat { runs: 1, ns: 50 });
        assert_eq!(iv.pairs[&(NapiKey::new(7, 0), 30)], 5);
        assert_eq!(iv.softirq[&(0, 3)].ns, 900);
    }
}
