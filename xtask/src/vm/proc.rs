//! Running commands so that Ctrl-C or SIGTERM ends them and lets the cleanup guards run.
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Catches SIGINT, SIGTERM and SIGHUP in a flag that the wait loops poll, so an interrupted
/// run still tears down its namespaces. A second signal exits at once.
pub fn catch_signals() -> Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(flag))
            .context("installing a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(flag))
            .context("installing a signal handler")?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::Relaxed))
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// How a waited-for child ended.
pub enum Waited {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for `child`, killing it on timeout or on a signal to us.
pub fn wait(child: &mut Child, timeout: Option<Duration>, what: &str) -> Result<Waited> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(Waited::Exited(status));
        }
        if interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted while running {what}");
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Waited::TimedOut);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to the end with inherited output; fails on a non-zero exit.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    check_interrupted()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    match wait(&mut child, None, what)? {
        Waited::Exited(status) if status.success() => Ok(()),
        Waited::Exited(status) => bail!("{what} failed ({status})"),
        Waited::TimedOut => unreachable!("no timeout was set"),
    }
}

/// Runs a short command and returns its stdout; fails with its stderr on a non-zero exit.
/// It does not look at the signal flag: cleanup after a signal runs through here.
pub fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
