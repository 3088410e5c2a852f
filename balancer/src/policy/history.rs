//! What the policy remembers between intervals: moves (for cooldowns and checking that they
//! took), IRQs the kernel refused to move, CPUs whose vector space is full, stuck IRQs, RPS
//! we set and threads we pinned. Updated only by [`History::after`], a pure function of the
//! plan and what actuation reported.
use std::collections::BTreeMap;

use super::{ActionKind, FULL_FORGET, FindingKind, Plan};
use crate::cpumask::CpuSet;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Number of the interval the next plan is for.
    pub tick: u64,
    /// The last move of each IRQ.
    pub last_move: BTreeMap<u32, MoveRecord>,
    /// IRQs whose affinity writes failed with EIO, with the message (logged once).
    pub unmovable: BTreeMap<u32, String>,
    /// CPUs that refused a vector (ENOSPC), with the interval they did.
    pub full_cpus: BTreeMap<u32, u64>,
    pub stuck: BTreeMap<u32, StuckRecord>,
    /// RPS we set, by (netdev, rx queue), with the interval.
    pub rps: BTreeMap<(String, u32), u64>,
    /// NAPI threads we pinned, by IRQ, with the CPUs.
    pub pinned: BTreeMap<u32, CpuSet>,
    /// Moves applied since start.
    pub moves: u64,
    /// Times an IRQ started sticking.
    pub sticking_events: u64,
    /// The last plan balanced load (see [`Plan::balancing`]).
    pub balancing_last: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveRecord {
    pub tick: u64,
    pub from: CpuSet,
    pub to: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckRecord {
    pub since: u64,
    pub cpu: u32,
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

    pub fn error(&self) -> Option<&str> {
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
    /// The history after `plan` was carried out with `outcomes` (one per action, in order;
    /// missing ones count as not applied).
    pub fn after(&self, plan: &Plan, outcomes: &[Outcome]) -> History {
        let mut h = self.clone();
        h.tick = self.tick + 1;
        h.balancing_last = plan.balancing;
        for (i, action) in plan.actions.iter().enumerate() {
            let Some(o) = outcomes.get(i) else {
                continue;
            };
            if let Some(r) = o.refusals() {
                for (irq, msg) in &r.unmovable {
                    h.unmovable.insert(*irq, msg.clone());
                }
                for cpu in &r.full_cpus {
                    h.full_cpus.insert(*cpu, self.tick);
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
                        h.last_move.insert(
                            *n,
                            MoveRecord {
                                tick: self.tick,
                                from: from.clone(),
                                to,
                            },
                        );
                    }
                    h.moves += 1;
                }
                ActionKind::SetRps { netdev, queue, .. } => {
                    h.rps.insert((netdev.clone(), *queue), self.tick);
                }
                ActionKind::ClearRps { netdev, queue } => {
                    h.rps.remove(&(netdev.clone(), *queue));
                }
                ActionKind::PinNapiThread { irq, cpus, .. } => {
                    h.pinned.insert(*irq, cpus.clone());
                }
            }
        }
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
        // Old moves only matter for cooldowns and the check after one interval.
        h.last_move
            .retain(|_, m| h.tick.saturating_sub(m.tick) < 1000);
        h
    }
}
