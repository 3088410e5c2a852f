//! `cargo xtask bench <what>`: benchmarks that print their figures (never run by tests).
use std::process::{Command, ExitCode};

use crate::{
    setup::{self, SetupArgs, step},
    tasks::{run_checked, workspace_root},
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Bench {
    /// ns per event of each eBPF program against a bpftrace softirq timer (root).
    Probes,
    /// CPU of `balancer top` at a 1 s refresh in a tmux pane, idle and under veth traffic
    /// (root, tmux).
    Top,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub what: Bench,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    setup::run(&SetupArgs::default())?;
    let (package, bench) = match args.what {
        Bench::Probes => ("balancer-tests", "probes"),
        Bench::Top => ("balancer-tests", "top"),
    };
    if matches!(args.what, Bench::Top) {
        // The bench runs the release binary next to its own executable.
        step("cargo build --release -p balancer");
        run_checked(Command::new("cargo").current_dir(workspace_root()).args([
            "build",
            "--release",
            "-p",
            "balancer",
        ]))?;
    }
    step(&format!("cargo bench -p {package} --bench {bench}"));
    run_checked(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["bench", "-p", package, "--bench", bench]),
    )?;
    Ok(ExitCode::SUCCESS)
}
