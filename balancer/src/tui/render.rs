//! Drawing: the whole screen from an [`App`], nothing else. Every panel adapts to the width
//! it gets (more columns from about 110 on) and to the height (the CPU panel takes what its
//! meters need up to a third, the tables share the rest).
use std::collections::BTreeMap;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap},
};

use crate::report::{CpuRow, IrqRow, NapiRow, device_label, fit, si};

use super::{
    app::{App, Focus, History, Snapshot, View},
    balance::{BalanceLog, EntryKind},
};

/// Smallest screen the layout is made for; below it a message asks for more room.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
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
pub struct Pages {
    pub irqs: usize,
    pub napi: usize,
}

/// Draws the screen; returns how many rows the tables showed.
pub fn draw(f: &mut Frame, app: &App) -> Pages {
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

/// "0.07", "12.3", "100": at most 5 characters for 0..=100.
fn pct(x: f64) -> String {
    // Sums of nothing are -0.0; measured time is never negative.
    let x = if x > 0.0 { x } else { 0.0 };
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

fn main_view(f: &mut Frame, app: &App, data: &Snapshot, area: Rect) -> Pages {
    let report = &data.report;
    let wide = area.width >= WIDE;
    let (cpu_lines, cpu_layout) = cpu_layout(&report.cpus, area.width, area.height / 3);
    let balance_h = match &app.balance {
        Some(_) => (area.height / 4).clamp(4, 10),
        None => 0,
    };
    let rest = area.height.saturating_sub(cpu_lines + 1 + balance_h);
    // The NAPI panel gets what its rows need up to 40%, at least its header and two rows.
    let napi_need = if report.napi.is_empty() {
        2
    } else {
        report.napi.len() as u16 + 2
    };
    let napi_h = napi_need
        .min(rest * 2 / 5)
        .max(if report.napi.is_empty() { 2 } else { 4 });
    let [cpu_area, irq_area, napi_area, balance_area] = Layout::vertical([
        Constraint::Length(cpu_lines + 1),
        Constraint::Fill(1),
        Constraint::Length(napi_h),
        Constraint::Length(balance_h),
    ])
    .areas(area);

    cpus(f, &report.cpus, &cpu_layout, cpu_area);
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
    let net_rx = c.softirq_pct.get("NET_RX").copied().unwrap_or(0.0);
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

/// Poll CPUs with their share, as "2:100% 3:5%".
fn poll_cpus(n: &NapiRow) -> String {
    n.cpus
        .iter()
        .filter(|c| c.share >= 0.005)
        .map(|c| format!("{}:{:.0}%", c.cpu, c.share * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A table column: header, right-aligned or not, and a fixed width or a share of what is
/// left (`Flex(min, weight)`).
#[derive(Clone, Copy)]
enum Col {
    Fixed(&'static str, u16, bool),
    Flex(&'static str, u16, u16),
}

/// Widths for `cols` in `width` columns with one space between them: fixed ones as asked,
/// the rest shared by weight (never below their minimum).
fn widths(cols: &[Col], width: u16) -> Vec<u16> {
    let fixed: u16 = cols
        .iter()
        .map(|c| match c {
            Col::Fixed(_, w, _) => *w,
            Col::Flex(_, min, _) => *min,
        })
        .sum::<u16>()
        + cols.len().saturating_sub(1) as u16;
    let spare = width.saturating_sub(fixed);
    let weights: u16 = cols
        .iter()
        .map(|c| match c {
            Col::Flex(_, _, w) => *w,
            Col::Fixed(..) => 0,
        })
        .sum();
    let mut given = 0;
    let flex_count = cols.iter().filter(|c| matches!(c, Col::Flex(..))).count();
    let mut seen = 0;
    cols.iter()
        .map(|c| match c {
            Col::Fixed(_, w, _) => *w,
            Col::Flex(_, min, w) => {
                seen += 1;
                // The last flexible column takes the rounding rest.
                let extra = if seen == flex_count {
                    spare - given
                } else {
                    spare * w / weights.max(1)
                };
                given += extra;
                min + extra
            }
        })
        .collect()
}

/// One row of cells cut to their widths (with a `~` where cut), aligned as the column says.
fn cells(cols: &[Col], widths: &[u16], values: Vec<String>) -> Vec<Cell<'static>> {
    cols.iter()
        .zip(widths)
        .zip(values)
        .map(|((c, w), v)| {
            let w = *w as usize;
            let v = fit(&v, w);
            Cell::from(match c {
                Col::Fixed(_, _, true) => format!("{v:>w$}"),
                _ => v,
            })
        })
        .collect()
}

fn header_row(cols: &[Col], widths: &[u16]) -> Row<'static> {
    // Headers of squeezed columns shorten rather than get cut.
    let short = |h: &'static str, w: u16| -> &'static str {
        let alternatives: &[&'static str] = match h {
            "DEVICE/QUEUE" => &["DEVICE/QUEUE", "DEVICE", "DEV"],
            "AFFINITY" => &["AFFINITY", "AFF"],
            "POLLS ON CPU" => &["POLLS ON CPU", "POLLS ON"],
            _ => &[h],
        };
        alternatives
            .iter()
            .find(|a| a.len() <= w as usize)
            .copied()
            .unwrap_or(h)
    };
    let names = cols
        .iter()
        .zip(widths)
        .map(|(c, w)| match c {
            Col::Fixed(h, ..) | Col::Flex(h, ..) => short(h, *w).to_string(),
        })
        .collect();
    Row::new(cells(cols, widths, names)).style(TITLE)
}

fn constraints(widths: &[u16]) -> Vec<Constraint> {
    widths.iter().map(|w| Constraint::Length(*w)).collect()
}

/// "eth1/rx0" where the queue is known, else the short PCI address; wide: both.
fn device_short(r: &IrqRow, wide: bool) -> String {
    let full = device_label(r);
    if wide || r.netdev.is_none() {
        return full;
    }
    // device_label puts the queue after the PCI address.
    full.rsplit(' ').next().unwrap_or(&full).to_string()
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

    // INTR% next to TIME% is the product's point (interrupt counts against measured time):
    // both stay at every width. Below 80 columns HARD% and SOFT% go.
    let narrow = inner.width < 80;
    let mut cols = vec![
        Col::Fixed("IRQ", 4, true),
        Col::Flex("NAME", 10, 3),
        // Under WIDE the name (which says the queue) gets the room first.
        Col::Flex("DEVICE/QUEUE", 7, if wide { 2 } else { 1 }),
        Col::Fixed("ND", 2, true),
        if wide {
            Col::Flex("AFFINITY", 8, 1)
        } else {
            Col::Fixed("AFFINITY", 5, false)
        },
        Col::Fixed("EFF", if wide { 6 } else { 3 }, false),
        Col::Fixed("IRQ/s", 6, true),
    ];
    if !narrow {
        cols.extend([Col::Fixed("HARD%", 5, true), Col::Fixed("SOFT%", 5, true)]);
    }
    if wide {
        cols.push(Col::Fixed("TOTAL%", 6, true));
    }
    cols.extend([Col::Fixed("INTR%", 5, true), Col::Fixed("TIME%", 5, true)]);
    if wide {
        cols.extend([
            Col::Fixed("STUCK", 6, false),
            Col::Flex("NAPI POLLS ON CPU", 10, 2),
        ]);
    } else {
        cols.push(Col::Fixed("STK", 4, false));
    }
    let w = widths(&cols, inner.width);
    let sel = app.selected_index(&rows);
    let napi_of: BTreeMap<u32, Vec<&NapiRow>> =
        data.report.napi.iter().fold(BTreeMap::new(), |mut m, n| {
            if let Some(irq) = n.irq {
                m.entry(irq).or_default().push(n);
            }
            m
        });
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(app.irq_offset)
        .take(page)
        .map(|(i, r)| {
            let stuck = data.sticking.get(&r.irq);
            let mut values = vec![
                r.irq.to_string(),
                r.name.clone(),
                device_short(r, wide),
                r.node.map_or("-".into(), |n| n.to_string()),
                r.smp_affinity.clone().unwrap_or_else(|| "-".into()),
                r.effective_affinity.clone().unwrap_or_else(|| "-".into()),
                si(r.interrupts_per_s),
            ];
            if !narrow {
                values.extend([pct(r.hardirq_pct), pct(r.softirq_pct)]);
            }
            if wide {
                values.push(pct(r.weight_pct));
            }
            values.extend([
                format!("{:.1}", r.interrupt_share * 100.0),
                format!("{:.1}", r.time_share * 100.0),
            ]);
            if wide {
                let polls: Vec<String> = napi_of
                    .get(&r.irq)
                    .map(|v| v.iter().map(|n| poll_cpus(n)).collect())
                    .unwrap_or_default();
                values.extend([sticking_label(stuck), polls.join(" | ")]);
            } else {
                values.push(sticking_label(stuck));
            }
            let mut style = if stuck.is_some() {
                STICKING
            } else {
                Style::new()
            };
            if Some(i) == sel {
                style = style.patch(focus_style(app, Focus::Irqs));
            }
            Row::new(cells(&cols, &w, values)).style(style)
        })
        .collect();
    let empty = body.is_empty();
    let table = Table::new(body, constraints(&w))
        .header(header_row(&cols, &w))
        .column_spacing(1);
    f.render_widget(table, inner);
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

/// Link methods in five columns.
fn link_short(link: &str) -> &str {
    match link {
        "co-occurrence" => "learn",
        "napi-get" => "nlirq",
        "queue-get" => "nlq",
        "backlog" => "rps",
        "none" => "-",
        other => other,
    }
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
    let mut cols = vec![
        Col::Fixed("NAPI", if wide { 18 } else { 6 }, true),
        Col::Flex("DEVICE", 8, 1),
        Col::Fixed("IRQ", 4, true),
        Col::Fixed("LINK", if wide { 13 } else { 5 }, false),
        Col::Fixed("PKT/s", 6, true),
        Col::Fixed("POLLS/s", 7, true),
        Col::Fixed("CPU%", 5, true),
    ];
    if wide {
        cols.push(Col::Fixed("FULL%", 5, true));
    }
    cols.push(Col::Flex("POLLS ON CPU", 12, 3));
    let w = widths(&cols, inner.width);
    let secs = app.data.as_ref().map_or(0.0, |d| d.report.meta.duration_s);
    let body: Vec<Row> = napi
        .iter()
        .enumerate()
        .skip(app.napi_offset)
        .take(page)
        .map(|(i, n)| {
            let mut values = vec![
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
                    n.link.to_string()
                } else {
                    link_short(n.link).to_string()
                },
                si(n.packets_per_s),
                si(if secs > 0.0 {
                    n.polls as f64 / secs
                } else {
                    0.0
                }),
                pct(n.pct),
            ];
            if wide {
                values.push(format!("{:.1}", n.budget_exhausted_share * 100.0));
            }
            values.push(poll_cpus(n));
            let style = if app.focus == Focus::Napi && i == app.napi_selected {
                focus_style(app, Focus::Napi)
            } else {
                Style::new()
            };
            Row::new(cells(&cols, &w, values)).style(style)
        })
        .collect();
    let table = Table::new(body, constraints(&w))
        .header(header_row(&cols, &w))
        .column_spacing(1);
    f.render_widget(table, inner);
    page
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
    let napi: Vec<&NapiRow> = data
        .report
        .napi
        .iter()
        .filter(|n| n.irq == Some(irq))
        .collect();
    let stuck = data.sticking.get(&irq);

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
                r.smp_affinity.as_deref().unwrap_or("-"),
                r.effective_affinity.as_deref().unwrap_or("-"),
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
    for n in &napi {
        info.push(Line::from(format!(
            "NAPI {} on {} (link: {})   {} pkt/s   polls on CPU {}",
            n.napi_id.map_or_else(|| n.id.clone(), |i| i.to_string()),
            n.device,
            n.link,
            si(n.packets_per_s),
            poll_cpus(n)
        )));
    }
    if let Some(cpus) = stuck {
        info.push(Line::styled(
            format!(
                "STICKING: NAPI polls on CPU {}, outside effective affinity {}",
                cpus.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                row.and_then(|r| r.effective_affinity.as_deref())
                    .unwrap_or("-")
            ),
            STICKING,
        ));
    }

    let hist = app.history.get(&irq);
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
        let secs = data.report.meta.duration_s;
        let dur_ns = secs * 1e9;
        let p = |ns: u64| {
            if dur_ns > 0.0 {
                ns as f64 * 100.0 / dur_ns
            } else {
                0.0
            }
        };
        let eff = r
            .effective_affinity
            .as_deref()
            .and_then(|s| crate::cpumask::CpuSet::parse_list(s).ok());
        let node_of = |cpu: u32| {
            data.report
                .cpus
                .iter()
                .find(|c| c.cpu == cpu)
                .and_then(|c| c.node)
                .map_or("-".into(), |n| n.to_string())
        };
        let body: Vec<Row> = r
            .cpus
            .iter()
            .map(|c| {
                let in_eff = eff.as_ref().is_some_and(|e| e.contains(c.cpu));
                let sticks = stuck.is_some_and(|v| v.contains(&c.cpu));
                let note = match (in_eff, sticks) {
                    (true, _) => "effective affinity",
                    (false, true) => "NAPI polls here: sticking",
                    (false, false) if c.softirq_ns > 0 => "NAPI polls here",
                    _ => "",
                };
                let style = if sticks { STICKING } else { Style::new() };
                Row::new(vec![
                    format!("{:>4}", c.cpu),
                    format!("{:>4}", node_of(c.cpu)),
                    format!(
                        "{:>7}",
                        si(if secs > 0.0 {
                            c.interrupts as f64 / secs
                        } else {
                            0.0
                        })
                    ),
                    format!("{:>6}", pct(p(c.hardirq_ns))),
                    format!("{:>6}", pct(p(c.softirq_ns))),
                    format!("{:>6}", pct(p(c.hardirq_ns + c.softirq_ns))),
                    note.to_string(),
                ])
                .style(style)
            })
            .collect();
        let table = Table::new(
            body,
            [
                Constraint::Length(4),
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(vec![
                " CPU".to_string(),
                "NODE".into(),
                format!("{:>7}", "IRQ/s"),
                format!("{:>6}", "HARD%"),
                format!("{:>6}", "SOFT%"),
                "TOTAL%".into(),
                String::new(),
            ])
            .style(TITLE),
        )
        .column_spacing(1);
        let t = Rect {
            y: table_area.y + 1,
            height: table_area.height.saturating_sub(1),
            ..table_area
        };
        f.render_widget(table, t);
    }
    sparklines(f, hist, spark_area);
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
