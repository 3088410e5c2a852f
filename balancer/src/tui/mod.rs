//! `balancer top`: the live terminal view of where interrupt time goes.
//!
//! The same [`Monitor`] and [`Report`] as `balancer report`, one interval per refresh, so the
//! two never disagree. State changes are pure ([`app`]), keys are mapped in one place
//! ([`input`]), drawing reads the state only ([`render`]); this module owns the terminal and
//! the loop. The view never writes to the kernel; only `--balance` without `--dry-run` does,
//! through the same [`Engine`] and actuation as the daemon.
use std::{
    io::{IsTerminal as _, Stdout},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc, Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    cursor, event, execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::CrosstermBackend};

use crate::{
    Fatal,
    actuation::Lock,
    config::Config,
    engine::{self, Applier, Engine},
    monitor::Monitor,
    policy::{self, Snapshot},
    report::{self, Report},
    startup, system,
};

pub mod app;
pub mod balance;
pub mod input;
pub mod render;

use app::{App, Effect};
use balance::{BalanceLog, StepOutcome};

/// Watch interrupts live: CPUs by NUMA node, IRQs by real CPU time, NAPI instances and
/// where they poll, refreshed every interval. `?` inside lists the keys.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Refresh interval in seconds (0.1 to 86400, fractions allowed); `+` and `-` change it
    /// while running.
    #[arg(short, long, default_value_t = 1.0, value_name = "SECS",
          value_parser = crate::config::parse_seconds)]
    pub interval: f64,
    /// Run the balancer policy in-process each interval and show its decisions and the
    /// sticking IRQs it finds. Writes IRQ affinities unless --dry-run.
    #[arg(long)]
    pub balance: bool,
    /// With --balance: plan and show, write nothing.
    #[arg(long, requires = "balance")]
    pub dry_run: bool,
    /// With --balance: write even though irqbalance runs (the two would fight over
    /// affinities); without it top refuses with exit status 3, as the daemon does.
    #[arg(long, requires = "balance")]
    pub force: bool,
    /// birq-style proximity file repairing devices' NUMA nodes (`<PCI prefix> node N`).
    #[arg(long, value_name = "FILE")]
    pub proximity: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    if args.balance && !args.dry_run {
        startup::refuse_beside_irqbalance(args.force)?;
    }
    if !std::io::stdout().is_terminal() {
        return Err(Fatal::new(
            Fatal::USAGE,
            "balancer top needs a terminal on stdout; for text or JSON that can be piped or \
             saved, use `balancer report` (e.g. `balancer report --duration 5 --json`)",
        )
        .into());
    }
    let root = PathBuf::from("/");
    // --balance plans with the daemon's configuration, so that top shows what the daemon
    // would do on this machine.
    let config = if args.balance {
        startup::load_config(None)?
    } else {
        Config::default()
    };
    let proximity = args.proximity.clone().or_else(|| config.proximity.clone());
    let opts = report::read_options(proximity.as_deref())?;
    let mut monitor = Monitor::start(&root, opts)?;
    if args.balance {
        for w in startup::machine_warnings(&config, monitor.model())? {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("balancer: warning: {w}\n").as_bytes(),
            );
        }
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

    let mut app = App::new(Duration::from_secs_f64(args.interval));
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

    let mut term = TerminalGuard::enter()?;
    watch_for_hangup();
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
    let result = event_loop(&mut term.terminal, &mut app, &stop, &mut sampler);
    drop(term);
    if let Some(b) = balancing {
        b.stop();
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// `--balance`: the daemon's engine in-process, and unless dry run the daemon's lock, held
/// while writing so the two never fight (the originals are journaled for `balancer
/// restore`).
struct Balancing {
    engine: Engine<Box<dyn Applier>>,
    lock: Option<Lock>,
}

impl Balancing {
    fn start(root: &Path, config: Config, dry_run: bool) -> anyhow::Result<Balancing> {
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
            eprintln!(
                "balancer top: affinities were changed; `balancer restore` puts the originals \
                 back (journal {})",
                journal.display()
            );
        }
    }
}

/// Draw, wait for a key or the next interval, repeat.
fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    stop: &AtomicBool,
    sample: &mut dyn FnMut(&mut App, Instant),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_tick = started;
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        if dirty {
            let mut pages = render::Pages::default();
            terminal
                .draw(|f| pages = render::draw(f, app))
                .context("drawing")?;
            let before = (app.selected, app.irq_offset, app.napi_offset);
            app.set_pages(pages.irqs, pages.napi);
            // The page sizes are known only after drawing; redraw if they moved the view.
            dirty = before != (app.selected, app.irq_offset, app.napi_offset);
            if dirty {
                continue;
            }
        }
        let now = Instant::now();
        let due = last_tick + app.interval;
        if now >= due {
            sample(app, started);
            // Late (a slow tick, a suspended terminal): start the next interval now rather
            // than catching up with short ones.
            last_tick = if now - due > app.interval { now } else { due };
            dirty = true;
            continue;
        }
        // Wake at least twice a second so that a signal ends the loop promptly.
        let wait = (due - now).min(Duration::from_millis(500));
        if !event::poll(wait).context("reading the terminal")? {
            continue;
        }
        match event::read().context("reading the terminal")? {
            event::Event::Key(key) => {
                if let Some(cmd) = input::command(&key, app.editing_filter, app.help) {
                    match app.apply(cmd) {
                        Effect::Quit => break,
                        Effect::Interval | Effect::None => {}
                    }
                    dirty = true;
                }
            }
            event::Event::Resize(..) => {
                terminal.autoresize().context("resizing")?;
                dirty = true;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Ends the process when its terminal goes away (SSH drops, the tmux pane is killed).
///
/// A hung-up tty stays readable while reads return EOF or EIO, and crossterm's event reader
/// retries such reads forever without returning (crossterm issue #793, unfixed in 0.29), so
/// the main loop can never see a signal flag again; SIGHUP may not even arrive when the
/// process group was orphaned. This thread only polls for POLLHUP/POLLERR, never reads, so it
/// takes no keys from the user.
fn watch_for_hangup() {
    use std::os::fd::AsRawFd as _;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: isatty on a valid fd number has no preconditions.
    if unsafe { libc::isatty(fd) } != 1 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tty-watchdog".into())
        .spawn(move || {
            loop {
                let mut pfd = libc::pollfd {
                    fd,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; with events = 0 only hang-up and errors report.
                let n = unsafe { libc::poll(&mut pfd, 1, 500) };
                if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    // Nobody is left to see a restored screen; the probes detach as the
                    // process's file descriptors close.
                    std::process::exit(129);
                }
                if n < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    return;
                }
            }
        });
    // Without the watchdog top still works; it only cannot notice a vanished terminal.
    drop(spawned);
}

/// Raw mode and the alternate screen while alive; the terminal as it was after drop, after
/// an error, and after a panic.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

static PANIC_HOOK: Once = Once::new();

impl TerminalGuard {
    fn enter() -> anyhow::Result<TerminalGuard> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // Restore first, or the panic message lands in the alternate screen and
                // vanishes with it.
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let mut stdout = std::io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e).context("switching to the alternate screen");
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e).context("setting up the terminal")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen; harmless when not in them.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}

#[cfg(test)]
mod tests;
