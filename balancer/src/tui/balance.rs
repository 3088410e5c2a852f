//! The balancer panel of `top --balance`: what the in-process policy decided each interval and
//! which IRQs it found sticking, newest first.
//!
//! The panel reads a [`BalanceLog`]; each step of the engine that `top` drives (see
//! [`crate::cmd::top`]) becomes a [`StepOutcome`] of sentences. Keeping the panel on
//! sentences rather than on the policy's own types lets it show any planner, and be tested
//! on its own.
use std::collections::VecDeque;

use crate::{
    engine::Step,
    policy::{Action, ActionKind, FindingKind, Outcome},
};

/// Entries kept: more than any terminal shows.
pub(crate) const LOG_LEN: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// An action of the plan (a move, an RPS change, an unstick), applied or not.
    Decision,
    /// An IRQ whose NAPI instance keeps polling outside its effective affinity.
    Sticking,
    /// Something the policy noticed but cannot act on (no relief, a move not followed, an
    /// unmovable IRQ, an IRQ no longer sticking).
    Note,
    /// A write that failed.
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// Seconds since `top` started.
    pub(crate) at_s: f64,
    pub(crate) kind: EntryKind,
    /// Whether the action was written to the kernel (false in dry-run and for non-actions).
    pub(crate) applied: bool,
    pub(crate) text: String,
    /// What a sticking or note entry is about (kind, IRQ, CPU): the same key in the next
    /// interval updates the entry instead of adding one.
    key: String,
}

/// A sticking IRQ or a note: what it is about, and the sentence.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Event {
    key: String,
    text: String,
}

impl Event {
    pub(crate) fn new(key: impl Into<String>, text: impl Into<String>) -> Event {
        Event {
            key: key.into(),
            text: text.into(),
        }
    }
}

/// One interval of the balancer, in words.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StepOutcome {
    /// (applied, sentence) per action of the plan.
    pub(crate) decisions: Vec<(bool, String)>,
    pub(crate) sticking: Vec<Event>,
    pub(crate) notes: Vec<Event>,
    pub(crate) errors: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct BalanceLog {
    pub(crate) dry_run: bool,
    /// Newest last.
    entries: VecDeque<Entry>,
    /// Intervals the policy ran, and the number of actions it planned in all.
    pub(crate) steps: u64,
    pub(crate) actions: u64,
    /// Sticking IRQs of the last interval, for the panel's title.
    pub(crate) sticking_now: usize,
}

impl BalanceLog {
    pub(crate) fn new(dry_run: bool) -> BalanceLog {
        BalanceLog {
            dry_run,
            entries: VecDeque::new(),
            steps: 0,
            actions: 0,
            sticking_now: 0,
        }
    }

    pub(crate) fn record(&mut self, at_s: f64, outcome: StepOutcome) {
        self.steps += 1;
        self.actions += outcome.decisions.len() as u64;
        self.sticking_now = outcome.sticking.len();
        let entries = outcome
            .decisions
            .into_iter()
            .map(|(applied, text)| (EntryKind::Decision, applied, String::new(), text))
            .chain(
                outcome
                    .sticking
                    .into_iter()
                    .map(|e| (EntryKind::Sticking, false, e.key, e.text)),
            )
            .chain(
                outcome
                    .notes
                    .into_iter()
                    .map(|e| (EntryKind::Note, false, e.key, e.text)),
            )
            .chain(
                outcome
                    .errors
                    .into_iter()
                    .map(|t| (EntryKind::Error, false, String::new(), t)),
            );
        for (kind, applied, key, text) in entries {
            // Sticking and notes repeat every interval they hold: one line while they last
            // (until something else happened), with the latest figures and the time they
            // started.
            let lasting = |e: &Entry| matches!(e.kind, EntryKind::Sticking | EntryKind::Note);
            if matches!(kind, EntryKind::Sticking | EntryKind::Note)
                && let Some(e) = self
                    .entries
                    .iter_mut()
                    .rev()
                    .take_while(|e| lasting(e))
                    .find(|e| e.kind == kind && e.key == key)
            {
                e.text = text;
                continue;
            }
            if self.entries.len() == LOG_LEN {
                self.entries.pop_front();
            }
            self.entries.push_back(Entry {
                at_s,
                kind,
                applied,
                text,
                key,
            });
        }
    }

    /// Newest first.
    pub(crate) fn recent(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }
}

impl StepOutcome {
    /// One step of the engine (see [`crate::cmd::top`]), in words.
    pub(crate) fn of(step: &Step) -> StepOutcome {
        let mut out = StepOutcome::default();
        for (action, o) in step.actions() {
            out.decisions.push((o.is_applied(), describe(action, o)));
            if let Some(e) = o.error() {
                out.errors.push(format!("{}: {e}", short(&action.kind)));
            }
            let Some(refused) = o.refusals() else {
                continue;
            };
            for (irq, msg) in &refused.unmovable {
                out.errors.push(format!("IRQ {irq} cannot move: {msg}"));
            }
            for cpu in &refused.full_cpus {
                out.errors
                    .push(format!("CPU {cpu} refused a vector (ENOSPC): marked full"));
            }
        }
        for f in &step.plan.findings {
            let key = format!("{:?}/{:?}/{:?}", f.kind, f.irq, f.cpu);
            let event = Event::new(key, f.message.clone());
            match f.kind {
                FindingKind::Stuck => out.sticking.push(event),
                _ => out.notes.push(event),
            }
        }
        out
    }
}

/// "IRQ 36 (+37)", "RPS eth1 rx0", ...: what an action is about.
fn short(kind: &ActionKind) -> String {
    match kind {
        ActionKind::Move {
            irq, companions, ..
        } => {
            if companions.is_empty() {
                format!("IRQ {irq}")
            } else {
                let c: Vec<String> = companions.iter().map(u32::to_string).collect();
                format!("IRQ {irq} (+{})", c.join(","))
            }
        }
        ActionKind::SetRps { netdev, queue, .. } | ActionKind::ClearRps { netdev, queue } => {
            format!("RPS {netdev} rx{queue}")
        }
        ActionKind::PinNapiThread {
            netdev, napi_id, ..
        } => format!("napi/{netdev}-{napi_id}"),
    }
}

/// One line per action: what, where to, and the policy's reason.
fn describe(action: &Action, o: &Outcome) -> String {
    let what = match &action.kind {
        ActionKind::Move { from, targets, .. } => {
            let to = o
                .cpu()
                .or_else(|| targets.first().copied())
                .map_or("-".to_string(), |c| c.to_string());
            format!(
                "move {} from CPU {} to CPU {to}",
                short(&action.kind),
                from.to_list_string()
            )
        }
        ActionKind::SetRps { cpus, .. } => {
            format!("{} on CPUs {}", short(&action.kind), cpus.to_list_string())
        }
        ActionKind::ClearRps { .. } => format!("{} off", short(&action.kind)),
        ActionKind::PinNapiThread { irq, cpus, .. } => format!(
            "pin {} (IRQ {irq}) to CPUs {}",
            short(&action.kind),
            cpus.to_list_string()
        ),
    };
    format!("{what}: {}", action.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::copy_dir;
    use crate::{
        actuation::{Actuator, RealSys},
        config::Config,
        engine::{DryRun, Engine},
    };

    #[test]
    fn records_newest_last_and_repeats_sticking_once() {
        let mut log = BalanceLog::new(true);
        let stuck = Event::new("36", "IRQ 36 eth1/rx0: NAPI polls on CPU 2, effective 0");
        log.record(
            1.0,
            StepOutcome {
                decisions: vec![(false, "move IRQ 38 from CPU 1 to CPU 3".into())],
                sticking: vec![stuck.clone()],
                ..StepOutcome::default()
            },
        );
        log.record(
            2.0,
            StepOutcome {
                sticking: vec![Event::new(
                    "36",
                    "IRQ 36 eth1/rx0: NAPI polls on CPU 2 (99%)",
                )],
                ..StepOutcome::default()
            },
        );
        assert_eq!(
            log.entries.len(),
            2,
            "the same sticking once while it lasts"
        );
        assert_eq!((log.steps, log.actions, log.sticking_now), (2, 1, 1));
        let newest = log.recent().next().unwrap();
        assert_eq!(newest.kind, EntryKind::Sticking);
        assert!(newest.text.ends_with("(99%)"), "the latest figures");
        assert_eq!(newest.at_s, 1.0, "since it started");
        for i in 0..LOG_LEN + 5 {
            log.record(
                3.0,
                StepOutcome {
                    errors: vec![format!("e{i}")],
                    ..StepOutcome::default()
                },
            );
        }
        assert_eq!(log.entries.len(), LOG_LEN);
        assert_eq!(log.sticking_now, 0);
    }

    /// The fixture's eth1 queue 0 (device on node 1) with its IRQ and its polls on CPU 0
    /// (node 0): the policy moves it to node 1. Dry run writes nothing; live, the write lands
    /// under the root.
    #[test]
    fn policy_steps_dry_and_live_under_a_fixture_root() {
        let snap = crate::engine::tests::remote_queue();
        let mut dry = Engine::new(Config::default(), DryRun);
        let out = StepOutcome::of(&dry.step(&snap));
        let (applied, text) = out
            .decisions
            .iter()
            .find(|(_, t)| t.contains("IRQ 36"))
            .unwrap_or_else(|| panic!("no move of IRQ 36: {out:?}"));
        assert!(!applied, "dry run");
        assert!(text.starts_with("move IRQ 36"), "{text}");
        assert!(
            text.contains("to CPU 2") || text.contains("to CPU 3"),
            "{text}"
        );
        assert!(out.errors.is_empty(), "{out:?}");

        let tmp = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/vm-4cpu-2node/proc/irq");
        copy_dir(&src, &tmp.path().join("proc/irq"));
        let journal = tmp.path().join("journal.json");
        let config = Config {
            journal: journal.clone(),
            ..Config::default()
        };
        let act = Actuator::new(tmp.path(), &journal, RealSys).unwrap();
        let mut live = Engine::new(config, act);
        let out = StepOutcome::of(&live.step(&snap));
        let (applied, text) = out
            .decisions
            .iter()
            .find(|(_, t)| t.contains("IRQ 36"))
            .unwrap();
        assert!(applied, "{text} {out:?}");
        let written = std::fs::read_to_string(tmp.path().join("proc/irq/36/smp_affinity")).unwrap();
        assert!(
            ["4", "8"]
                .iter()
                .any(|m| written.trim_start_matches('0').trim() == *m),
            "CPU 2 or 3 as a mask: {written:?}"
        );
        assert!(journal.exists(), "originals journaled first");
    }
}
