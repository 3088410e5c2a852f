//! `balancer topology`: the machine as the balancer sees it.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use super::{Result, startup};
use crate::{
    output,
    system::{SystemModel, topology},
};

/// Print the machine as the balancer sees it: CPUs by node, devices, IRQs and where each one's
/// node came from.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TopologyArgs {
    /// Read /proc and /sys under this directory instead of the live machine.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Proximity override file (birq's format: `<pci address or prefix> node N|cpumask HEX`).
    #[arg(long, value_name = "FILE")]
    proximity: Option<PathBuf>,
    /// Print the model as JSON.
    #[arg(long)]
    json: bool,
    /// Text: the full layout whatever the terminal's width (as when piped); else the tables
    /// fit `COLUMNS` or the terminal, 80 columns at least.
    #[arg(long)]
    wide: bool,
}

/// Runs the command.
pub(crate) fn run(args: &TopologyArgs) -> Result<ExitCode> {
    let opts = startup::read_options(args.proximity.as_deref(), &args.root)?;
    let model = SystemModel::read(&args.root, &opts)
        .with_context(|| format!("reading the system under {}", args.root.display()))?;
    let out = if args.json {
        serde_json::to_string_pretty(&model)? + "\n"
    } else {
        topology::render_width(
            &model,
            output::columns(args.wide).unwrap_or(topology::WIDTH),
        )
    };
    output::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
