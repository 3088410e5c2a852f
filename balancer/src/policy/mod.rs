//! Placement decisions: a pure function from one measured interval ([`Snapshot`]), the
//! configuration and the [`History`] of past decisions to a [`Plan`] of actions, each with its
//! reason in words. No I/O and no clock; `rnd` draws from a generator seeded by the config's
//! seed and the interval number, so the daemon, `balancer plan` and the simulator get the same
//! answer from the same input.
//!
//! The `weight` strategy weighs an IRQ by the CPU time it costs where it runs: its handlers,
//! its NAPI instances' polls, and their share of the NET_RX round's work outside the polls
//! ([`Snapshot::build`]), which moves with them.
//!
//!
//! 0. **Moves not yet carried out.** A written affinity takes effect at the IRQ's next
//!    interrupt (x86 moves the vector then), so an IRQ that has not fired since its move
//!    is *pending*, not "not followed": an idle tx IRQ for as long as it stays idle, a bulk
//!    queue polling with its interrupt off for seconds (3.1-3.3 s in the VM). Its load is
//!    booked at the CPU written, and it is left alone until it fires; only an IRQ that
//!    fired and is still elsewhere is reported as not followed. Findings (a CPU with no
//!    relief) are judged on these expected loads, not on readings of load already moved.
//! 1. **Sticking.** A NAPI instance that polls on a CPU outside its IRQ's effective affinity
//!    while that IRQ takes practically no interrupts is stuck (NAPI stays scheduled where it
//!    is while saturated). Its load is counted where it runs for the report, but for planning
//!    it is booked at its IRQ's home, where it will land: the CPU it sticks to is not relieved
//!    by moving other IRQs away. With threaded NAPI and `unstick`, its kthread is pinned next
//!    to the IRQ. The rule is [`stuck`], which the views show as well.
//! 2. **Bans.** Every IRQ that may move leaves excluded, isolated, nohz_full and offline
//!    CPUs, whatever its weight (every strategy does this).
//! 3. **Locality.** An active IRQ on a CPU outside its device's node (or, without `ht`, on
//!    a second thread) goes to a local CPU with room. A queue that is heavy where it sits is
//!    never left on a remote node: without `non-local-cpus`, when no local CPU has room under
//!    `load-limit` by its remote reading (inflated by remote memory), it goes to the least
//!    loaded local CPU anyway, RPS set on it or not. Each interval judges this on its own
//!    measurement, so a first placement that a wrong reading decided (the start state's
//!    co-occurrence link crediting a bulk queue's polls to another IRQ) is corrected at the
//!    next one. The placement weighs each IRQ by its active readings since it last moved
//!    ([`Work::steady`]): one interval's reading of a light queue swings as much as queues
//!    differ, and a pairing made on it is one no single move mends.
//! 4. **RPS** for a queue that alone needs more than a CPU (in most of its recent readings,
//!    not one swing): its packets are spread over idle CPUs local to the device; taken back
//!    when the queue's load falls. Judged after locality, on a queue where it will stay.
//! 5. **Overload.** From each CPU above `threshold`, or whose IRQ time exceeds the mean by
//!    `imbalance`, the (IRQ, target) pair that leaves the lower maximum of the two CPUs is
//!    moved, repeatedly, while a move lowers that maximum by more than the noise of the
//!    loads it compares (see below) and keeps the target under `load-limit`. Only IRQs
//!    active in the interval and out of cooldown move. When no single move gains, two IRQs
//!    are exchanged between the busiest CPU and another if that lowers the busier of the
//!    two beyond the noise: queues paired wrongly on filled CPUs need two moves that each
//!    alone would make things worse ([`Work::best_swap`]).
//! 6. **Placement check.** A plan that only placed IRQs (locality, bans) weighed them where
//!    they sat, often all on one CPU where their split is least certain. Once they are out
//!    of cooldown, the CPUs they went to are balanced among themselves on what the IRQs
//!    measure there (the rule of 5, no CPU outside them touched); what that moves is checked
//!    the same way in turn (`Work::placement_check`). It waits until the loads it compares
//!    have a noise of their own since the placement, and judges on that. A check that
//!    moves nothing says why in a [`FindingKind::Held`] finding: near the bound, or the
//!    closest move or exchange and the gain it fell short of.
//!
//! **Noise.** Readings swing from one interval to the next with the same traffic (in the VM
//! a CPU read 54%, 98%, 63%, 72%, and a fixed 2% `min-gain` let a light IRQ go
//! 3 -> 2 -> 3 -> 2 in 45 s). The [`History`] keeps each CPU's and IRQ's last
//! [`NOISE_WINDOW`] readings; the changes between consecutive readings that our own actions
//! did not cause give a robust standard deviation of one reading ([`Series::noise`]). A move
//! must gain [`NOISE_K`] of the combined deviations of its IRQ and of the difference of its
//! source and target (`Loads::pair_noise_since`, from the intervals both changed in: swings
//! all CPUs share, as under emulation, do not change which is busier; each CPU's deviation
//! taken as independent until there are enough), and at least `min-gain` (the floor, and
//! all there is until a load has [`NOISE_MIN_SAMPLES`] changes).
//!
//! **No ping-pong.** Within `return-window` intervals of leaving a CPU, an IRQ is not moved
//! back to it by locality or balancing, unless what it has measured since contradicts the
//! weight it left with (off by more than the noise and by a factor of two: a wrong link or
//! one burst moved it). Then the move is a *revisit*, said in its reason and in a
//! [`FindingKind::Revisit`] finding. CPU loads are not a contradiction: their swing is what
//! ping-pong comes from. Bans may return an IRQ anywhere.
//!
//! `min`, `max` and `rnd` reproduce birq (one IRQ per overloaded CPU and interval, chosen by
//! interrupt count or at random, to the least loaded local CPU); `count` reproduces
//! irqbalance's estimate (a CPU's IRQ time shared out by interrupt counts). They report
//! sticking but do not act on it: they are there for comparison. Bans hold for them too.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{
    config::{Config, Strategy},
    cpumask::CpuSet,
    system::QueueKind,
};

mod history;
mod snapshot;
mod sticking;

use history::MoveRecord;
pub(crate) use history::{Departure, MoveState, Series};
pub use history::{History, Outcome, Refusals};
pub use snapshot::{CpuSnap, IrqCpuSnap, IrqSnap, NapiSnap, PollSnap, QueueSnap, Snapshot};
pub(crate) use sticking::{Stuck, stuck};

/// An IRQ below this share of one CPU is not worth a vector on another CPU.
const MIN_WEIGHT: f64 = 0.01;
/// CPUs below this load can take RPS work.
const RPS_IDLE: f64 = 0.5;
/// Weight of a sibling's load when ranking targets: prefers an idle core to the sibling of
/// a busy one without refusing siblings.
const HT_BIAS: f64 = 0.1;
/// A CPU this busy is saturated: its IRQs' measured time understates their demand.
const SATURATED: f64 = 0.98;
/// A CPU whose IRQ and softirq time is below this share of it has no IRQ load to relieve.
const NO_RELIEF_IRQ: f64 = 0.05;
/// Balancing stops when the busiest CPU is within this share of the best possible.
const NEAR_BOUND: f64 = 0.05;
/// Intervals a CPU that refused a vector (ENOSPC) stays marked full.
const FULL_FORGET: u64 = 100;
/// Readings kept per CPU and IRQ for the noise estimate: 10 intervals (20 to 50 s at the
/// daemon's intervals) follow a change of traffic and are enough for a median.
const NOISE_WINDOW: usize = 10;
/// Changes needed before the noise is trusted; below, only `min-gain` holds.
const NOISE_MIN_SAMPLES: usize = 3;
/// A move must gain this many standard deviations of the noise of the loads it compares.
/// The plan weighs many candidate moves each interval, so two would let pure noise through
/// too often (a one-sided 2.3% each); three keep that near 0.1%.
const NOISE_K: f64 = 3.0;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub findings: Vec<Finding>,
    /// CPUs found overloaded.
    pub overloaded: Vec<u32>,
    /// Of those, the ones whose load is changing now: a move planned off them, or one made
    /// that the kernel has yet to carry out (an affinity waiting for the IRQ's next
    /// interrupt, a stuck instance for its queue to drain). The daemon measures again soon
    /// while there are any; an overload nothing is changing (no movable IRQ gains beyond
    /// the noise, IRQs in cooldown, a CPU busy with tasks) waits the calm interval.
    pub relievable: Vec<u32>,
    /// Interval number the plan was made at (the history's).
    pub tick: u64,
    /// The plan moved IRQs to relieve or balance load (not only for locality): the next
    /// interval goes on balancing while the effect settles.
    pub balancing: bool,
    /// Indexes `i` of moves carried out with move `i + 1` as one: both or neither (two IRQs
    /// exchanged, where one half alone makes the busier CPU busier).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub swaps: Vec<usize>,
    /// IRQs whose placement a placement check looked at in this plan (moved or held): the
    /// history marks them checked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<u32>,
}

impl Plan {
    /// Whether the daemon should look again soon.
    pub(crate) fn busy(&self) -> bool {
        !self.actions.is_empty() || !self.relievable.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Action {
    pub kind: ActionKind,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ActionKind {
    /// Point `irq` (and its companions: the tx IRQ of the same queue) at one CPU: the first
    /// of `targets` whose vector space takes it.
    Move {
        irq: u32,
        companions: Vec<u32>,
        from: CpuSet,
        targets: Vec<u32>,
        /// Measured time that moves with it, per second.
        weight: f64,
    },
    /// Spread a queue's packets with `rps_cpus`.
    SetRps {
        netdev: String,
        queue: u32,
        cpus: CpuSet,
    },
    /// Take back RPS we set.
    ClearRps { netdev: String, queue: u32 },
    /// Pin the threaded-NAPI kthread `napi/<netdev>-<napi_id>` to `cpus`.
    PinNapiThread {
        netdev: String,
        napi_id: u32,
        irq: u32,
        cpus: CpuSet,
    },
}

impl ActionKind {
    /// Every IRQ the action writes.
    #[cfg(test)]
    fn irqs(&self) -> Vec<u32> {
        match self {
            ActionKind::Move {
                irq, companions, ..
            } => std::iter::once(*irq)
                .chain(companions.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub irq: Option<u32>,
    pub cpu: Option<u32>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A NAPI instance polls outside its IRQ's affinity with interrupts off.
    Stuck,
    /// A stuck IRQ that polls where it belongs again.
    Unstuck,
    /// A CPU is overloaded and nothing can be moved off it.
    NoRelief,
    /// A moved IRQ fired since its move and its effective affinity is still elsewhere.
    NotFollowed,
    /// A moved IRQ has not fired since its move: the kernel moves it at its next interrupt.
    Pending,
    /// An IRQ goes back to a CPU it left within the return window, because the
    /// measurement contradicts why it left.
    Revisit,
    /// A queue needs RPS but no idle local CPU is left.
    NoRpsCpus,
    /// A placement check found nothing worth doing: what it weighed and why it stays.
    Held,
}

/// Everything the plan works on, in fractions of one CPU.
struct Work<'a> {
    s: &'a Snapshot,
    cfg: &'a Config,
    hist: &'a History,
    eligible: CpuSet,
    /// Excluded, isolated, nohz_full or offline: no IRQ may stay there.
    banned: CpuSet,
    load: BTreeMap<u32, f64>,
    irq_load: BTreeMap<u32, f64>,
    /// Per CPU, what a unit of IRQ time moved off it costs where it lands (`Work::carry`).
    carry: BTreeMap<u32, f64>,
    /// IRQs that may not move this interval, with why.
    frozen: BTreeMap<u32, &'static str>,
    /// Moves written that the kernel has not carried out yet: (IRQ, CPU written).
    pending: Vec<(u32, u32)>,
    moved: BTreeSet<u32>,
    /// Load-driven moves were planned.
    balancing: bool,
    actions: Vec<Action>,
    /// See [`Plan::swaps`].
    swaps: Vec<usize>,
    /// See [`Plan::checked`].
    checked: Vec<u32>,
    /// Noise is estimated from the changes after this interval (a placement check's
    /// placement; 0: all that are kept).
    noise_since: u64,
    findings: Vec<Finding>,
}

/// What a placement check looks at: the CPUs a placement filled, the interval it was made
/// at, and the IRQs whose moves made it.
struct Check {
    scope: CpuSet,
    since: u64,
    irqs: Vec<u32>,
}

/// Makes the plan for one interval.
pub(crate) fn plan(s: &Snapshot, cfg: &Config, hist: &History) -> Plan {
    let mut w = Work::new(s, cfg, hist);
    w.verify_last_moves();
    let stuck = w.sticking();
    if cfg.strategy == Strategy::Weight {
        // Plan on the loads the moves already made will give, not on where they still sit.
        w.book_stuck_at_home(&stuck);
        w.book_pending_at_target();
    }
    // Whatever the strategy: a CPU that takes no IRQs keeps none.
    w.bans();
    if cfg.strategy == Strategy::Weight {
        w.unstick(&stuck);
        // Locality before RPS: a queue on a remote node costs more there than it will at
        // home, so whether it needs RPS is judged once it is local.
        w.locality();
        if cfg.rps {
            w.rps();
        }
    }
    let overloaded = w.overloaded();
    match cfg.strategy {
        Strategy::Weight => w.balance_weight(),
        Strategy::Count => w.balance_count(),
        Strategy::Min | Strategy::Max | Strategy::Rnd => w.balance_birq(),
    }
    let mut relievable = Vec::new();
    for cpu in &overloaded {
        // Judged on the load the plan expects (moves pending or stuck booked where they go),
        // not the stale reading of load that has already been moved.
        // A CPU only the incoming moves load is judged once they land: what a moved IRQ
        // measures before (on a remote node, say) is not what it will cost there.
        // And one swing of the readings is not an overload: most recent ones agree.
        // A CPU busy with tasks, not interrupts, is not one an IRQ move could relieve (the
        // bench's receiver read "CPU 1 is 92% busy and no ... IRQ on it can go anywhere"
        // with 1% of it IRQs): no finding.
        let expected = w.load_of(*cpu);
        if w.irq_load.get(cpu).copied().unwrap_or(0.0) < NO_RELIEF_IRQ {
            continue;
        }
        // Relieved by this plan: an IRQ moved off, or RPS set on a queue whose IRQ is here
        // (the plan that spread a lone queue also said no IRQ could go anywhere).
        let moved_off = w.actions.iter().any(|a| match &a.kind {
            ActionKind::Move { from, .. } => from.contains(*cpu),
            ActionKind::SetRps { netdev, queue, .. } => s.queues.iter().any(|q| {
                q.netdev == *netdev
                    && q.index == *queue
                    && q.irq
                        .and_then(|n| s.irqs.get(&n))
                        .is_some_and(|i| i.home().contains(*cpu))
            }),
            _ => false,
        });
        // Moves that land within seconds: a written affinity waiting for its interrupt, or
        // a stuck instance waiting for its queue to drain. (An IRQ in cooldown waits for
        // intervals to pass, which a shorter interval only spends faster.)
        let settling = w
            .pending
            .iter()
            .any(|(n, to)| to == cpu || s.irqs.get(n).is_some_and(|i| i.home().contains(*cpu)))
            || s.irqs
                .values()
                .any(|i| i.home().contains(*cpu) && w.frozen.get(&i.number) == Some(&"stuck"));
        if moved_off || settling {
            relievable.push(*cpu);
        }
        let measured = s.load(*cpu);
        let level = w.level(hist.loads.cpus.get(cpu), 0, measured);
        if !moved_off
            && expected >= cfg.threshold_frac()
            && measured >= cfg.threshold_frac()
            && level >= cfg.threshold_frac()
        {
            // One IRQ that alone keeps the CPU over threshold is the overload: moved, it
            // keeps its new CPU as busy; with RPS on its queue, what stays is its own.
            let alone = s
                .irqs
                .values()
                .filter(|i| i.home().len() == 1 && i.home().contains(*cpu))
                .map(|i| (i, w.weight(i, &[])))
                .filter(|(_, wt)| *wt >= cfg.threshold_frac())
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, wt)| {
                    let head = format!(": IRQ {} ({}) alone costs {}", i.number, i.name, pct(wt));
                    if w.frozen.get(&i.number) == Some(&"rps") {
                        format!(
                            "{head}, and its queue spreads its packets with RPS already: what \
                             stays here is its interrupt and polls, which RPS does not move"
                        )
                    } else if !w.movable(i) {
                        format!("{head} and may not move")
                    } else {
                        format!(
                            "{head} of a CPU, and wherever it goes it keeps that CPU as busy{}",
                            if i.queue.is_some_and(|q| q.0 == QueueKind::Rx) {
                                if cfg.rps {
                                    " (RPS spreads one queue's packets once most of its \
                                     recent readings need it)"
                                } else {
                                    " (RPS, which spreads one queue's packets, is off: `rps`)"
                                }
                            } else {
                                ""
                            }
                        )
                    }
                })
                .unwrap_or_default();
            w.findings.push(Finding {
                kind: FindingKind::NoRelief,
                irq: None,
                cpu: Some(*cpu),
                message: format!(
                    "CPU {cpu} is {} busy{} and no active, movable IRQ on it can go \
                     anywhere with a gain beyond the noise{alone}",
                    pct(expected),
                    if (measured - expected).abs() >= 0.005 {
                        format!(
                            " once the moves already made land (measured {})",
                            pct(measured)
                        )
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }
    Plan {
        actions: w.actions,
        findings: w.findings,
        overloaded,
        relievable,
        tick: hist.tick,
        balancing: w.balancing,
        swaps: w.swaps,
        checked: w.checked,
    }
}

/// [`Work::bound_estimate`]: the bound, and the CPUs holding the movable IRQs it pours.
struct Bound {
    value: f64,
    holders: CpuSet,
}

/// The best move found so far in a round of `weight`.
struct Candidate {
    /// The busier of source and target after the move.
    new_max: f64,
    irq: u32,
    to: u32,
    companions: Vec<u32>,
    targets: Vec<u32>,
    weight: f64,
    src_load: f64,
    /// Targets the IRQ left within the return window but may go back to, with why.
    revisits: BTreeMap<u32, String>,
}

/// Two IRQs to exchange between CPUs `src` and `to`: `a` (number, companions, weight) goes
/// from `src` to `to`, the lighter `b` the other way.
struct Swap {
    src: u32,
    src_load: f64,
    to: u32,
    to_load: f64,
    new_max: f64,
    a: (u32, Vec<u32>, f64),
    b: (u32, Vec<u32>, f64),
}

/// The move or exchange a placement check came closest to making, for the finding that says
/// why it made none: what it was, what it gains and the gain it needed.
struct Weighed {
    src: u32,
    src_load: f64,
    to: u32,
    /// The IRQ that would go from `src` to `to`, and the one that would come back for it.
    irq: u32,
    back: Option<u32>,
    new_max: f64,
    gain: f64,
    floor: f64,
}

impl Weighed {
    /// Keeps the one of the two that gains more.
    fn keep(slot: &mut Option<Weighed>, w: Weighed) {
        if slot.as_ref().is_none_or(|x| w.gain > x.gain) {
            *slot = Some(w);
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

impl<'a> Work<'a> {
    fn new(s: &'a Snapshot, cfg: &'a Config, hist: &'a History) -> Work<'a> {
        let mut eligible = CpuSet::new();
        let mut banned = CpuSet::new();
        for c in s.cpus.values() {
            if !c.online || c.isolated || cfg.exclude_cpus.contains(c.id) {
                banned.insert(c.id);
                continue;
            }
            // Without ht, only the first thread of each core takes IRQs.
            if !cfg.ht && c.siblings.first().is_some_and(|f| f != c.id) {
                continue;
            }
            eligible.insert(c.id);
        }
        let load = s.cpus.values().map(|c| (c.id, s.frac(c.busy_ns))).collect();
        let irq_load = s.cpus.values().map(|c| (c.id, s.frac(c.irq_ns))).collect();
        // See `Work::carry`: once per interval, not per candidate move.
        let mut credited: BTreeMap<u32, u64> = BTreeMap::new();
        for i in s.irqs.values() {
            for (cpu, p) in &i.per_cpu {
                *credited.entry(*cpu).or_default() += p.ns;
            }
        }
        let carry = s
            .cpus
            .values()
            .filter(|c| c.busy_ns > 0)
            .map(|c| {
                let claimed = credited.get(&c.id).copied().unwrap_or(0) + c.rps_ns;
                let unclaimed = c.irq_ns.saturating_sub(claimed);
                (c.id, 1.0 + unclaimed as f64 / c.busy_ns as f64)
            })
            .collect();
        let mut frozen = BTreeMap::new();
        for irq in s.irqs.values() {
            let why = if cfg.banned_irqs.contains(&irq.number) {
                Some("banned")
            } else if banned_device(cfg, irq) {
                Some("device banned")
            } else if irq.managed || hist.unmovable.contains_key(&irq.number) {
                Some("managed")
            } else {
                None
            };
            if let Some(why) = why {
                frozen.insert(irq.number, why);
            }
        }
        Work {
            s,
            cfg,
            hist,
            eligible,
            banned,
            load,
            irq_load,
            carry,
            frozen,
            pending: Vec::new(),
            moved: BTreeSet::new(),
            balancing: false,
            swaps: Vec::new(),
            checked: Vec::new(),
            noise_since: 0,
            actions: Vec::new(),
            findings: Vec::new(),
        }
    }

    fn load_of(&self, cpu: u32) -> f64 {
        self.load.get(&cpu).copied().unwrap_or(0.0)
    }

    fn in_cooldown(&self, irq: u32) -> bool {
        self.hist
            .last_move
            .get(&irq)
            .is_some_and(|m| self.hist.tick < m.tick + u64::from(self.cfg.cooldown.max(1)))
    }

    fn full(&self, cpu: u32) -> bool {
        self.hist.full_cpus.contains_key(&cpu)
    }

    /// Moves written but not yet carried out by the kernel. An IRQ that has not fired since
    /// its move is pending (reported in the interval after the write, then quietly checked
    /// each interval until it fires: tx companions too); one that fired and is still
    /// elsewhere did not follow (reported once).
    fn verify_last_moves(&mut self) {
        for (irq, m) in &self.hist.last_move {
            if m.state != MoveState::Pending {
                continue;
            }
            let snap = self.s.irqs.get(irq);
            match m.status(snap) {
                MoveState::Landed => {}
                MoveState::Pending => {
                    self.pending.push((*irq, m.to));
                    if m.tick + 1 == self.hist.tick {
                        self.findings.push(Finding {
                            kind: FindingKind::Pending,
                            irq: Some(*irq),
                            cpu: Some(m.to),
                            message: format!(
                                "IRQ {irq} was pointed at CPU {} and has not fired since: \
                                 pending (the kernel moves it at its next interrupt); its load \
                                 is planned at CPU {}",
                                m.to, m.to
                            ),
                        });
                    }
                }
                MoveState::NotFollowed => {
                    let (eff, n) = snap
                        .map(|i| (i.effective.clone().unwrap_or_default(), i.interrupts))
                        .unwrap_or_default();
                    self.findings.push(Finding {
                        kind: FindingKind::NotFollowed,
                        irq: Some(*irq),
                        cpu: Some(m.to),
                        message: format!(
                            "IRQ {irq} was pointed at CPU {} but its effective affinity is \
                             {eff} after {n} interrupts since",
                            m.to
                        ),
                    });
                }
            }
        }
    }

    /// Books the load of pending moves at the CPU written: it goes there at the IRQ's next
    /// interrupt, and the plan must not chase it (or other IRQs) off its old CPU meanwhile.
    fn book_pending_at_target(&mut self) {
        for (n, to) in self.pending.clone() {
            let Some(irq) = self.s.irqs.get(&n) else {
                continue;
            };
            let mut total = 0.0;
            for (c, l) in &irq.per_cpu {
                if *c == to {
                    continue;
                }
                let f = self.s.frac(l.ns);
                total += f;
                for map in [&mut self.load, &mut self.irq_load] {
                    if let Some(x) = map.get_mut(c) {
                        *x = (*x - f).max(0.0);
                    }
                }
            }
            for map in [&mut self.load, &mut self.irq_load] {
                *map.entry(to).or_default() += total;
            }
            self.frozen.insert(n, "pending");
        }
    }

    /// Finds stuck NAPI instances ([`stuck`]); reports each.
    fn sticking(&mut self) -> Vec<Stuck> {
        let out = stuck(self.s);
        for st in &out {
            let Some(irq) = self.s.irqs.get(&st.irq) else {
                continue;
            };
            let since = self
                .hist
                .stuck
                .get(&st.irq)
                .map_or(self.hist.tick, |r| r.since);
            let home = &st.home;
            self.findings.push(Finding {
                kind: FindingKind::Stuck,
                irq: Some(st.irq),
                cpu: Some(st.cpu),
                message: format!(
                    "IRQ {} ({}) is stuck: its NAPI instance{} polls on CPU {} ({}) \
                     outside its effective affinity {home} with {} interrupts, for {} \
                     interval(s); its load is booked at {home}{}",
                    st.irq,
                    irq.name,
                    st.napi
                        .as_ref()
                        .map(|(_, i)| format!(" {i}"))
                        .unwrap_or_default(),
                    st.cpu,
                    if st.timed {
                        format!("{} of a CPU", pct(self.s.frac(st.ns)))
                    } else {
                        format!("{} untimed polls", st.polls)
                    },
                    irq.interrupts,
                    self.hist.tick - since + 1,
                    if st.threaded {
                        "; threaded NAPI: its kthread can be pinned"
                    } else {
                        "; no threaded NAPI: it unsticks when the queue drains"
                    }
                ),
            });
        }
        for (irq, rec) in &self.hist.stuck {
            if !out.iter().any(|s| s.irq == *irq) {
                self.findings.push(Finding {
                    kind: FindingKind::Unstuck,
                    irq: Some(*irq),
                    cpu: Some(rec.cpu),
                    message: format!(
                        "IRQ {irq} no longer sticks to CPU {} (stuck for {} interval(s))",
                        rec.cpu,
                        self.hist.tick.saturating_sub(rec.since)
                    ),
                });
            }
        }
        out
    }

    /// Books stuck load where it is heading, and freezes the stuck IRQ: moving it again
    /// changes nothing while its poll stays where it is.
    fn book_stuck_at_home(&mut self, stuck: &[Stuck]) {
        for st in stuck {
            let f = self.s.frac(st.ns);
            let Some(home) = st.home.first() else {
                continue;
            };
            for map in [&mut self.load, &mut self.irq_load] {
                if let Some(l) = map.get_mut(&st.cpu) {
                    *l = (*l - f).max(0.0);
                }
                *map.entry(home).or_default() += f;
            }
            self.frozen.insert(st.irq, "stuck");
        }
    }

    fn unstick(&mut self, stuck: &[Stuck]) {
        if !self.cfg.unstick {
            return;
        }
        for st in stuck {
            let (true, Some((netdev, napi_id))) = (st.threaded, st.napi.clone()) else {
                continue;
            };
            if self.hist.pinned.get(&st.irq) == Some(&st.home) {
                continue; // pinned already; the scheduler moves it at its next wakeup
            }
            self.actions.push(Action {
                kind: ActionKind::PinNapiThread {
                    netdev: netdev.clone(),
                    napi_id,
                    irq: st.irq,
                    cpus: st.home.clone(),
                },
                reason: format!(
                    "IRQ {} is stuck on CPU {}: pin napi/{netdev}-{napi_id} to {} next to its \
                     IRQ",
                    st.irq, st.cpu, st.home
                ),
            });
        }
    }

    /// The CPUs an IRQ may go to, best first, with the load each would end at.
    fn targets(&self, irq: &IrqSnap, from: &CpuSet, weight: f64) -> Vec<(u32, f64)> {
        let local: Option<CpuSet> = irq
            .local_cpus
            .as_ref()
            .map(|l| l.intersection(&self.eligible))
            .filter(|l| !l.is_empty() && *l != self.eligible);
        let pool = |set: &CpuSet| -> Vec<(u32, f64)> {
            let mut v: Vec<(u32, f64, f64)> = set
                .iter()
                .filter(|c| !from.contains(*c) && !self.full(*c))
                .map(|c| {
                    let after = self.load_of(c) + weight;
                    let sib = self
                        .s
                        .cpus
                        .get(&c)
                        .map(|cpu| {
                            cpu.siblings
                                .iter()
                                .filter(|x| *x != c)
                                .map(|x| self.load_of(x))
                                .fold(0.0, f64::max)
                        })
                        .unwrap_or(0.0);
                    (c, after, after + HT_BIAS * sib)
                })
                .filter(|(_, after, _)| *after <= self.cfg.load_limit_frac())
                .collect();
            v.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
            v.into_iter().map(|(c, after, _)| (c, after)).collect()
        };
        match local {
            Some(local) => {
                let mut v = pool(&local);
                if v.is_empty() && self.cfg.non_local_cpus {
                    v = pool(&self.eligible.difference(&local));
                }
                v
            }
            None => pool(&self.eligible),
        }
    }

    /// The tx IRQs that travel with an rx IRQ: same netdev, same queue index, same home,
    /// active in the interval (an idle IRQ's move waits for its next interrupt and holds a
    /// vector on both CPUs meanwhile: not worth it).
    fn companions(&self, irq: &IrqSnap) -> Vec<u32> {
        let (Some(dev), Some((QueueKind::Rx, index))) = (&irq.netdev, irq.queue) else {
            return Vec::new();
        };
        let home = irq.home();
        self.s
            .irqs
            .values()
            .filter(|o| {
                o.netdev.as_ref() == Some(dev)
                    && o.queue == Some((QueueKind::Tx, index))
                    && o.home() == home
                    && (o.interrupts > 0 || o.total_ns() > 0)
                    && !self.frozen.contains_key(&o.number)
                    && !self.moved.contains(&o.number)
            })
            .map(|o| o.number)
            .collect()
    }

    /// Weight of an IRQ (with companions) on its home CPUs, as a fraction of one CPU.
    fn weight(&self, irq: &IrqSnap, companions: &[u32]) -> f64 {
        let home = irq.home();
        let mut ns = irq.ns_on(&home);
        for c in companions {
            if let Some(o) = self.s.irqs.get(c) {
                ns += o.ns_on(&home);
            }
        }
        self.s.frac(ns)
    }

    /// What a unit of IRQ time moved off `cpu` costs where it lands: 1 plus the CPU's IRQ
    /// time that no IRQ is credited with (timer, RCU and scheduler softirqs: the
    /// housekeeping a busy CPU does, which an idle CPU skips) per unit of its busy time. A
    /// CPU a lone queue keeps busy read 91% with the queue at 89%; moved alone to an idle
    /// CPU, the queue read 86% there with that CPU at 87%: the two points that looked like
    /// the move's gain went with it. What stays behind is taken as staying, so both sides
    /// of a move are judged conservatively.
    fn carry(&self, cpu: u32) -> f64 {
        self.carry.get(&cpu).copied().unwrap_or(1.0)
    }

    fn movable(&self, irq: &IrqSnap) -> bool {
        !self.frozen.contains_key(&irq.number)
            && !self.moved.contains(&irq.number)
            && !self.in_cooldown(irq.number)
    }

    fn push_move(
        &mut self,
        irq: &IrqSnap,
        companions: Vec<u32>,
        targets: Vec<u32>,
        w: f64,
        reason: String,
    ) {
        let from = irq.home();
        let Some(&to) = targets.first() else {
            return;
        };
        for c in from.iter() {
            // A multi-CPU home spreads; book the weight off its busiest CPU.
            if let Some(l) = self.load.get_mut(&c) {
                *l = (*l - w / from.len() as f64).max(0.0);
            }
            if let Some(l) = self.irq_load.get_mut(&c) {
                *l = (*l - w / from.len() as f64).max(0.0);
            }
        }
        *self.load.entry(to).or_default() += w;
        *self.irq_load.entry(to).or_default() += w;
        self.moved.insert(irq.number);
        self.moved.extend(companions.iter().copied());
        self.actions.push(Action {
            kind: ActionKind::Move {
                irq: irq.number,
                companions,
                from,
                targets,
                weight: w,
            },
            reason,
        });
    }

    /// A queue's load: its IRQ's time plus, with RPS on, the backlog time on its RPS CPUs
    /// (shared evenly between queues that spread to the same CPUs).
    fn queue_load(&self, q: &QueueSnap, irq: &IrqSnap) -> f64 {
        let mut ns = irq.total_ns();
        if !q.rps_cpus.is_empty() {
            let sharers = self
                .s
                .queues
                .iter()
                .filter(|o| o.rps_cpus.intersects(&q.rps_cpus))
                .count()
                .max(1) as u64;
            ns += q
                .rps_cpus
                .iter()
                .filter_map(|c| self.s.cpus.get(&c))
                .map(|c| c.rps_ns)
                .sum::<u64>()
                / sharers;
        }
        self.s.frac(ns)
    }

    /// RPS on for queues too big for one CPU, off for those that shrank.
    fn rps(&mut self) {
        let dur = self.s.duration_ns;
        if dur == 0 {
            return;
        }
        let mut used = CpuSet::new();
        for q in &self.s.queues {
            let Some(irq) = q.irq.and_then(|n| self.s.irqs.get(&n)) else {
                continue;
            };
            // Moving this interval: judged again where it lands.
            if self.moved.contains(&irq.number) {
                continue;
            }
            let key = (q.netdev.clone(), q.index);
            let ours = self.hist.rps.contains_key(&key);
            let qload = self.queue_load(q, irq);
            if q.rps_cpus.is_empty() {
                let home = irq.home();
                let home_load = home.iter().map(|c| self.load_of(c)).fold(0.0, f64::max);
                // Too big for one CPU in most of its recent readings, not in one swing.
                let since = self
                    .hist
                    .last_move
                    .get(&irq.number)
                    .map_or(0, |m| m.tick + 1);
                let level = self.level(self.hist.loads.irqs.get(&irq.number), since, qload);
                if level < self.cfg.rps_threshold_frac() || home_load < self.cfg.threshold_frac() {
                    continue;
                }
                let local = irq
                    .local_cpus
                    .as_ref()
                    .map(|l| l.intersection(&self.eligible))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| self.eligible.clone());
                let mut idle: Vec<(u32, f64)> = local
                    .iter()
                    .filter(|c| !home.contains(*c) && !used.contains(*c))
                    .map(|c| (c, self.load_of(c)))
                    .filter(|(_, l)| *l < RPS_IDLE)
                    .collect();
                idle.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                let cpus: CpuSet = idle
                    .iter()
                    .take(self.cfg.rps_max_cpus.max(1) as usize)
                    .map(|(c, _)| *c)
                    .collect();
                if cpus.is_empty() {
                    self.findings.push(Finding {
                        kind: FindingKind::NoRpsCpus,
                        irq: Some(irq.number),
                        cpu: home.first(),
                        message: format!(
                            "{} rx-{} needs {} of a CPU on CPU {home} but no local CPU is \
                             below {} to spread it to",
                            q.netdev,
                            q.index,
                            pct(qload),
                            pct(RPS_IDLE)
                        ),
                    });
                    continue;
                }
                used = used.union(&cpus);
                // RPS CPUs get most of the stack's work; the IRQ's CPU keeps the driver's.
                let share = qload * 0.5 / cpus.len() as f64;
                for c in cpus.iter() {
                    *self.load.entry(c).or_default() += share;
                }
                self.frozen.insert(irq.number, "rps");
                self.actions.push(Action {
                    kind: ActionKind::SetRps {
                        netdev: q.netdev.clone(),
                        queue: q.index,
                        cpus: cpus.clone(),
                    },
                    reason: format!(
                        "{} rx-{} (IRQ {}) alone keeps CPU {home} at {}, more than one CPU \
                         takes: spread its packets over idle local CPUs {cpus}",
                        q.netdev,
                        q.index,
                        irq.number,
                        pct(home_load)
                    ),
                });
            } else if ours && qload < self.cfg.rps_off_frac() {
                self.actions.push(Action {
                    kind: ActionKind::ClearRps {
                        netdev: q.netdev.clone(),
                        queue: q.index,
                    },
                    reason: format!(
                        "{} rx-{} fell to {} of a CPU (below rps-off {}): RPS off",
                        q.netdev,
                        q.index,
                        pct(qload),
                        pct(self.cfg.rps_off_frac())
                    ),
                });
            } else {
                used = used.union(&q.rps_cpus);
                // A queue with RPS stays put: its IRQ's CPU keeps the driver's share.
                self.frozen.insert(irq.number, "rps");
            }
        }
    }

    /// Every IRQ that may move and sits on a CPU that takes no IRQs (excluded, isolated,
    /// nohz_full, offline) leaves it, whatever its weight and even if idle: a ban that only
    /// held for busy IRQs would not be one. Cooldown does not hold it back (a reload may
    /// just have excluded its CPU); only what may never move (banned, managed) stays.
    /// Local CPUs with room first, then any local CPU, then (with `non-local-cpus`, or when
    /// no local CPU may take IRQs) any CPU, least loaded.
    fn bans(&mut self) {
        if self.banned.is_empty() || self.eligible.is_empty() {
            return;
        }
        let mut todo: Vec<(&'a IrqSnap, f64)> = Vec::new();
        for irq in self.s.irqs.values() {
            let home = irq.home();
            if home.is_empty() || !home.intersects(&self.banned) || self.moved.contains(&irq.number)
            {
                continue;
            }
            // Written already: it leaves at its next interrupt.
            if self
                .pending
                .iter()
                .any(|(n, to)| *n == irq.number && !self.banned.contains(*to))
            {
                continue;
            }
            if self
                .frozen
                .get(&irq.number)
                .is_some_and(|why| matches!(*why, "banned" | "device banned" | "managed"))
            {
                continue;
            }
            todo.push((irq, self.weight(irq, &[])));
        }
        todo.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.number.cmp(&b.0.number)));
        for (irq, _) in todo {
            if self.moved.contains(&irq.number) {
                continue;
            }
            let companions = self.companions(irq);
            let w = self.weight(irq, &companions);
            let home = irq.home();
            let mut targets = self.targets(irq, &home, w);
            if targets.is_empty() {
                targets = self.any_target(irq, &home, w);
            }
            let Some(&(to, after)) = targets.first() else {
                continue;
            };
            let on = home.intersection(&self.banned);
            let why: Vec<&str> = [
                (self.cfg.exclude_cpus.intersects(&on), "excluded"),
                (
                    on.iter()
                        .any(|c| self.s.cpus.get(&c).is_some_and(|c| c.isolated)),
                    "isolated or nohz_full",
                ),
                (
                    on.iter()
                        .any(|c| self.s.cpus.get(&c).is_some_and(|c| !c.online)),
                    "offline",
                ),
            ]
            .into_iter()
            .filter(|(hit, _)| *hit)
            .map(|(_, w)| w)
            .collect();
            let reason = format!(
                "IRQ {} ({}, {} of a CPU) runs on {home}; CPU {on} takes no IRQs ({}): to CPU \
                 {to} (ends at {})",
                irq.number,
                irq.name,
                pct(w),
                why.join(", "),
                pct(after)
            );
            // A reload that bans a CPU frees its IRQs from cooldown; the move starts a new one.
            let cands = targets.iter().map(|(c, _)| *c).take(4).collect();
            self.push_move(irq, companions, cands, w, reason);
        }
    }

    /// Targets when none has room under load-limit: every eligible CPU (local ones first),
    /// least loaded first. Only for bans, which hold even on a loaded machine.
    fn any_target(&self, irq: &IrqSnap, from: &CpuSet, weight: f64) -> Vec<(u32, f64)> {
        let local = irq
            .local_cpus
            .as_ref()
            .map(|l| l.intersection(&self.eligible))
            .unwrap_or_default();
        let mut v: Vec<(bool, u32, f64)> = self
            .eligible
            .iter()
            .filter(|c| !from.contains(*c) && !self.full(*c))
            .map(|c| (!local.contains(c), c, self.load_of(c) + weight))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, c, after)| (c, after)).collect()
    }

    /// Active IRQs on CPUs of another node than their device's, or on CPUs that may not
    /// take IRQs, go to a good CPU with room.
    fn locality(&mut self) {
        let irqs: Vec<&IrqSnap> = self.s.irqs.values().collect();
        // (IRQ, weight, its own steady weight, why).
        let mut todo: Vec<(&IrqSnap, f64, f64, &'static str)> = Vec::new();
        for irq in irqs {
            if !self.movable(irq) {
                continue;
            }
            let home = irq.home();
            if home.is_empty() {
                continue;
            }
            let alone = self.steady(irq, self.weight(irq, &[]));
            let w = alone.max(self.unlinked_share(irq));
            if w < MIN_WEIGHT {
                continue;
            }
            let why = if !home.intersects(&self.eligible) {
                "CPU that may not take IRQs (a second thread without ht)"
            } else if let Some(local) = irq.local_cpus.as_ref().filter(|l| {
                let l = l.intersection(&self.eligible);
                !l.is_empty() && l != self.eligible
            }) && !home.intersects(local)
            {
                "CPU of another NUMA node than its device"
            } else {
                continue;
            };
            todo.push((irq, w, alone, why));
        }
        // Heaviest first, so the big ones get the emptiest CPUs.
        todo.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.number.cmp(&b.0.number)));
        for (irq, _, steady, why) in todo {
            if self.moved.contains(&irq.number) {
                continue;
            }
            let companions = self.companions(irq);
            let linked = self.weight(irq, &companions) - self.weight(irq, &[]) + steady;
            let unlinked = self.unlinked_share(irq);
            let w = linked.max(unlinked);
            let from = irq.home();
            let targets: Vec<(u32, f64)> = self
                .targets(irq, &from, w)
                .into_iter()
                .filter(|(c, _)| {
                    irq.local_cpus.as_ref().is_none_or(|l| l.contains(*c))
                        || why.starts_with("CPU that")
                })
                .collect();
            let (mut targets, mut revisits) = self.no_return(irq, targets);
            let remote = why.starts_with("CPU of another");
            let mut over_limit = "";
            if targets.is_empty() && remote && !self.cfg.non_local_cpus {
                // A queue that is heavy where it sits is never left on a remote node: its
                // reading there is inflated by remote memory, so "no local CPU has room"
                // is judged on the wrong figure, and non-local-cpus = false says remote
                // CPUs are not for it. The least loaded local CPU takes it; balancing (and
                // RPS) goes on from there on what it costs at home.
                let any = self.local_any(irq, &from, w);
                let (t, r) = self.no_return(irq, any.clone());
                (targets, revisits) = if t.is_empty() {
                    let r = any
                        .iter()
                        .map(|(c, _)| {
                            (
                                *c,
                                "every local CPU is one it left within the return window, \
                                 and a remote node costs more than any of them"
                                    .to_string(),
                            )
                        })
                        .collect();
                    (any, r)
                } else {
                    (t, r)
                };
                over_limit = " (above load-limit: no local CPU has room, and a remote node \
                              costs more than a loaded local CPU)";
            }
            let Some(&(to, after)) = targets.first() else {
                continue;
            };
            let mut reason = format!(
                "IRQ {} ({}, {} of a CPU) runs on {from}, a {why}: to CPU {to}{} (ends at \
                 {}{over_limit})",
                irq.number,
                irq.name,
                pct(w),
                self.s
                    .cpus
                    .get(&to)
                    .and_then(|c| c.node)
                    .map(|n| format!(" on node {n}"))
                    .unwrap_or_default(),
                pct(after)
            );
            if remote
                && self
                    .s
                    .queues
                    .iter()
                    .any(|q| q.irq == Some(irq.number) && !q.rps_cpus.is_empty())
            {
                reason.push_str("; RPS was set on its queue while it sat there");
            }
            if unlinked > linked {
                reason.push_str(&format!(
                    "; its weight is its share of {}'s polls there that no link names \
                     ({} measured as its own: queues whose IRQs share a CPU cannot be told \
                     apart by co-occurrence)",
                    irq.netdev.as_deref().unwrap_or("device"),
                    pct(linked)
                ));
            }
            self.revisit(irq, to, &revisits, &mut reason);
            let cands = targets.iter().map(|(c, _)| *c).take(4).collect();
            self.push_move(irq, companions, cands, w, reason);
        }
    }

    /// An rx IRQ's share of the poll time its device's NAPI instances spent on its home CPU
    /// without a link to any IRQ: split evenly between the device's rx IRQs homed there.
    /// With every queue of a NIC on one CPU and no exact link (6.12's virtio_net names
    /// neither its NAPI IRQs nor its queues' NAPI), co-occurrence cannot tell the queues
    /// apart: on 6.12 CPU 0 was 65-84% busy with their polls while each IRQ read 0.1-0.8%,
    /// under the 1% a move needs, and four queues stayed on a remote node for the whole run.
    /// Only locality uses it: it says where the queues' load is, not which queue has it.
    fn unlinked_share(&self, irq: &IrqSnap) -> f64 {
        let (Some(dev), Some((QueueKind::Rx, _))) = (&irq.netdev, irq.queue) else {
            return 0.0;
        };
        let home = irq.home();
        let Some(cpu) = home.first().filter(|_| home.len() == 1) else {
            return 0.0;
        };
        let ns: u64 = self
            .s
            .napi
            .iter()
            .filter(|n| n.irq.is_none() && n.device == *dev)
            .filter_map(|n| n.per_cpu.get(&cpu))
            .map(|p| p.ns)
            .sum();
        if ns == 0 {
            return 0.0;
        }
        let sharers = self
            .s
            .irqs
            .values()
            .filter(|o| {
                o.netdev.as_ref() == Some(dev)
                    && matches!(o.queue, Some((QueueKind::Rx, _)))
                    && o.home() == home
            })
            .count()
            .max(1) as u64;
        self.s.frac(ns / sharers)
    }

    /// The median of `now` and the last two readings of `series` taken at or after `since`:
    /// a level that one swing of the readings does not make.
    /// An IRQ's weight `now` averaged with its active readings since it last moved (at
    /// most [`NOISE_WINDOW`]): what a placement pairs queues by. One interval's readings of
    /// light queues swing by as much as they differ (in the VM 1.2-4.7% for one queue whose
    /// seven-interval mean was 1.6%), and a pairing made on one of them can be the worst
    /// one, which no single move mends later.
    fn steady(&self, irq: &IrqSnap, now: f64) -> f64 {
        let since = self
            .hist
            .last_move
            .get(&irq.number)
            .map_or(0, |m| m.tick + 1);
        let past: Vec<f64> = self
            .hist
            .loads
            .irqs
            .get(&irq.number)
            .map(|s| {
                s.readings
                    .iter()
                    .filter(|(t, x)| *t >= since && *x >= MIN_WEIGHT)
                    .map(|(_, x)| *x)
                    .collect()
            })
            .unwrap_or_default();
        (past.iter().sum::<f64>() + now) / (past.len() + 1) as f64
    }

    fn level(&self, series: Option<&Series>, since: u64, now: f64) -> f64 {
        let mut v: Vec<f64> = series
            .map(|s| {
                s.readings
                    .iter()
                    .rev()
                    .filter(|(t, _)| *t >= since)
                    .take(2)
                    .map(|(_, x)| *x)
                    .collect()
            })
            .unwrap_or_default();
        v.push(now);
        history::median(&mut v)
    }

    /// Every local eligible CPU a remote IRQ could go to, load-limit or not, least loaded
    /// first.
    fn local_any(&self, irq: &IrqSnap, from: &CpuSet, weight: f64) -> Vec<(u32, f64)> {
        let Some(local) = irq.local_cpus.as_ref() else {
            return Vec::new();
        };
        let mut v: Vec<(u32, f64)> = local
            .intersection(&self.eligible)
            .iter()
            .filter(|c| !from.contains(*c) && !self.full(*c))
            .map(|c| (c, self.load_of(c) + weight))
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        v
    }

    /// When `irq` left `cpu` within the return window.
    fn left_recently(&self, irq: u32, cpu: u32) -> Option<&'a Departure> {
        let window = u64::from(self.cfg.return_window);
        self.hist
            .departures
            .get(&irq)?
            .get(&cpu)
            .filter(|d| self.hist.tick < d.tick + window)
    }

    /// Why this interval's measurement contradicts the reason `irq` left `cpu`, if it does:
    /// it left as an IRQ of `d.weight`, and what it has measured since (the median of its
    /// readings, this one included) differs from that by more than the noise and by more
    /// than a factor of two. A wrong link, or one interval's burst, gave it a weight it does
    /// not have. The loads of the CPUs are no contradiction: their swings are what
    /// ping-pong comes from.
    fn contradiction(&self, irq: &IrqSnap, cpu: u32, d: &Departure) -> Option<String> {
        let series = self.hist.loads.irqs.get(&irq.number);
        let mut v: Vec<f64> = series
            .map(|s| {
                s.readings
                    .iter()
                    .filter(|(t, _)| *t > d.tick)
                    .map(|(_, x)| *x)
                    .collect()
            })
            .unwrap_or_default();
        v.push(self.s.frac(irq.total_ns()));
        let now = history::median(&mut v);
        let margin = (self.cfg.min_gain / 100.0).max(NOISE_K * series.map_or(0.0, Series::noise));
        let off = (now - d.weight).abs() > margin && (now < d.weight / 2.0 || now > d.weight * 2.0);
        off.then(|| {
            format!(
                "IRQ {} left CPU {cpu} at interval {} as {} of a CPU and has measured {} since",
                irq.number,
                d.tick,
                pct(d.weight),
                pct(now)
            )
        })
    }

    /// `targets` without the CPUs `irq` left within the return window (no ping-pong), but
    /// for those the measurement says it left for a wrong reason: those stay, each with
    /// the contradiction.
    fn no_return(
        &self,
        irq: &IrqSnap,
        targets: Vec<(u32, f64)>,
    ) -> (Vec<(u32, f64)>, BTreeMap<u32, String>) {
        let mut revisits = BTreeMap::new();
        let kept = targets
            .into_iter()
            .filter(|(c, _)| match self.left_recently(irq.number, *c) {
                None => true,
                Some(d) => match self.contradiction(irq, *c, d) {
                    Some(why) => {
                        revisits.insert(*c, why);
                        true
                    }
                    None => false,
                },
            })
            .collect();
        (kept, revisits)
    }

    /// A move to `to` that returns to a CPU left within the window is a revisit: said in
    /// its reason and in a finding.
    fn revisit(
        &mut self,
        irq: &IrqSnap,
        to: u32,
        revisits: &BTreeMap<u32, String>,
        reason: &mut String,
    ) {
        let Some(why) = revisits.get(&to) else {
            return;
        };
        *reason = format!("revisit: {why}; {reason}");
        self.findings.push(Finding {
            kind: FindingKind::Revisit,
            irq: Some(irq.number),
            cpu: Some(to),
            message: format!(
                "IRQ {} goes back to CPU {to} within the return window: {why}",
                irq.number
            ),
        });
    }

    /// Overloaded CPUs, busiest first.
    fn overloaded(&self) -> Vec<u32> {
        let n = self.eligible.len().max(1) as f64;
        let mean = self
            .eligible
            .iter()
            .map(|c| self.irq_load.get(&c).copied().unwrap_or(0.0))
            .sum::<f64>()
            / n;
        let mut v: Vec<(u32, f64)> = self
            .load
            .iter()
            .filter(|(c, l)| {
                **l >= self.cfg.threshold_frac()
                    || self.irq_load.get(c).copied().unwrap_or(0.0) - mean
                        >= self.cfg.imbalance / 100.0
            })
            // An isolated or excluded CPU busy with its own work is none of our business,
            // unless IRQs sit on it.
            .filter(|(c, _)| self.eligible.contains(**c) || !self.on_cpu(**c).is_empty())
            .map(|(c, l)| (*c, *l))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(c, _)| c).collect()
    }

    /// Active movable IRQs whose home is `cpu`.
    fn on_cpu(&self, cpu: u32) -> Vec<&'a IrqSnap> {
        self.s
            .irqs
            .values()
            .filter(|i| {
                let h = i.home();
                h.len() == 1 && h.contains(cpu) && self.movable(i)
            })
            .collect()
    }

    /// Whether the last interval's plan moved IRQs to relieve load and they took: the
    /// effect is still settling (a saturated CPU shows its real demand only once relieved),
    /// so balancing goes on. Locality moves alone start no balancing.
    fn moved_last_tick(&self) -> bool {
        self.hist.balancing_last
            && self
                .hist
                .last_move
                .values()
                .any(|m| m.tick + 1 == self.hist.tick)
    }

    /// Every eligible CPU with IRQs, busiest first.
    fn by_load(&self) -> Vec<u32> {
        let mut v: Vec<(u32, f64)> = self
            .load
            .iter()
            .filter(|(c, _)| self.eligible.contains(**c) || !self.on_cpu(**c).is_empty())
            .map(|(c, l)| (*c, *l))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(c, _)| c).collect()
    }

    /// The CPUs a placement-only plan (locality, bans) filled, once the IRQs it moved are
    /// out of cooldown and the loads there have a noise of their own: None when there is
    /// none to check now. Such a plan weighed the IRQs where they sat before, typically all
    /// on one remote CPU at boot, where their split is the least certain (in the VM one of
    /// four equal queues read 22% and the others 8% each, and three of them went to one
    /// CPU). Where they landed they measure apart, so the CPUs they went to are balanced
    /// among themselves on those readings, once; moves this makes are placements too and
    /// are checked in turn. Other CPUs are left alone: no episode runs beyond the
    /// placement's CPUs (a 3% trade between two CPUs it never touched was the cost of
    /// running one).
    ///
    /// The check waits until every CPU it compares and every IRQ on them has
    /// [`NOISE_MIN_SAMPLES`] changes since the placement (at most [`NOISE_WINDOW`]
    /// intervals past the cooldown), and judges the noise on those changes only. Run at the
    /// end of the cooldown, it knew no noise and moved on `min-gain` alone: in the 6.1
    /// bench it swapped two queues for 6 points, out of the best pairing, where three
    /// intervals later the same readings asked 21.5.
    fn placement_check(&self) -> Option<Check> {
        let cooldown = u64::from(self.cfg.cooldown.max(1));
        let tick = self.hist.tick;
        let due: Vec<(u32, &MoveRecord)> = self
            .hist
            .last_move
            .iter()
            .filter(|(_, m)| m.placed && !m.checked && m.tick + cooldown <= tick)
            .filter(|(_, m)| m.state != MoveState::NotFollowed)
            .map(|(n, m)| (*n, m))
            .collect();
        let since = due.iter().map(|(_, m)| m.tick).max()?;
        let scope: CpuSet = due
            .iter()
            .map(|(_, m)| m.to)
            .filter(|c| self.eligible.contains(*c))
            .collect();
        if scope.is_empty() {
            return None;
        }
        let l = &self.hist.loads;
        let known =
            |s: Option<&Series>| s.is_some_and(|s| s.changes_since(since) >= NOISE_MIN_SAMPLES);
        let ready = scope.iter().all(|c| {
            known(l.cpus.get(&c)) && self.on_cpu(c).iter().all(|i| known(l.irqs.get(&i.number)))
        });
        (ready || tick >= since + cooldown + NOISE_WINDOW as u64).then(|| Check {
            scope,
            since,
            irqs: due.iter().map(|(n, _)| *n).collect(),
        })
    }

    fn balance_weight(&mut self) {
        // An overloaded CPU starts an episode; once started it goes on while a move lowers
        // the busiest CPU by min-gain, so the machine ends balanced rather than just below
        // threshold (fewer, bigger moves than chipping at the threshold every interval).
        let mut episode = self.moved_last_tick() || !self.overloaded().is_empty();
        let check = if episode {
            None
        } else {
            self.placement_check()
        };
        if let Some(c) = &check {
            self.noise_since = c.since;
            self.checked = c.irqs.clone();
        }
        // A saturated CPU hides its IRQs' real demand (they get a share of 100%): move just
        // enough to bring it under threshold and measure again, rather than balance the whole
        // machine on figures that are too small.
        let saturated: BTreeSet<u32> = self
            .load
            .iter()
            .filter(|(_, l)| **l >= SATURATED)
            .map(|(c, _)| *c)
            .collect();
        let bound = self.bound_estimate(None);
        let check_bound = check.as_ref().map(|c| self.bound_estimate(Some(&c.scope)));
        // The busiest CPU a move can relieve: one busy with tasks and no movable IRQ (the
        // bench's receiver at 57% beside IRQ CPUs at 53% and 25%) is not what balancing
        // lowers, and judging the stop on it ended the episode before its first move.
        let busiest_holder =
            |w: &Self, b: &Bound| b.holders.iter().map(|c| w.load_of(c)).fold(0.0, f64::max);
        // What a placement check weighed, for the finding when it moves nothing: the CPUs
        // it found near the bound, or its closest candidate.
        let mut near: Option<(u32, f64, f64)> = None;
        let mut weighed: Option<Weighed> = None;
        let mut check_moved = false;
        for _ in 0..self.s.irqs.len() {
            let mut best: Option<Candidate> = None;
            let sources = if !saturated.is_empty() {
                let t = self.cfg.threshold_frac();
                saturated
                    .iter()
                    .copied()
                    .filter(|c| self.load_of(*c) >= t)
                    .collect()
            } else if let (Some(Check { scope, .. }), Some(bound)) = (&check, &check_bound) {
                let busiest = busiest_holder(self, bound);
                if busiest <= bound.value * (1.0 + NEAR_BOUND) + 1e-9 {
                    let cpu = self.by_load().into_iter().find(|c| scope.contains(*c));
                    near = cpu.map(|c| (c, busiest, bound.value));
                    break;
                }
                let mut v = self.by_load();
                v.retain(|c| scope.contains(*c));
                v
            } else if episode {
                // Close enough to the best possible: more moves would cost vectors and
                // caches for little.
                let busiest = busiest_holder(self, &bound);
                if busiest <= bound.value * (1.0 + NEAR_BOUND) + 1e-9
                    && busiest < self.cfg.threshold_frac()
                {
                    break;
                }
                self.by_load()
            } else {
                self.overloaded()
            };
            let busiest_source = sources.first().copied();
            for src in sources {
                let src_load = self.load_of(src);
                for irq in self.on_cpu(src) {
                    let companions = self.companions(irq);
                    let w = self.weight(irq, &companions);
                    if w < MIN_WEIGHT {
                        continue;
                    }
                    let landing = w * self.carry(src);
                    let (targets, revisits) =
                        self.no_return(irq, self.targets(irq, &irq.home(), landing));
                    let Some(&(to, after)) = targets.first() else {
                        continue;
                    };
                    let new_max = (src_load - w).max(after);
                    let floor = self.gain_beyond_noise(src_load, src, to, irq, &companions);
                    if src_load - new_max < floor {
                        if check.is_some() {
                            Weighed::keep(
                                &mut weighed,
                                Weighed {
                                    src,
                                    src_load,
                                    to,
                                    irq: irq.number,
                                    back: None,
                                    new_max,
                                    gain: src_load - new_max,
                                    floor,
                                },
                            );
                        }
                        continue;
                    }
                    if best.as_ref().is_none_or(|b| new_max < b.new_max - 1e-9) {
                        best = Some(Candidate {
                            new_max,
                            irq: irq.number,
                            to,
                            companions,
                            targets: targets.iter().map(|(c, _)| *c).take(4).collect(),
                            weight: w,
                            src_load,
                            revisits,
                        });
                    }
                }
                if best.is_some() {
                    break; // relieve the busiest overloaded CPU first
                }
            }
            if best.is_none() {
                // No single move gains: two IRQs exchanged may (pairs made wrongly).
                let b = check_bound.as_ref().unwrap_or(&bound);
                let swap = busiest_source.and_then(|src| {
                    self.best_swap(src, check.as_ref().map(|c| &c.scope), b, &mut weighed)
                });
                let Some(sw) = swap else { break };
                episode = true;
                self.balancing |= check.is_none();
                check_moved |= check.is_some();
                self.push_swap(sw, check.is_some());
                continue;
            }
            let Some(Candidate {
                new_max,
                irq: n,
                to,
                companions,
                targets: cands,
                weight: w,
                src_load,
                revisits,
            }) = best
            else {
                break;
            };
            let Some(irq) = self.s.irqs.get(&n) else {
                break;
            };
            episode = true;
            // A placement check's moves are placements: checked in turn, no episode.
            self.balancing |= check.is_none();
            check_moved |= check.is_some();
            let mut reason = format!(
                "CPU {} is the busiest{} ({} busy): IRQ {} ({}) costs {} of a CPU there; on \
                 CPU {to} the busier of the two ends at {}",
                irq.home(),
                if check.is_some() {
                    " of the CPUs the last placement filled"
                } else {
                    ""
                },
                pct(src_load),
                n,
                irq.name,
                pct(w),
                pct(new_max)
            );
            self.revisit(irq, to, &revisits, &mut reason);
            self.push_move(irq, companions, cands, w, reason);
        }
        if let (Some(c), false) = (&check, check_moved) {
            self.held(&c.scope, near, weighed);
        }
        self.noise_since = 0;
    }

    /// The finding of a placement check that moved nothing: the CPUs it checked are near
    /// the best they allow, or its closest candidate gained less than the noise asks (the
    /// check acts once, so without this line a placement it left uneven says nothing of
    /// why).
    fn held(&mut self, scope: &CpuSet, near: Option<(u32, f64, f64)>, w: Option<Weighed>) {
        let name = |n: u32| self.s.irqs.get(&n).map_or("?", |i| i.name.as_str());
        let (cpu, irq, why) = match (near, w) {
            (Some((cpu, busiest, bound)), _) => (
                Some(cpu),
                None,
                format!(
                    "the busiest, CPU {cpu} at {}, is within {:.0}% of the best they allow \
                     ({})",
                    pct(busiest),
                    100.0 * NEAR_BOUND,
                    pct(bound)
                ),
            ),
            (None, Some(w)) => {
                let what = match w.back {
                    None => format!(
                        "the best move, IRQ {} ({}) from CPU {} ({} busy) to CPU {},",
                        w.irq,
                        name(w.irq),
                        w.src,
                        pct(w.src_load),
                        w.to
                    ),
                    Some(b) => format!(
                        "the best exchange, IRQ {} ({}) of CPU {} ({} busy) for IRQ {} ({}) \
                         of CPU {},",
                        w.irq,
                        name(w.irq),
                        w.src,
                        pct(w.src_load),
                        b,
                        name(b),
                        w.to
                    ),
                };
                let why = if w.gain <= 0.0 {
                    format!(
                        "{what} would leave the busier of the two at {}, no lower than CPU \
                         {} is now",
                        pct(w.new_max),
                        w.src
                    )
                } else {
                    format!(
                        "{what} would leave the busier of the two at {}: a gain of {:.1} \
                         points where {:.1} are needed (`min-gain`, or {NOISE_K} deviations \
                         of these readings' noise when more)",
                        pct(w.new_max),
                        100.0 * w.gain,
                        100.0 * w.floor
                    )
                };
                (Some(w.src), Some(w.irq), why)
            }
            (None, None) => (
                None,
                None,
                "no IRQ there could go to another of them (each under the weight a move \
                 needs, or with no room where it could go)"
                    .to_string(),
            ),
        };
        self.findings.push(Finding {
            kind: FindingKind::Held,
            irq,
            cpu,
            message: format!(
                "placement check of CPUs {}: nothing moved: {why}",
                scope.to_list_string()
            ),
        });
    }

    /// The exchange of an IRQ of `src` with a lighter one of another CPU (within `scope`
    /// when given) that lowers the busier of the two CPUs the most, by more than the noise
    /// of the two CPUs' and both IRQs' readings; `None` when none does. Where every CPU
    /// holds queues, queues paired wrongly ({A, B} and {C, D} where {A, D} and {B, C} is
    /// best) need two moves that each alone makes the busier CPU busier: one move never
    /// mends them. Neither IRQ goes back to a CPU it left within the return window. A
    /// placement check's (`scope`) exchanges that fall short of the noise are offered to
    /// `weighed`.
    fn best_swap(
        &self,
        src: u32,
        scope: Option<&CpuSet>,
        bound: &Bound,
        weighed: &mut Option<Weighed>,
    ) -> Option<Swap> {
        let src_load = self.load_of(src);
        if src_load <= bound.value * (1.0 + NEAR_BOUND) + 1e-9 {
            return None;
        }
        let mut best: Option<Swap> = None;
        for a in self.on_cpu(src) {
            let ca = self.companions(a);
            let wa = self.weight(a, &ca);
            if wa < MIN_WEIGHT {
                continue;
            }
            for (t, _) in self.targets(a, &a.home(), 0.0) {
                if scope.is_some_and(|sc| !sc.contains(t))
                    || self.left_recently(a.number, t).is_some()
                {
                    continue;
                }
                for b in self.on_cpu(t) {
                    let cb = self.companions(b);
                    let wb = self.weight(b, &cb);
                    if wb < MIN_WEIGHT || wb >= wa || self.left_recently(b.number, src).is_some() {
                        continue;
                    }
                    // The loads after (each landing with what it carries: `carry`), and
                    // whether each may go where the other was.
                    let after_t = self.load_of(t) + wa * self.carry(src) - wb;
                    let after_src = src_load - wa + wb * self.carry(t);
                    let b_may = self
                        .targets(b, &b.home(), wb - wa)
                        .iter()
                        .any(|(c, _)| *c == src);
                    if !b_may || after_t > self.cfg.load_limit_frac() {
                        continue;
                    }
                    let new_max = after_t.max(after_src);
                    let irqs: Vec<u32> = [a.number, b.number]
                        .into_iter()
                        .chain(ca.iter().copied())
                        .chain(cb.iter().copied())
                        .collect();
                    let floor = self.noise_floor(src_load, [src, t], &irqs);
                    if src_load - new_max < floor {
                        if scope.is_some() {
                            Weighed::keep(
                                weighed,
                                Weighed {
                                    src,
                                    src_load,
                                    to: t,
                                    irq: a.number,
                                    back: Some(b.number),
                                    new_max,
                                    gain: src_load - new_max,
                                    floor,
                                },
                            );
                        }
                        continue;
                    }
                    // Of two as good, the one that moves less load (fewer caches to
                    // warm again).
                    let better = best.as_ref().is_none_or(|x| {
                        new_max < x.new_max - 1e-9
                            || (new_max < x.new_max + 1e-9 && wa + wb < x.a.2 + x.b.2 - 1e-9)
                    });
                    if better {
                        best = Some(Swap {
                            src,
                            src_load,
                            to: t,
                            to_load: self.load_of(t),
                            new_max,
                            a: (a.number, ca.clone(), wa),
                            b: (b.number, cb, wb),
                        });
                    }
                }
            }
        }
        best
    }

    /// Both moves of a swap, each with the reason of the pair.
    fn push_swap(&mut self, sw: Swap, check: bool) {
        let snap = self.s;
        let (Some(a), Some(b)) = (snap.irqs.get(&sw.a.0), snap.irqs.get(&sw.b.0)) else {
            return;
        };
        let reason = format!(
            "swap: CPU {} is the busiest{} ({} busy) and no single move gains: IRQ {} ({}, \
             {} of a CPU) goes to CPU {} ({} busy), IRQ {} ({}, {}) from there to CPU {}; \
             the busier of the two ends at {}",
            sw.src,
            if check {
                " of the CPUs the last placement filled"
            } else {
                ""
            },
            pct(sw.src_load),
            a.number,
            a.name,
            pct(sw.a.2),
            sw.to,
            pct(sw.to_load),
            b.number,
            b.name,
            pct(sw.b.2),
            sw.src,
            pct(sw.new_max)
        );
        // The second half names the first rather than repeating its reason (the daemon
        // logged the same line twice).
        let back = format!(
            "swap (the other half, with IRQ {}): IRQ {} ({}, {} of a CPU) from CPU {} to CPU {}",
            a.number,
            b.number,
            b.name,
            pct(sw.b.2),
            sw.to,
            sw.src
        );
        self.swaps.push(self.actions.len());
        self.push_move(a, sw.a.1, vec![sw.to], sw.a.2, reason);
        self.push_move(b, sw.b.1, vec![sw.src], sw.b.2, back);
    }

    /// What a move off a CPU at `load` must gain. Off an overloaded CPU any real gain counts:
    /// many small IRQs could otherwise never leave it one by one. Elsewhere `min-gain` is the
    /// hysteresis that keeps balanced CPUs from trading IRQs.
    fn required_gain(&self, load: f64) -> f64 {
        if load >= self.cfg.threshold_frac() {
            MIN_WEIGHT / 2.0
        } else {
            self.cfg.min_gain / 100.0
        }
    }

    /// What a move of `irq` (with `companions`) from `src` to `to` must gain: the floor
    /// ([`Work::required_gain`]), and [`NOISE_K`] standard deviations of the noise of what
    /// the gain is computed from. The gain is the source's reading less the busier of the
    /// two after the move: a sum of the source's, the target's and the IRQ's readings, so
    /// its noise is that of the three together (taken as independent: the IRQ's share of the
    /// source's swing is counted twice, which errs on the side of staying). A gain below
    /// that is as likely to be the readings' swing as a real difference, and moving on it is
    /// how an IRQ goes back and forth between two CPUs (the field saw 3 -> 2 -> 3 -> 2 under
    /// readings of 54%, 98%, 63%, 72%). Until a load has [`NOISE_MIN_SAMPLES`] changes its
    /// noise counts as 0.
    fn gain_beyond_noise(
        &self,
        src_load: f64,
        src: u32,
        to: u32,
        irq: &IrqSnap,
        companions: &[u32],
    ) -> f64 {
        let irqs: Vec<u32> = std::iter::once(irq.number)
            .chain(companions.iter().copied())
            .collect();
        self.noise_floor(src_load, [src, to], &irqs)
    }

    /// [`Work::required_gain`], or [`NOISE_K`] standard deviations of the combined noise of
    /// these IRQs' readings and of the two CPUs' difference when more (each CPU's noise,
    /// taken as independent, until the pair has enough intervals in common).
    fn noise_floor(&self, src_load: f64, cpus: [u32; 2], irqs: &[u32]) -> f64 {
        let l = &self.hist.loads;
        let since = self.noise_since;
        let pair = l.pair_noise_since(cpus[0], cpus[1], since).map_or_else(
            || {
                cpus.iter()
                    .map(|c| l.cpu_noise_since(*c, since).powi(2))
                    .sum::<f64>()
            },
            |n| n.powi(2),
        );
        let var = pair
            + irqs
                .iter()
                .map(|n| l.irq_noise_since(*n, since).powi(2))
                .sum::<f64>();
        self.required_gain(src_load).max(NOISE_K * var.sqrt())
    }

    /// A lower bound of the load of the busiest CPU holding a movable IRQ: what cannot move
    /// stays, what can is poured over the eligible CPUs, and the largest movable IRQ lands
    /// somewhere whole. With `within`, only those CPUs and the IRQs on them.
    fn bound_estimate(&self, within: Option<&CpuSet>) -> Bound {
        let mut base = self.load.clone();
        let cpus = match within {
            Some(w) => {
                base.retain(|c, _| w.contains(*c));
                w.intersection(&self.eligible)
            }
            None => self.eligible.clone(),
        };
        let mut fluid = 0.0;
        let mut largest: f64 = 0.0;
        let mut holders = CpuSet::new();
        for irq in self.s.irqs.values() {
            let home = irq.home();
            if home.len() != 1 || !self.movable(irq) || within.is_some_and(|w| !home.intersects(w))
            {
                continue;
            }
            let w = self.weight(irq, &[]);
            if w < MIN_WEIGHT {
                continue;
            }
            if let Some(c) = home.first() {
                holders.insert(c);
                if let Some(b) = base.get_mut(&c) {
                    *b = (*b - w).max(0.0);
                }
            }
            fluid += w;
            largest = largest.max(w);
        }
        // What stays on the CPUs that hold movable IRQs; other CPUs' loads bound nothing
        // balancing compares.
        let fixed = holders
            .iter()
            .filter_map(|c| base.get(&c).copied())
            .fold(0.0, f64::max);
        let lightest = cpus
            .iter()
            .filter_map(|c| base.get(&c).copied())
            .fold(f64::INFINITY, f64::min);
        let (mut lo, mut hi) = (0.0f64, fixed + fluid + 1.0);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            let room: f64 = cpus
                .iter()
                .map(|c| (mid - base.get(&c).copied().unwrap_or(0.0)).max(0.0))
                .sum();
            if room >= fluid {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let piece = if lightest.is_finite() {
            lightest + largest
        } else {
            0.0
        };
        Bound {
            value: hi.max(fixed).max(piece),
            holders,
        }
    }

    /// irqbalance's estimate: each CPU's IRQ time shared out by interrupt counts.
    fn balance_count(&mut self) {
        let mut est: BTreeMap<u32, f64> = BTreeMap::new();
        for cpu in self.s.cpus.keys() {
            let on: Vec<(u32, u64)> = self
                .s
                .irqs
                .values()
                .map(|i| (i.number, i.per_cpu.get(cpu).map_or(0, |c| c.interrupts)))
                .filter(|(_, n)| *n > 0)
                .collect();
            let total: u64 = on.iter().map(|(_, n)| n).sum();
            let cpu_irq = self.irq_load.get(cpu).copied().unwrap_or(0.0);
            for (n, count) in on {
                *est.entry(n).or_default() += cpu_irq * count as f64 / total as f64;
            }
        }
        for _ in 0..self.s.irqs.len() {
            let mut best: Option<(f64, u32, Vec<u32>, f64, f64)> = None;
            for src in self.overloaded() {
                let src_load = self.load_of(src);
                for irq in self.on_cpu(src) {
                    let w = est.get(&irq.number).copied().unwrap_or(0.0);
                    if w < MIN_WEIGHT {
                        continue;
                    }
                    let targets = self.targets(irq, &irq.home(), w);
                    let Some(&(_, after)) = targets.first() else {
                        continue;
                    };
                    let new_max = (src_load - w).max(after);
                    if src_load - new_max < self.required_gain(src_load) {
                        continue;
                    }
                    if best.as_ref().is_none_or(|b| new_max < b.0 - 1e-9) {
                        let cands = targets.iter().map(|(c, _)| *c).take(4).collect();
                        best = Some((new_max, irq.number, cands, w, src_load));
                    }
                }
                if best.is_some() {
                    break;
                }
            }
            let Some((_, n, cands, w, src_load)) = best else {
                break;
            };
            let Some(irq) = self.s.irqs.get(&n) else {
                break;
            };
            let reason = format!(
                "count: CPU {} overloaded ({}); IRQ {n} estimated at {} of a CPU from its \
                 share of interrupts",
                irq.home(),
                pct(src_load),
                pct(w)
            );
            self.push_move(irq, Vec::new(), cands, w, reason);
        }
    }

    /// birq: one active IRQ per overloaded CPU, by count or at random, to the least loaded
    /// local CPU below load-limit.
    fn balance_birq(&mut self) {
        let mut rng = SplitMix64::new(self.cfg.seed ^ self.hist.tick.wrapping_mul(0x9e37_79b9));
        for src in self.overloaded() {
            let mut cands: Vec<(&IrqSnap, u64)> = self
                .s
                .irqs
                .values()
                .filter(|i| {
                    let h = i.home();
                    h.contains(src)
                        && !self.frozen.contains_key(&i.number)
                        && !self.moved.contains(&i.number)
                })
                .map(|i| (i, i.per_cpu.get(&src).map_or(0, |c| c.interrupts)))
                .filter(|(_, n)| *n > 0)
                .collect();
            if cands.is_empty() {
                continue;
            }
            let pick = match self.cfg.strategy {
                Strategy::Min => cands.iter().min_by_key(|(i, n)| (*n, i.number)),
                Strategy::Max => cands.iter().max_by_key(|(i, n)| (*n, u32::MAX - i.number)),
                _ => {
                    let k = (rng.next_u64() % cands.len() as u64) as usize;
                    cands.get(k)
                }
            };
            let Some(&(irq, count)) = pick else {
                continue;
            };
            // birq knows no weight: it checks the target's load before the move.
            let targets = self.targets(irq, &irq.home(), 0.0);
            let Some(&(to, _)) = targets.first() else {
                continue;
            };
            let w = self.s.frac(irq.ns_on(&irq.home()));
            let reason = format!(
                "{}: CPU {src} overloaded ({}); IRQ {} ({count} interrupts) to the least \
                 loaded CPU {to}",
                self.cfg.strategy.as_str(),
                pct(self.load_of(src)),
                irq.number
            );
            let cands_list = targets.iter().map(|(c, _)| *c).take(4).collect();
            cands.clear();
            self.push_move(irq, Vec::new(), cands_list, w, reason);
        }
    }
}

fn banned_device(cfg: &Config, irq: &IrqSnap) -> bool {
    cfg.banned_devices.iter().any(|d| {
        irq.device.as_deref() == Some(d.as_str())
            || irq.netdev.as_deref() == Some(d.as_str())
            || irq.driver.as_deref() == Some(d.as_str())
    })
}

/// A small, well-known generator (SplitMix64): deterministic across platforms and versions,
/// which is all `rnd` needs.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
