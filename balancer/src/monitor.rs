//! The measuring loop every front end shares (report, top, daemon): probe + system model +
//! snapshots + netdev netlink dump + NAPI link learning, one [`Tick`] per interval.
//!
//! `report` and `top` measure continuously. The daemon measures in windows, a share of each
//! interval ([`DutyCycle`]): the programs are detached between windows, a snapshot right after
//! attaching starts a window and discards what came before it (the pause, when nothing was
//! timed), and the window's interval is extrapolated to the whole interval since the previous
//! window ended ([`Windows`], [`extrapolate`]). Shares come out as measured; totals (ns, runs,
//! interrupts, polls, /proc/stat times) stand for the whole interval.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use balancer_common::{IrqStat, SoftirqStat};

use crate::{
    attribution::{self, Attribution, Linker},
    probe::{self, Probe, ProbeOptions, ProbeStatus},
    sample::{Interval, NapiDelta, Snapshot},
    system::{
        ReadOptions, SystemModel,
        netdev::{self, Netdev, NetdevDump, NetdevStatus},
        stat::CpuTimes,
    },
};

/// One interval, measured and attributed.
pub(crate) struct Tick {
    /// Extrapolated to the whole interval: `duration_ns` is the time since the previous tick.
    pub(crate) interval: Interval,
    pub(crate) attribution: Attribution,
    /// The time measured (attached) within it; equal to `interval.duration_ns` when the
    /// measurement is continuous.
    pub(crate) measured_ns: u64,
    /// Where the tool's own time went in this interval (debug log).
    pub(crate) costs: StageTimes,
}

/// Wall and CPU time of each stage of the last window and tick: what `--log-level debug`
/// prints to say where the daemon's own time goes (the tool's-own-CPU column of the
/// irqbalance bench). Wall time includes waiting (RCU grace periods when detaching, other
/// CPUs acknowledging code patching); CPU time is the whole process's, helpers included.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StageTimes {
    /// Attaching the programs and the window's first snapshot.
    pub(crate) attach: Lap,
    /// The closing snapshot: maps, /proc/interrupts, /proc/stat.
    pub(crate) read: Lap,
    pub(crate) detach: Lap,
    /// The NAPI kthreads' sync, the window's extrapolation and the system model (sysfs and
    /// /proc/irq; nearly all of it).
    pub(crate) model: Lap,
    /// napi-get and queue-get dumps.
    pub(crate) netlink: Lap,
    /// Link learning (and switching the raise program, when the links change) and attribution.
    pub(crate) attribution: Lap,
}

/// One stage's wall and process CPU time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lap {
    pub(crate) wall: Duration,
    pub(crate) cpu: Duration,
}

/// A running stopwatch of wall and process CPU time.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    pub(crate) fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }

    /// The time since the start (or the last lap), and a new start.
    pub(crate) fn lap(&mut self) -> Lap {
        let next = Stopwatch::start();
        let lap = Lap {
            wall: next.wall - self.wall,
            cpu: next.cpu.saturating_sub(self.cpu),
        };
        *self = next;
        lap
    }
}

/// CPU time of the whole process (user + system, every thread); zero where the clock fails.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl std::fmt::Display for Lap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ms (cpu {:.1})",
            self.wall.as_secs_f64() * 1e3,
            self.cpu.as_secs_f64() * 1e3
        )
    }
}

impl std::fmt::Display for StageTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attach {}, read {}, detach {}, model {}, netlink {}, attribution {}",
            self.attach, self.read, self.detach, self.model, self.netlink, self.attribution
        )
    }
}

pub(crate) struct Monitor {
    probe: Probe,
    windows: Windows,
    linker: Linker,
    root: PathBuf,
    opts: ReadOptions,
    model: SystemModel,
    /// The netdev netlink family's last dump (empty when it has none).
    netdev: NetdevDump,
    netdev_status: NetdevStatus,
    /// The kernel has no netdev family: not asked again.
    netdev_absent: bool,
    /// The last resume's attach time, reported with the tick that ends its window.
    attach_time: Lap,
}

impl Monitor {
    /// Reads the machine, loads the probes (which check the privileges first) and takes the
    /// first snapshot: the first interval starts now.
    pub(crate) fn start(root: &Path, opts: ReadOptions) -> anyhow::Result<Monitor> {
        let model = SystemModel::read(root, &opts).context("reading the system model")?;
        // Every netdev's rx and tx queues (tx from sysfs: the model lists rx only).
        let queues: usize = model
            .netdevs
            .values()
            .map(|d| {
                let tx = std::fs::read_dir(root.join("sys/class/net").join(&d.name).join("queues"))
                    .map_or(0, |dir| {
                        dir.filter_map(Result::ok)
                            .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
                            .count()
                    });
                d.rx_queues.len() + tx
            })
            .sum();
        let mut probe = Probe::load(&ProbeOptions {
            // Room for IRQs that appear later (hotplug, new queues).
            max_irqs: (model.irqs.len() as u32 * 2).max(1024),
            max_napi: probe::napi_map_size(queues as u32, model.nr_cpu_ids),
            ..ProbeOptions::default()
        })?;
        // As `Sampler` does: without the kthreads listed, threaded polls go untimed.
        crate::sample::sync_napi_threads(&mut probe, root);
        let first = Snapshot::take(&probe, root)?;
        let mut m = Monitor {
            probe,
            windows: Windows::new(first),
            linker: Linker::default(),
            root: root.to_path_buf(),
            opts,
            model,
            netdev: NetdevDump::default(),
            netdev_status: NetdevStatus::inactive("not read yet"),
            netdev_absent: false,
            attach_time: Lap::default(),
        };
        m.refresh_netdev();
        let netlink = attribution::netlink_links(&m.netdev, &m.model);
        m.count_raises_unless_exact(&netlink)?;
        Ok(m)
    }

    /// Raises are counted only to learn co-occurrence links: where netlink links every NIC
    /// queue exactly, the raise program goes (one event fewer per softirq), and comes back
    /// when a queue without an exact link appears.
    fn count_raises_unless_exact(
        &mut self,
        netlink: &std::collections::BTreeMap<u32, attribution::Link>,
    ) -> anyhow::Result<()> {
        match attribution::linked_exactly(&self.netdev, &self.model, netlink) {
            Ok(()) => self.probe.set_raise_counting(
                false,
                "every NIC queue is linked exactly (netdev netlink), so co-occurrence is not \
                 needed; raises are not counted",
            ),
            Err(_) => self.probe.set_raise_counting(true, ""),
        }
    }

    /// Ends the current interval and starts the next, the programs staying attached. The
    /// model is read again each time: affinities change, IRQs and CPUs come and go.
    pub(crate) fn tick(&mut self) -> anyhow::Result<Tick> {
        self.tick_then(false)
    }

    /// Ends the current window and detaches the programs until [`Monitor::resume`]; the
    /// model, netlink and attribution work is done detached.
    pub(crate) fn tick_and_pause(&mut self) -> anyhow::Result<Tick> {
        self.tick_then(true)
    }

    fn tick_then(&mut self, pause: bool) -> anyhow::Result<Tick> {
        // The maps are read while the programs are still attached, then /proc, as at the
        // window's start: both count between the same two moments. Reading the maps after
        // detaching (they stand still then), and starting a window from the last pause's
        // counters, counted what the programs saw while being detached and attached, outside
        // the window: in a 6.12 TCG guest the dry-run daemon read CPU 0 103-300% busy in
        // 0.2 s windows (18-83% with this order, the same traffic).
        let mut costs = StageTimes {
            attach: std::mem::take(&mut self.attach_time),
            ..StageTimes::default()
        };
        let mut clock = Stopwatch::start();
        let mut lap = |stage: &mut Lap| *stage = clock.lap();
        let end = Snapshot::take(&self.probe, &self.root);
        lap(&mut costs.read);
        if pause && let Err(e) = self.pause() {
            // What stays attached is detached at the next pause, attached again at the next
            // resume.
            log::warn!("{e:#}");
        }
        lap(&mut costs.detach);
        let end = end?;
        // After the read: a kthread that appeared in this interval is timed from the next.
        crate::sample::sync_napi_threads(&mut self.probe, &self.root);
        let (mut interval, measured_ns) = self.windows.end(end);
        self.probe.checkpoint();
        self.model = self
            .model
            .reread(&self.opts)
            .context("reading the system model")?;
        lap(&mut costs.model);
        self.refresh_netdev();
        lap(&mut costs.netlink);
        interval.add_netdev(&self.netdev);
        // Evidence is counted as observed (pairs are never extrapolated), so links learned
        // over many short windows weigh what was seen.
        self.linker.observe(&interval);
        self.linker
            .retain(|napi| interval.napi_identity.contains_key(&napi));
        let netlink = attribution::netlink_links(&self.netdev, &self.model);
        self.count_raises_unless_exact(&netlink)?;
        let links = self
            .linker
            .links_with(&interval.napi_identity, &self.model, &netlink);
        let attribution = Attribution::build(&interval, &self.model, &links);
        lap(&mut costs.attribution);
        Ok(Tick {
            interval,
            attribution,
            measured_ns,
            costs,
        })
    }

    /// Reads the maps between ticks so that NAPI instances that stopped polling are pruned
    /// (their counts kept for the interval): a long interval with devices coming and going
    /// (a `report` over minutes of container churn) then needs map room only for the
    /// instances alive at once. Nothing to do while detached: the maps stand still.
    pub(crate) fn maintain(&mut self) -> anyhow::Result<()> {
        if self.probe.is_attached() {
            self.probe.read().context("reading the eBPF maps")?;
        }
        Ok(())
    }

    /// Detaches the programs, the system vectors' paused instead (the maps keep their
    /// counts; see `Probe::pause`).
    pub(crate) fn pause(&mut self) -> anyhow::Result<()> {
        self.probe.pause().context("pausing the eBPF programs")
    }

    /// Attaches the programs again and starts a window once all are attached: the maps and
    /// /proc read then are its start, so what the programs counted while being attached (and
    /// what /proc counted while detached) is left out of every interval.
    pub(crate) fn resume(&mut self) -> anyhow::Result<()> {
        let mut clock = Stopwatch::start();
        self.probe.attach().context("attaching the eBPF programs")?;
        let start = Snapshot::take(&self.probe, &self.root)?;
        self.attach_time = clock.lap();
        self.windows.restart(start);
        Ok(())
    }

    /// Dumps napi-get and queue-get again (two small dumps, once per interval: NAPI
    /// instances and queues come and go with the traffic's devices). A kernel without the
    /// family is asked once; a failed dump leaves no netlink links until the next one works.
    fn refresh_netdev(&mut self) {
        if self.netdev_absent {
            return;
        }
        (self.netdev, self.netdev_status) = match netdev::read() {
            Ok(Netdev::Available(d)) => {
                let status = NetdevStatus::of_dump(&d);
                (d, status)
            }
            Ok(Netdev::Unavailable(why)) => {
                self.netdev_absent = true;
                (NetdevDump::default(), NetdevStatus::inactive(why))
            }
            Err(e) => {
                if self.netdev_status.active {
                    log::warn!("netlink links lost: {e}");
                }
                (NetdevDump::default(), NetdevStatus::inactive(e.to_string()))
            }
        };
    }

    /// Whether the last interval had netlink links, and why not.
    pub(crate) fn netdev_status(&self) -> &NetdevStatus {
        &self.netdev_status
    }

    pub(crate) fn model(&self) -> &SystemModel {
        &self.model
    }

    pub(crate) fn status(&self) -> &ProbeStatus {
        &self.probe.status
    }

    /// The kernel's figures per attached program (run time with `kernel.bpf_stats_enabled`,
    /// recursion misses always), since the probes were loaded.
    pub(crate) fn program_stats(&self) -> anyhow::Result<Vec<probe::ProgramStats>> {
        self.probe.program_stats()
    }

    /// NAPI instances the probe pruned after they stopped polling.
    pub(crate) fn napi_pruned(&self) -> u64 {
        self.probe.napi_pruned()
    }

    /// Replaces the proximity overrides (config reload); takes effect at the next tick.
    pub(crate) fn set_read_options(&mut self, opts: ReadOptions) {
        self.opts = opts;
    }
}

/// Window bookkeeping, apart from the I/O: the snapshot that started the current window and
/// when the current interval began (the previous window's end).
#[derive(Debug)]
pub(crate) struct Windows {
    start: Snapshot,
    since: Instant,
}

impl Windows {
    /// The first interval and its window start at `first`.
    pub(crate) fn new(first: Snapshot) -> Windows {
        Windows {
            since: first.at,
            start: first,
        }
    }

    /// A window starts at `snap` (taken right after attaching); the interval it ends still
    /// begins where the previous window ended.
    pub(crate) fn restart(&mut self, snap: Snapshot) {
        self.start = snap;
    }

    /// The window ends at `end`: its interval, extrapolated to the whole interval since the
    /// previous end, and the time measured. `end` starts the next window and interval (the
    /// continuous case, when no [`Windows::restart`] follows).
    pub(crate) fn end(&mut self, end: Snapshot) -> (Interval, u64) {
        let mut iv = Interval::between(&self.start, &end);
        let measured = iv.duration_ns;
        let whole = end.at.saturating_duration_since(self.since).as_nanos() as u64;
        extrapolate(&mut iv, whole);
        self.since = end.at;
        self.start = end;
        (iv, measured)
    }
}

/// Scales an interval measured over `iv.duration_ns` to stand for `whole_ns`: every count
/// and time is multiplied by whole/measured, so shares (ns over duration) stay as measured
/// and totals are those of the whole interval. Left as observed: the NAPI-IRQ pairs
/// (evidence for the link learner) and the probe's error counts (real events). A window
/// longer than the whole, or an empty one, is left alone.
pub(crate) fn extrapolate(iv: &mut Interval, whole_ns: u64) {
    let measured = iv.duration_ns;
    if measured == 0 || whole_ns <= measured {
        return;
    }
    let s = |v: &mut u64| *v = scale(*v, whole_ns, measured);
    let irq = |v: &mut IrqStat| {
        s(&mut v.runs);
        s(&mut v.ns);
    };
    iv.hardirq.values_mut().for_each(irq);
    iv.sysvec.values_mut().for_each(irq);
    iv.softirq.values_mut().for_each(|v: &mut SoftirqStat| {
        s(&mut v.raises);
        s(&mut v.runs);
        s(&mut v.ns);
    });
    for v in iv.napi.values_mut() {
        // Every field by name, so a new count cannot be left unscaled beside scaled ones.
        let NapiDelta {
            polls,
            work,
            budget_exhausted,
            ns,
            first_work,
            first_ns,
            untimed_polls,
            untimed_work,
            threaded_polls,
            threaded_ns,
            busy_polls,
            busy_ns,
        } = v;
        for f in [
            polls,
            work,
            budget_exhausted,
            ns,
            first_work,
            first_ns,
            untimed_polls,
            untimed_work,
            threaded_polls,
            threaded_ns,
            busy_polls,
            busy_ns,
        ] {
            s(f);
        }
    }
    iv.interrupts.values_mut().for_each(s);
    iv.stat.values_mut().for_each(|t: &mut CpuTimes| {
        for f in [
            &mut t.user,
            &mut t.nice,
            &mut t.system,
            &mut t.idle,
            &mut t.iowait,
            &mut t.irq,
            &mut t.softirq,
            &mut t.steal,
        ] {
            s(f);
        }
    });
    iv.duration_ns = whole_ns;
}

/// `v * num / den`, rounded to nearest, without overflow.
fn scale(v: u64, num: u64, den: u64) -> u64 {
    let r = (u128::from(v) * u128::from(num) + u128::from(den) / 2) / u128::from(den);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// What share of each interval the daemon measures (`measure-share`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DutyCycle {
    share: f64,
}

/// A window shorter than this measures too little to act on (a few ticks of /proc/stat).
pub(crate) const MIN_WINDOW: Duration = Duration::from_millis(100);

impl DutyCycle {
    /// `share` in (0, 1]; out-of-range values are clamped (the config checks them).
    pub(crate) fn new(share: f64) -> DutyCycle {
        DutyCycle {
            share: if share.is_finite() {
                share.clamp(f64::EPSILON, 1.0)
            } else {
                1.0
            },
        }
    }

    /// Measuring all the time: the programs are never detached.
    pub(crate) fn continuous(&self) -> bool {
        self.share >= 1.0
    }

    /// The measured window of an interval of `period`: its share, at least [`MIN_WINDOW`],
    /// at most the period.
    pub(crate) fn window(&self, period: Duration) -> Duration {
        if self.continuous() {
            return period;
        }
        period.mul_f64(self.share).max(MIN_WINDOW).min(period)
    }

    /// The time detached before the window.
    pub(crate) fn pause(&self, period: Duration) -> Duration {
        period.saturating_sub(self.window(period))
    }
}

/// What the daemon's loop does when [`Schedule::deadline`] passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// The pause is over: attach and start a window.
    Resume,
    /// The window is over: take the interval (and pause, unless continuous).
    Tick,
}

/// The daemon's duty cycle over time: a pause, then a window, each interval. Pure; the
/// caller passes the time in.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    duty: DutyCycle,
    period: Duration,
    next: Due,
    deadline: Instant,
}

impl Schedule {
    /// At start the programs are attached: the first window runs now.
    pub(crate) fn start(now: Instant, duty: DutyCycle, period: Duration) -> Schedule {
        Schedule {
            duty,
            period,
            next: Due::Tick,
            deadline: now + duty.window(period),
        }
    }

    /// How long to wait from `now` for the next step.
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// The step due at the deadline.
    pub(crate) fn due(&self) -> Due {
        self.next
    }

    /// Whether the tick due now should detach after it.
    pub(crate) fn pauses(&self) -> bool {
        !self.duty.continuous()
    }

    /// A window started at `now`.
    pub(crate) fn resumed(&mut self, now: Instant) {
        self.next = Due::Tick;
        self.deadline = now + self.duty.window(self.period);
    }

    /// An interval ended at `now` (or a resume failed); the next is `period` long.
    pub(crate) fn ticked(&mut self, now: Instant, period: Duration) {
        self.period = period;
        if self.duty.continuous() {
            self.next = Due::Tick;
            self.deadline = now + period;
        } else {
            self.next = Due::Resume;
            self.deadline = now + self.duty.pause(period);
        }
    }

    /// A new share (config reload), from the next step on.
    pub(crate) fn set_duty(&mut self, duty: DutyCycle) {
        self.duty = duty;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use balancer_common::NapiKey;

    use super::*;
    use crate::probe::Counters;
    use crate::{cpumask::CpuSet, system::interrupts};

    const S: u64 = 1_000_000_000;

    /// A snapshot at `at` where IRQ 30 has run `runs` times for `ns` in the probe and has
    /// `count` interrupts in /proc/interrupts on CPU 0, and CPU 0 has been idle for `idle`.
    fn snap(at: Instant, runs: u64, ns: u64, count: u64, idle: u64) -> Snapshot {
        let mut counters = Counters::default();
        counters.irqs.insert((30, 0), IrqStat { runs, ns });
        counters.pairs.insert((NapiKey::new(7, 0), 30), runs);
        let text = format!(
            "       CPU0\n  30: {count:>10}  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n"
        );
        Snapshot {
            at,
            counters,
            interrupts: interrupts::parse(&text),
            stat: BTreeMap::from([(
                0,
                CpuTimes {
                    idle,
                    ..CpuTimes::default()
                },
            )]),
            online: CpuSet::from_cpus([0]),
        }
    }

    #[test]
    fn scaling_rounds_and_saturates() {
        assert_eq!(scale(3, 10, 4), 8);
        assert_eq!(scale(5, 10, 4), 13);
        assert_eq!(scale(7, 1, 1), 7);
        assert_eq!(scale(u64::MAX / 2, 10, 1), u64::MAX);
    }

    #[test]
    fn extrapolation_keeps_shares_and_scales_totals() {
        let mut iv = Interval {
            duration_ns: S / 2,
            hardirq: BTreeMap::from([(
                (30, 0),
                IrqStat {
                    runs: 40,
                    ns: S / 10,
                },
            )]),
            interrupts: BTreeMap::from([((30, 0), 50)]),
            pairs: BTreeMap::from([((NapiKey::new(7, 0), 30), 9)]),
            ..Interval::default()
        };
        iv.probe_errors[0] = 2;
        let share = |iv: &Interval| iv.hardirq[&(30, 0)].ns as f64 / iv.duration_ns as f64;
        let before = share(&iv);
        extrapolate(&mut iv, 5 * S);
        assert_eq!(iv.duration_ns, 5 * S);
        assert_eq!(iv.hardirq[&(30, 0)], IrqStat { runs: 400, ns: S });
        assert_eq!(share(&iv), before);
        assert_eq!(iv.interrupts[&(30, 0)], 500);
        // Evidence and errors are what was seen.
        assert_eq!(iv.pairs[&(NapiKey::new(7, 0), 30)], 9);
        assert_eq!(iv.probe_errors[0], 2);
        // Nothing to extrapolate to: left alone.
        let copy = iv.clone();
        extrapolate(&mut iv, S);
        assert_eq!(iv.duration_ns, copy.duration_ns);
        assert_eq!(iv.hardirq, copy.hardirq);
    }

    #[test]
    fn a_window_leaves_out_the_pause_and_stands_for_the_interval() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = Windows::new(snap(at(0), 100, 1_000, 1_000, 0));
        // Detached from 0.5 s to 4.5 s: the probe counted nothing, /proc went on counting
        // (3000 interrupts, 4 s idle).
        w.restart(snap(at(4_500), 100, 1_000, 4_000, 4 * S));
        // The window: 20 runs, 0.1 s of handler time, 30 interrupts, 0.3 s idle.
        let (iv, measured) = w.end(snap(
            at(5_000),
            120,
            1_000 + S / 10,
            4_030,
            4 * S + 3 * S / 10,
        ));
        assert_eq!(measured, S / 2);
        assert_eq!(iv.duration_ns, 5 * S);
        assert_eq!(iv.hardirq[&(30, 0)], IrqStat { runs: 200, ns: S });
        assert_eq!(iv.interrupts[&(30, 0)], 300);
        assert_eq!(iv.stat[&0].idle, 3 * S);
        // Observed, not extrapolated: the learner adds up what it saw.
        assert_eq!(iv.pairs[&(NapiKey::new(7, 0), 30)], 20);

        // No restart: the next interval is continuous from the end, factor 1.
        let (iv, measured) = w.end(snap(at(6_000), 130, 2_000 + S / 10, 4_040, 4 * S));
        assert_eq!((iv.duration_ns, measured), (S, S));
        assert_eq!(
            iv.hardirq[&(30, 0)],
            IrqStat {
                runs: 10,
                ns: 1_000
            }
        );
        assert_eq!(iv.interrupts[&(30, 0)], 10);
    }

    /// Threaded and busy polls are task time the policy books (`all_ns`): a window stands
    /// for its interval in them as in softirq polls.
    #[test]
    fn task_polls_are_extrapolated_like_softirq_polls() {
        let mut iv = Interval {
            duration_ns: S / 10,
            ..Interval::default()
        };
        let d = crate::sample::NapiDelta {
            polls: 1,
            ns: 10,
            first_work: 4,
            first_ns: 5,
            threaded_polls: 2,
            threaded_ns: 20,
            busy_polls: 3,
            busy_ns: 30,
            ..Default::default()
        };
        iv.napi.insert((NapiKey::new(7, 0), 0), d);
        extrapolate(&mut iv, S);
        let got = iv.napi[&(NapiKey::new(7, 0), 0)];
        // The first polls' part too, or the preamble's sharing would weigh a window's
        // first polls against a whole interval's others.
        assert_eq!((got.first_work, got.first_ns), (40, 50));
        assert_eq!(
            (
                got.ns,
                got.threaded_polls,
                got.threaded_ns,
                got.busy_polls,
                got.busy_ns
            ),
            (100, 20, 200, 30, 300)
        );
    }

    #[test]
    fn duty_cycle_splits_the_interval() {
        let d = DutyCycle::new(0.1);
        let p = Duration::from_secs(5);
        assert_eq!(d.window(p), Duration::from_millis(500));
        assert_eq!(d.pause(p), Duration::from_millis(4_500));
        // Short intervals still measure MIN_WINDOW, never more than the interval.
        assert_eq!(d.window(Duration::from_millis(500)), MIN_WINDOW);
        assert_eq!(
            d.window(Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        assert_eq!(d.pause(Duration::from_millis(50)), Duration::ZERO);
        assert!(!d.continuous());
        let c = DutyCycle::new(1.0);
        assert!(c.continuous());
        assert_eq!(c.window(p), p);
        assert_eq!(c.pause(p), Duration::ZERO);
        assert!(DutyCycle::new(f64::NAN).continuous());
    }

    #[test]
    fn schedule_alternates_pause_and_window() {
        let t0 = Instant::now();
        let long = Duration::from_secs(5);
        let short = Duration::from_secs(2);
        let mut s = Schedule::start(t0, DutyCycle::new(0.1), long);
        // The programs are attached at start: a window first.
        assert_eq!(
            (s.due(), s.wait(t0)),
            (Due::Tick, Duration::from_millis(500))
        );
        assert!(s.pauses());
        let t1 = t0 + Duration::from_millis(510);
        s.ticked(t1, short);
        assert_eq!(
            (s.due(), s.wait(t1)),
            (Due::Resume, Duration::from_millis(1_800))
        );
        assert_eq!(s.wait(t1 + Duration::from_secs(3)), Duration::ZERO);
        let t2 = t1 + Duration::from_millis(1_800);
        s.resumed(t2);
        assert_eq!(
            (s.due(), s.wait(t2)),
            (Due::Tick, Duration::from_millis(200))
        );
        // Continuous from the next step on: no pause, one tick per interval.
        s.set_duty(DutyCycle::new(1.0));
        let t3 = t2 + Duration::from_millis(200);
        s.ticked(t3, long);
        assert!(!s.pauses());
        assert_eq!((s.due(), s.wait(t3)), (Due::Tick, long));
    }

    #[test]
    fn a_lap_counts_the_process_cpu_it_spent() {
        let mut clock = Stopwatch::start();
        // Work the optimiser cannot drop: CPU time grows with it, whatever the speed.
        let mut x = 1u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
        let lap = clock.lap();
        assert!(lap.cpu > Duration::ZERO, "{lap:?}");
        assert!(lap.wall > Duration::ZERO, "{lap:?}");
        let text = StageTimes {
            model: lap,
            ..StageTimes::default()
        }
        .to_string();
        assert!(text.starts_with("attach 0.0 ms (cpu 0.0), read "), "{text}");
        assert!(
            text.contains(", model ") && text.contains(" ms (cpu "),
            "{text}"
        );
    }
}
