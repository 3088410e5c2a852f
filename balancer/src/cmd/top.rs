//! `balancer top`: the live terminal view; with `--balance`, the daemon's engine in-process.
use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::Error;
use super::{Result, startup};
use crate::{
    actuation::Lock,
    config::Config,
    engine::{self, Applier, Engine},
    monitor::Monitor,
    policy::{self, Snapshot},
    report::Report,
    system,
    tui::{
        self,
        app::App,
        balance::{BalanceLog, StepOutcome},
    },
};

/// Watch interrupts live: CPUs by NUMA node, IRQs by real CPU time, NAPI instances and
/// where they poll, refreshed every interval. `?` inside lists the keys.
#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    /// Refresh interval in seconds (0.1 to 86400, fractions allowed); `+` and `-` change it
    /// while running.
    #[arg(short, long, default_value = "1", value_name = "SECS",
          value_parser = super::parse_duration)]
    interval: Duration,
    /// Run the balancer policy in-process each interval and show its decisions and the
    /// sticking IRQs it finds. Writes IRQ affinities unless --dry-run.
    #[arg(long)]
    balance: bool,
    /// With --balance: plan and show, write nothing.
    #[arg(long, requires = "balance")]
    dry_run: bool,
    /// With --balance: write even though irqbalance runs (the two would fight over
    /// affinities); without it top refuses with exit status 3, as the daemon does.
    #[arg(long, requires = "balance")]
    force: bool,
    /// birq-style proximity file repairing devices' NUMA nodes (`<PCI prefix> node N`).
    #[arg(long, value_name = "FILE")]
    proximity: Option<PathBuf>,
}

/// Runs the command.
pub(crate) fn run(args: &TopArgs) -> Result<ExitCode> {
    if args.balance && !args.dry_run {
        startup::refuse_beside_irqbalance(args.force)?;
    }
    if !std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "balancer top needs a terminal on stdout; for text or JSON that can be piped or \
             saved, use `balancer report` (e.g. `balancer report --duration 5 --json`)"
                .into(),
        ));
    }
    let root = startup::machine_root();
    // --balance plans with the daemon's configuration, so that top shows what the daemon
    // would do on this machine.
    let config = if args.balance {
        startup::load_config(None)?
    } else {
        Config::default()
    };
    let proximity = args.proximity.clone().or_else(|| config.proximity.clone());
    let opts = startup::read_options(proximity.as_deref(), &root)?;
    startup::measuring()?;
    let mut monitor = Monitor::start(&root, opts)?;
    if args.balance {
        startup::warn_machine(&config, monitor.model())?;
    }
    // Whether /proc/stat counts IRQ time at all is a property of the kernel: read it once.
    let stat_irq_time = system::stat::read(&root)?
        .values()
        .any(|t| t.irq + t.softirq > 0);
    let mut balancing = if args.balance {
        Some(Balancing::start(&root, config, args.dry_run)?)
    } else {
        None
    };

    let mut app = App::new(args.interval);
    app.balance = balancing.as_ref().map(|_| BalanceLog::new(args.dry_run));

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }

    let mut sampler = |app: &mut App, started: Instant| match monitor.tick() {
        Ok(tick) => {
            let report = Report::build(
                &tick.attribution,
                monitor.model(),
                monitor.status(),
                monitor.netdev_status(),
                stat_irq_time,
                None,
            );
            // The policy's input: the engine plans on it, and the table shows the policy's
            // sticking verdict on it.
            let snap = Snapshot::build(monitor.model(), &tick.attribution);
            if let (Some(b), Some(log)) = (balancing.as_mut(), app.balance.as_mut()) {
                let step = b.engine.step(&snap);
                log.record(started.elapsed().as_secs_f64(), StepOutcome::of(&step));
            }
            app.ingest(report, &policy::stuck(&snap));
        }
        Err(e) => app.failed(format!("{e:#}")),
    };
    let result = tui::run(&mut app, &stop, &mut sampler);
    if let Some(b) = balancing {
        b.stop();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `--balance`: the daemon's engine in-process, and unless dry run the daemon's lock, held
/// while writing so the two never fight (the originals are journaled for `balancer
/// restore`).
struct Balancing {
    engine: Engine<Box<dyn Applier>>,
    lock: Option<Lock>,
}

impl Balancing {
    fn start(root: &Path, config: Config, dry_run: bool) -> Result<Balancing> {
        let lock = if dry_run {
            None
        } else {
            Some(startup::lock(&config.lock_file)?)
        };
        let applier = engine::machine_applier(root, &config, dry_run)?;
        Ok(Balancing {
            engine: Engine::new(config, applier),
            lock,
        })
    }

    /// Lets the lock go, and says how to undo what was written.
    fn stop(self) {
        let journal = &self.engine.config().journal;
        if self.lock.is_some() && journal.exists() {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "balancer top: affinities were changed; `balancer restore` puts the \
                     originals back (journal {})\n",
                    journal.display()
                )
                .as_bytes(),
            );
        }
    }
}
