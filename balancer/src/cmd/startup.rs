//! The start-up every command shares, in the order the commands run it: the config file,
//! the proximity file, logging, irqbalance beside us, privileges and tracefs, the config
//! against the machine, and the single-instance lock, each failing with the [`Error`] whose
//! exit code the commands document.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use super::{Error, Result};
use crate::{
    actuation::{self, Lock, LockError},
    config::{self, Config},
    probe::{self, ProbeError, tracefs::Tracefs},
    system::{self, ReadOptions, SystemModel},
};

/// The live machine's root: the commands measure and balance it (tests pass fixture roots
/// to the stages, and `topology --root`).
pub(crate) fn machine_root() -> PathBuf {
    PathBuf::from("/")
}

/// The config from `path`, else the default file when it exists, else defaults.
pub(crate) fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::read(p)?,
        None => Config::read_opt(Path::new(config::DEFAULT_CONFIG))?.unwrap_or_default(),
    })
}

/// Read options with the proximity file loaded the same way for every command (its PCI
/// addresses resolved under `root`): a missing file or any bad line is an error, every
/// problem listed.
pub(crate) fn read_options(proximity: Option<&Path>, root: &Path) -> Result<ReadOptions> {
    let mut opts = ReadOptions::default();
    if let Some(path) = proximity {
        opts.proximity = Some(system::proximity::load(path, root)?);
    }
    Ok(opts)
}

/// What measuring needs before anything is loaded: the privileges (one line naming what is
/// missing) and a mounted tracefs (mounted here when it is not). Checked up front so that
/// the daemon fails before it forks or takes its lock.
pub(crate) fn measuring() -> Result<()> {
    probe::check_privileges()?;
    Tracefs::find_or_mount().map_err(ProbeError::from)?;
    Ok(())
}

/// The pid of a running irqbalance, if any.
pub(crate) fn irqbalance() -> Option<u32> {
    actuation::find_thread(Path::new("/"), "irqbalance")
}

/// Refuses to balance beside irqbalance (the two would fight over affinities) unless
/// `force`: [`Error::Busy`].
pub(crate) fn refuse_beside_irqbalance(force: bool) -> Result<()> {
    if !force && let Some(pid) = irqbalance() {
        return Err(Error::Busy(format!(
            "irqbalance runs (pid {pid}); stop it first (systemctl disable --now irqbalance) or \
             pass --force"
        )));
    }
    Ok(())
}

/// Checks a config against the machine: no CPU left for IRQs is [`Error::Machine`]; returns
/// the warnings.
pub(crate) fn machine_warnings(cfg: &Config, model: &SystemModel) -> Result<Vec<String>> {
    cfg.check_machine(&config::MachineFacts::of(model))
        .map_err(Error::Machine)
}

/// [`machine_warnings`] on stderr, one line each, for the commands without a log.
pub(crate) fn warn_machine(cfg: &Config, model: &SystemModel) -> Result<()> {
    for w in machine_warnings(cfg, model)? {
        super::say(&format!("warning: {w}"));
    }
    Ok(())
}

/// [`actuation::try_lock`] for the commands: a held lock is [`Error::Busy`].
pub(crate) fn lock(path: &Path) -> Result<Lock> {
    actuation::try_lock(path).map_err(|e| match e {
        LockError::Held { .. } => Error::Busy(e.to_string()),
        LockError::Open { .. } => Error::Runtime(e.into()),
    })
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

/// Logging to stderr at the config's level, with syslog priorities under journald.
pub(crate) fn init_logging(cfg: &Config) {
    LOGGER.journal.store(
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // Only fails when a logger is already set (tests): keep that one.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(cfg.log_level.filter());
}
