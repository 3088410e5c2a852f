//! The `balancer` command line.
use std::{io::Write as _, process::ExitCode};

use balancer::{Fatal, output};
use clap::{Parser, Subcommand};

/// IRQ observability and balancing on measured CPU time.
///
/// Interrupt counts stopped meaning load when NAPI arrived: a busy NIC queue polls with its
/// interrupt off. balancer measures the real CPU time of every IRQ and of the softirq work it
/// causes with eBPF, and balances on that.
#[derive(Debug, Parser)]
#[command(name = "balancer", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sample for a while and print each IRQ's real CPU time (hardirq + the softirq time it
    /// causes) next to its share of interrupts.
    Report(balancer::report::ReportArgs),
    /// Print the machine as the balancer sees it: CPUs by NUMA node, devices, netdevs, IRQs
    /// with their device, queue, node and affinity.
    Topology(balancer::system::topology::TopologyArgs),
    /// Balance IRQs on measured CPU time: measure, decide, move, repeat (config:
    /// /etc/balancer/balancer.toml, whose installed example documents every key).
    Daemon(balancer::daemon::DaemonArgs),
    /// Measure one interval and print what the daemon would do now and why; changes nothing.
    Plan(balancer::daemon::PlanArgs),
    /// Put back every affinity and rps_cpus value the daemon changed, from its journal.
    Restore(balancer::daemon::RestoreArgs),
    /// Watch interrupts live: CPUs by NUMA node, IRQs by real CPU time with sticking flags,
    /// NAPI instances and where they poll.
    Top(balancer::tui::TopArgs),
}

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
