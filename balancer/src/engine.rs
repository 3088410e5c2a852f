//! The balancing loop, written once: one measured interval ([`Snapshot`]) -> the policy's
//! [`Plan`] -> carried out through an [`Applier`] -> the [`History`] the next plan starts
//! from. The daemon, `top --balance`, `balancer plan` and the simulator all drive an
//! [`Engine`]; they differ only in how they measure and in the applier:
//!
//! - [`Actuator`]: writes the kernel (journal first), for the daemon and `top --balance`;
//! - [`DryRun`]: writes nothing, every action [`Outcome::Skipped`] (`--dry-run`, `plan`);
//! - the simulator's machine (tests/src/sim.rs), which answers as a kernel would.
//!
//! What each driver says about a step (log lines, metrics, the TUI's panel) it reads from
//! the returned [`Step`]; the engine itself does no I/O beyond its applier's.
use std::path::Path;

use crate::{
    actuation::{Actuator, JournalError, RealSys, Sys},
    config::Config,
    policy::{self, History, Outcome, Plan, Snapshot},
};

/// Carries out a plan: the seam between the policy's decisions and the machine.
pub trait Applier {
    /// One outcome per action of `plan`, in order. `snap` is the interval planned on (the
    /// actuator takes the width of its masks from it).
    fn apply_plan(&mut self, plan: &Plan, snap: &Snapshot) -> Vec<Outcome>;
}

/// Writes nothing: every action is [`Outcome::Skipped`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DryRun;

impl Applier for DryRun {
    fn apply_plan(&mut self, plan: &Plan, _: &Snapshot) -> Vec<Outcome> {
        vec![Outcome::Skipped; plan.actions.len()]
    }
}

impl<S: Sys> Applier for Actuator<S> {
    fn apply_plan(&mut self, plan: &Plan, snap: &Snapshot) -> Vec<Outcome> {
        self.apply(plan, snap.nr_cpu_ids)
    }
}

impl<A: Applier + ?Sized> Applier for Box<A> {
    fn apply_plan(&mut self, plan: &Plan, snap: &Snapshot) -> Vec<Outcome> {
        (**self).apply_plan(plan, snap)
    }
}

/// The applier of a command that balances this machine: the real actuator under `root`
/// (journal at the config's `journal`), or [`DryRun`]. The caller holds the lock
/// ([`crate::actuation::try_lock`]) unless `dry_run`.
pub(crate) fn machine_applier(
    root: &Path,
    cfg: &Config,
    dry_run: bool,
) -> Result<Box<dyn Applier>, JournalError> {
    Ok(if dry_run {
        Box::new(DryRun)
    } else {
        Box::new(Actuator::new(root, &cfg.journal, RealSys)?)
    })
}

/// One interval of the engine: what was planned and what came of each action.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub plan: Plan,
    /// One per action of `plan`.
    pub(crate) outcomes: Vec<Outcome>,
}

impl Step {
    /// (action, outcome) per action of the plan.
    pub fn actions(&self) -> impl Iterator<Item = (&policy::Action, &Outcome)> {
        self.plan.actions.iter().zip(&self.outcomes)
    }

    pub(crate) fn applied(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_applied()).count()
    }

    pub(crate) fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.error().is_some()).count()
    }
}

/// The policy's config and history, and the applier that carries its plans out.
pub struct Engine<A: Applier> {
    config: Config,
    history: History,
    applier: A,
}

impl<A: Applier> Engine<A> {
    /// A fresh engine: empty history, as a daemon starts (the journal's IRQs are not
    /// special to the policy).
    pub fn new(config: Config, applier: A) -> Engine<A> {
        Engine {
            config,
            history: History::default(),
            applier,
        }
    }

    /// RPS a previous run set on these rx queues (its journal holds their originals) is
    /// this engine's to take back when the queue shrinks, as if it had set it itself.
    pub(crate) fn adopt_rps(&mut self, queues: Vec<(String, u32)>) {
        for q in queues {
            self.history.rps.entry(q).or_insert(0);
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// For a reload: the next step plans with what is here.
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The history after the last step (the next plan's input).
    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn applier(&self) -> &A {
        &self.applier
    }

    pub fn applier_mut(&mut self) -> &mut A {
        &mut self.applier
    }

    /// Plans for `snap`, carries the plan out, and books the outcomes in the history.
    pub fn step(&mut self, snap: &Snapshot) -> Step {
        self.step_with(snap, |_| {})
    }

    /// [`Engine::step`], showing the plan to `planned` before it is carried out (the daemon
    /// logs its findings ahead of what actuation logs while writing).
    pub(crate) fn step_with(&mut self, snap: &Snapshot, planned: impl FnOnce(&Plan)) -> Step {
        let plan = policy::plan(snap, &self.config, &self.history);
        planned(&plan);
        let outcomes = self.applier.apply_plan(&plan, snap);
        self.history = self.history.after(snap, &plan, &outcomes);
        Step { plan, outcomes }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        attribution::{Attribution, Linker, testdata},
        policy::{ActionKind, Refusals},
    };

    /// The fixture's eth1 queue 0 (device on node 1) with its IRQ and its polls on CPU 0
    /// (node 0): the policy moves IRQ 36 to node 1's CPU 2 or 3.
    pub(crate) fn remote_queue() -> Snapshot {
        let model = testdata::vm_model();
        let mut iv = testdata::interval();
        let polls = iv.napi.remove(&(testdata::X, 2)).unwrap();
        iv.napi.insert((testdata::X, 0), polls);
        let netrx = iv.softirq.remove(&(2, 3)).unwrap();
        iv.softirq.insert((0, 3), netrx);
        let links = Linker::default().links(&iv.napi_identity, &model);
        Snapshot::build(&model, &Attribution::build(&iv, &model, &links))
    }

    /// A saturated queue alone on CPU 3: IRQ 36's instance polls 880 ms of the second there,
    /// and the NET_RX round's work after its last poll (the GRO flush of a full budget, the
    /// loop) adds 70 ms outside polls. CPU 2 has 10 ms of timers.
    fn saturated_alone_on_3() -> Snapshot {
        use crate::cpumask::CpuSet;
        use balancer_common::{IrqStat, SoftirqStat};
        use std::collections::BTreeMap;
        let model = testdata::vm_model();
        let mut iv = testdata::interval();
        iv.napi = BTreeMap::from([((testdata::X, 3), testdata::napi(20_000, 880_000_000))]);
        iv.hardirq = BTreeMap::from([((36, 3), IrqStat { runs: 3, ns: 6_000 })]);
        iv.interrupts = BTreeMap::from([((36, 3), 3)]);
        let stat = |runs, ns| SoftirqStat {
            raises: runs,
            runs,
            ns,
        };
        iv.softirq = BTreeMap::from([
            ((3, 3), stat(200, 950_000_000)),
            ((2, 1), stat(250, 10_000_000)),
        ]);
        let links = Linker::default().links(&iv.napi_identity, &model);
        let mut snap = Snapshot::build(&model, &Attribution::build(&iv, &model, &links));
        let irq = snap.irqs.get_mut(&36).unwrap();
        irq.smp_affinity = Some(CpuSet::from_cpus([3]));
        irq.effective = Some(CpuSet::from_cpus([3]));
        snap
    }

    /// What a queue's polls bring outside them moves with it: moving the lone queue to the
    /// idle CPU only moves the hot spot (in the VM the policy did, for a "gain" of the 7% it
    /// thought stayed behind, and the other CPU then read 95%).
    #[test]
    fn a_lone_saturated_queue_is_not_shuffled() {
        let snap = saturated_alone_on_3();
        assert_eq!(snap.irqs[&36].total_ns(), 950_006_000);
        // RPS off: spreading the queue is an action, and the point here is the moves.
        let cfg = Config {
            rps: false,
            ..Config::default()
        };
        let mut e = Engine::new(cfg, DryRun);
        for _ in 0..4 {
            let step = e.step(&snap);
            assert!(!moves_36(&step.plan), "{:?}", step.plan.actions);
            // Overloaded, and nothing is changing it: the daemon waits the calm interval.
            assert_eq!(step.plan.overloaded, vec![3]);
            assert!(!step.plan.busy(), "{:?}", step.plan);
        }
    }

    fn moves_36(plan: &Plan) -> bool {
        plan.actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Move { irq: 36, .. }))
    }

    /// Answers every action with the outcome of a script, and records the plans it saw.
    struct Scripted {
        answer: fn(&policy::Action) -> Outcome,
        seen: Vec<Plan>,
    }

    impl Applier for Scripted {
        fn apply_plan(&mut self, plan: &Plan, _: &Snapshot) -> Vec<Outcome> {
            self.seen.push(plan.clone());
            plan.actions.iter().map(self.answer).collect()
        }
    }

    fn scripted(answer: fn(&policy::Action) -> Outcome) -> Engine<Scripted> {
        Engine::new(
            Config::default(),
            Scripted {
                answer,
                seen: Vec::new(),
            },
        )
    }

    #[test]
    fn dry_run_skips_every_action_and_books_no_move() {
        let snap = remote_queue();
        let mut engine = Engine::new(Config::default(), DryRun);
        let step = engine.step(&snap);
        assert!(moves_36(&step.plan), "{:#?}", step.plan);
        assert_eq!(step.outcomes.len(), step.plan.actions.len());
        assert!(step.outcomes.iter().all(|o| *o == Outcome::Skipped));
        assert_eq!((step.applied(), step.failed()), (0, 0));
        let h = engine.history();
        assert_eq!((h.tick, h.moves), (1, 0));
        assert!(h.last_move.is_empty(), "nothing moved: no cooldown");
        // Nothing was written, so the same interval plans the same move again.
        assert!(moves_36(&engine.step(&snap).plan));
        assert_eq!(engine.history().tick, 2);
    }

    #[test]
    fn an_applied_move_is_booked_and_cools_down() {
        let snap = remote_queue();
        let mut engine = scripted(|a| match a.kind {
            ActionKind::Move { ref targets, .. } => Outcome::applied(targets.first().copied()),
            _ => Outcome::applied(None),
        });
        let step = engine.step(&snap);
        assert!(moves_36(&step.plan));
        assert_eq!(step.applied(), step.plan.actions.len());
        assert_eq!(engine.applier().seen, vec![step.plan.clone()]);
        let h = engine.history();
        assert_eq!(h.moves, 1);
        let to = h.last_move[&36].to;
        assert!(to == 2 || to == 3, "node 1: {to}");
        // The next interval (the same measurements) leaves IRQ 36 alone: it is cooling
        // down, and the history says where it went.
        let next = engine.step(&snap);
        assert!(!moves_36(&next.plan), "{:#?}", next.plan);
        assert_eq!(engine.history().tick, 2);
    }

    #[test]
    fn failures_and_refusals_are_booked_in_the_history() {
        let snap = remote_queue();
        // EIO: IRQ 36 is managed. The next plan does not try it again.
        let mut engine = scripted(|a| match a.kind {
            ActionKind::Move { irq, .. } => Outcome::NotApplied {
                refused: Refusals {
                    unmovable: vec![(irq, "EIO".into())],
                    ..Refusals::default()
                },
                error: None,
            },
            _ => Outcome::failed("not scripted"),
        });
        let step = engine.step(&snap);
        assert!(moves_36(&step.plan));
        assert_eq!(step.failed(), 0, "a managed IRQ is not an error");
        assert!(engine.history().unmovable.contains_key(&36));
        assert_eq!(engine.history().moves, 0);
        assert!(!moves_36(&engine.step(&snap).plan));

        // ENOSPC on every target, then an error: the CPUs are marked full, nothing moved,
        // and the failure is counted.
        let mut engine = scripted(|a| match &a.kind {
            ActionKind::Move { targets, .. } => Outcome::NotApplied {
                refused: Refusals {
                    full_cpus: targets.clone(),
                    ..Refusals::default()
                },
                error: Some("every candidate CPU refused".into()),
            },
            _ => Outcome::failed("not scripted"),
        });
        let step = engine.step(&snap);
        assert!(step.failed() >= 1);
        let full: Vec<u32> = engine.history().full_cpus.keys().copied().collect();
        let targets = step
            .plan
            .actions
            .iter()
            .find_map(|a| match &a.kind {
                ActionKind::Move {
                    irq: 36, targets, ..
                } => Some(targets.clone()),
                _ => None,
            })
            .unwrap();
        assert!(targets.iter().all(|t| full.contains(t)), "{full:?}");
        assert_eq!(engine.history().moves, 0);
        assert!(engine.history().last_move.is_empty());
    }
}
