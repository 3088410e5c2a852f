//! The `balancer` command line.
use std::{io::Write as _, process::ExitCode};

use balancer::{
    Fatal,
    cli::{Cli, Command},
    output,
};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Report(args) => balancer::report::run(&args),
        Command::Topology(args) => balancer::system::topology::run(args),
        Command::Daemon(args) => balancer::daemon::run_daemon(&args),
        Command::Plan(args) => balancer::daemon::run_plan(&args),
        Command::Restore(args) => balancer::daemon::run_restore(&args),
        Command::Top(args) => balancer::tui::run(&args),
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
