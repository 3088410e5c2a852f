//! `balancer restore`: put back every value the daemon changed, from its journal.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use super::{Error, Result, say, startup};
use crate::{
    actuation::{self, LockError, RealSys},
    output,
};

/// Put back every value the daemon changed, from its journal.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Restore takes the daemon's lock (the config's lock-file) and refuses while a daemon or top \
--balance runs. It checks the whole journal before it writes anything: its format, its boot \
and that every entry is an IRQ affinity, rps_cpus or NAPI-thread affinity. Targets that are \
gone (IRQ or device removed) are skipped and dropped from the journal.

Exit status: 0 restored, or no journal at the default path; 1 some values could not be \
written back (they stay in the journal); 2 no journal at the --journal path; 3 a balancer \
is running; 4 the journal cannot be used (damaged, unknown version, another boot, a target \
balancer does not change): nothing was written; 6 bad config.")]
pub(crate) struct RestoreArgs {
    /// The journal; default: the config's `journal` (/var/lib/balancer/journal.json).
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Config file (TOML) naming the journal and the lock; default
    /// /etc/balancer/balancer.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Restore a journal written during another boot (or one that records none): only when
    /// the machine has not rebooted since, as IRQs may be numbered differently after a boot.
    #[arg(long)]
    force: bool,
    /// Root of /proc and /sys (tests use a fixture copy).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

/// Runs the command.
pub(crate) fn run(args: &RestoreArgs) -> Result<ExitCode> {
    let cfg = startup::load_config(args.config.as_deref())?;
    let journal = args.journal.clone().unwrap_or(cfg.journal);
    // A daemon keeps its journal in memory and rewrites it: restoring under it would lose
    // the originals of what it moves next. Refuse rather than wait, as a daemon runs for
    // days: stopping it (or its restore-on-exit) is the user's call.
    let _lock = actuation::try_lock(&cfg.lock_file).map_err(|e| match e {
        LockError::Held { path, pid } => Error::Busy(format!(
            "a balancer (daemon or top --balance{}) runs and holds {}: stop it first \
             (systemctl stop balancer); it restores on exit when restore-on-exit is set",
            pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
            path.display()
        )),
        LockError::Open { .. } => Error::Runtime(e.into()),
    })?;
    let mut out = output::stdout();
    if !journal
        .try_exists()
        .with_context(|| format!("journal {}", journal.display()))?
    {
        if args.journal.is_some() {
            return Err(Error::Usage(format!(
                "no journal at {} (named with --journal)",
                journal.display()
            )));
        }
        writeln!(
            out,
            "nothing to restore: no journal at {}",
            journal.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = actuation::restore(&args.root, &journal, &mut RealSys, args.force)?;
    // Done whatever stdout says (main reports a failed write): the lines below must follow.
    for t in &r.restored {
        let _ = writeln!(out, "restored {t}");
    }
    if !r.gone.is_empty() {
        let list: Vec<String> = r.gone.iter().map(ToString::to_string).collect();
        say(&format!(
            "warning: {} target(s) gone since they were changed (IRQ, device or thread \
             removed), dropped from the journal: {}",
            r.gone.len(),
            list.join(", ")
        ));
    }
    for (t, e) in &r.failed {
        say(&format!("could not restore {t}: {e}"));
    }
    if r.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        say(&format!(
            "{} value(s) not restored; they stay in {}",
            r.failed.len(),
            journal.display()
        ));
        Ok(ExitCode::FAILURE)
    }
}
