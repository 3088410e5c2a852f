//! Rendering tests: the whole screen drawn on ratatui's TestBackend from the kernel VM
//! fixture (4 CPUs in 2 nodes; eth1's queue 0 IRQ 36 fires on CPU 0 while its NAPI polls on
//! CPU 2), read back as text the way a person would read it.
use ratatui::{Terminal, backend::TestBackend};

use super::{
    app::{Command, tests::app},
    balance::{BalanceLog, Event, StepOutcome},
    render,
};
use crate::tui::app::App;

fn screen(app: &mut App, w: u16, h: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let mut pages = render::Pages::default();
    term.draw(|f| pages = render::draw(f, app)).unwrap();
    app.set_pages(pages.irqs, pages.napi);
    // Draw again as the event loop does, with the page sizes known.
    term.draw(|f| pages = render::draw(f, app)).unwrap();
    let buf = term.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

fn find<'a>(lines: &'a [String], needle: &str) -> Option<(usize, &'a String)> {
    lines.iter().enumerate().find(|(_, l)| l.contains(needle))
}

fn has(lines: &[String], needle: &str) -> bool {
    find(lines, needle).is_some()
}

fn dump(lines: &[String]) -> String {
    lines.join("\n")
}

#[test]
fn main_view_at_80x24() {
    let mut app = app();
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    assert!(
        s[0].contains("balancer top") && s[0].contains("every 1 s"),
        "{d}"
    );
    // CPUs grouped by node: the VM's nodes 0 (CPUs 0,1) and 1 (CPUs 2,3).
    let (n0, _) = find(&s, "node 0").expect(&d);
    let (n1, _) = find(&s, "node 1").expect(&d);
    assert!(n0 < n1, "{d}");
    assert!(s[n0].contains("  0 [") && s[n0].contains("  1 ["), "{d}");
    assert!(s[n1].contains("  2 [") && s[n1].contains("  3 ["), "{d}");
    // CPU 2: 3% NET_RX of a 20-odd column bar shows as at least one '='.
    assert!(s[n1].contains('='), "{d}");

    let (hdr, line) = find(&s, "IRQ NAME").expect(&d);
    for col in [
        "DEVICE", "AFF", "EFF", "IRQ/s", "HARD%", "SOFT%", "INTR%", "TIME%", "STK",
    ] {
        assert!(line.contains(col), "{col}: {d}");
    }
    // Heaviest first, with the sticking flag: polls on CPU 2 outside effective CPU 0.
    let q0 = &s[hdr + 1];
    assert!(q0.contains("36") && q0.contains("virtio1-input.0"), "{d}");
    assert!(
        q0.contains(" eth1/rx0 "),
        "the queue, without the PCI address: {d}"
    );
    assert!(q0.trim_end().ends_with("!2"), "{d}");
    assert!(q0.contains(" 84.0 "), "time share 25.2 of 30 ms: {d}");
    assert!(s[hdr + 2].contains("38"), "{d}");

    let (napi, _) = find(&s, "NAPI instances (4)").expect(&d);
    assert!(napi > hdr + 2, "{d}");
    assert!(has(&s, "2:100%"), "where the eth1 queue polls: {d}");
    assert!(s[23].contains("q quit") && s[23].contains("? help"), "{d}");
}

#[test]
fn main_view_at_200x60_shows_the_wide_columns() {
    let mut app = app();
    let s = screen(&mut app, 200, 60);
    let d = dump(&s);
    let (hdr, line) = find(&s, "IRQ NAME").expect(&d);
    for col in ["TOTAL%", "INTR%", "TIME%", "STUCK", "NAPI POLLS ON"] {
        assert!(line.contains(col), "{col}: {d}");
    }
    let q0 = &s[hdr + 1];
    assert!(q0.contains("!2") && q0.contains("2:100%"), "{d}");
    assert!(q0.contains("81:00.0 eth1/rx0"), "{d}");
    assert!(
        q0.contains("10.0") && q0.contains("84.0"),
        "INTR% vs TIME%: {d}"
    );
    assert!(has(&s, "FULL%"), "{d}");
    assert!(has(&s, "exact"), "link method spelled out: {d}");
    assert!(s[59].contains("q quit"), "footer on the last line: {d}");
    // Every NAPI row fits; nothing is cut.
    assert!(has(&s, "(no_device)") && has(&s, "veth0"), "{d}");
}

#[test]
fn sort_and_filter_show_in_the_table() {
    let mut app = app();
    app.apply(Command::CycleSort);
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    let (hdr, _) = find(&s, "IRQ NAME").expect(&d);
    assert!(has(&s, "IRQs by irq/s"), "{d}");
    assert!(s[hdr + 1].contains("virtio1-input.1"), "38 fires most: {d}");
    assert!(s[hdr + 2].contains("virtio1-input.0"), "{d}");

    app.apply(Command::StartFilter);
    for c in "rx0".chars() {
        app.apply(Command::FilterChar(c));
    }
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    assert!(has(&s, "1 of 2 match 'rx0'"), "{d}");
    assert!(s[23].contains("filter: rx0"), "the line being edited: {d}");
    let (hdr, _) = find(&s, "IRQ NAME").expect(&d);
    assert!(s[hdr + 1].contains("virtio1-input.0"), "{d}");
    assert!(!has(&s, "virtio1-input.1"), "{d}");

    app.apply(Command::FilterBackspace);
    app.apply(Command::FilterBackspace);
    app.apply(Command::FilterBackspace);
    app.apply(Command::FilterChar('z'));
    app.apply(Command::FilterAccept);
    let s = screen(&mut app, 80, 24);
    assert!(has(&s, "no IRQ matches the filter"), "{}", dump(&s));
}

#[test]
fn detail_view_splits_per_cpu_and_draws_history() {
    let mut app = app();
    // Some history: the sparkline needs more than one sample.
    for _ in 0..5 {
        app.ingest(super::app::tests::report(), &super::app::tests::stuck());
    }
    app.apply(Command::Open);
    for (w, h) in [(80, 24), (200, 60)] {
        let s = screen(&mut app, w, h);
        let d = dump(&s);
        assert!(has(&s, "IRQ 36 virtio1-input.0"), "{d}");
        assert!(has(&s, "affinity 0") && has(&s, "effective 0"), "{d}");
        assert!(has(&s, "STICKING"), "{d}");
        let (hdr, _) = find(&s, " CPU NODE").expect(&d);
        assert!(
            s[hdr + 1].contains("   0    0") && s[hdr + 1].contains("effective affinity"),
            "{d}"
        );
        assert!(
            s[hdr + 2].contains("   2    1") && s[hdr + 2].contains("sticking"),
            "{d}"
        );
        assert!(s[hdr + 2].contains("2.50"), "25 ms of polls in 1 s: {d}");
        assert!(has(&s, "CPU time") && has(&s, "max 2.52%"), "{d}");
        assert!(has(&s, "Interrupts per second: now 100"), "{d}");
        // Sparkline bars are block characters.
        assert!(s.iter().any(|l| l.contains('█')), "{d}");
        assert!(s[h as usize - 1].contains("Esc back"), "{d}");
    }
    app.apply(Command::Back);
    let s = screen(&mut app, 80, 24);
    assert!(has(&s, "IRQ NAME"), "{}", dump(&s));
}

#[test]
fn help_overlays_keys_and_columns() {
    let mut app = app();
    app.apply(Command::ToggleHelp);
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    assert!(has(&s, "keys and columns"), "{d}");
    for k in ["sort IRQs", "filter IRQs", "pause", "sticking"] {
        assert!(has(&s, k), "{k}: {d}");
    }
}

#[test]
fn small_terminals_say_so_and_empty_states_read_well() {
    let mut app = app();
    let s = screen(&mut app, 40, 10);
    assert!(has(&s, "needs at least 60x16"), "{}", dump(&s));

    // The smallest size drawn: every header whole, the sticking flag still there.
    let s = screen(&mut app, 60, 16);
    let d = dump(&s);
    let (hdr, line) = find(&s, "IRQ NAME").expect(&d);
    for col in [" DEV", " AFF ", "IRQ/s", "INTR%", "TIME%", "STK"] {
        assert!(line.contains(col), "{col}: {d}");
    }
    assert!(!line.contains('~'), "headers shorten, not cut: {d}");
    assert!(s[hdr + 1].ends_with("!2"), "{d}");
    assert!(s.iter().all(|l| !l.contains("-0.00")), "{d}");

    let mut fresh = App::new(std::time::Duration::from_secs(2));
    let s = screen(&mut fresh, 80, 24);
    assert!(
        has(&s, "measuring the first interval (2 s)"),
        "{}",
        dump(&s)
    );
    fresh.failed("reading the eBPF maps: boom".into());
    let s = screen(&mut fresh, 80, 24);
    assert!(
        has(&s, "measuring failed: reading the eBPF maps: boom"),
        "{}",
        dump(&s)
    );
}

#[test]
fn paused_and_missing_measurements_are_visible() {
    let mut app = app();
    app.apply(Command::TogglePause);
    let mut r = super::app::tests::report();
    r.meta.missing = vec!["napi: tracepoint napi:napi_poll not in this kernel".into()];
    app.ingest(r.clone(), &super::app::tests::stuck());
    let s = screen(&mut app, 80, 24);
    assert!(
        s[0].contains("PAUSED (1 intervals not shown)"),
        "{}",
        dump(&s)
    );
    app.apply(Command::TogglePause);
    app.ingest(r, &super::app::tests::stuck());
    let s = screen(&mut app, 80, 24);
    assert!(
        s[1].contains("not measured: napi: tracepoint napi:napi_poll"),
        "{}",
        dump(&s)
    );
}

#[test]
fn many_cpus_fit_in_columns_or_say_what_is_left_out() {
    let mut app = app();
    let base = super::app::tests::report();
    let mut r = base.clone();
    r.cpus = (0..64)
        .map(|i| {
            let mut c = base.cpus[0].clone();
            c.cpu = i;
            c.node = Some(i / 32);
            c
        })
        .collect();
    app.ingest(r, &super::app::tests::stuck());
    let s = screen(&mut app, 200, 60);
    let d = dump(&s);
    assert!(has(&s, " 63 ["), "all 64 CPUs at 200x60: {d}");
    assert!(has(&s, "IRQ NAME"), "{d}");
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    assert!(has(&s, "more CPUs: a taller terminal shows them"), "{d}");
    assert!(has(&s, "IRQ NAME") && has(&s, "q quit"), "{d}");
}

#[test]
fn balance_panel_lists_decisions_and_sticking() {
    let mut app = app();
    let mut log = BalanceLog::new(true);
    log.record(
        3.0,
        StepOutcome {
            decisions: vec![(false, "move IRQ 38 eth1/rx1 from CPU 1 to CPU 3".into())],
            sticking: vec![Event::new(
                "36",
                "IRQ 36 eth1/rx0: NAPI polls on CPU 2, effective 0",
            )],
            notes: vec![Event::new(
                "cpu1",
                "CPU 1 is 95% busy and no active, movable IRQ on it can go",
            )],
            errors: vec![],
        },
    );
    app.balance = Some(log);
    for (w, h) in [(80, 24), (200, 60)] {
        let s = screen(&mut app, w, h);
        let d = dump(&s);
        assert!(has(&s, "Balancer (dry run, nothing written)"), "{d}");
        assert!(has(&s, "planned  move IRQ 38"), "{d}");
        assert!(has(&s, "sticking IRQ 36 eth1/rx0"), "{d}");
        assert!(has(&s, "note     CPU 1 is 95% busy"), "{d}");
        assert!(s[0].contains("balancing (dry run)"), "{d}");
        assert!(has(&s, "IRQ NAME"), "{d}");
    }
}

/// System vectors, threaded and busy-poll time on screen: a line of system-vector totals at
/// 80x24 (a table with the per-CPU split where there is room), TASK% and the kthread's pid on
/// NAPI rows, and both in the IRQ's detail.
#[test]
fn system_vectors_and_task_polls_show() {
    let mut app = App::new(std::time::Duration::from_secs(1));
    app.ingest(crate::report::tests::rich(), &[]);
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    let (sv, _) = find(&s, "System vectors").expect(&d);
    assert!(
        s[sv + 1].contains("LOC 0.55") && s[sv + 1].contains("RES 0.01"),
        "LOC 0.30% + 0.25%, RES: {d}"
    );
    assert!(
        s[sv + 1].contains("CAL") && s[sv + 1].contains("IWI"),
        "{d}"
    );
    let (cpu, _) = find(&s, "CPUs by NUMA node").expect(&d);
    let (irq, _) = find(&s, "IRQ NAME").expect(&d);
    assert!(cpu < sv && sv < irq, "between the meters and the IRQs: {d}");
    assert!(
        s[irq + 1].contains("36"),
        "the IRQ table keeps its rows: {d}"
    );
    let (hdr, line) = find(&s, "  NAPI DEVICE").expect(&d);
    assert!(line.contains("TASK%") && line.contains("PID"), "{d}");
    let x = s[hdr + 1..].iter().find(|l| l.contains(" 36 ")).expect(&d);
    assert!(x.contains("2.0T+1.0B"), "threaded 2% and busy-poll 1%: {d}");
    let v = s[hdr + 1..].iter().find(|l| l.contains("veth0")).expect(&d);
    assert!(v.contains(" 4242 "), "the veth's kthread: {d}");
    assert!(s.iter().all(|l| l.chars().count() <= 80), "{d}");

    let s = screen(&mut app, 200, 60);
    let d = dump(&s);
    let (sv, _) = find(&s, "System vectors").expect(&d);
    assert!(s[sv + 1].contains("% OF EACH CPU"), "{d}");
    let loc = &s[sv + 2];
    assert!(
        loc.contains("LOC") && loc.contains(" 500 ") && loc.contains("0:0.30 1:0.25"),
        "{d}"
    );
    assert!(has(&s, "2.0T+1.0B") && has(&s, "4242"), "{d}");

    app.apply(Command::Open);
    let s = screen(&mut app, 80, 24);
    let d = dump(&s);
    assert!(has(&s, "IRQ 36 virtio1-input.0"), "{d}");
    assert!(
        has(&s, "threaded 2.00%") && has(&s, "busy-poll 1.00%"),
        "{d}"
    );
}

/// Without system-vector rows (not x86, or their tracepoints absent) there is no panel.
#[test]
fn no_system_vector_panel_without_rows() {
    let mut app = app();
    let s = screen(&mut app, 80, 24);
    assert!(!has(&s, "System vectors"), "{}", dump(&s));
}
