//! Drawing: the whole screen from an [`App`], nothing else. Every panel adapts to the width
//! it gets (more columns from about 110 on) and to the height (the CPU panel takes what its
//! meters need up to a third, the tables share the rest).
use std::collections::BTreeMap;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, Wrap},
};

use crate::{
    report::{
        CpuRow, IrqRow, NapiRow, SysvecRow, cpus_or_dash, device_cell, device_label,
        pct as percent, poll_cpus, task_pct,
    },
    table::{self, Column, pct, si},
    vector::Softirq,
};

use super::{
    app::{App, Focus, History, Snapshot, View},
    balance::{BalanceLog, EntryKind},
};

/// Smallest screen the layout is made for; below it a message asks for more room.
pub(crate) const MIN_WIDTH: u16 = 60;
pub(crate) const MIN_HEIGHT: u16 = 16;
/// From this width on the tables show their extra columns.
const WIDE: u16 = 110;

/// Glyphs and colours of the CPU meters' four parts; glyphs differ so that the meters read
/// without colour (a captured pane, a monochrome terminal).
const HARDIRQ: (char, Color) = ('#', Color::Red);
const NET_RX: (char, Color) = ('=', Color::Magenta);
const SOFTIRQ: (char, Color) = ('-', Color::Cyan);
const BUSY: (char, Color) = ('|', Color::Green);

const STICKING: Style = Style::new().fg(Color::Yellow);
const DIM: Style = Style::new().fg(Color::DarkGray);
const TITLE: Style = Style::new().add_modifier(Modifier::BOLD);
const HEADER: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::Cyan)
    .add_modifier(Modifier::BOLD);

/// Rows each table could show, for paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pages {
    pub(crate) irqs: usize,
    pub(crate) napi: usize,
}

/// Draws the screen; returns how many rows the tables showed.
pub(crate) fn draw(f: &mut Frame, app: &App) -> Pages {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "balancer top needs at least {MIN_WIDTH}x{MIN_HEIGHT}, this terminal is {}x{}. \
             q quits.",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return Pages::default();
    }
    let status = status_line(app);
    let [header, status_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(status.is_some())),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(header_line(app, header.width)).style(HEADER),
        header,
    );
    if let Some(s) = status {
        f.render_widget(Paragraph::new(s), status_area);
    }
    f.render_widget(Paragraph::new(footer_line(app)), footer);

    let pages = match (&app.data, app.view) {
        (None, _) => {
            let text = match &app.error {
                Some(e) => format!("measuring failed: {e}"),
                None => format!(
                    "measuring the first interval ({})...",
                    secs(app.interval.as_secs_f64())
                ),
            };
            f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), body);
            Pages::default()
        }
        (Some(data), View::Main) => main_view(f, app, data, body),
        (Some(data), View::Detail(irq)) => {
            detail_view(f, app, data, irq, body);
            Pages {
                irqs: app.irq_page,
                napi: app.napi_page,
            }
        }
    };
    if app.help {
        help(f, area);
    }
    pages
}

fn secs(s: f64) -> String {
    if s.fract().abs() < 1e-9 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// The title line: what matters most first; parts that do not fit the width are left out
/// (the kernel first).
fn header_line(app: &App, width: u16) -> Line<'static> {
    // (priority, text): lower numbers are kept longer.
    let mut parts: Vec<(u8, String)> = vec![
        (0, "balancer top".to_string()),
        (0, format!("every {}", secs(app.interval.as_secs_f64()))),
    ];
    if app.paused {
        parts.push((0, format!("PAUSED ({} intervals not shown)", app.skipped)));
    }
    if let Some(b) = &app.balance {
        parts.push((
            1,
            if b.dry_run {
                "balancing (dry run)".to_string()
            } else {
                "BALANCING".to_string()
            },
        ));
    }
    if let Some(d) = &app.data {
        let m = &d.report.meta;
        let irq_pct: f64 = d.report.irqs.iter().map(|r| r.weight_pct).sum();
        parts.push((2, format!("IRQs {}% of a CPU", pct(irq_pct))));
        parts.push((3, format!("CPUs {}", m.cpus_online)));
        if let Some(k) = &m.kernel {
            parts.push((4, format!("kernel {k}")));
        }
    }
    const SEP: &str = " │ ";
    for drop in (1..=4).rev() {
        let len: usize = parts
            .iter()
            .map(|(_, t)| t.chars().count() + SEP.len())
            .sum();
        if len <= width as usize {
            break;
        }
        parts.retain(|(p, _)| *p < drop);
    }
    let text: Vec<String> = parts.into_iter().map(|(_, t)| t).collect();
    Line::from(format!(" {}", text.join(SEP)))
}

/// Errors, missing measurements and events; `None` when all is well.
fn status_line(app: &App) -> Option<Line<'static>> {
    let warn = Style::new().fg(Color::Yellow);
    if let Some(e) = &app.error {
        return Some(Line::styled(
            format!(" measuring failed: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    let d = app.data.as_ref()?;
    let m = &d.report.meta;
    let mut parts: Vec<String> = m
        .missing
        .iter()
        .map(|s| format!("not measured: {s}"))
        .collect();
    parts.extend(m.events.iter().cloned());
    if parts.is_empty() {
        None
    } else {
        Some(Line::styled(format!(" {}", parts.join("; ")), warn))
    }
}

fn footer_line(app: &App) -> Line<'static> {
    if app.editing_filter {
        return Line::from(vec![
            Span::styled(" filter: ", TITLE),
            Span::raw(app.filter.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled("   Enter keep  Esc clear", DIM),
        ]);
    }
    let keys: &[(&str, &str)] = match app.view {
        View::Main => &[
            ("q", "quit"),
            ("?", "help"),
            ("s", "sort"),
            ("/", "filter"),
            ("p", "pause"),
            ("+-", "interval"),
            ("Enter", "detail"),
            ("Tab", "panel"),
        ],
        View::Detail(_) => &[
            ("Esc", "back"),
            ("q", "quit"),
            ("?", "help"),
            ("p", "pause"),
        ],
    };
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(
            format!(" {k}"),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what} ")));
    }
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!(" filter: {}", app.filter),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

fn main_view(f: &mut Frame, app: &App, data: &Snapshot, area: Rect) -> Pages {
    let report = &data.report;
    let wide = area.width >= WIDE;
    let (cpu_lines, cpu_layout) = cpu_layout(&report.cpus, area.width, area.height / 3);
    let balance_h = match &app.balance {
        Some(_) => (area.height / 4).clamp(4, 10),
        None => 0,
    };
    let sysvecs = sysvec_summary(&report.system_vectors);
    let rest = area.height.saturating_sub(cpu_lines + 1 + balance_h);
    // System vectors: a table where the screen is tall enough for it, else one line.
    let sysvec_table = sysvecs.len() as u16 + 2 <= rest / 4;
    let sysvec_h = match (sysvecs.is_empty(), sysvec_table) {
        (true, _) => 0,
        (false, true) => sysvecs.len() as u16 + 2,
        (false, false) => 2,
    };
    let rest = rest.saturating_sub(sysvec_h);
    // The NAPI panel gets what its rows need up to 40%, at least its header and two rows.
    let napi_need = if report.napi.is_empty() {
        2
    } else {
        report.napi.len() as u16 + 2
    };
    let napi_h = napi_need
        .min(rest * 2 / 5)
        .max(if report.napi.is_empty() { 2 } else { 4 });
    let [cpu_area, sysvec_area, irq_area, napi_area, balance_area] = Layout::vertical([
        Constraint::Length(cpu_lines + 1),
        Constraint::Length(sysvec_h),
        Constraint::Fill(1),
        Constraint::Length(napi_h),
        Constraint::Length(balance_h),
    ])
    .areas(area);

    cpus(f, &report.cpus, &cpu_layout, cpu_area);
    if !sysvecs.is_empty() {
        let secs = report.meta.duration_s;
        sysvec_panel(f, &sysvecs, secs, sysvec_table, sysvec_area);
    }
    let irqs = irq_table(f, app, data, wide, irq_area);
    let napi = napi_table(f, app, &report.napi, wide, napi_area);
    if let Some(log) = &app.balance {
        balance_panel(f, log, balance_area);
    }
    Pages { irqs, napi }
}

/// How the CPU meters are arranged: meters per line, and per node its CPU rows.
struct CpuLayout {
    columns: usize,
    /// (node label, CPUs of the node), nodes in order; CPUs without a node last.
    groups: Vec<(String, Vec<usize>)>,
    /// CPUs left out for lack of room.
    hidden: usize,
}

/// Picks the fewest meter columns (widest bars) that fit `max_lines`; on machines too big for
/// the screen, the narrowest meters and a note of how many CPUs are left out.
fn cpu_layout(cpus: &[CpuRow], width: u16, max_lines: u16) -> (u16, CpuLayout) {
    let mut by_node: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
    for (i, c) in cpus.iter().enumerate() {
        by_node.entry(c.node).or_default().push(i);
    }
    // CPUs without a node sort first in a BTreeMap; show them last.
    let mut groups: Vec<(String, Vec<usize>)> = by_node
        .iter()
        .filter(|(n, _)| n.is_some())
        .map(|(n, v)| (format!("node {}", n.unwrap_or_default()), v.clone()))
        .collect();
    if let Some(v) = by_node.get(&None) {
        groups.push(("no node".to_string(), v.clone()));
    }
    let usable = width.saturating_sub(8) as usize;
    // Meters of 36 columns and more read well; down to 20 when the CPUs do not fit otherwise.
    let max_cols = (usable / 20).max(1);
    let pref_cols = (usable / 36).max(1);
    let largest = groups.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
    let max_lines = max_lines.max(2) as usize;
    fn lines_for(groups: &[(String, Vec<usize>)], cols: usize) -> usize {
        groups.iter().map(|(_, v)| v.len().div_ceil(cols)).sum()
    }
    let widest = largest.clamp(1, max_cols);
    let columns = (pref_cols.min(widest)..=widest)
        .find(|c| lines_for(&groups, *c) <= max_lines)
        .unwrap_or(widest);
    let mut hidden = 0;
    let mut lines = lines_for(&groups, columns);
    if lines > max_lines {
        // Keep whole lines from the start, leave one for the note.
        let mut budget = max_lines.saturating_sub(1) * columns;
        for (_, v) in groups.iter_mut() {
            let keep = v.len().min(budget);
            hidden += v.len() - keep;
            v.truncate(keep);
            budget -= keep;
        }
        groups.retain(|(_, v)| !v.is_empty());
        lines = lines_for(&groups, columns) + 1;
    }
    (
        lines as u16,
        CpuLayout {
            columns,
            groups,
            hidden,
        },
    )
}

/// The four parts of a CPU's time, in % of the CPU: hardirq, NET_RX, other softirq, and the
/// rest of what /proc/stat calls busy.
fn cpu_parts(c: &CpuRow) -> [f64; 4] {
    let net_rx = c.softirq_pct[Softirq::NetRx];
    let other_si = (c.softirq_total_pct - net_rx).max(0.0);
    let irq = c.hardirq_pct + c.softirq_total_pct;
    let rest = c.busy_pct.map_or(0.0, |b| (b - irq).max(0.0));
    [c.hardirq_pct, net_rx, other_si, rest]
}

fn cpus(f: &mut Frame, cpus: &[CpuRow], layout: &CpuLayout, area: Rect) {
    let title = Line::from(vec![
        Span::styled(" CPUs by NUMA node ", TITLE),
        Span::styled(format!("{}", HARDIRQ.0), Style::new().fg(HARDIRQ.1)),
        Span::raw("hardirq "),
        Span::styled(format!("{}", NET_RX.0), Style::new().fg(NET_RX.1)),
        Span::raw("NET_RX "),
        Span::styled(format!("{}", SOFTIRQ.0), Style::new().fg(SOFTIRQ.1)),
        Span::raw("softirq "),
        Span::styled(format!("{}", BUSY.0), Style::new().fg(BUSY.1)),
        Span::raw("busy  "),
        Span::styled("irq% busy% ", DIM),
    ]);
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);

    let label_w = 8usize;
    let cell_w = (inner.width as usize).saturating_sub(label_w) / layout.columns.max(1);
    let mut lines = Vec::new();
    for (label, idxs) in &layout.groups {
        for (row, chunk) in idxs.chunks(layout.columns.max(1)).enumerate() {
            let mut spans = vec![Span::styled(
                format!(
                    "{:<w$}",
                    if row == 0 { label.as_str() } else { "" },
                    w = label_w
                ),
                DIM,
            )];
            for i in chunk {
                spans.extend(meter(&cpus[*i], cell_w));
            }
            lines.push(Line::from(spans));
        }
    }
    if layout.hidden > 0 {
        lines.push(Line::styled(
            format!("{} more CPUs: a taller terminal shows them", layout.hidden),
            DIM,
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// "  3 [##==--|||      ] 0.07  2.5 " in `width` columns.
fn meter(c: &CpuRow, width: usize) -> Vec<Span<'static>> {
    let parts = cpu_parts(c);
    let irq = parts[0] + parts[1] + parts[2];
    let label = match c.busy_pct {
        Some(b) => format!(" {:>5} {:>5} ", pct(irq), pct(b)),
        None => format!(" {:>5}     - ", pct(irq)),
    };
    let head = format!("{:>3} [", c.cpu);
    let bar_w = width.saturating_sub(head.len() + 1 + label.len()).max(1);
    let mut spans = vec![Span::raw(head)];
    if !c.online {
        spans.push(Span::styled(format!("{:<bar_w$}", "offline"), DIM));
    } else {
        // Cumulative boundaries, so rounding never makes the parts overflow the bar.
        let mut acc = 0.0;
        let mut drawn = 0usize;
        for (v, (glyph, color)) in parts.iter().zip([HARDIRQ, NET_RX, SOFTIRQ, BUSY]) {
            acc += v;
            let end = ((acc / 100.0 * bar_w as f64).round() as usize).min(bar_w);
            if end > drawn {
                spans.push(Span::styled(
                    glyph.to_string().repeat(end - drawn),
                    Style::new().fg(color),
                ));
                drawn = end;
            }
        }
        spans.push(Span::raw(" ".repeat(bar_w - drawn)));
    }
    spans.push(Span::raw("]"));
    spans.push(Span::raw(label));
    spans
}

fn focus_style(app: &App, focus: Focus) -> Style {
    if app.focus == focus {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().add_modifier(Modifier::UNDERLINED)
    }
}

/// "!2" or "!2,5": the CPUs an IRQ's NAPI polls on outside its effective affinity.
fn sticking_label(cpus: Option<&Vec<u32>>) -> String {
    match cpus {
        Some(v) if !v.is_empty() => format!(
            "!{}",
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
        _ => String::new(),
    }
}

/// The header row of `t` in the widths `w`: headers shorten rather than get cut.
fn header_row(t: &table::Table, w: &[usize]) -> Row<'static> {
    Row::new(t.header_cells(w)).style(TITLE)
}

/// A ratatui table of `rows` in the widths `w`, one space between columns as the column
/// tables lay them out.
fn ratatui_table(rows: Vec<Row<'static>>, header: Row<'static>, w: &[usize]) -> Table<'static> {
    Table::new(rows, w.iter().map(|w| Constraint::Length(*w as u16)))
        .header(header)
        .column_spacing(1)
}

fn irq_table(f: &mut Frame, app: &App, data: &Snapshot, wide: bool, area: Rect) -> usize {
    let rows = app.visible_irqs();
    let total = data.report.irqs.len();
    let mut title = format!(" IRQs by {} ", app.sort.label());
    title.push_str(&if app.filter.is_empty() {
        format!("({total} active) ")
    } else {
        format!("({} of {total} match '{}') ", rows.len(), app.filter)
    });
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let page = (inner.height as usize).saturating_sub(1);

    let t = irq_columns(inner.width, wide);
    let values: Vec<Vec<String>> = rows
        .iter()
        .map(|r| irq_values(r, data, inner.width, wide))
        .collect();
    let w = t.widths(inner.width as usize, &values);
    let sel = app.selected_index(&rows);
    let body: Vec<Row> = rows
        .iter()
        .zip(values)
        .enumerate()
        .skip(app.irq_offset)
        .take(page)
        .map(|(i, (r, mut v))| {
            v[IRQ_DEVICE] = device_cell(r, w[IRQ_DEVICE]);
            let mut style = if data.sticking.contains_key(&r.irq) {
                STICKING
            } else {
                Style::new()
            };
            if Some(i) == sel {
                style = style.patch(focus_style(app, Focus::Irqs));
            }
            Row::new(t.cells(&w, &v)).style(style)
        })
        .collect();
    let empty = body.is_empty();
    f.render_widget(ratatui_table(body, header_row(&t, &w), &w), inner);
    if empty && inner.height > 1 {
        let msg = if app.filter.is_empty() {
            "no interrupts in this interval"
        } else {
            "no IRQ matches the filter (Esc clears it)"
        };
        let line = Rect {
            y: inner.y + 1,
            height: 1,
            ..inner
        };
        f.render_widget(Paragraph::new(Span::styled(msg, DIM)), line);
    }
    page
}

/// The IRQ table's DEVICE/QUEUE column: its cell depends on the width it gets.
const IRQ_DEVICE: usize = 2;

/// INTR% next to TIME% is the product's point (interrupt counts against measured time): both
/// stay at every width. Below 80 columns HARD% and SOFT% go.
fn irq_columns(width: u16, wide: bool) -> table::Table {
    let mut cols = vec![
        Column::right("IRQ", 4),
        Column::left("NAME", 0).flex(10, 3),
        // Under WIDE the name (which says the queue) gets the room first.
        Column::left("DEVICE/QUEUE", 0)
            .flex(7, if wide { 2 } else { 1 })
            .short(&["DEVICE", "DEV"]),
        Column::right("ND", 2),
        if wide {
            Column::left("AFFINITY", 0).flex(8, 1)
        } else {
            Column::left("AFFINITY", 5).short(&["AFF"])
        },
        Column::left("EFF", if wide { 6 } else { 3 }),
        Column::right("IRQ/s", 6),
    ];
    if width >= 80 {
        cols.extend([Column::right("HARD%", 5), Column::right("SOFT%", 5)]);
    }
    if wide {
        cols.push(Column::right("TOTAL%", 6));
    }
    cols.extend([Column::right("INTR%", 5), Column::right("TIME%", 5)]);
    if wide {
        cols.extend([
            Column::left("STUCK", 6),
            Column::left("NAPI POLLS ON CPU", 0)
                .flex(10, 2)
                .short(&["POLLS ON CPU", "POLLS ON"]),
        ]);
    } else {
        cols.push(Column::left("STK", 4));
    }
    table::Table::new(cols)
}

/// One IRQ's cells for [`irq_columns`], the device label whole.
fn irq_values(r: &IrqRow, data: &Snapshot, width: u16, wide: bool) -> Vec<String> {
    let mut v = vec![
        r.irq.to_string(),
        r.name.clone(),
        device_label(r),
        r.node.map_or("-".into(), |n| n.to_string()),
        cpus_or_dash(r.smp_affinity.as_ref()),
        cpus_or_dash(r.effective_affinity.as_ref()),
        si(r.interrupts_per_s),
    ];
    if width >= 80 {
        v.extend([pct(r.hardirq_pct), pct(r.softirq_pct)]);
    }
    if wide {
        v.push(pct(r.weight_pct));
    }
    v.extend([
        format!("{:.1}", r.interrupt_share * 100.0),
        format!("{:.1}", r.time_share * 100.0),
        sticking_label(data.sticking.get(&r.irq)),
    ]);
    if wide {
        let polls: Vec<String> = data
            .report
            .napi
            .iter()
            .filter(|n| n.irq == Some(r.irq))
            .map(poll_cpus)
            .collect();
        v.push(polls.join(" | "));
    }
    v
}

fn napi_table(f: &mut Frame, app: &App, napi: &[NapiRow], wide: bool, area: Rect) -> usize {
    let title = format!(" NAPI instances ({}) ", napi.len());
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if napi.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled("no NAPI polls in this interval", DIM)),
            inner,
        );
        return 1;
    }
    let page = (inner.height as usize).saturating_sub(1);
    let secs = app.data.as_ref().map_or(0.0, |d| d.report.meta.duration_s);
    let layout = NapiLayout::new(inner.width, wide, napi);
    let t = napi_columns(layout);
    let values: Vec<Vec<String>> = napi.iter().map(|n| napi_values(n, secs, layout)).collect();
    let w = t.widths(inner.width as usize, &values);
    let body: Vec<Row> = values
        .iter()
        .enumerate()
        .skip(app.napi_offset)
        .take(page)
        .map(|(i, v)| {
            let style = if app.focus == Focus::Napi && i == app.napi_selected {
                focus_style(app, Focus::Napi)
            } else {
                Style::new()
            };
            Row::new(t.cells(&w, v)).style(style)
        })
        .collect();
    f.render_widget(ratatui_table(body, header_row(&t, &w), &w), inner);
    page
}

/// The NAPI table's optional columns.
#[derive(Clone, Copy)]
struct NapiLayout {
    wide: bool,
    /// Poll time outside softirq (TASK%: T threaded, B busy poll), from 80 columns on.
    task: bool,
    /// The kthread's pid, where an instance is threaded and has room.
    pid: bool,
}

impl NapiLayout {
    fn new(width: u16, wide: bool, napi: &[NapiRow]) -> NapiLayout {
        let task = width >= 80;
        NapiLayout {
            wide,
            task,
            pid: task && napi.iter().any(|n| n.thread_pid.is_some()),
        }
    }
}

fn napi_columns(l: NapiLayout) -> table::Table {
    let NapiLayout { wide, task, pid } = l;
    let mut cols = vec![
        Column::right("NAPI", if wide { 18 } else { 6 }),
        Column::left("DEVICE", 0).flex(8, 1),
        Column::right("IRQ", 4),
        Column::left("LINK", if wide { 13 } else { 5 }),
        Column::right("PKT/s", 6),
        Column::right("POLLS/s", 7),
        Column::right("CPU%", 5),
    ];
    if wide {
        cols.push(Column::right("FULL%", 5));
    }
    if task {
        cols.push(Column::right("TASK%", 5));
    }
    if pid {
        cols.push(Column::right("PID", 7));
    }
    cols.push(
        Column::left("POLLS ON CPU", 0)
            .flex(12, 3)
            .short(&["POLLS ON"]),
    );
    table::Table::new(cols)
}

/// One instance's cells for [`napi_columns`].
fn napi_values(n: &NapiRow, secs: f64, l: NapiLayout) -> Vec<String> {
    let NapiLayout { wide, task, pid } = l;
    let mut v = vec![
        // The kernel address identifies instances without a napi_id; only wide
        // screens have room for it.
        match (n.napi_id, wide) {
            (Some(id), _) => id.to_string(),
            (None, true) => n.id.clone(),
            (None, false) => "-".into(),
        },
        n.device.clone(),
        n.irq.map_or("-".into(), |i| i.to_string()),
        if wide {
            n.link.as_str()
        } else {
            n.link.short()
        }
        .to_string(),
        si(n.packets_per_s),
        si(per_s(n.polls, secs)),
        pct(n.pct),
    ];
    if wide {
        v.push(format!("{:.1}", n.budget_exhausted_share * 100.0));
    }
    if task {
        v.push(task_pct(n));
    }
    if pid {
        v.push(n.thread_pid.map_or("-".into(), |p| p.to_string()));
    }
    v.push(poll_cpus(n));
    v
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// One system vector label (as `/proc/interrupts` names it) over all CPUs.
struct SysvecLine {
    label: &'static str,
    runs: u64,
    /// % of one CPU, summed over CPUs.
    pct: f64,
    /// CPU -> % of that CPU.
    per_cpu: BTreeMap<u32, f64>,
}

/// The report's system-vector rows by label, most time first; both call-function vectors
/// count in CAL, as in `/proc/interrupts`.
fn sysvec_summary(rows: &[SysvecRow]) -> Vec<SysvecLine> {
    let mut by_label: Vec<SysvecLine> = Vec::new();
    for r in rows {
        let label = r.vector.label();
        let i = match by_label.iter().position(|l| l.label == label) {
            Some(i) => i,
            None => {
                by_label.push(SysvecLine {
                    label,
                    runs: 0,
                    pct: 0.0,
                    per_cpu: BTreeMap::new(),
                });
                by_label.len() - 1
            }
        };
        let l = &mut by_label[i];
        l.runs += r.runs;
        l.pct += r.pct;
        *l.per_cpu.entry(r.cpu).or_default() += r.pct;
    }
    by_label.sort_by(|a, b| b.pct.total_cmp(&a.pct).then(a.label.cmp(b.label)));
    by_label
}

/// System vectors: hardirq time that is no IRQ's (local timer, IPIs), in no IRQ row and not
/// in the meters' hardirq part. A table with the per-CPU split where there is room, else one
/// line of totals.
fn sysvec_panel(f: &mut Frame, lines: &[SysvecLine], secs: f64, as_table: bool, area: Rect) {
    let block = Block::new().borders(Borders::TOP).title(Span::styled(
        " System vectors: % of one CPU, all CPUs ",
        TITLE,
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if !as_table {
        let text: Vec<String> = lines
            .iter()
            .map(|l| format!("{} {}", l.label, pct(l.pct)))
            .collect();
        let line = table::fit(&format!(" {}", text.join("  ")), inner.width as usize);
        f.render_widget(Paragraph::new(line), inner);
        return;
    }
    let t = table::Table::new(vec![
        Column::left(" VEC", 4),
        Column::right("RUNS/s", 7),
        Column::right("CPU%", 5),
        Column::left("% OF EACH CPU", 0).flex(12, 1),
    ]);
    let values: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                format!(" {}", l.label),
                si(per_s(l.runs, secs)),
                pct(l.pct),
                l.per_cpu
                    .iter()
                    .map(|(cpu, p)| format!("{cpu}:{}", pct(*p)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let w = t.widths(inner.width as usize, &values);
    let body: Vec<Row> = values.iter().map(|v| Row::new(t.cells(&w, v))).collect();
    f.render_widget(ratatui_table(body, header_row(&t, &w), &w), inner);
}

fn balance_panel(f: &mut Frame, log: &BalanceLog, area: Rect) {
    let title = format!(
        " Balancer{}: {} intervals, {} actions, {} sticking now ",
        if log.dry_run {
            " (dry run, nothing written)"
        } else {
            ""
        },
        log.steps,
        log.actions,
        log.sticking_now
    );
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(title, TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines: Vec<Line> = log
        .recent()
        .take(inner.height as usize)
        .map(|e| {
            let (tag, style) = match e.kind {
                EntryKind::Decision if e.applied => ("applied", Style::new().fg(Color::Green)),
                EntryKind::Decision => ("planned", Style::new()),
                EntryKind::Sticking => ("sticking", STICKING),
                EntryKind::Note => ("note", DIM),
                EntryKind::Error => ("error", Style::new().fg(Color::Red)),
            };
            Line::from(vec![
                Span::styled(format!("{:>7.0}s ", e.at_s), DIM),
                Span::styled(format!("{tag:<8} "), style),
                Span::raw(e.text.clone()),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::styled(
            "no decisions yet: the policy runs once per interval",
            DIM,
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn detail_view(f: &mut Frame, app: &App, data: &Snapshot, irq: u32, area: Rect) {
    let row = data.report.irqs.iter().find(|r| r.irq == irq);
    let name = row.map_or(String::new(), |r| r.name.clone());
    let block = Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(format!(" IRQ {irq} {name} "), TITLE));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let info = detail_info(data, irq, row);

    let cpu_rows = row.map_or(0, |r| r.cpus.len()) as u16;
    let [info_area, table_area, spark_area] = Layout::vertical([
        // Wrapped lines take more rows on narrow screens.
        Constraint::Length(
            info.iter()
                .map(|l| l.width().max(1).div_ceil(inner.width.max(1) as usize) as u16)
                .sum(),
        ),
        Constraint::Length((cpu_rows + 2).min(inner.height / 2)),
        Constraint::Fill(1),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(info).wrap(Wrap { trim: true }), info_area);
    if let Some(r) = row {
        let t = Rect {
            y: table_area.y + 1,
            height: table_area.height.saturating_sub(1),
            ..table_area
        };
        detail_cpus(f, data, r, t);
    }
    sparklines(f, app.history.get(&irq), spark_area);
}

/// The detail view's lines above its table: the IRQ, its NAPI instances (with their time in
/// kthreads and busy-poll loops), and sticking.
fn detail_info(data: &Snapshot, irq: u32, row: Option<&IrqRow>) -> Vec<Line<'static>> {
    let mut info: Vec<Line> = Vec::new();
    match row {
        None => info.push(Line::styled(
            "no interrupts and no CPU time in this interval",
            DIM,
        )),
        Some(r) => {
            info.push(Line::from(format!(
                "device {}   chip {}   node {}",
                device_label(r),
                r.chip.as_deref().unwrap_or("-"),
                r.node.map_or("-".into(), |n| n.to_string())
            )));
            info.push(Line::from(format!(
                "affinity {}   effective {}   {} irq/s",
                cpus_or_dash(r.smp_affinity.as_ref()),
                cpus_or_dash(r.effective_affinity.as_ref()),
                si(r.interrupts_per_s),
            )));
            info.push(Line::from(format!(
                "hardirq {}% + softirq {}% = {}% of a CPU: {:.1}% of IRQ time, {:.1}% of \
                 interrupts",
                pct(r.hardirq_pct),
                pct(r.softirq_pct),
                pct(r.weight_pct),
                r.time_share * 100.0,
                r.interrupt_share * 100.0,
            )));
        }
    }
    for n in data.report.napi.iter().filter(|n| n.irq == Some(irq)) {
        let mut line = format!(
            "NAPI {} on {} (link: {})   {} pkt/s   polls on CPU {}",
            n.napi_id.map_or_else(|| n.id.clone(), |i| i.to_string()),
            n.device,
            n.link.as_str(),
            si(n.packets_per_s),
            poll_cpus(n)
        );
        if n.threaded_ns > 0 || n.thread_pid.is_some() {
            line.push_str(&format!("   threaded {}%", pct(n.threaded_pct)));
            if let Some(pid) = n.thread_pid {
                line.push_str(&format!(" (kthread {pid})"));
            }
        }
        if n.busy_poll_ns > 0 {
            line.push_str(&format!("   busy-poll {}%", pct(n.busy_poll_pct)));
        }
        info.push(Line::from(line));
    }
    if let Some(cpus) = data.sticking.get(&irq) {
        info.push(Line::styled(
            format!(
                "STICKING: NAPI polls on CPU {}, outside effective affinity {}",
                cpus.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                cpus_or_dash(row.and_then(|r| r.effective_affinity.as_ref()))
            ),
            STICKING,
        ));
    }
    info
}

/// One IRQ's time per CPU, and where its NAPI polls sit against its effective affinity.
fn detail_cpus(f: &mut Frame, data: &Snapshot, r: &IrqRow, area: Rect) {
    let secs = data.report.meta.duration_s;
    let dur_ns = (secs * 1e9) as u64;
    let stuck = data.sticking.get(&r.irq);
    let node_of = |cpu: u32| {
        data.report
            .cpus
            .iter()
            .find(|c| c.cpu == cpu)
            .and_then(|c| c.node)
            .map_or("-".into(), |n| n.to_string())
    };
    let t = table::Table::new(vec![
        Column::right("CPU", 4),
        Column::right("NODE", 4),
        Column::right("IRQ/s", 7),
        Column::right("HARD%", 6),
        Column::right("SOFT%", 6),
        Column::right("TOTAL%", 6),
        Column::left("", 0).flex(0, 1),
    ]);
    let mut styles = Vec::new();
    let values: Vec<Vec<String>> = r
        .cpus
        .iter()
        .map(|c| {
            let in_eff = r
                .effective_affinity
                .as_ref()
                .is_some_and(|e| e.contains(c.cpu));
            let sticks = stuck.is_some_and(|v| v.contains(&c.cpu));
            let note = match (in_eff, sticks) {
                (true, _) => "effective affinity",
                (false, true) => "NAPI polls here: sticking",
                (false, false) if c.softirq_ns > 0 => "NAPI polls here",
                _ => "",
            };
            styles.push(if sticks { STICKING } else { Style::new() });
            vec![
                c.cpu.to_string(),
                node_of(c.cpu),
                si(per_s(c.interrupts, secs)),
                pct(percent(c.hardirq_ns, dur_ns)),
                pct(percent(c.softirq_ns, dur_ns)),
                pct(percent(c.hardirq_ns + c.softirq_ns, dur_ns)),
                note.to_string(),
            ]
        })
        .collect();
    let w = t.widths(area.width as usize, &values);
    let body: Vec<Row> = values
        .iter()
        .zip(styles)
        .map(|(v, style)| Row::new(t.cells(&w, v)).style(style))
        .collect();
    f.render_widget(ratatui_table(body, header_row(&t, &w), &w), area);
}

/// Two sparklines over the last intervals: real time and interrupts. Side by side they show
/// what NAPI does: as the time rises, the interrupts fall.
fn sparklines(f: &mut Frame, hist: Option<&History>, area: Rect) {
    if area.height < 4 {
        return;
    }
    // Taller than 8 rows tells no more; the rest stays empty.
    let spark_h = ((area.height - 2) / 2).min(8);
    let [t_label, t_spark, i_label, i_spark, _] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(spark_h),
        Constraint::Length(1),
        Constraint::Length(spark_h),
        Constraint::Fill(1),
    ])
    .areas(area);
    let w = area.width as usize;
    let tail = |q: Option<&std::collections::VecDeque<u64>>| -> Vec<u64> {
        q.map(|q| q.iter().skip(q.len().saturating_sub(w)).copied().collect())
            .unwrap_or_default()
    };
    let time = tail(hist.map(|h| &h.weight_ns_per_s));
    let ints = tail(hist.map(|h| &h.interrupts_per_s));
    let tmax = time.iter().copied().max().unwrap_or(0);
    let imax = ints.iter().copied().max().unwrap_or(0);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("CPU time", TITLE),
            Span::raw(format!(
                " (% of one CPU), last {} intervals: now {}%, max {}%",
                time.len(),
                pct(time.last().copied().unwrap_or(0) as f64 / 1e7),
                pct(tmax as f64 / 1e7)
            )),
        ])),
        t_label,
    );
    f.render_widget(
        Sparkline::default()
            .data(&time)
            .max(tmax.max(1))
            .style(Style::new().fg(Color::Green)),
        t_spark,
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("Interrupts", TITLE),
            Span::raw(format!(
                " per second: now {}, max {}",
                si(ints.last().copied().unwrap_or(0) as f64),
                si(imax as f64)
            )),
        ])),
        i_label,
    );
    f.render_widget(
        Sparkline::default()
            .data(&ints)
            .max(imax.max(1))
            .style(Style::new().fg(Color::Cyan)),
        i_spark,
    );
}

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("?", "this help (any key closes it)"),
    (
        "s",
        "sort IRQs: time, irq/s, hardirq, softirq, number, name",
    ),
    (
        "/",
        "filter IRQs by name or device (Enter keeps, Esc clears)",
    ),
    ("p, space", "pause the display (measuring goes on)"),
    ("+ / -", "slower / faster refresh"),
    (
        "Up Down PgUp PgDn",
        "move in the focused table (Home, End too)",
    ),
    ("Tab", "switch between the IRQ and NAPI tables"),
    ("Enter", "one IRQ: per-CPU split and history"),
    ("Esc", "back; on the main view clears the filter"),
    ("", ""),
    (
        "CPU meters",
        "# hardirq  = NET_RX  - other softirq  | rest of busy",
    ),
    (
        "HARD% SOFT%",
        "measured handler and NET_RX poll time, % of one CPU",
    ),
    (
        "TIME%",
        "share of all IRQ time (what balancing should weigh)",
    ),
    (
        "INTR%",
        "share of interrupts (what count-based balancers weigh)",
    ),
    ("STK !N", "sticking: its NAPI polls on CPU N, outside EFF"),
    (
        "TASK%",
        "NAPI polls in kthreads (T) and busy-poll loops (B)",
    ),
    (
        "System vectors",
        "LOC timer, RES CAL IWI IPIs: hardirq time of no IRQ",
    ),
    ("EFF", "effective affinity: where the IRQ really lands"),
];

fn help(f: &mut Frame, area: Rect) {
    let w = area.width.min(78);
    let h = (HELP.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let key_w = HELP.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<key_w$}  "), TITLE),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(
            Block::bordered().title(Span::styled(" balancer top: keys and columns ", TITLE)),
        ),
        popup,
    );
}
