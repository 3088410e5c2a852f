//! The host kernel's row: the host integration tests, built for the guests' static target so
//! that the whole matrix shares one build of balancer.
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result};

use super::binaries::StaticTarget;
use super::proc::{Waited, wait};
use super::report::{Check, Row, Status, tail};

/// The tests run the balancer binary, which cargo builds only for its own package's tests.
const BUILD: &[&str] = &["build", "--release", "-p", "balancer", "--bin", "balancer"];
/// Root-only tests are #[ignore = "needs root"]: as root they must run (and fail, not skip).
const TEST: &[&str] = &[
    "test",
    "-p",
    "balancer-tests",
    "--release",
    "--",
    "--include-ignored",
];

/// Builds what [`run`] runs, so that its build does not compete with guests running beside
/// it. A failure is left for [`run`] to meet again and report in the row.
pub fn prebuild(root: &Path, dir: &Path, target: &StaticTarget) {
    let log = fs::create_dir_all(dir).and_then(|()| File::create(dir.join("cargo-build.log")));
    let Ok(log) = log else { return };
    if cargo(target.cargo(root, BUILD), &log).is_ok_and(|s| s.success()) {
        // TEST's cargo arguments (not libtest's, after "--"), built only.
        let mut no_run: Vec<&str> = TEST.iter().copied().take_while(|a| *a != "--").collect();
        no_run.push("--no-run");
        let _ = cargo(target.cargo(root, &no_run), &log);
    }
}

pub fn run(root: &Path, dir: &Path, target: &StaticTarget) -> Result<Row> {
    eprintln!("xtask vm: host: cargo test -p balancer-tests --release (static target)");
    fs::create_dir_all(dir)?;
    let log_path = dir.join("cargo-test.log");
    let log = File::create(&log_path).context("creating the test log")?;
    let start = Instant::now();
    let mut what = BUILD;
    let mut status = cargo(target.cargo(root, BUILD), &log)?;
    if status.success() {
        what = TEST;
        status = cargo(target.cargo(root, TEST), &log)?;
    }
    let what = format!("cargo {} (static target)", what.join(" "));
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let summary = summarize(&output);
    let check = if status.success() {
        Check::new("host-tests", Status::Pass, summary.clone())
    } else {
        Check::new(
            "host-tests",
            Status::Fail,
            format!("{summary}; {what}: {status}\n{}", tail(&output, 30)),
        )
    };
    Ok(Row {
        label: "host".into(),
        release: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        checks: vec![check],
        info: vec![format!("host-tests: {summary}")],
        table: Vec::new(),
        missing: Vec::new(),
        elapsed: start.elapsed(),
    })
}

/// Runs cargo with its output appended to `log`.
fn cargo(mut cmd: Command, log: &File) -> Result<ExitStatus> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .context("starting cargo")?;
    match wait(&mut child, None, "cargo")? {
        Waited::Exited(status) => Ok(status),
        Waited::TimedOut => unreachable!("no timeout was set"),
    }
}

/// Adds up libtest's `test result:` lines.
fn summarize(output: &str) -> String {
    let mut totals = [0u64; 3];
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        for (i, key) in ["passed", "failed", "ignored"].iter().enumerate() {
            let words: Vec<&str> = line.split([' ', ';']).filter(|w| !w.is_empty()).collect();
            if let Some(n) = words
                .windows(2)
                .find(|w| w[1] == *key)
                .and_then(|w| w[0].parse::<u64>().ok())
            {
                totals[i] += n;
            }
        }
    }
    format!(
        "{} passed, {} failed, {} ignored",
        totals[0], totals[1], totals[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_adds_up_test_binaries() {
        let out = "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured\n";
        assert_eq!(summarize(out), "5 passed, 1 failed, 1 ignored");
    }
}
