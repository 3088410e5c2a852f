//! The commands, one file each: what `balancer --help` lists. A command parses nothing
//! itself (clap does, with the value parsers below), runs the shared start-up
//! ([`startup`]), drives the stages (monitor, engine, actuation, the views) and prints
//! what they return. The stages below neither parse arguments nor print.
use std::{io::Write as _, process::ExitCode, time::Duration};

pub(crate) use error::{EXIT_STATUS_HELP, Error, Result, exit};

use crate::{
    cli::{Cli, Command},
    config, output,
};

pub(crate) mod daemon;
pub(crate) mod error;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod restore;
pub(crate) mod startup;
pub(crate) mod top;
pub(crate) mod topology;

/// Runs the command `cli` names and turns its result into the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let result: Result<ExitCode> = match cli.command {
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
        (Some(output::Failure::ClosedPipe), _) => ExitCode::from(exit::CLOSED_PIPE),
        (Some(output::Failure::Error(e)), _) => {
            say(&format!("writing standard output: {e}"));
            ExitCode::from(exit::RUNTIME)
        }
        (None, Ok(code)) => code,
        (None, Err(err)) => {
            say(&err.line());
            ExitCode::from(err.exit_code())
        }
    }
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
