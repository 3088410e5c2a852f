//! The commands, one file each: what `balancer --help` lists. A command parses nothing
//! itself (clap does, with the value parsers below), runs the shared start-up
//! ([`startup`]), drives the stages (monitor, engine, actuation, the views) and prints
//! what they return. The stages below neither parse arguments nor print.
use std::{io::Write as _, process::ExitCode, time::Duration};

use crate::{
    Fatal,
    cli::{Cli, Command},
    config, output,
};

pub mod daemon;
pub mod plan;
pub mod report;
pub mod restore;
pub mod startup;
pub mod top;
pub mod topology;

/// Runs the command `cli` names and turns its result into the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Report(args) => report::run(&args),
        Command::Topology(args) => topology::run(&args),
        Command::Daemon(args) => daemon::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Restore(args) => restore::run(&args),
        Command::Top(args) => top::run(&args),
    };
    output::flush();
    // A failed write to stdout outranks what it caused (the command stops at the failed
    // write and returns its error).
    match (output::failure(), result) {
        // A command that failed otherwise (restore: values not written back) keeps its code.
        (Some(output::Failure::ClosedPipe), Ok(code)) if code != ExitCode::SUCCESS => code,
        (Some(output::Failure::ClosedPipe), _) => ExitCode::from(CLOSED_PIPE),
        (Some(output::Failure::Error(e)), _) => {
            let _ = writeln!(std::io::stderr(), "balancer: writing standard output: {e}");
            ExitCode::FAILURE
        }
        (None, Ok(code)) => code,
        (None, Err(err)) => report_error(&err),
    }
}

/// Exit code when the reader of stdout went away: what a shell shows for a program that
/// SIGPIPE ended (128 + 13), so `set -o pipefail` sees the output was cut as with any other
/// tool. Rust ignores SIGPIPE (the daemon's metrics socket needs that), so we say it.
const CLOSED_PIPE: u8 = 141;

/// One line for errors the user fixes; the cause chain for everything else.
fn report_error(err: &anyhow::Error) -> ExitCode {
    // Not eprintln!: it panics when stderr is gone too.
    let mut stderr = std::io::stderr();
    if let Some(fatal) = err.downcast_ref::<Fatal>() {
        let _ = writeln!(stderr, "balancer: {fatal}");
        return ExitCode::from(fatal.code);
    }
    let _ = writeln!(stderr, "balancer: {err:#}");
    ExitCode::FAILURE
}

/// One line on stderr; not eprintln!, which panics when stderr is gone.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "balancer: {line}");
}

/// clap value parser for every duration on the command line (`--duration`, `--interval`):
/// seconds, fractions allowed, within [`config::SECONDS`], the range the config file's
/// intervals have too.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if v.is_finite() && config::SECONDS.contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "must be between {} and {} seconds, got {v}",
            config::SECONDS.start(),
            config::SECONDS.end()
        ))
    }
}

/// clap value parser for `--top`: a count of at least 1 (0 would print empty tables).
pub(crate) fn parse_top(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1 (leave --top out for the default)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a count")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_range() {
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(" 86400 "), Ok(Duration::from_secs(86_400)));
        for bad in ["0", "0.09", "86400.5", "-1", "inf", "NaN"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("between 0.1 and 86400 seconds"), "{bad}: {e}");
        }
        assert!(parse_duration("5s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn top_is_a_positive_count() {
        assert_eq!(parse_top("3"), Ok(3));
        assert!(parse_top("0").unwrap_err().contains("at least 1"));
        assert!(parse_top("x").unwrap_err().contains("not a count"));
    }
}
