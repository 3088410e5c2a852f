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
    /// Facts the guest reported (`INFO <key> <value>`), e.g. the NAPI link method.
    pub info: Vec<String>,
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
            out.info.push(info.to_owned());
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

/// The table, then each failure's detail (every check's when `verbose`), then the facts each
/// kernel reported.
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
                elapsed: Duration::from_secs(40),
            },
            Row {
                label: "host".into(),
                release: "6.18".into(),
                checks: vec![Check::new("host-tests", Status::Fail, "1 failed")],
                info: vec![],
                elapsed: Duration::from_secs(5),
            },
        ];
        let table = render(&rows, false);
        let mut lines = table.lines();
        assert!(lines.next().unwrap().contains("guest  host-tests  time"));
        assert!(lines.next().unwrap().contains("PASS   -"));
        assert!(table.contains("host host-tests FAIL: 1 failed"));
    }
}
