//! The balancer panel of `top --balance`: what the in-process policy decided each interval and
//! which IRQs it found sticking, newest first.
//!
//! The panel reads a [`BalanceLog`]; whatever runs the policy (see [`super::run`]) turns each
//! interval's plan into a [`StepOutcome`] of sentences. Keeping the panel on sentences rather
//! than on the policy's own types lets it show any planner, and be tested on its own.
use std::collections::VecDeque;

/// Entries kept: more than any terminal shows.
pub const LOG_LEN: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An action of the plan (a move, an RPS change, an unstick), applied or not.
    Decision,
    /// An IRQ whose NAPI instance keeps polling outside its effective affinity.
    Sticking,
    /// A write that failed, or the policy itself failing.
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Seconds since `top` started.
    pub at_s: f64,
    pub kind: EntryKind,
    /// Whether the action was written to the kernel (false in dry-run and for non-actions).
    pub applied: bool,
    pub text: String,
}

/// One interval of the balancer, in words.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutcome {
    /// (applied, sentence) per action of the plan.
    pub decisions: Vec<(bool, String)>,
    pub sticking: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct BalanceLog {
    pub dry_run: bool,
    /// Newest last.
    pub entries: VecDeque<Entry>,
    /// Intervals the policy ran, and the number of actions it planned in all.
    pub steps: u64,
    pub actions: u64,
    /// Sticking IRQs of the last interval, for the panel's title.
    pub sticking_now: usize,
}

impl BalanceLog {
    pub fn new(dry_run: bool) -> BalanceLog {
        BalanceLog {
            dry_run,
            entries: VecDeque::new(),
            steps: 0,
            actions: 0,
            sticking_now: 0,
        }
    }

    pub fn record(&mut self, at_s: f64, outcome: StepOutcome) {
        self.steps += 1;
        self.actions += outcome.decisions.len() as u64;
        self.sticking_now = outcome.sticking.len();
        let entries = outcome
            .decisions
            .into_iter()
            .map(|(applied, text)| (EntryKind::Decision, applied, text))
            .chain(
                outcome
                    .sticking
                    .into_iter()
                    .map(|t| (EntryKind::Sticking, false, t)),
            )
            .chain(
                outcome
                    .errors
                    .into_iter()
                    .map(|t| (EntryKind::Error, false, t)),
            );
        for (kind, applied, text) in entries {
            // A sticking IRQ is reported every interval it sticks; one line while it lasts.
            if kind == EntryKind::Sticking
                && self
                    .entries
                    .iter()
                    .rev()
                    .take_while(|e| e.kind == EntryKind::Sticking)
                    .any(|e| e.text == text)
            {
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
            });
        }
    }

    /// Newest first.
    pub fn recent(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_newest_last_and_repeats_sticking_once() {
        let mut log = BalanceLog::new(true);
        let stuck = "IRQ 36 eth1/rx0: NAPI polls on CPU 2, effective 0".to_string();
        log.record(
            1.0,
            StepOutcome {
                decisions: vec![(false, "move IRQ 38 from CPU 1 to CPU 3".into())],
                sticking: vec![stuck.clone()],
                errors: vec![],
            },
        );
        log.record(
            2.0,
            StepOutcome {
                sticking: vec![stuck.clone()],
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
}
