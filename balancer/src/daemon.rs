//! The balancing daemon's loop, started by `cmd::daemon`: measure one interval, plan,
//! apply, and sleep for `short-interval` after a move or while a move is landing on an
//! overloaded CPU, `long-interval` otherwise (birq's 2 s / 5 s): an overload that no move
//! relieves is watched at the calm interval, not at twice and a half the daemon's cost.
//!
//! It measures only the last `measure-share` of each interval, detached before it (see
//! [`crate::monitor`]): the probes cost the measured CPUs about as much as what they measure.
//! SIGHUP reloads the config (a bad one is logged and the old one kept); SIGTERM and SIGINT
//! stop it, restoring the original values when `restore-on-exit` is set. `--oneshot`
//! measures one interval, applies once and exits: what distributions run at boot instead of
//! a daemon.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use signal_hook::consts::SIGHUP;

use anyhow::anyhow;

use crate::{
    actuation::{self, RealSys},
    cmd::{self, startup},
    config::{self, Config},
    engine::{Applier, Engine, Step},
    metrics,
    monitor::{Due, DutyCycle, Monitor, Schedule, Tick},
    policy::{self, FindingKind, Plan, Snapshot},
};

/// What the command line decided about the daemon.
pub(crate) struct Options {
    /// The config file named with `--config`, read again on SIGHUP.
    pub(crate) config: Option<PathBuf>,
    pub(crate) dry_run: bool,
    pub(crate) oneshot: bool,
    pub(crate) pidfile: Option<PathBuf>,
}

/// What the detached daemon writes to its parent once it is ready.
pub(crate) const READY_LINE: &[u8] = b"ready\n";

/// Tells whoever started the daemon that start-up is over: systemd (`READY=1`, watchdog
/// keep-alives, `STOPPING=1`; nothing without NOTIFY_SOCKET) and the detached parent.
pub(crate) struct Readiness {
    /// The detached parent's pipe, until it is told.
    parent: Option<fs::File>,
    /// Keep-alive period: half of systemd's `WatchdogSec`, when set for this process.
    watchdog: Option<Duration>,
}

impl Readiness {
    pub(crate) fn new(parent: Option<fs::File>) -> Readiness {
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
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A subject logged once is quiet for this long; repeats meanwhile are counted and the
/// count goes with its next line.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(600);

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
pub(crate) fn check_machine(cfg: &Config, model: &crate::system::SystemModel) -> cmd::Result<()> {
    for w in startup::machine_warnings(cfg, model)? {
        log::warn!("{w}");
    }
    Ok(())
}

/// Runs the daemon after its start-up: binds the metrics endpoint, says it is ready, and
/// measures, plans and applies until a signal stops it (or, `--oneshot`, once).
pub(crate) fn run(
    opts: Options,
    root: PathBuf,
    monitor: Monitor,
    engine: Engine<Box<dyn Applier>>,
    mut readiness: Readiness,
    signals: &mpsc::Receiver<i32>,
) -> anyhow::Result<ExitCode> {
    let cfg = engine.config();
    // Fed every interval, served only while `metrics` is set (SIGHUP may set or change it).
    let shared = metrics::Metrics::new_shared(opts.dry_run);
    let mut endpoint = metrics::Endpoint::new(shared.clone());
    if let Some(local) = endpoint.set(cfg.metrics)? {
        log::info!("metrics on http://{local}/metrics");
    }
    log::info!(
        "started{}{}: strategy {}, threshold {}%, load-limit {}%, intervals {}/{} s",
        if opts.dry_run { " (dry run)" } else { "" },
        if opts.oneshot { " (one interval)" } else { "" },
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
    readiness.ready(if opts.dry_run {
        "measuring (dry run)"
    } else {
        "balancing"
    });
    let log = StepLog::new(opts.dry_run);
    let mut daemon = Daemon {
        opts,
        root,
        monitor,
        engine,
        shared,
        endpoint,
        readiness,
        log,
    };
    daemon.run(signals)
}

/// The running daemon: the monitor measuring, the engine planning and applying (its config
/// is the daemon's), and what reports on them.
struct Daemon {
    opts: Options,
    root: PathBuf,
    monitor: Monitor,
    engine: Engine<Box<dyn Applier>>,
    shared: metrics::Shared,
    endpoint: metrics::Endpoint,
    readiness: Readiness,
    log: StepLog,
}

impl Daemon {
    fn cfg(&self) -> &Config {
        self.engine.config()
    }

    /// The probes are attached while a window runs, a `measure-share` of each interval; a
    /// one-shot placement measures its whole interval.
    fn share(&self) -> f64 {
        if self.opts.oneshot {
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
                Err(e) if self.opts.oneshot => {
                    remove_pidfile(&self.opts);
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
            if self.opts.oneshot {
                return Ok(oneshot_exit(&step, &self.opts));
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
        log::debug!("interval {n}: own time: {}", tick.costs);
        for ev in &tick.attribution.events {
            log::info!("{ev}");
        }
        let snap = Snapshot::build(self.monitor.model(), &tick.attribution);
        if log::log_enabled!(log::Level::Debug) {
            log_interval(&snap, n);
        }
        let findings = &mut self.log.findings;
        let mut clock = crate::monitor::Stopwatch::start();
        let step = self.engine.step_with(&snap, |plan| findings.log(plan));
        log::debug!("interval {n}: policy and actuation {}", clock.lap());
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
        let loaded = startup::load_config(self.opts.config.as_deref()).and_then(|c| {
            let opts = startup::read_options(c.proximity.as_deref(), &self.root)?;
            check_machine(&c, self.monitor.model())?;
            Ok((c, opts))
        });
        let (new, opts) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.count(|m| m.count_reload(false));
                log::error!("config not reloaded, keeping the old one: {}", e.line());
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
        if self.opts.oneshot {
            remove_pidfile(&self.opts);
            return Err(anyhow!(
                "stopped by a signal before the interval was measured"
            ));
        }
        let cfg = self.engine.config();
        if cfg.restore_on_exit && !self.opts.dry_run {
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
        remove_pidfile(&self.opts);
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

fn remove_pidfile(opts: &Options) {
    if let Some(p) = &opts.pidfile {
        let _ = fs::remove_file(p);
    }
}

/// `--oneshot`'s exit: 0 when every action applied (or was only logged in a dry run, or
/// there was none), 1 when one failed. What it changed stays (no restore-on-exit: placing
/// once is the point); the journal keeps the originals for `balancer restore`.
fn oneshot_exit(step: &Step, opts: &Options) -> ExitCode {
    remove_pidfile(opts);
    let failed = step.failed();
    log::info!(
        "one interval done: {} action(s) planned, {} applied, {failed} failed{}",
        step.plan.actions.len(),
        step.applied(),
        if opts.dry_run { " (dry run)" } else { "" }
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
            relievable: Vec::new(),
            tick: 0,
            balancing: false,
            swaps: Vec::new(),
            checked: Vec::new(),
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
