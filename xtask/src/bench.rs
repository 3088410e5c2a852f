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
    };
    step(&format!("cargo bench -p {package} --bench {bench}"));
    run_checked(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["bench", "-p", package, "--bench", bench]),
    )?;
    Ok(ExitCode::SUCCESS)
}
