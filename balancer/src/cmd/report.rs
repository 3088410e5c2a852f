//! `balancer report`: sample for a while, then print where interrupt time really went.
use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{Result, startup};
use crate::{
    monitor::Monitor,
    output,
    report::{self, Report},
    system,
};

/// Sample for a while, then print each IRQ's real CPU time: its hardirq handler time plus the
/// NET_RX softirq time of the NAPI instances it schedules, next to its share of interrupts.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// How long to sample, in seconds (0.1 to 86400, fractions allowed). Ctrl-C ends early
    /// and reports what was measured so far.
    #[arg(short, long, default_value = "5", value_name = "SECS",
          value_parser = super::parse_duration)]
    duration: Duration,
    /// Print one JSON object (keys: meta, cpus, irqs, softirqs, napi, unattributed) instead
    /// of tables.
    #[arg(long)]
    json: bool,
    /// Show only the N IRQs and NAPI instances with the most CPU time, N at least 1 (text:
    /// default 20; JSON: default all).
    #[arg(long, value_name = "N", value_parser = super::parse_top)]
    top: Option<usize>,
    /// birq-style proximity file repairing devices' NUMA nodes (`<PCI prefix> node N`).
    #[arg(long, value_name = "FILE")]
    proximity: Option<PathBuf>,
    /// Text: the full layout whatever the terminal's width (as when piped); else the tables
    /// fit `COLUMNS` or the terminal, 80 columns at least.
    #[arg(long)]
    wide: bool,
}

/// Runs the command.
pub(crate) fn run(args: &ReportArgs) -> Result<ExitCode> {
    let root = startup::machine_root();
    let opts = startup::read_options(args.proximity.as_deref(), &root)?;
    startup::measuring()?;
    let mut monitor = Monitor::start(&root, opts)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    wait(args.duration, &stop, &mut monitor)?;

    let tick = monitor.tick()?;
    let (model, status, attribution) = (monitor.model(), monitor.status(), &tick.attribution);
    let netlink = monitor.netdev_status();
    let stat_irq_time = system::stat::read(&root)?
        .values()
        .any(|t| t.irq + t.softirq > 0);
    let top = args.top.or(if args.json { None } else { Some(20) });
    let mut report = Report::build(attribution, model, status, netlink, stat_irq_time, top);
    report.meta.coverage = report::Coverage {
        napi_pruned: monitor.napi_pruned(),
        ..report::coverage(&tick.interval, status, &monitor.program_stats()?, &root)
    };
    report.meta.coverage.interrupts_measured = attribution.coverage();

    let mut out = output::stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let width = output::columns(args.wide).unwrap_or(report::FULL_WIDTH);
        out.write_all(report.to_text_width(width).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Sleeps until `total` passed or `stop` is set, with a progress line on a terminal.
/// Waits out the sampling window, reading the maps once a second so that NAPI instances
/// that came and went inside it are pruned from the kernel map, not overflow it.
fn wait(total: Duration, stop: &AtomicBool, monitor: &mut Monitor) -> anyhow::Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let step = Duration::from_millis(100);
    let mut last_shown = u64::MAX;
    let mut last_read = 0;
    while !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        if elapsed.as_secs() != last_read {
            last_read = elapsed.as_secs();
            monitor.maintain()?;
        }
        if tty && elapsed.as_secs() != last_shown {
            last_shown = elapsed.as_secs();
            // Not eprint!: it panics when stderr is gone.
            let _ = write!(
                std::io::stderr(),
                "\rsampling {:>4.0}/{:.0} s (Ctrl-C reports early)",
                elapsed.as_secs_f64(),
                total.as_secs_f64()
            );
        }
        std::thread::sleep(step.min(total - elapsed));
    }
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    Ok(())
}
