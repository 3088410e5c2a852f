//! `cargo xtask`: the project's developer commands.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod setup;
mod tasks;
mod vm;

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Developer commands for balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing (nightly rust-src, bpf-linker, cargo-deb, Debian packages),
    /// idempotently.
    Setup(setup::SetupArgs),
    /// Set up, build balancer (release) and run it: `cargo xtask run -- report`.
    Run(tasks::RunArgs),
    /// Set up, build the release binary and the Debian package (target/debian/*.deb).
    Package,
    /// Set up and run every test: fmt, clippy, unit, host integration (root), kernel VMs.
    Test(tasks::TestArgs),
    /// Run a benchmark and print its figures.
    Bench(bench::BenchArgs),
    /// Boot Debian kernels under qemu with a NUMA, multi-queue NIC topology and run the
    /// guest checks in each, plus the host integration tests on the running kernel.
    Vm(vm::VmArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => tasks::run(&args),
        Command::Package => tasks::package().map(|deb| {
            println!("{}", deb.display());
            ExitCode::SUCCESS
        }),
        Command::Test(args) => tasks::test(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Vm(args) => vm::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
