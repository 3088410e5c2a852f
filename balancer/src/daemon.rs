//! `balancer daemon`, `balancer plan` and `balancer restore`: the measuring loop feeding the
//! policy and actuation.
//!
//! The daemon measures one interval, plans, applies, and sleeps for `short-interval` after a
//! move or while a CPU is overloaded, `long-interval` when calm (birq's 2 s / 5 s). It
//! measures only the last `measure-share` of each interval, detached before it (see
//! [`crate::monitor`]): the probes cost the measured CPUs about as much as what they measure.
//! SIGHUP
//! reloads the config (a bad one is logged and the old one kept); SIGTERM and SIGINT stop it,
//! restoring the original values when `restore-on-exit` is set. One instance at a time (flock
//! on `lock-file`); it refuses to run beside irqbalance unless `--force`.
//!
//! Start-up ends when the probes are loaded and the first snapshot is taken (and the metrics
//! endpoint is bound): then it tells systemd (`READY=1`, for `Type=notify`) and, when it
//! detached, the parent waiting on a pipe, which exits 0 only then. Anything that fails
//! before (pidfile, metrics port, probes) ends the daemon with its error, and the detached
//! parent with the same exit code. `--oneshot` measures one interval, applies once and
//! exits: what distributions run at boot instead of a daemon.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::PathBuf,
    process::ExitCode,
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::{
    Fatal,
    actuation::{self, LockError, RealSys},
    config::{self, Config},
    engine::{self, Applier, DryRun, Engine, Step},
    metrics,
    monitor::{Due, DutyCycle, Monitor, Schedule, Tick},
    policy::{self, FindingKind, Plan, Snapshot},
    startup::{self, load_config},
    system::ReadOptions,
};

/// Run the balancer: measure, decide, move IRQs, repeat.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Config file (TOML); default /etc/balancer/balancer.toml, defaults when it is absent.
    /// The installed example there documents every key.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Measure and decide, log what would be done, change nothing: takes no lock, writes no
    /// journal, and runs beside irqbalance (with a warning) or a balancing daemon.
    #[arg(long)]
    pub dry_run: bool,
    /// Stay attached to the terminal (systemd runs it so); without it the daemon detaches,
    /// and the command returns once the daemon is ready (exit 0) or has failed (its exit
    /// code, its error on stderr).
    #[arg(long)]
    pub foreground: bool,
    /// Measure one interval (`long-interval`), place IRQs once, and exit (implies
    /// --foreground): exit 0 when every action applied or there was nothing to do, 1 when
    /// measuring or an action failed. With --dry-run it logs what it would do.
    #[arg(long)]
    pub oneshot: bool,
    /// Write the daemon's pid here.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Start even though irqbalance runs (the two would fight over affinities); without it
    /// the daemon refuses with exit status 3.
    #[arg(long)]
    pub force: bool,
}

/// Measure one interval and print what the daemon would do now, and why. Changes nothing.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Seconds to measure (0.1 to 86400, fractions allowed).
    #[arg(short, long, default_value_t = 5.0, value_name = "SECS",
          value_parser = crate::config::parse_seconds)]
    pub duration: f64,
    /// Config file (TOML) whose policy settings to plan with; default
    /// /etc/balancer/balancer.toml, defaults when it is absent.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON (keys: plan, cpus, no_irq_cpus).
    #[arg(long)]
    pub json: bool,
}

/// Put back every value the daemon changed, from its journal.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Restore takes the daemon's lock (the config's lock-file) and refuses while a daemon or top \
--balance runs. It checks the whole journal before it writes anything: its format, its boot \
and that every entry is an IRQ affinity, rps_cpus or NAPI-thread affinity. Targets that are \
gone (IRQ or device removed) are skipped and dropped from the journal.

Exit status: 0 restored, or no journal at the default path; 1 some values could not be \
written back (they stay in the journal); 2 bad config, or no journal at the --journal path; \
3 a balancer is running; 4 the journal cannot be used (damaged, unknown version, another \
boot, a target balancer does not change): nothing was written.")]
pub struct RestoreArgs {
    /// The journal; default: the config's `journal` (/var/lib/balancer/journal.json).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Config file (TOML) naming the journal and the lock; default
    /// /etc/balancer/balancer.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Restore a journal written during another boot (or one that records none): only when
    /// the machine has not rebooted since, as IRQs may be numbered differently after a boot.
    #[arg(long)]
    pub force: bool,
    /// Root of /proc and /sys (tests use a fixture copy).
    #[arg(long, default_value = "/", hide = true)]
    pub root: PathBuf,
}

fn read_options(cfg: &Config) -> anyhow::Result<ReadOptions> {
    crate::report::read_options(cfg.proximity.as_deref())
}

/// Logs to stderr with levels; with `<N>` syslog priority prefixes when stderr goes to the
/// journal (systemd sets JOURNAL_STREAM), so journald keeps the levels.
struct Logger {
    journal: std::sync::atomic::AtomicBool,
}

static LOGGER: Logger = Logger {
    journal: std::sync::atomic::AtomicBool::new(false),
};

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // Libraries (aya's loader narrates every relocation) speak only when it matters.
        let ours = m.target().starts_with("balancer");
        m.level() <= log::max_level() && (ours || m.level() <= log::Level::Warn)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.journal.load(std::sync::atomic::Ordering::Relaxed) {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                _ => 7,
            };
            writeln!(err, "<{prio}>{}", r.args())
        } else {
            writeln!(
                err,
                "balancer: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            )
        };
    }

    fn flush(&self) {}
}

fn init_logging(cfg: &Config) {
    LOGGER.journal.store(
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // Only fails when a logger is already set (tests): keep that one.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(cfg.log_level.filter());
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

/// The detached parent: `READY_LINE` from the child means it is up (0); end of file means
/// it exited first, and its exit code is ours (it printed its error on our shared stderr).
fn wait_ready(mut pipe: fs::File, child: libc::pid_t) -> i32 {
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut pipe, &mut got);
    if got == READY_LINE {
        return 0;
    }
    let mut status = 0;
    // SAFETY: our own child; status is a valid pointer.
    if unsafe { libc::waitpid(child, &mut status, 0) } != child {
        log_line("the daemon's process vanished before it was ready");
        return 1;
    }
    if libc::WIFEXITED(status) {
        // A child that exits 0 without being ready stopped on a signal during start-up.
        return libc::WEXITSTATUS(status);
    }
    log_line(&format!(
        "the daemon (pid {child}) was killed by signal {} before it was ready",
        libc::WTERMSIG(status)
    ));
    1
}

const READY_LINE: &[u8] = b"ready\n";

/// Tells whoever started the daemon that start-up is over: systemd (`READY=1`, watchdog
/// keep-alives, `STOPPING=1`; nothing without NOTIFY_SOCKET) and the detached parent.
struct Readiness {
    /// The detached parent's pipe, until it is told.
    parent: Option<fs::File>,
    /// Keep-alive period: half of systemd's `WatchdogSec`, when set for this process.
    watchdog: Option<Duration>,
}

impl Readiness {
    fn new(parent: Option<fs::File>) -> Readiness {
        Readiness {
            parent,
            watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
        }
    }

    fn ready(&mut self, status: &str) {
        if let Err(e) = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]) {
            log::warn!("telling systemd we are ready: {e}");
        }
        if let Some(mut p) = self.parent.take()
            && let Err(e) = p.write_all(READY_LINE)
        {
            log::warn!("telling the parent we are ready: {e}");
        }
    }

    fn alive(&self) {
        if self.watchdog.is_some() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }

    /// Waits for a signal up to `timeout`, sending watchdog keep-alives meanwhile.
    fn recv(
        &self,
        rx: &mpsc::Receiver<i32>,
        timeout: Duration,
    ) -> Result<i32, mpsc::RecvTimeoutError> {
        let Some(period) = self.watchdog else {
            return rx.recv_timeout(timeout);
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.alive();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left.min(period)) {
                Err(mpsc::RecvTimeoutError::Timeout) if left > period => {}
                r => return r,
            }
        }
    }
}

/// Debug: each CPU's busy and IRQ share, and the heaviest IRQs with the CPUs their time
/// landed on.
fn log_interval(s: &Snapshot, tick: u64) {
    let cpus: Vec<String> = s
        .cpus
        .values()
        .filter(|c| c.online)
        .map(|c| {
            format!(
                "{}:{:.0}/{:.0}",
                c.id,
                100.0 * s.frac(c.busy_ns),
                100.0 * s.frac(c.irq_ns)
            )
        })
        .collect();
    log::debug!("interval {tick}: cpu busy%/irq% {}", cpus.join(" "));
    let mut irqs: Vec<&policy::IrqSnap> = s.irqs.values().filter(|i| i.total_ns() > 0).collect();
    irqs.sort_by_key(|i| std::cmp::Reverse(i.total_ns()));
    for i in irqs.iter().take(8) {
        let on: Vec<String> = i
            .per_cpu
            .iter()
            .filter(|(_, l)| l.ns > 0)
            .map(|(c, l)| format!("cpu{c} {:.1}%", 100.0 * s.frac(l.ns)))
            .collect();
        log::debug!(
            "interval {tick}: IRQ {} ({}) {:.1}%, {} interrupts, on {}: {}",
            i.number,
            i.name,
            100.0 * s.frac(i.total_ns()),
            i.interrupts,
            i.home(),
            on.join(", ")
        );
    }
}

/// Returns freed heap to the kernel (glibc keeps it otherwise): the daemon's resident size
/// is part of its budget.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A subject logged once is quiet for this long; repeats meanwhile are counted and the
/// count goes with its next line.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// What a finding is about: its kind, IRQ and CPU.
type Subject = (FindingKind, Option<u32>, Option<u32>);

/// Logs the findings that are new since the last interval (a stuck IRQ is one line when it
/// starts and one when it ends, not one per interval), each subject at most once per
/// [`REPEAT_WINDOW`]: a finding that comes and goes (two CPUs taking turns at being
/// overloaded) would otherwise repeat every few intervals.
#[derive(Default)]
struct FindingLog {
    seen: BTreeSet<Subject>,
    /// When each subject was last logged, and how many repeats were not logged since.
    logged: BTreeMap<Subject, (Instant, u64)>,
}

impl FindingLog {
    /// The lines to log now, with their level.
    fn lines(&mut self, plan: &Plan, now: Instant) -> Vec<(log::Level, String)> {
        let mut out = Vec::new();
        let mut present = BTreeSet::new();
        for f in &plan.findings {
            let key = (f.kind, f.irq, f.cpu);
            if !present.insert(key) || self.seen.contains(&key) {
                continue;
            }
            match self.logged.get_mut(&key) {
                Some((at, suppressed)) if now.duration_since(*at) < REPEAT_WINDOW => {
                    *suppressed += 1;
                    continue;
                }
                _ => {}
            }
            let suppressed = self.logged.get(&key).map_or(0, |(_, n)| *n);
            let level = match f.kind {
                FindingKind::Stuck | FindingKind::NoRelief | FindingKind::NotFollowed => {
                    log::Level::Warn
                }
                _ => log::Level::Info,
            };
            let mut line = f.message.clone();
            if suppressed > 0 {
                line.push_str(&format!(
                    " (again: {suppressed} more time(s) since it was last logged, not logged)"
                ));
            }
            out.push((level, line));
            self.logged.insert(key, (now, 0));
        }
        self.seen = present;
        // Forget quiet subjects whose window passed: nothing left to count for them.
        self.logged
            .retain(|_, (at, n)| *n > 0 || now.duration_since(*at) < REPEAT_WINDOW);
        out
    }

    fn log(&mut self, plan: &Plan) {
        for (level, line) in self.lines(plan, Instant::now()) {
            log::log!(level, "{line}");
        }
    }
}

/// Applies a reloaded config: every key takes effect except [`Config::RESTART_KEYS`], which
/// keep their running values. Returns (applied keys, keys that need a restart).
fn reload_into(cfg: &mut Config, new: Config) -> (Vec<String>, Vec<String>) {
    let changed = cfg.changed_keys(&new);
    let (restart, applied): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| Config::RESTART_KEYS.contains(&k.as_str()));
    let (journal, lock_file) = (cfg.journal.clone(), cfg.lock_file.clone());
    *cfg = new;
    cfg.journal = journal;
    cfg.lock_file = lock_file;
    (applied, restart)
}

/// [`startup::machine_warnings`], logged.
fn check_machine(cfg: &Config, model: &crate::system::SystemModel) -> anyhow::Result<()> {
    for w in startup::machine_warnings(cfg, model)? {
        log::warn!("{w}");
    }
    Ok(())
}

pub fn run_daemon(args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.config.as_deref())?;
    init_logging(&cfg);
    // A dry run writes nothing: beside irqbalance it shows what balancer would do instead,
    // and it takes no lock (a production daemon or restore may run meanwhile).
    if args.dry_run {
        if let Some(pid) = startup::irqbalance() {
            log::warn!("irqbalance runs (pid {pid}): the dry run's figures include its moves");
        }
    } else {
        startup::refuse_beside_irqbalance(args.force)?;
    }
    crate::probe::check_privileges()?;
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
    let mut readiness = Readiness::new(parent);
    let signals = signal_channel()?;
    // After the handlers: whoever reads the pidfile may signal at once.
    if let Some(p) = &args.pidfile {
        fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pidfile {}", p.display()))?;
    }

    let root = PathBuf::from("/");
    let monitor = Monitor::start(&root, read_options(&cfg)?)?;
    check_machine(&cfg, monitor.model())?;
    // Loading the probes parses the kernel's BTF (megabytes, freed after): hand it back.
    trim_heap();
    let applier = engine::machine_applier(&root, &cfg, args.dry_run)?;
    // Fed every interval, served only while `metrics` is set (SIGHUP may set or change it).
    let shared = metrics::Metrics::new_shared(args.dry_run);
    let mut endpoint = metrics::Endpoint::new(shared.clone());
    if let Some(local) = endpoint.set(cfg.metrics)? {
        log::info!("metrics on http://{local}/metrics");
    }
    log::info!(
        "started{}{}: strategy {}, threshold {}%, load-limit {}%, intervals {}/{} s",
        if args.dry_run { " (dry run)" } else { "" },
        if args.oneshot { " (one interval)" } else { "" },
        cfg.strategy.as_str(),
        cfg.threshold,
        cfg.load_limit,
        cfg.short_interval,
        cfg.long_interval
    );
    log::info!(
        "{}",
        cfg.banned_cpus_text(&config::MachineFacts::of(monitor.model()))
    );
    // The probes are loaded and the first snapshot taken: what could fail at start-up has.
    readiness.ready(if args.dry_run {
        "measuring (dry run)"
    } else {
        "balancing"
    });
    let mut daemon = Daemon {
        args,
        root,
        monitor,
        engine: Engine::new(cfg, applier),
        shared,
        endpoint,
        readiness,
        log: StepLog::new(args.dry_run),
    };
    let code = daemon.run(&signals);
    drop(lock);
    code
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

/// The running daemon: the monitor measuring, the engine planning and applying (its config
/// is the daemon's), and what reports on them.
struct Daemon<'a> {
    args: &'a DaemonArgs,
    root: PathBuf,
    monitor: Monitor,
    engine: Engine<Box<dyn Applier>>,
    shared: metrics::Shared,
    endpoint: metrics::Endpoint,
    readiness: Readiness,
    log: StepLog,
}

impl Daemon<'_> {
    fn cfg(&self) -> &Config {
        self.engine.config()
    }

    /// The probes are attached while a window runs, a `measure-share` of each interval; a
    /// one-shot placement measures its whole interval.
    fn share(&self) -> f64 {
        if self.args.oneshot {
            1.0
        } else {
            self.cfg().measure_share
        }
    }

    fn count(&self, f: impl FnOnce(&mut metrics::Metrics)) {
        if let Ok(mut m) = self.shared.lock() {
            f(&mut m);
        }
    }

    /// Measures, plans and applies until a signal stops it (or, `--oneshot`, once).
    fn run(&mut self, signals: &mpsc::Receiver<i32>) -> anyhow::Result<ExitCode> {
        let mut interval = Duration::from_secs_f64(self.cfg().long_interval);
        let mut schedule = Schedule::start(Instant::now(), DutyCycle::new(self.share()), interval);
        loop {
            match self.readiness.recv(signals, schedule.wait(Instant::now())) {
                Ok(SIGHUP) => {
                    self.reload(&mut schedule);
                    continue;
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if schedule.due() == Due::Resume {
                match self.monitor.resume() {
                    Ok(()) => schedule.resumed(Instant::now()),
                    Err(e) => {
                        self.count(|m| m.count_error(metrics::Stage::Measure));
                        log::error!("measuring: {e:#}");
                        // Another pause, then another try.
                        schedule.ticked(Instant::now(), interval);
                    }
                }
                continue;
            }
            self.readiness.alive();
            let measured = if schedule.pauses() {
                self.monitor.tick_and_pause()
            } else {
                self.monitor.tick()
            };
            let tick = match measured {
                Ok(t) => t,
                Err(e) if self.args.oneshot => {
                    remove_pidfile(self.args);
                    return Err(e.context("measuring"));
                }
                Err(e) => {
                    self.count(|m| m.count_error(metrics::Stage::Measure));
                    log::error!("measuring: {e:#}");
                    schedule.ticked(Instant::now(), interval);
                    continue;
                }
            };
            let step = self.step(&tick);
            if self.args.oneshot {
                return Ok(oneshot_exit(&step, self.args));
            }
            trim_heap();
            interval = Duration::from_secs_f64(if step.plan.busy() {
                self.cfg().short_interval
            } else {
                self.cfg().long_interval
            });
            schedule.ticked(Instant::now(), interval);
        }
        self.stop()
    }

    /// One measured interval through the engine, logged and counted.
    fn step(&mut self, tick: &Tick) -> Step {
        let n = self.engine.history().tick;
        log::debug!(
            "interval {n}: measured {:.2} s of {:.2} s",
            tick.measured_ns as f64 / 1e9,
            tick.interval.duration_ns as f64 / 1e9
        );
        for ev in &tick.attribution.events {
            log::info!("{ev}");
        }
        let snap = Snapshot::build(self.monitor.model(), &tick.attribution);
        if log::log_enabled!(log::Level::Debug) {
            log_interval(&snap, n);
        }
        let findings = &mut self.log.findings;
        let step = self.engine.step_with(&snap, |plan| findings.log(plan));
        self.log.actions(&step);
        self.count(|m| {
            m.record(&metrics::IntervalView {
                model: self.monitor.model(),
                attribution: &tick.attribution,
                snapshot: &snap,
                plan: &step.plan,
                outcomes: &step.outcomes,
                history: self.engine.history(),
                at: SystemTime::now(),
            })
        });
        step
    }

    /// SIGHUP: reads the config again and applies it (see [`reload_into`]); a bad one is
    /// logged and the old one kept.
    fn reload(&mut self, schedule: &mut Schedule) {
        let loaded = load_config(self.args.config.as_deref()).and_then(|c| {
            let opts = read_options(&c)?;
            check_machine(&c, self.monitor.model())?;
            Ok((c, opts))
        });
        let (new, opts) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.count(|m| m.count_reload(false));
                log::error!("config not reloaded, keeping the old one: {e:#}");
                return;
            }
        };
        log::set_max_level(new.log_level.filter());
        let (applied, restart) = reload_into(self.engine.config_mut(), new);
        schedule.set_duty(DutyCycle::new(self.share()));
        self.monitor.set_read_options(opts);
        self.count(|m| m.count_reload(true));
        let cfg = self.engine.config();
        if applied.is_empty() {
            log::info!("config reloaded: nothing changed");
        } else {
            log::info!("config reloaded: applied {}", applied.join(", "));
        }
        if !restart.is_empty() {
            log::warn!(
                "config reloaded: {} change(s) only at restart; still journal {}, lock-file {}",
                restart.join(", "),
                cfg.journal.display(),
                cfg.lock_file.display()
            );
        }
        if applied.iter().any(|k| k == "exclude-cpus") {
            log::info!(
                "{}",
                cfg.banned_cpus_text(&config::MachineFacts::of(self.monitor.model()))
            );
        }
        let serving = self.endpoint.local_addr();
        match self.endpoint.set(cfg.metrics) {
            Ok(Some(local)) => log::info!("metrics on http://{local}/metrics"),
            Ok(None) => {
                if let (Some(old), None) = (serving, cfg.metrics) {
                    log::info!("metrics endpoint on {old} closed");
                }
            }
            // Counted by the endpoint; the old listener (if any) serves on.
            Err(e) => log::error!("{e}"),
        }
    }

    /// After SIGTERM or SIGINT: restores the originals when `restore-on-exit` is set.
    fn stop(&mut self) -> anyhow::Result<ExitCode> {
        self.readiness.stopping();
        if self.args.oneshot {
            remove_pidfile(self.args);
            return Err(
                Fatal::new(1, "stopped by a signal before the interval was measured").into(),
            );
        }
        let cfg = self.engine.config();
        if cfg.restore_on_exit && !self.args.dry_run {
            match actuation::restore(&self.root, &cfg.journal, &mut RealSys, false) {
                Ok(r) => {
                    log::info!("restored {} original value(s)", r.restored.len());
                    for (t, e) in &r.failed {
                        log::error!("restoring {t}: {e}");
                    }
                }
                Err(e) => log::error!("restoring: {e}"),
            }
        }
        remove_pidfile(self.args);
        log::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// What the daemon logs of each step: the findings new since the last interval
/// ([`FindingLog`], before the plan is applied), then the actions: in a dry run
/// `would: <reason>` whenever the list changed, else each applied action's reason and each
/// failure.
struct StepLog {
    dry_run: bool,
    findings: FindingLog,
    last_dry: Vec<String>,
}

impl StepLog {
    fn new(dry_run: bool) -> StepLog {
        StepLog {
            dry_run,
            findings: FindingLog::default(),
            last_dry: Vec::new(),
        }
    }

    fn actions(&mut self, step: &Step) {
        if self.dry_run {
            let lines: Vec<String> = step.plan.actions.iter().map(|a| a.reason.clone()).collect();
            if lines != self.last_dry {
                for l in &lines {
                    log::info!("would: {l}");
                }
            }
            self.last_dry = lines;
            return;
        }
        for (a, o) in step.actions() {
            if o.is_applied() {
                log::info!("{}", a.reason);
            } else if let Some(e) = o.error() {
                log::error!("{}: {e}", a.reason);
            }
        }
    }
}

fn remove_pidfile(args: &DaemonArgs) {
    if let Some(p) = &args.pidfile {
        let _ = fs::remove_file(p);
    }
}

/// `--oneshot`'s exit: 0 when every action applied (or was only logged in a dry run, or
/// there was none), 1 when one failed. What it changed stays (no restore-on-exit: placing
/// once is the point); the journal keeps the originals for `balancer restore`.
fn oneshot_exit(step: &Step, args: &DaemonArgs) -> ExitCode {
    remove_pidfile(args);
    let failed = step.failed();
    log::info!(
        "one interval done: {} action(s) planned, {} applied, {failed} failed{}",
        step.plan.actions.len(),
        step.applied(),
        if args.dry_run { " (dry run)" } else { "" }
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Serialize)]
struct PlanJson<'a> {
    plan: &'a Plan,
    cpus: Vec<CpuJson>,
    /// CPUs that take no IRQs, by reason (cpulists).
    no_irq_cpus: NoIrqJson,
}

#[derive(Serialize)]
struct NoIrqJson {
    excluded: crate::cpumask::CpuSet,
    isolated: crate::cpumask::CpuSet,
    nohz_full: crate::cpumask::CpuSet,
}

#[derive(Clone, Serialize)]
struct CpuJson {
    cpu: u32,
    node: Option<u32>,
    busy_pct: f64,
    irq_pct: f64,
}

pub fn run_plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.config.as_deref())?;
    let root = PathBuf::from("/");
    let mut monitor = Monitor::start(&root, read_options(&cfg)?)?;
    for w in startup::machine_warnings(&cfg, monitor.model())? {
        log_line(&format!("warning: {w}"));
    }
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    let tick = monitor.tick()?;
    let snap = Snapshot::build(monitor.model(), &tick.attribution);
    // One dry step of a fresh engine: the journal's IRQs are not special here, history
    // starts empty as in a fresh daemon.
    let mut engine = Engine::new(cfg, DryRun);
    let Step { plan, .. } = engine.step(&snap);
    let cfg = engine.config();
    let cpus: Vec<CpuJson> = snap
        .cpus
        .values()
        .filter(|c| c.online)
        .map(|c| CpuJson {
            cpu: c.id,
            node: c.node,
            busy_pct: 100.0 * snap.frac(c.busy_ns),
            irq_pct: 100.0 * snap.frac(c.irq_ns),
        })
        .collect();
    let mut out = crate::output::stdout();
    if args.json {
        serde_json::to_writer_pretty(
            &mut out,
            &PlanJson {
                plan: &plan,
                cpus: cpus.clone(),
                no_irq_cpus: NoIrqJson {
                    excluded: cfg.exclude_cpus.clone(),
                    isolated: monitor.model().isolated.clone(),
                    nohz_full: monitor.model().nohz_full.clone(),
                },
            },
        )?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "Measured {:.1} s; strategy {}, threshold {}%, load-limit {}%",
        snap.duration_ns as f64 / 1e9,
        cfg.strategy.as_str(),
        cfg.threshold,
        cfg.load_limit
    )?;
    writeln!(
        out,
        "{}",
        cfg.banned_cpus_text(&config::MachineFacts::of(monitor.model()))
    )?;
    writeln!(out, "\n  CPU  NODE  BUSY%  IRQ%")?;
    for c in &cpus {
        writeln!(
            out,
            "  {:>3}  {:>4}  {:>5.1}  {:>4.1}",
            c.cpu,
            c.node.map_or("-".into(), |n| n.to_string()),
            c.busy_pct,
            c.irq_pct
        )?;
    }
    if !plan.overloaded.is_empty() {
        let list: Vec<String> = plan.overloaded.iter().map(u32::to_string).collect();
        writeln!(out, "\nOverloaded CPUs: {}", list.join(", "))?;
    }
    writeln!(out, "\nWould do ({}):", plan.actions.len())?;
    if plan.actions.is_empty() {
        writeln!(out, "  nothing")?;
    }
    for a in &plan.actions {
        writeln!(out, "  - {}", a.reason)?;
    }
    if !plan.findings.is_empty() {
        writeln!(out, "\nFindings:")?;
        for f in &plan.findings {
            writeln!(out, "  - {}", f.message)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(args.config.as_deref())?;
    let journal = args.journal.clone().unwrap_or(cfg.journal);
    // A daemon keeps its journal in memory and rewrites it: restoring under it would lose
    // the originals of what it moves next. Refuse rather than wait, as a daemon runs for
    // days: stopping it (or its restore-on-exit) is the user's call.
    let _lock = actuation::try_lock(&cfg.lock_file).map_err(|e| match e {
        LockError::Held { path, pid } => anyhow::Error::new(Fatal::new(
            Fatal::BUSY,
            format!(
                "a balancer (daemon or top --balance{}) runs and holds {}: stop it first \
                 (systemctl stop balancer); it restores on exit when restore-on-exit is set",
                pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
                path.display()
            ),
        )),
        LockError::Open { .. } => anyhow::Error::new(e),
    })?;
    let mut out = crate::output::stdout();
    if !journal
        .try_exists()
        .with_context(|| format!("journal {}", journal.display()))?
    {
        if args.journal.is_some() {
            return Err(Fatal::new(
                Fatal::USAGE,
                format!("no journal at {} (named with --journal)", journal.display()),
            )
            .into());
        }
        writeln!(
            out,
            "nothing to restore: no journal at {}",
            journal.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = actuation::restore(&args.root, &journal, &mut RealSys, args.force).map_err(
        |e| match e {
            actuation::JournalError::Io { .. } => anyhow::Error::new(e),
            _ => Fatal::new(Fatal::JOURNAL, e.to_string()).into(),
        },
    )?;
    // Done whatever stdout says (main reports a failed write): the lines below must follow.
    for t in &r.restored {
        let _ = writeln!(out, "restored {t}");
    }
    if !r.gone.is_empty() {
        let list: Vec<String> = r.gone.iter().map(ToString::to_string).collect();
        log_line(&format!(
            "warning: {} target(s) gone since they were changed (IRQ, device or thread \
             removed), dropped from the journal: {}",
            r.gone.len(),
            list.join(", ")
        ));
    }
    for (t, e) in &r.failed {
        log_line(&format!("could not restore {t}: {e}"));
    }
    if r.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        log_line(&format!(
            "{} value(s) not restored; they stay in {}",
            r.failed.len(),
            journal.display()
        ));
        Ok(ExitCode::FAILURE)
    }
}

/// One line on stderr; not eprintln!, which panics when stderr is gone.
fn log_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "balancer: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Finding;

    fn no_relief(cpu: u32) -> Finding {
        Finding {
            kind: FindingKind::NoRelief,
            irq: None,
            cpu: Some(cpu),
            message: format!("CPU {cpu} is 95% busy"),
        }
    }

    fn plan_with(findings: Vec<Finding>) -> Plan {
        Plan {
            actions: Vec::new(),
            findings,
            overloaded: Vec::new(),
            tick: 0,
            balancing: false,
        }
    }

    #[test]
    fn alternating_findings_are_logged_once_per_window_with_a_count() {
        let mut log = FindingLog::default();
        let t0 = Instant::now();
        let step = Duration::from_secs(5);
        let mut logged = Vec::new();
        // CPUs 0 and 1 take turns for 10 minutes: 120 intervals.
        for i in 0..120u32 {
            let p = plan_with(vec![no_relief(i % 2)]);
            for (level, line) in log.lines(&p, t0 + step * i) {
                assert_eq!(level, log::Level::Warn);
                logged.push(line);
            }
        }
        assert_eq!(logged, vec!["CPU 0 is 95% busy", "CPU 1 is 95% busy"]);
        // After the window the next one says how many were not logged (CPU 0 came back 59
        // times after its first line).
        let p = plan_with(vec![no_relief(0)]);
        let lines = log.lines(&p, t0 + REPEAT_WINDOW + step * 2);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0]
                .1
                .ends_with("(again: 59 more time(s) since it was last logged, not logged)"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_lasting_finding_is_one_line() {
        let mut log = FindingLog::default();
        let t0 = Instant::now();
        let mut n = 0;
        for i in 0..500u32 {
            n += log
                .lines(
                    &plan_with(vec![no_relief(3)]),
                    t0 + Duration::from_secs(i.into()) * 5,
                )
                .len();
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn reload_applies_every_key_but_journal_and_lock() {
        let mut cfg = Config::default();
        let new = Config::parse(
            "threshold = 80\nexclude-cpus = \"0\"\njournal = \"/tmp/j\"\nlog-level = \"debug\"\n",
            "b.toml",
        )
        .unwrap();
        let (applied, restart) = reload_into(&mut cfg, new);
        assert_eq!(applied, vec!["exclude-cpus", "log-level", "threshold"]);
        assert_eq!(restart, vec!["journal"]);
        assert_eq!(cfg.threshold, 80.0);
        assert_eq!(cfg.exclude_cpus, crate::cpumask::CpuSet::from_cpus([0]));
        assert_eq!(cfg.journal, PathBuf::from(config::DEFAULT_JOURNAL));
    }
}
