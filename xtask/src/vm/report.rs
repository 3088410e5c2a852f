//! Results: the guest's `CHECK`/`INFO`/`GUEST-DONE` lines, and the kernel x check table.
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_owned(),
            status,
            detail: detail.into(),
        }
    }
}

/// One kernel's results.
#[derive(Debug)]
pub struct Row {
    /// `6.1`, `6.12`, `host`.
    pub label: String,
    pub release: String,
    pub checks: Vec<Check>,
    /// Facts the guest reported (`INFO <text>`) that are neither table cells nor missing.
    pub info: Vec<String>,
    /// The per-kernel table's cells (`INFO table.<column> <value>`), in the guest's order.
    pub table: Vec<(String, String)>,
    /// What this kernel lacks, and why (`INFO missing <text>`).
    pub missing: Vec<String>,
    /// Wall time for this kernel: fetching, initramfs and the guest (or the host tests).
    pub elapsed: Duration,
}

impl Row {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

/// What a guest's results port said.
#[derive(Debug, Default)]
pub struct GuestLines {
    pub checks: Vec<Check>,
    pub info: Vec<String>,
    pub table: Vec<(String, String)>,
    pub missing: Vec<String>,
    /// The guest got to the end of its checks.
    pub done: bool,
    /// A check that started and never reported: where a hung or dying guest was.
    pub unfinished: Option<String>,
}

/// Parses `START <name>`, `CHECK <name> PASS|FAIL|SKIP <detail>`, `INFO <text>` and
/// `GUEST-DONE`; anything else (a line cut by a dying guest) is ignored.
pub fn parse_guest(text: &str) -> GuestLines {
    let mut out = GuestLines::default();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line == "GUEST-DONE" {
            out.done = true;
        } else if let Some(name) = line.strip_prefix("START ") {
            out.unfinished = Some(name.to_owned());
        } else if let Some(info) = line.strip_prefix("INFO ") {
            if let Some(cell) = info.strip_prefix("table.") {
                let (column, value) = cell.split_once(' ').unwrap_or((cell, ""));
                out.table.push((column.to_owned(), value.to_owned()));
            } else if let Some(missing) = info.strip_prefix("missing ") {
                out.missing.push(missing.to_owned());
            } else {
                out.info.push(info.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("CHECK ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(name), Some(status)) = (parts.next(), parts.next()) else {
                continue;
            };
            let status = match status {
                "PASS" => Status::Pass,
                "FAIL" => Status::Fail,
                "SKIP" => Status::Skip,
                _ => continue,
            };
            // Details travel on one line; the guest encodes its line breaks as " | ".
            let detail = parts.next().unwrap_or("").replace(" | ", "\n");
            if out.unfinished.as_deref() == Some(name) {
                out.unfinished = None;
            }
            out.checks.push(Check::new(name, status, detail));
        }
    }
    out
}

/// The last `n` lines of `text`, indented for the report.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {}", l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Header text of the per-kernel table's columns; others keep their key.
const TABLE_COLUMNS: &[(&str, &str)] = &[
    ("programs", "program type"),
    ("exact-method", "exact link"),
    ("links-spread", "links, IRQs spread"),
    ("links-on-cpu0", "links, all IRQs on CPU 0"),
    ("managed-write", "managed IRQ write"),
    ("field-reads", "field reads"),
];

/// What each kernel gave the measurement: program type, link methods per dut rx queue (as
/// the guest left the IRQs, and with all of them on CPU 0), the exact method the kernel
/// offers, field reads; then per kernel what is missing and why.
fn render_kernels(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.table.is_empty() || !r.missing.is_empty())
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut keys: Vec<&str> = TABLE_COLUMNS.iter().map(|(k, _)| *k).collect();
    for (k, _) in rows.iter().flat_map(|r| &r.table) {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    let header = |k: &str| {
        TABLE_COLUMNS
            .iter()
            .find(|(key, _)| *key == k)
            .map_or(k.to_owned(), |(_, h)| (*h).to_owned())
    };
    let cell = |r: &Row, k: &str| {
        r.table
            .iter()
            .find(|(key, _)| key == k)
            .map_or("-".to_owned(), |(_, v)| v.clone())
    };
    let mut columns: Vec<(String, usize)> = vec![(
        "kernel".to_owned(),
        rows.iter()
            .map(|r| r.label.len())
            .chain([6])
            .max()
            .unwrap_or(6),
    )];
    for k in &keys {
        let h = header(k);
        let w = rows.iter().map(|r| cell(r, k).len()).chain([h.len()]).max();
        columns.push((h, w.unwrap_or(0)));
    }
    let mut out = String::from(
        "
per kernel:
",
    );
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for ((_, w), c) in columns.iter().zip(&cells) {
            let _ = write!(l, "{c:w$}  ");
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|(h, _)| h.clone()).collect())
    );
    for r in &rows {
        let mut cells = vec![r.label.clone()];
        cells.extend(keys.iter().map(|k| cell(r, k)));
        let _ = writeln!(out, "{}", line(cells));
    }
    for r in rows.iter().filter(|r| !r.missing.is_empty()) {
        let _ = writeln!(
            out,
            "
{} missing:",
            r.label
        );
        for m in &r.missing {
            let _ = writeln!(out, "  {m}");
        }
    }
    out
}

/// The table, then each failure's detail (every check's when `verbose`), then the facts each
/// kernel reported, then the per-kernel table of methods.
pub fn render(rows: &[Row], verbose: bool) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for check in rows.iter().flat_map(|r| &r.checks) {
        if !columns.contains(&check.name.as_str()) {
            columns.push(&check.name);
        }
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} ({})", r.label, r.release))
        .collect();
    let first = labels.iter().map(String::len).chain([6]).max().unwrap_or(6);

    let mut out = String::new();
    let _ = write!(out, "{:first$}", "kernel");
    for c in &columns {
        let _ = write!(out, "  {c}");
    }
    let _ = writeln!(out, "  time");
    for (row, label) in rows.iter().zip(&labels) {
        let _ = write!(out, "{label:first$}");
        for c in &columns {
            let cell = row
                .checks
                .iter()
                .find(|k| k.name == *c)
                .map_or("-", |k| k.status.as_str());
            let _ = write!(out, "  {cell:w$}", w = c.len());
        }
        let _ = writeln!(out, "  {:.0}s", row.elapsed.as_secs_f64());
    }
    for row in rows {
        for check in row
            .checks
            .iter()
            .filter(|c| verbose || c.status != Status::Pass)
        {
            let _ = writeln!(
                out,
                "\n{} {} {}: {}",
                row.label,
                check.name,
                check.status.as_str(),
                check.detail
            );
        }
    }
    for row in rows.iter().filter(|r| !r.info.is_empty()) {
        let _ = writeln!(out, "\n{} reported:", row.label);
        for info in &row.info {
            let _ = writeln!(out, "  {info}");
        }
    }
    out.push_str(&render_kernels(rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_parse_with_carriage_returns_and_noise() {
        let text = "CHECK setup PASS dut=eth1\r\nINFO napi-link co-occurrence\r\n\
                    garbage\r\nSTART napi-link\r\nCHECK napi-link FAIL q0: none | q1: none\r\n\
                    CHECK cut\r\nGUEST-DONE\r\n";
        let lines = parse_guest(text);
        assert!(lines.done);
        assert_eq!(lines.unfinished, None);
        assert_eq!(lines.info, ["napi-link co-occurrence"]);
        assert_eq!(lines.checks.len(), 2);
        assert_eq!(lines.checks[1].status, Status::Fail);
        assert_eq!(lines.checks[1].detail, "q0: none\nq1: none");
    }

    #[test]
    fn a_check_without_its_result_is_unfinished() {
        let lines = parse_guest("START a\nCHECK a PASS\nSTART daemon\n[ 62.2] rcu: stall\n");
        assert!(!lines.done);
        assert_eq!(lines.unfinished.as_deref(), Some("daemon"));
    }

    #[test]
    fn table_has_a_column_per_check_and_dashes_for_missing_ones() {
        let rows = [
            Row {
                label: "6.1".into(),
                release: "6.1.0-1".into(),
                checks: vec![Check::new("guest", Status::Pass, "")],
                info: vec![],
                table: vec![],
                missing: vec![],
                elapsed: Duration::from_secs(40),
            },
            Row {
                label: "host".into(),
                release: "6.18".into(),
                checks: vec![Check::new("host-tests", Status::Fail, "1 failed")],
                info: vec![],
                table: vec![],
                missing: vec![],
                elapsed: Duration::from_secs(5),
            },
        ];
        let table = render(&rows, false);
        let mut lines = table.lines();
        assert!(lines.next().unwrap().contains("guest  host-tests  time"));
        assert!(lines.next().unwrap().contains("PASS   -"));
        assert!(table.contains("host host-tests FAIL: 1 failed"));
        assert!(!table.contains("per kernel"));
    }

    #[test]
    fn table_and_missing_lines_make_the_per_kernel_table() {
        let text = "INFO table.programs tp_btf (22 events)\nINFO table.exact-method none\n\
                    INFO missing exact links: no netdev family\nINFO napi-link something\n\
                    INFO table.links-spread q0-q3 co-occurrence\nGUEST-DONE\n";
        let lines = parse_guest(text);
        assert_eq!(lines.info, ["napi-link something"]);
        assert_eq!(lines.missing, ["exact links: no netdev family"]);
        let row = |label: &str, lines: GuestLines| Row {
            label: label.into(),
            release: "r".into(),
            checks: lines.checks,
            info: lines.info,
            table: lines.table,
            missing: lines.missing,
            elapsed: Duration::ZERO,
        };
        let other = parse_guest("INFO table.programs raw (3 events)\nINFO table.extra x\n");
        let out = render_kernels(&[row("5.10", lines), row("7.x", other)]);
        let mut l = out.lines().skip(2);
        let header = l.next().unwrap();
        assert!(header.starts_with("kernel  program type        exact link  links, IRQs spread"));
        assert!(header.ends_with("field reads  extra"), "{header}");
        assert!(
            l.next()
                .unwrap()
                .starts_with("5.10    tp_btf (22 events)  none        q0-q3")
        );
        assert!(
            l.next()
                .unwrap()
                .starts_with("7.x     raw (3 events)      -           -")
        );
        assert!(out.contains("5.10 missing:\n  exact links: no netdev family"));
    }
}
