//! `balancer daemon`: the start-up of the balancing daemon (config, logging, irqbalance,
//! privileges, lock, detaching, signals, pidfile, probes), then [`crate::daemon::run`]'s
//! loop.
//!
//! Start-up ends when the probes are loaded and the first snapshot is taken (and the metrics
//! endpoint is bound): then the daemon tells systemd (`READY=1`, for `Type=notify`) and,
//! when it detached, the parent waiting on a pipe, which exits 0 only then. Anything that
//! fails before (pidfile, metrics port, probes) ends the daemon with its error, and the
//! detached parent with the same exit code.
use std::{
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::PathBuf,
    process::ExitCode,
    sync::mpsc,
};

use anyhow::Context as _;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::{Result, say, startup};
use crate::{
    actuation,
    daemon::{self, Readiness},
    engine::{self, Applier, Engine},
    monitor::Monitor,
};

/// Run the balancer: measure, decide, move IRQs, repeat.
#[derive(Debug, clap::Args)]
pub(crate) struct DaemonArgs {
    /// Config file (TOML); default /etc/balancer/balancer.toml, defaults when it is absent.
    /// The installed example there documents every key.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Measure and decide, log what would be done, change nothing: takes no lock, writes no
    /// journal, and runs beside irqbalance (with a warning) or a balancing daemon.
    #[arg(long)]
    dry_run: bool,
    /// Stay attached to the terminal (systemd runs it so); without it the daemon detaches,
    /// and the command returns once the daemon is ready (exit 0) or has failed (its exit
    /// code, its error on stderr).
    #[arg(long)]
    foreground: bool,
    /// Measure one interval (`long-interval`), place IRQs once, and exit (implies
    /// --foreground): exit 0 when every action applied or there was nothing to do, 1 when
    /// measuring or an action failed. With --dry-run it logs what it would do.
    #[arg(long)]
    oneshot: bool,
    /// Write the daemon's pid here.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Start even though irqbalance runs (the two would fight over affinities); without it
    /// the daemon refuses with exit status 3.
    #[arg(long)]
    force: bool,
}

/// Runs the command.
pub(crate) fn run(args: &DaemonArgs) -> Result<ExitCode> {
    let cfg = startup::load_config(args.config.as_deref())?;
    startup::init_logging(&cfg);
    let root = startup::machine_root();
    let opts = startup::read_options(cfg.proximity.as_deref(), &root)?;
    // A dry run writes nothing: beside irqbalance it shows what balancer would do instead,
    // and it takes no lock (a production daemon or restore may run meanwhile).
    if args.dry_run {
        if let Some(pid) = startup::irqbalance() {
            log::warn!("irqbalance runs (pid {pid}): the dry run's figures include its moves");
        }
    } else {
        startup::refuse_beside_irqbalance(args.force)?;
    }
    startup::measuring()?;
    let lock = if args.dry_run {
        None
    } else {
        Some(startup::lock(&cfg.lock_file)?)
    };
    let parent = if args.foreground || args.oneshot {
        None
    } else {
        let pipe = detach()?;
        if let Some(lock) = &lock {
            let _ = lock.record_pid();
        }
        Some(pipe)
    };
    let readiness = Readiness::new(parent);
    let signals = signal_channel()?;
    // After the handlers: whoever reads the pidfile may signal at once.
    if let Some(p) = &args.pidfile {
        fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pidfile {}", p.display()))?;
    }

    let monitor = Monitor::start(&root, opts)?;
    daemon::check_machine(&cfg, monitor.model())?;
    // Loading the probes parses the kernel's BTF (megabytes, freed after): hand it back.
    daemon::trim_heap();
    let applier = engine::machine_applier(&root, &cfg, args.dry_run)?;
    let opts = daemon::Options {
        config: args.config.clone(),
        dry_run: args.dry_run,
        oneshot: args.oneshot,
        pidfile: args.pidfile.clone(),
    };
    let mut engine = Engine::new(cfg, applier);
    if !args.dry_run {
        adopt_journaled_rps(&mut engine);
    }
    let code = daemon::run(opts, root, monitor, engine, readiness, &signals);
    drop(lock);
    Ok(code?)
}

/// A journal kept from a previous run (killed, crashed, or stopped without restore-on-exit):
/// its RPS becomes this run's, so the policy takes it back when the queue shrinks (it would
/// otherwise stay until `balancer restore`, taken for someone else's).
fn adopt_journaled_rps(engine: &mut Engine<Box<dyn Applier>>) {
    let path = engine.config().journal.clone();
    let entries = match actuation::journal_entries(&path) {
        Ok(Some(e)) if !e.is_empty() => e,
        Ok(_) => return,
        Err(e) => {
            log::warn!("reading the journal {}: {e}", path.display());
            return;
        }
    };
    let rps = actuation::journaled_rps(&entries);
    log::info!(
        "journal {} kept from a previous run: {} original value(s), put back by `balancer \
         restore`; the rps_cpus it set on {} rx queue(s) are this run's to take back",
        path.display(),
        entries.len(),
        rps.len()
    );
    engine.adopt_rps(rps);
}

/// Forks into the background, new session, stdin and stdout on /dev/null; stderr stays for
/// the logs (and for the child's error, if it fails before it is ready). The parent waits
/// until the child is ready and exits 0, or until it exits and exits with its code. Done
/// before any thread or probe exists. Returns the child's end of the readiness pipe.
fn detach() -> anyhow::Result<fs::File> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating the readiness pipe");
    }
    // SAFETY: pipe2 just returned these; each is owned once.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: single-threaded at this point; the child only continues Rust code and the
    // parent only reads the pipe and waits before _exit.
    match unsafe { libc::fork() } {
        -1 => return Err(std::io::Error::last_os_error()).context("fork"),
        0 => {}
        child => {
            drop(write);
            let code = wait_ready(fs::File::from(read), child);
            // SAFETY: leaves without running the child's share of destructors twice.
            unsafe { libc::_exit(code) }
        }
    }
    drop(read);
    // SAFETY: plain syscall.
    unsafe { libc::setsid() };
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: valid fds.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
    }
    Ok(fs::File::from(write))
}

/// The detached parent: [`daemon::READY_LINE`] from the child means it is up (0); end of file means
/// it exited first, and its exit code is ours (it printed its error on our shared stderr).
fn wait_ready(mut pipe: fs::File, child: libc::pid_t) -> i32 {
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut pipe, &mut got);
    if got == daemon::READY_LINE {
        return 0;
    }
    let mut status = 0;
    // SAFETY: our own child; status is a valid pointer.
    if unsafe { libc::waitpid(child, &mut status, 0) } != child {
        say("the daemon's process vanished before it was ready");
        return 1;
    }
    if libc::WIFEXITED(status) {
        // A child that exits 0 without being ready stopped on a signal during start-up.
        return libc::WEXITSTATUS(status);
    }
    say(&format!(
        "the daemon (pid {child}) was killed by signal {} before it was ready",
        libc::WTERMSIG(status)
    ));
    1
}

/// SIGHUP, SIGTERM and SIGINT, delivered on a channel by a thread of their own.
fn signal_channel() -> anyhow::Result<mpsc::Receiver<i32>> {
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
