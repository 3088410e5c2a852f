//! The `balancer` command line: parsed by clap from [`balancer::cli`], run by
//! [`balancer::cmd`].
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    balancer::cmd::main(balancer::cli::Cli::parse())
}
