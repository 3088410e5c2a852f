//! The state of `balancer top`, and every change to it as a pure function: a key (as a
//! [`Command`]) or a new interval's [`Report`] goes in, the state comes out changed. Nothing
//! here draws or does I/O, so each behaviour is tested without a terminal.
use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use crate::{
    policy::Stuck,
    report::{IrqRow, Report, device_label},
};

use super::balance::BalanceLog;

/// Intervals reached with `+` and `-`, in seconds.
pub(crate) const INTERVAL_STEPS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];
/// Samples kept per IRQ for the detail view's sparklines: a 200-column terminal's worth.
pub(crate) const HISTORY_LEN: usize = 240;

/// How the IRQ table is ordered; `s` cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SortKey {
    /// Real CPU time: handler plus the softirq time it caused.
    Weight,
    Interrupts,
    Hardirq,
    Softirq,
    Number,
    Name,
}

impl SortKey {
    pub(crate) fn next(self) -> SortKey {
        match self {
            SortKey::Weight => SortKey::Interrupts,
            SortKey::Interrupts => SortKey::Hardirq,
            SortKey::Hardirq => SortKey::Softirq,
            SortKey::Softirq => SortKey::Number,
            SortKey::Number => SortKey::Name,
            SortKey::Name => SortKey::Weight,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            SortKey::Weight => "time",
            SortKey::Interrupts => "irq/s",
            SortKey::Hardirq => "hardirq",
            SortKey::Softirq => "softirq",
            SortKey::Number => "number",
            SortKey::Name => "name",
        }
    }
}

/// Which table the arrows move in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Focus {
    Irqs,
    Napi,
}

/// What fills the body of the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    Main,
    /// One IRQ: its per-CPU split and history.
    Detail(u32),
}

/// Everything a key can ask for, independent of the terminal library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Quit,
    ToggleHelp,
    CycleSort,
    StartFilter,
    FilterChar(char),
    FilterBackspace,
    /// Enter while editing the filter: keep it.
    FilterAccept,
    /// Esc while editing the filter: drop it.
    FilterCancel,
    TogglePause,
    Faster,
    Slower,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    SwitchFocus,
    Open,
    Back,
}

/// What the event loop must do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    Quit,
    /// The refresh interval changed: reschedule the next tick.
    Interval,
}

/// One IRQ's measurements over time, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    /// Real time (hardirq + softirq) in ns per second.
    pub(crate) weight_ns_per_s: VecDeque<u64>,
    pub(crate) interrupts_per_s: VecDeque<u64>,
}

impl History {
    fn push(&mut self, weight: u64, interrupts: u64) {
        for (q, v) in [
            (&mut self.weight_ns_per_s, weight),
            (&mut self.interrupts_per_s, interrupts),
        ] {
            if q.len() == HISTORY_LEN {
                q.pop_front();
            }
            q.push_back(v);
        }
    }

    fn is_quiet(&self) -> bool {
        self.weight_ns_per_s.iter().all(|v| *v == 0)
            && self.interrupts_per_s.iter().all(|v| *v == 0)
    }
}

/// One interval as the screen shows it.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) report: Report,
    /// IRQ -> CPUs outside its effective affinity where its stuck NAPI instances poll.
    pub(crate) sticking: BTreeMap<u32, Vec<u32>>,
}

impl Snapshot {
    /// `stuck`: what the policy found sticking in the same interval
    /// ([`crate::policy::stuck`]): the screen shows the policy's verdict, not its own.
    pub(crate) fn new(report: Report, stuck: &[Stuck]) -> Snapshot {
        Snapshot {
            report,
            sticking: sticking(stuck),
        }
    }
}

/// The policy's stuck NAPI instances by IRQ: the CPUs where they poll, outside the IRQ's
/// effective affinity (the interrupt goes where it was sent, the work stays where it was).
pub(crate) fn sticking(stuck: &[Stuck]) -> BTreeMap<u32, Vec<u32>> {
    let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for st in stuck {
        let cpus = out.entry(st.irq).or_default();
        if !cpus.contains(&st.cpu) {
            cpus.push(st.cpu);
        }
    }
    for cpus in out.values_mut() {
        cpus.sort_unstable();
    }
    out
}

/// The whole state of the view.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) interval: Duration,
    pub(crate) paused: bool,
    pub(crate) sort: SortKey,
    pub(crate) filter: String,
    /// The filter line has the keyboard.
    pub(crate) editing_filter: bool,
    pub(crate) help: bool,
    pub(crate) view: View,
    pub(crate) focus: Focus,
    /// Selected IRQ, by number so that it stays selected when the order changes.
    pub(crate) selected: Option<u32>,
    /// First IRQ row shown.
    pub(crate) irq_offset: usize,
    pub(crate) napi_selected: usize,
    pub(crate) napi_offset: usize,
    /// Rows the IRQ and NAPI tables showed at the last draw (for PgUp/PgDn and scrolling).
    pub(crate) irq_page: usize,
    pub(crate) napi_page: usize,
    pub(crate) data: Option<Snapshot>,
    pub(crate) history: BTreeMap<u32, History>,
    /// Intervals measured while paused (not shown).
    pub(crate) skipped: u64,
    ticks: u64,
    /// The last measuring error, shown until the next good interval.
    pub(crate) error: Option<String>,
    /// The in-process balancer's log (`top --balance`).
    pub(crate) balance: Option<BalanceLog>,
}

impl App {
    pub(crate) fn new(interval: Duration) -> App {
        App {
            interval,
            paused: false,
            sort: SortKey::Weight,
            filter: String::new(),
            editing_filter: false,
            help: false,
            view: View::Main,
            focus: Focus::Irqs,
            selected: None,
            irq_offset: 0,
            napi_selected: 0,
            napi_offset: 0,
            irq_page: 10,
            napi_page: 5,
            data: None,
            history: BTreeMap::new(),
            skipped: 0,
            ticks: 0,
            error: None,
            balance: None,
        }
    }

    /// A new interval, and what the policy found sticking in it. History always grows (so
    /// the sparklines have no holes); the tables keep showing the frozen interval while
    /// paused.
    pub(crate) fn ingest(&mut self, report: Report, stuck: &[Stuck]) {
        self.ticks += 1;
        self.error = None;
        let secs = report.meta.duration_s;
        let per_s = |ns: u64| {
            if secs > 0.0 {
                (ns as f64 / secs) as u64
            } else {
                0
            }
        };
        let mut seen = Vec::with_capacity(report.irqs.len());
        for r in &report.irqs {
            self.history
                .entry(r.irq)
                .or_default()
                .push(per_s(r.weight_ns), r.interrupts_per_s.round() as u64);
            seen.push(r.irq);
        }
        for (irq, h) in self.history.iter_mut() {
            if !seen.contains(irq) {
                h.push(0, 0);
            }
        }
        // Forget IRQs quiet for the whole window, except the one being looked at.
        let keep = match self.view {
            View::Detail(n) => Some(n),
            View::Main => None,
        };
        self.history
            .retain(|irq, h| Some(*irq) == keep || !h.is_quiet());

        if self.paused {
            self.skipped += 1;
            return;
        }
        self.data = Some(Snapshot::new(report, stuck));
        self.clamp();
    }

    /// A failed interval: say so, keep the last picture.
    pub(crate) fn failed(&mut self, err: String) {
        self.error = Some(err);
    }

    /// The IRQ rows shown, in order: filtered, then sorted.
    pub(crate) fn visible_irqs(&self) -> Vec<&IrqRow> {
        let Some(data) = &self.data else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&IrqRow> = data
            .report
            .irqs
            .iter()
            .filter(|r| needle.is_empty() || matches_filter(r, &needle))
            .collect();
        let weight_first = |a: &IrqRow, b: &IrqRow| {
            b.weight_ns
                .cmp(&a.weight_ns)
                .then(b.interrupts.cmp(&a.interrupts))
                .then(a.irq.cmp(&b.irq))
        };
        match self.sort {
            // Report rows come heaviest first already.
            SortKey::Weight => rows.sort_by(|a, b| weight_first(a, b)),
            SortKey::Interrupts => {
                rows.sort_by(|a, b| b.interrupts.cmp(&a.interrupts).then(weight_first(a, b)))
            }
            SortKey::Hardirq => {
                rows.sort_by(|a, b| b.hardirq_ns.cmp(&a.hardirq_ns).then(weight_first(a, b)))
            }
            SortKey::Softirq => {
                rows.sort_by(|a, b| b.softirq_ns.cmp(&a.softirq_ns).then(weight_first(a, b)))
            }
            SortKey::Number => rows.sort_by_key(|r| r.irq),
            SortKey::Name => rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.irq.cmp(&b.irq))),
        }
        rows
    }

    /// Index of the selected IRQ among the visible rows.
    pub(crate) fn selected_index(&self, rows: &[&IrqRow]) -> Option<usize> {
        let sel = self.selected?;
        rows.iter().position(|r| r.irq == sel)
    }

    fn napi_len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.report.napi.len())
    }

    /// Keeps selections on existing rows and in view.
    fn clamp(&mut self) {
        let rows = self.visible_irqs();
        let idx = match self.selected_index(&rows) {
            Some(i) => Some(i),
            // The selected IRQ went quiet or was filtered out: select the row at the top.
            None => (!rows.is_empty()).then(|| self.irq_offset.min(rows.len() - 1)),
        };
        let first = idx.map(|i| rows[i].irq);
        let len = rows.len();
        self.selected = first;
        self.irq_offset = scroll(self.irq_offset, idx.unwrap_or(0), self.irq_page, len);
        let n = self.napi_len();
        self.napi_selected = self.napi_selected.min(n.saturating_sub(1));
        self.napi_offset = scroll(self.napi_offset, self.napi_selected, self.napi_page, n);
    }

    /// Records how many rows each table could show at the last draw.
    pub(crate) fn set_pages(&mut self, irq_rows: usize, napi_rows: usize) {
        self.irq_page = irq_rows.max(1);
        self.napi_page = napi_rows.max(1);
        self.clamp();
    }

    /// Applies one command.
    pub(crate) fn apply(&mut self, cmd: Command) -> Effect {
        if self.editing_filter {
            match cmd {
                Command::FilterChar(c) => self.filter.push(c),
                Command::FilterBackspace => {
                    self.filter.pop();
                }
                Command::FilterAccept => self.editing_filter = false,
                Command::FilterCancel => {
                    self.filter.clear();
                    self.editing_filter = false;
                }
                Command::Quit => return Effect::Quit,
                _ => return Effect::None,
            }
            self.irq_offset = 0;
            self.clamp();
            return Effect::None;
        }
        if self.help {
            // Help is modal: any key closes it, q still quits.
            return match cmd {
                Command::Quit => Effect::Quit,
                _ => {
                    self.help = false;
                    Effect::None
                }
            };
        }
        match cmd {
            Command::Quit => return Effect::Quit,
            Command::ToggleHelp => self.help = true,
            Command::CycleSort => {
                self.sort = self.sort.next();
                self.clamp();
            }
            Command::StartFilter => {
                self.view = View::Main;
                self.editing_filter = true;
            }
            Command::TogglePause => {
                self.paused = !self.paused;
                self.skipped = 0;
            }
            Command::Faster | Command::Slower => {
                let next = step_interval(self.interval, cmd == Command::Faster);
                if next != self.interval {
                    self.interval = next;
                    return Effect::Interval;
                }
            }
            Command::Up => self.move_by(-1),
            Command::Down => self.move_by(1),
            Command::PageUp => self.move_by(-(self.page() as isize)),
            Command::PageDown => self.move_by(self.page() as isize),
            Command::Home => self.move_by(isize::MIN / 2),
            Command::End => self.move_by(isize::MAX / 2),
            Command::SwitchFocus => {
                if self.view == View::Main {
                    self.focus = match self.focus {
                        Focus::Irqs if self.napi_len() > 0 => Focus::Napi,
                        _ => Focus::Irqs,
                    };
                }
            }
            Command::Open => self.open(),
            Command::Back => {
                if self.view != View::Main {
                    self.view = View::Main;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.clamp();
                }
            }
            Command::FilterChar(_)
            | Command::FilterBackspace
            | Command::FilterAccept
            | Command::FilterCancel => {}
        }
        Effect::None
    }

    fn page(&self) -> usize {
        match self.focus {
            Focus::Irqs => self.irq_page,
            Focus::Napi => self.napi_page,
        }
    }

    fn move_by(&mut self, delta: isize) {
        if self.view != View::Main {
            return;
        }
        match self.focus {
            Focus::Irqs => {
                let rows = self.visible_irqs();
                if rows.is_empty() {
                    return;
                }
                let cur = self.selected_index(&rows).unwrap_or(0);
                let idx = cur.saturating_add_signed(delta).min(rows.len() - 1);
                let (irq, len) = (rows[idx].irq, rows.len());
                self.selected = Some(irq);
                self.irq_offset = scroll(self.irq_offset, idx, self.irq_page, len);
            }
            Focus::Napi => {
                let n = self.napi_len();
                if n == 0 {
                    return;
                }
                self.napi_selected = self.napi_selected.saturating_add_signed(delta).min(n - 1);
                self.napi_offset = scroll(self.napi_offset, self.napi_selected, self.napi_page, n);
            }
        }
    }

    /// Enter: the selected IRQ's detail; on a NAPI row, its IRQ's.
    fn open(&mut self) {
        if self.view != View::Main {
            return;
        }
        let irq = match self.focus {
            Focus::Irqs => self.selected,
            Focus::Napi => self
                .data
                .as_ref()
                .and_then(|d| d.report.napi.get(self.napi_selected))
                .and_then(|n| n.irq),
        };
        if let Some(irq) = irq {
            self.view = View::Detail(irq);
        }
    }
}

/// Whether the IRQ's name, device or queue contains `needle` (lowercase).
fn matches_filter(r: &IrqRow, needle: &str) -> bool {
    r.name.to_lowercase().contains(needle)
        || device_label(r).to_lowercase().contains(needle)
        || r.device
            .as_deref()
            .is_some_and(|d| d.to_lowercase().contains(needle))
}

/// The offset that keeps row `idx` inside a window of `page` rows, moving as little as
/// possible, and never leaves empty rows at the bottom when there are rows above.
fn scroll(offset: usize, idx: usize, page: usize, len: usize) -> usize {
    let page = page.max(1);
    let mut off = offset.min(len.saturating_sub(page));
    if idx < off {
        off = idx;
    } else if idx >= off + page {
        off = idx + 1 - page;
    }
    off
}

/// The next interval step up (slower) or down (faster) from `cur`.
pub(crate) fn step_interval(cur: Duration, faster: bool) -> Duration {
    let s = cur.as_secs_f64();
    let next = if faster {
        INTERVAL_STEPS.iter().rev().find(|v| **v < s - 1e-9)
    } else {
        INTERVAL_STEPS.iter().find(|v| **v > s + 1e-9)
    };
    next.map_or(cur, |v| Duration::from_secs_f64(*v))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::attribution::testdata::{self, status};

    /// The fixture interval with eth1's queue 0 stuck by the policy's rule: its NAPI polls
    /// 20000 times on CPU 2 while IRQ 36 fires 100 times on CPU 0, its effective affinity
    /// (under 1% of the polls: the IRQ is quiet).
    fn stuck_fixture() -> (crate::attribution::Attribution, crate::system::SystemModel) {
        let model = testdata::vm_model();
        let mut iv = testdata::interval();
        if let Some(p) = iv.napi.get_mut(&(testdata::X, 2)) {
            p.polls = 20_000;
        }
        let links = crate::attribution::Linker::default().links(&iv.napi_identity, &model);
        (
            crate::attribution::Attribution::build(&iv, &model, &links),
            model,
        )
    }

    /// What the policy finds sticking in [`report`]'s interval.
    pub(crate) fn stuck() -> Vec<Stuck> {
        let (a, model) = stuck_fixture();
        crate::policy::stuck(&crate::policy::Snapshot::build(&model, &a))
    }

    /// The fixture interval, with every IRQ of the VM listed (quiet ones have no row).
    pub(crate) fn report() -> Report {
        let (a, model) = stuck_fixture();
        report_of(&a, &model)
    }

    fn report_of(
        a: &crate::attribution::Attribution,
        model: &crate::system::SystemModel,
    ) -> Report {
        Report::build(
            a,
            model,
            &status(),
            &testdata::netlink_status(),
            false,
            None,
        )
    }

    pub(crate) fn app() -> App {
        let mut app = App::new(Duration::from_secs(1));
        app.ingest(report(), &stuck());
        app
    }

    fn order(app: &App) -> Vec<u32> {
        app.visible_irqs().iter().map(|r| r.irq).collect()
    }

    #[test]
    fn fixture_irq_36_is_sticking_on_cpu_2() {
        // IRQ 36 is handled on CPU 0 (its effective affinity) while its NAPI polls on CPU 2.
        let app = app();
        let data = app.data.as_ref().unwrap();
        assert_eq!(data.sticking.get(&36), Some(&vec![2]));
        assert!(!data.sticking.contains_key(&38), "38 polls where it fires");
    }

    #[test]
    fn an_irq_that_still_fires_is_not_sticking() {
        // The plain fixture: IRQ 36 fires 100 times for 5000 polls on CPU 2 (2%), so its
        // queue is not held on CPU 2 with interrupts off. The policy does not call it stuck,
        // and neither does the screen (a count of polls outside once did).
        let (a, model) = testdata::attribution();
        let stuck = crate::policy::stuck(&crate::policy::Snapshot::build(&model, &a));
        assert!(stuck.is_empty(), "{stuck:?}");
        let mut app = App::new(Duration::from_secs(1));
        app.ingest(report_of(&a, &model), &stuck);
        assert!(app.data.as_ref().unwrap().sticking.is_empty());
    }

    #[test]
    fn sort_cycles_and_reorders() {
        let mut app = app();
        assert_eq!(app.sort, SortKey::Weight);
        assert_eq!(order(&app), vec![36, 38], "36 costs most time");
        app.apply(Command::CycleSort);
        assert_eq!(app.sort, SortKey::Interrupts);
        assert_eq!(order(&app), vec![38, 36], "38 fires most");
        for _ in 0..5 {
            app.apply(Command::CycleSort);
        }
        assert_eq!(app.sort, SortKey::Weight, "six keys, then round again");
    }

    #[test]
    fn selection_follows_the_irq_across_sorts() {
        let mut app = app();
        assert_eq!(app.selected, Some(36), "top row selected at start");
        app.apply(Command::Down);
        assert_eq!(app.selected, Some(38));
        app.apply(Command::CycleSort);
        assert_eq!(app.selected, Some(38), "still 38, now on the first row");
        assert_eq!(app.selected_index(&app.visible_irqs()), Some(0));
        app.apply(Command::Down);
        app.apply(Command::Down);
        assert_eq!(app.selected, Some(36), "stops at the last row");
        app.apply(Command::Home);
        assert_eq!(app.selected, Some(38));
        app.apply(Command::End);
        assert_eq!(app.selected, Some(36));
    }

    #[test]
    fn filter_edits_live_and_esc_drops_it() {
        let mut app = app();
        app.apply(Command::StartFilter);
        assert!(app.editing_filter);
        for c in "INPUT.1".chars() {
            app.apply(Command::FilterChar(c));
        }
        assert_eq!(order(&app), vec![38], "case-insensitive on the name");
        // While editing, letters are text, not commands.
        app.apply(Command::FilterChar('q'));
        assert_eq!(app.filter, "INPUT.1q");
        app.apply(Command::FilterBackspace);
        app.apply(Command::FilterAccept);
        assert!(!app.editing_filter);
        assert_eq!(
            app.selected,
            Some(38),
            "selection moved into the filtered rows"
        );
        app.apply(Command::Back);
        assert_eq!(app.filter, "", "Esc on the main view clears the filter");
        assert_eq!(order(&app), vec![36, 38]);

        app.apply(Command::StartFilter);
        for c in "81:00".chars() {
            app.apply(Command::FilterChar(c));
        }
        assert_eq!(order(&app), vec![36, 38], "by PCI address");
        app.apply(Command::FilterCancel);
        assert_eq!((app.filter.as_str(), app.editing_filter), ("", false));
        app.apply(Command::StartFilter);
        for c in "eth1/rx1".chars() {
            app.apply(Command::FilterChar(c));
        }
        assert_eq!(order(&app), vec![38], "by netdev queue");
    }

    #[test]
    fn enter_opens_detail_and_esc_closes() {
        let mut app = app();
        app.apply(Command::Open);
        assert_eq!(app.view, View::Detail(36));
        // Arrows do not move the hidden table.
        app.apply(Command::Down);
        assert_eq!(app.selected, Some(36));
        app.apply(Command::Back);
        assert_eq!(app.view, View::Main);
        // From the NAPI table: the linked IRQ.
        app.apply(Command::SwitchFocus);
        assert_eq!(app.focus, Focus::Napi);
        app.apply(Command::Down);
        let linked = app.data.as_ref().unwrap().report.napi[app.napi_selected].irq;
        app.apply(Command::Open);
        match linked {
            Some(n) => assert_eq!(app.view, View::Detail(n)),
            None => assert_eq!(app.view, View::Main),
        }
    }

    #[test]
    fn help_is_modal_and_q_always_quits() {
        let mut app = app();
        app.apply(Command::ToggleHelp);
        assert!(app.help);
        assert_eq!(app.apply(Command::CycleSort), Effect::None);
        assert!(!app.help, "any key closes help");
        assert_eq!(app.sort, SortKey::Weight, "and does nothing else");
        app.apply(Command::ToggleHelp);
        assert_eq!(app.apply(Command::Quit), Effect::Quit);
        assert_eq!(
            App::new(Duration::from_secs(1)).apply(Command::Quit),
            Effect::Quit
        );
    }

    #[test]
    fn pause_freezes_the_tables_but_not_history() {
        let mut app = app();
        app.apply(Command::TogglePause);
        let mut r = report();
        r.irqs.retain(|i| i.irq == 38);
        app.ingest(r, &stuck());
        assert_eq!(order(&app), vec![36, 38], "frozen");
        assert_eq!(app.skipped, 1);
        assert_eq!(app.history[&36].weight_ns_per_s.len(), 2);
        assert_eq!(app.history[&36].weight_ns_per_s[1], 0, "quiet while paused");
        app.apply(Command::TogglePause);
        app.ingest(report(), &stuck());
        assert_eq!(app.history[&36].weight_ns_per_s.len(), 3);
        assert_eq!(app.history[&36].weight_ns_per_s[2], 25_200_000);
    }

    #[test]
    fn interval_steps_and_stops_at_the_ends() {
        let mut app = App::new(Duration::from_secs(1));
        assert_eq!(app.apply(Command::Slower), Effect::Interval);
        assert_eq!(app.interval, Duration::from_secs(2));
        app.apply(Command::Faster);
        app.apply(Command::Faster);
        assert_eq!(app.interval, Duration::from_millis(500));
        app.apply(Command::Faster);
        assert_eq!(
            app.apply(Command::Faster),
            Effect::None,
            "0.25 s is the floor"
        );
        assert_eq!(app.interval, Duration::from_millis(250));
        // An odd interval from the command line steps to its neighbours.
        assert_eq!(
            step_interval(Duration::from_secs_f64(1.5), false),
            Duration::from_secs(2)
        );
        assert_eq!(
            step_interval(Duration::from_secs_f64(1.5), true),
            Duration::from_secs(1)
        );
        assert_eq!(
            step_interval(Duration::from_secs(60), false),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn paging_keeps_the_selection_in_view() {
        assert_eq!(scroll(0, 12, 10, 40), 3);
        assert_eq!(scroll(3, 2, 10, 40), 2);
        assert_eq!(scroll(35, 39, 10, 40), 30, "no empty rows at the bottom");
        assert_eq!(scroll(5, 0, 10, 3), 0);
        let mut app = app();
        app.set_pages(1, 1);
        app.apply(Command::PageDown);
        assert_eq!((app.selected, app.irq_offset), (Some(38), 1));
        app.apply(Command::PageUp);
        assert_eq!((app.selected, app.irq_offset), (Some(36), 0));
    }

    #[test]
    fn history_forgets_irqs_quiet_for_the_whole_window() {
        let mut app = app();
        let mut quiet = report();
        quiet.irqs.clear();
        for _ in 0..HISTORY_LEN {
            app.ingest(quiet.clone(), &[]);
        }
        assert!(app.history.is_empty());
        assert!(app.visible_irqs().is_empty());
        assert_eq!(app.selected, None);
        assert_eq!(app.apply(Command::Down), Effect::None);
        app.apply(Command::Open);
        assert_eq!(app.view, View::Main, "nothing to open");
    }
}
