//! What the policy remembers between intervals: moves (for cooldowns, for checking that
//! they took, and for the CPUs each IRQ left), IRQs the kernel refused to move, CPUs whose
//! vector space is full, stuck IRQs, RPS we set, threads we pinned, and the recent readings
//! of every CPU's and IRQ's load (the noise a move must beat). Updated only by
//! [`History::after`], a pure function of the interval, the plan and what actuation reported.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    ActionKind, FULL_FORGET, FindingKind, IrqSnap, NOISE_MIN_SAMPLES, NOISE_WINDOW, Plan, Snapshot,
};
use crate::cpumask::CpuSet;

/// Intervals old moves and departures are kept (cooldowns, pending checks and the return
/// window look back less than this).
const MOVE_FORGET: u64 = 1000;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Number of the interval the next plan is for.
    pub(crate) tick: u64,
    /// The last move of each IRQ.
    pub(crate) last_move: BTreeMap<u32, MoveRecord>,
    /// The CPUs each IRQ left, with when and what it weighed then (the return window).
    pub(crate) departures: BTreeMap<u32, BTreeMap<u32, Departure>>,
    /// IRQs whose affinity writes failed with EIO, with the message (logged once).
    pub(crate) unmovable: BTreeMap<u32, String>,
    /// CPUs that refused a vector (ENOSPC), with the interval they did.
    pub(crate) full_cpus: BTreeMap<u32, u64>,
    pub(crate) stuck: BTreeMap<u32, StuckRecord>,
    /// RPS we set, by (netdev, rx queue), with the interval.
    pub(crate) rps: BTreeMap<(String, u32), u64>,
    /// NAPI threads we pinned, by IRQ, with the CPUs.
    pub(crate) pinned: BTreeMap<u32, CpuSet>,
    /// Recent readings of each CPU's and IRQ's load.
    pub(crate) loads: Loads,
    /// Moves applied since start.
    pub(crate) moves: u64,
    /// Times an IRQ started sticking.
    pub sticking_events: u64,
    /// The last plan balanced load (see [`Plan::balancing`]).
    pub(crate) balancing_last: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MoveRecord {
    pub(crate) tick: u64,
    pub(crate) from: CpuSet,
    pub(crate) to: u32,
    /// Whether the kernel has moved it yet.
    pub(crate) state: MoveState,
    /// Made by a plan that only placed IRQs (locality, bans), on readings from where the
    /// IRQ sat before: the CPUs it went to are balanced among themselves once it has
    /// measured there (see `Work::placement_check`).
    pub(crate) placed: bool,
    /// A placement check has looked at the CPUs this placement filled (see `placed`).
    pub(crate) checked: bool,
}

/// Where a written affinity stands. On x86 the kernel moves a (non-managed) vector at the
/// IRQ's next interrupt, so `effective_affinity` follows the write only once the IRQ
/// fires: an idle tx IRQ, or a bulk queue polling with its interrupt off, is pending for
/// as long as it stays quiet (seconds, in the field). Only an IRQ that fired and is still
/// elsewhere did not follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MoveState {
    /// Written; the IRQ has not fired since, so the kernel has not moved it yet.
    Pending,
    /// Its effective affinity holds the CPU written (or there is nothing to check).
    Landed,
    /// It fired after the write and its effective affinity is still elsewhere.
    NotFollowed,
}

impl MoveRecord {
    /// What `irq` (this interval's view of the moved IRQ) says about the move.
    pub(crate) fn status(&self, irq: Option<&IrqSnap>) -> MoveState {
        let Some(irq) = irq else {
            return MoveState::Landed; // gone: nothing left to check
        };
        match irq.effective.as_ref().filter(|e| !e.is_empty()) {
            None => MoveState::Landed, // no effective_affinity (before 4.13): nothing to check
            Some(eff) if eff.contains(self.to) => MoveState::Landed,
            Some(_) if irq.interrupts > 0 => MoveState::NotFollowed,
            Some(_) => MoveState::Pending,
        }
    }
}

/// An IRQ left a CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Departure {
    pub(crate) tick: u64,
    /// Its own measured load on the CPUs it left (fraction of a CPU), the premise of the move.
    pub(crate) weight: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StuckRecord {
    pub(crate) since: u64,
    pub(crate) cpu: u32,
}

/// The recent readings of the loads the policy compares.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Loads {
    /// Busy fraction of each CPU.
    pub(crate) cpus: BTreeMap<u32, Series>,
    /// Each IRQ's measured load (all CPUs), fraction of a CPU.
    pub(crate) irqs: BTreeMap<u32, Series>,
    /// CPUs and IRQs whose next reading our own actions change (moves applied or pending,
    /// RPS, pins): their next change is ours, not noise.
    disturbed_cpus: CpuSet,
    disturbed_irqs: BTreeSet<u32>,
}

impl Loads {
    /// Noise of one CPU's reading (fraction of a CPU; 0 while unknown), from the changes
    /// after interval `since` only (0: all that are kept): what a load swung before a
    /// placement changed it (an idle CPU's changes are all near 0) is no measure of its
    /// noise now.
    pub(crate) fn cpu_noise_since(&self, cpu: u32, since: u64) -> f64 {
        self.cpus.get(&cpu).map_or(0.0, |s| s.noise_since(since))
    }

    pub(crate) fn irq_noise_since(&self, irq: u32, since: u64) -> f64 {
        self.irqs.get(&irq).map_or(0.0, |s| s.noise_since(since))
    }

    /// Noise of the difference of two CPUs' readings, from the intervals where both
    /// changed undisturbed; `None` with fewer than [`NOISE_MIN_SAMPLES`] of them. A move's
    /// gain depends on the two loads' difference, not on each: swings they share (under
    /// emulation every vCPU reads slower at once) leave it alone, and taking the two as
    /// independent counts them twice. Changes after `since` only, as for a CPU.
    pub(crate) fn pair_noise_since(&self, a: u32, b: u32, since: u64) -> Option<f64> {
        let (sa, sb) = (self.cpus.get(&a)?, self.cpus.get(&b)?);
        let diffs: Vec<f64> = sa
            .changes
            .iter()
            .filter(|(t, _)| *t > since)
            .filter_map(|(t, x)| sb.changes.iter().find(|(u, _)| u == t).map(|(_, y)| x - y))
            .collect();
        (diffs.len() >= NOISE_MIN_SAMPLES).then(|| robust_sd(&diffs))
    }
}

/// The standard deviation of one reading from changes between readings: see
/// [`Series::noise`].
fn robust_sd(changes: &[f64]) -> f64 {
    let mut size: Vec<f64> = changes.iter().map(|x| x.abs()).collect();
    1.4826 * median(&mut size) / std::f64::consts::SQRT_2
}

/// One load's recent readings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Series {
    last: Option<f64>,
    /// Changes between consecutive readings that nothing we did disturbed, with the
    /// interval of the later one, newest last (at most [`NOISE_WINDOW`]).
    pub(crate) changes: VecDeque<(u64, f64)>,
    /// (interval, reading), newest last (at most [`NOISE_WINDOW`]).
    pub(crate) readings: VecDeque<(u64, f64)>,
}

impl Series {
    fn push(&mut self, tick: u64, value: f64, disturbed: bool) {
        if let (Some(last), false) = (self.last, disturbed) {
            self.changes.push_back((tick, value - last));
            if self.changes.len() > NOISE_WINDOW {
                self.changes.pop_front();
            }
        }
        self.readings.push_back((tick, value));
        if self.readings.len() > NOISE_WINDOW {
            self.readings.pop_front();
        }
        self.last = Some(value);
    }

    /// The standard deviation of one reading, estimated robustly from the interval-to-
    /// interval changes: 1.4826 x their median absolute size is the deviation of a change
    /// (exact for normal noise; one odd interval or one level shift moves a median little),
    /// and a change is the difference of two readings, hence / sqrt(2). The size is taken
    /// about zero, not about the changes' median: readings that swing up and down in turn
    /// have changes of two values whose median lies on one of them. A load that keeps
    /// ramping counts as noisy too, which is right for a policy that should not trade IRQs
    /// on it. 0 with fewer than [`NOISE_MIN_SAMPLES`] changes: unknown noise leaves
    /// `min-gain` alone.
    pub(crate) fn noise(&self) -> f64 {
        self.noise_since(0)
    }

    /// [`Series::noise`] from the changes after interval `since`.
    pub(crate) fn noise_since(&self, since: u64) -> f64 {
        let changes: Vec<f64> = self
            .changes
            .iter()
            .filter(|(t, _)| *t > since)
            .map(|(_, x)| *x)
            .collect();
        if changes.len() < NOISE_MIN_SAMPLES {
            return 0.0;
        }
        robust_sd(&changes)
    }

    /// Changes recorded after interval `since`.
    pub(crate) fn changes_since(&self, since: u64) -> usize {
        self.changes.iter().filter(|(t, _)| *t > since).count()
    }
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What actuation did with one action of a plan. Applied or not, never both: an applied
/// action carries no error, a failed one no CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not written: a dry run.
    Skipped,
    /// Everything the action writes was written.
    Applied {
        /// For a move: the CPU that took it.
        cpu: Option<u32>,
        /// What refused on the way: CPUs passed over, managed companions left behind.
        refused: Refusals,
    },
    /// Nothing written (what the attempt wrote was rolled back).
    NotApplied {
        refused: Refusals,
        /// Any failure beyond the refusals; None when they alone stopped it (a managed
        /// IRQ, which the history remembers and is not an error).
        error: Option<String>,
    },
}

/// Refusals the kernel gave while an action was carried out: the history keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// CPUs that refused with ENOSPC.
    pub full_cpus: Vec<u32>,
    /// IRQs that refused with EIO (managed), with the message.
    pub unmovable: Vec<(u32, String)>,
}

impl Outcome {
    /// Applied with nothing refused on the way.
    pub fn applied(cpu: Option<u32>) -> Outcome {
        Outcome::Applied {
            cpu,
            refused: Refusals::default(),
        }
    }

    /// Not applied because of `error`.
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome::NotApplied {
            refused: Refusals::default(),
            error: Some(error.into()),
        }
    }

    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied { .. })
    }

    /// For an applied move: the CPU that took it.
    pub fn cpu(&self) -> Option<u32> {
        match self {
            Outcome::Applied { cpu, .. } => *cpu,
            _ => None,
        }
    }

    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            Outcome::NotApplied { error, .. } => error.as_deref(),
            _ => None,
        }
    }

    /// What refused on the way; None for a dry run.
    pub fn refusals(&self) -> Option<&Refusals> {
        match self {
            Outcome::Skipped => None,
            Outcome::Applied { refused, .. } | Outcome::NotApplied { refused, .. } => Some(refused),
        }
    }
}

impl History {
    /// The history after `plan`, made for `snap`, was carried out with `outcomes` (one per
    /// action, in order; missing ones count as not applied).
    pub(crate) fn after(&self, snap: &Snapshot, plan: &Plan, outcomes: &[Outcome]) -> History {
        let mut h = self.clone();
        h.tick = self.tick + 1;
        h.balancing_last = plan.balancing;
        // Pending moves the interval settles: landed, or fired elsewhere (reported once).
        for (irq, m) in h.last_move.iter_mut() {
            if m.state == MoveState::Pending {
                m.state = m.status(snap.irqs.get(irq));
            }
        }
        // This interval's readings; changes our last actions caused are not noise.
        let old = &self.loads;
        let mut loads = Loads::default();
        for c in snap.cpus.keys() {
            let mut s = old.cpus.get(c).cloned().unwrap_or_default();
            s.push(self.tick, snap.load(*c), old.disturbed_cpus.contains(*c));
            loads.cpus.insert(*c, s);
        }
        for (n, irq) in &snap.irqs {
            let mut s = old.irqs.get(n).cloned().unwrap_or_default();
            s.push(
                self.tick,
                snap.frac(irq.total_ns()),
                old.disturbed_irqs.contains(n),
            );
            loads.irqs.insert(*n, s);
        }
        // Before booking: a check's own moves are placements that are checked in turn.
        for n in &plan.checked {
            if let Some(m) = h.last_move.get_mut(n) {
                m.checked = true;
            }
        }
        h.book_actions(self.tick, &mut loads, snap, plan, outcomes);
        let mut stuck = BTreeMap::new();
        for f in &plan.findings {
            if let (FindingKind::Stuck, Some(irq), Some(cpu)) = (f.kind, f.irq, f.cpu) {
                let since = match self.stuck.get(&irq) {
                    Some(r) => r.since,
                    None => {
                        h.sticking_events += 1;
                        self.tick
                    }
                };
                stuck.insert(irq, StuckRecord { since, cpu });
            }
        }
        h.stuck = stuck;
        h.pinned.retain(|irq, _| h.stuck.contains_key(irq));
        h.full_cpus
            .retain(|_, at| h.tick.saturating_sub(*at) < FULL_FORGET);
        // A stuck queue unsticks when it drains, and a pending move lands when its IRQ next
        // fires: both change loads at a moment we cannot foretell.
        for (n, r) in &h.stuck {
            loads.disturbed_irqs.insert(*n);
            loads.disturbed_cpus.insert(r.cpu);
        }
        for (n, m) in &h.last_move {
            if m.state == MoveState::Pending {
                loads.disturbed_irqs.insert(*n);
                loads.disturbed_cpus = loads.disturbed_cpus.union(&m.from);
                loads.disturbed_cpus.insert(m.to);
            }
        }
        h.loads = loads;
        h.last_move
            .retain(|_, m| h.tick.saturating_sub(m.tick) < MOVE_FORGET);
        for left in h.departures.values_mut() {
            left.retain(|_, d| h.tick.saturating_sub(d.tick) < MOVE_FORGET);
        }
        h.departures.retain(|_, left| !left.is_empty());
        h
    }

    /// Books what the plan's applied actions did, at `tick` (the interval they were made
    /// for): moves and where each IRQ left, RPS and pinned kthreads, refusals; marks the
    /// loads they disturb, whose next change is not noise.
    fn book_actions(
        &mut self,
        tick: u64,
        loads: &mut Loads,
        snap: &Snapshot,
        plan: &Plan,
        outcomes: &[Outcome],
    ) {
        for (i, action) in plan.actions.iter().enumerate() {
            let Some(o) = outcomes.get(i) else {
                continue;
            };
            if let Some(r) = o.refusals() {
                for (irq, msg) in &r.unmovable {
                    self.unmovable.insert(*irq, msg.clone());
                }
                for cpu in &r.full_cpus {
                    self.full_cpus.insert(*cpu, tick);
                }
            }
            let Outcome::Applied { cpu, .. } = o else {
                continue;
            };
            match &action.kind {
                ActionKind::Move {
                    irq,
                    companions,
                    from,
                    targets,
                    ..
                } => {
                    let to = cpu.or(targets.first().copied()).unwrap_or(0);
                    for n in std::iter::once(irq).chain(companions) {
                        self.last_move.insert(
                            *n,
                            MoveRecord {
                                tick,
                                from: from.clone(),
                                to,
                                state: MoveState::Pending,
                                placed: !plan.balancing,
                                checked: false,
                            },
                        );
                        let weight = snap.irqs.get(n).map_or(0.0, |i| snap.frac(i.ns_on(from)));
                        let left = self.departures.entry(*n).or_default();
                        left.remove(&to);
                        for c in from.iter().filter(|c| *c != to) {
                            left.insert(c, Departure { tick, weight });
                        }
                        loads.disturbed_irqs.insert(*n);
                    }
                    loads.disturbed_cpus = loads.disturbed_cpus.union(from);
                    loads.disturbed_cpus.insert(to);
                    self.moves += 1;
                }
                ActionKind::SetRps {
                    netdev,
                    queue,
                    cpus,
                } => {
                    self.rps.insert((netdev.clone(), *queue), tick);
                    loads.disturbed_cpus = loads.disturbed_cpus.union(cpus);
                }
                ActionKind::ClearRps { netdev, queue } => {
                    self.rps.remove(&(netdev.clone(), *queue));
                    for q in snap
                        .queues
                        .iter()
                        .filter(|q| q.netdev == *netdev && q.index == *queue)
                    {
                        loads.disturbed_cpus = loads.disturbed_cpus.union(&q.rps_cpus);
                    }
                }
                ActionKind::PinNapiThread { irq, cpus, .. } => {
                    self.pinned.insert(*irq, cpus.clone());
                    loads.disturbed_cpus = loads.disturbed_cpus.union(cpus);
                    loads.disturbed_irqs.insert(*irq);
                }
            }
        }
    }
}
