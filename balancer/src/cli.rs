//! The command line, in the library so that the man pages and shell completions are made
//! from the very definition the binary parses (`examples/gen-docs.rs`, run by `cargo xtask
//! package`).
use clap::{Parser, Subcommand};

/// IRQ observability and balancing on measured CPU time.
///
/// Interrupt counts stopped meaning load when NAPI arrived: a busy NIC queue polls with its
/// interrupt off. balancer measures the real CPU time of every IRQ and of the softirq work it
/// causes with eBPF, and balances on that.
#[derive(Debug, Parser)]
#[command(
    name = "balancer",
    version,
    propagate_version = true,
    after_help = crate::cmd::EXIT_STATUS_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Sample for a while and print each IRQ's real CPU time (hardirq + the softirq time it
    /// causes) next to its share of interrupts.
    Report(crate::cmd::report::ReportArgs),
    /// Print the machine as the balancer sees it: CPUs by NUMA node, devices, netdevs, IRQs
    /// with their device, queue, node and affinity.
    Topology(crate::cmd::topology::TopologyArgs),
    /// Balance IRQs on measured CPU time: measure, decide, move, repeat (the config is
    /// /etc/balancer/balancer.toml, every key documented there).
    Daemon(crate::cmd::daemon::DaemonArgs),
    /// Measure one interval and print what the daemon would do now and why; changes nothing.
    Plan(crate::cmd::plan::PlanArgs),
    /// Put back every affinity and rps_cpus value the daemon changed, from its journal.
    Restore(crate::cmd::restore::RestoreArgs),
    /// Watch interrupts live: CPUs by NUMA node, IRQs by real CPU time with sticking flags,
    /// NAPI instances and where they poll.
    Top(crate::cmd::top::TopArgs),
}

/// The clap command the binary parses.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
