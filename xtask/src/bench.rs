//! `cargo xtask bench <what>`: benchmarks that print their figures (never run by tests).
use std::process::{Command, ExitCode};

use crate::{
    setup::{self, SetupArgs, step},
    tasks::{run_checked, workspace_root},
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Bench {
    /// End-to-end cost per NET_RX softirq (synchronous loopback loop) of balancer, empty
    /// programs and bpftrace; then program-only bpf_stats figures (root).
    Probes,
    /// CPU of `balancer top` at a 1 s refresh in a tmux pane, idle and under veth traffic
    /// (root, tmux).
    Top,
    /// CPU and resident memory of `balancer daemon --dry-run` at its default intervals over
    /// 180 s (root).
    Daemon,
    /// The balancer simulator's table: weight vs count vs rnd in every scenario.
    Simulator,
    /// Time to build the system model of the generated 1500-IRQ, 256-CPU machine.
    Model,
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
        Bench::Model => ("balancer", "model"),
        Bench::Daemon => return bench_bin("daemon-bench", &["180"]),
        Bench::Simulator => return bench_bin("sim-table", &[]),
    };
    if matches!(args.what, Bench::Top | Bench::Probes) {
        // The bench runs the release binary next to its own executable (the probes bench
        // for its daemon figure).
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

/// Builds balancer (release) and runs a measuring binary of balancer-tests against it.
fn bench_bin(bin: &str, args: &[&str]) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    step("cargo build --release -p balancer");
    run_checked(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "balancer",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    step(&format!(
        "cargo run -p balancer-tests --release --bin {bin}"
    ));
    run_checked(
        Command::new("cargo")
            .current_dir(&root)
            .env("BALANCER_BIN", target.join("release/balancer"))
            .args([
                "run",
                "-q",
                "-p",
                "balancer-tests",
                "--release",
                "--bin",
                bin,
                "--",
            ])
            .args(args),
    )?;
    Ok(ExitCode::SUCCESS)
}
