//! `balancer top`: the live terminal view of where interrupt time goes.
//!
//! The same [`crate::monitor::Monitor`] and [`crate::report::Report`] as `balancer report`,
//! one interval per refresh, so the two never disagree; `cmd::top` measures and hands each
//! interval in. State changes are pure ([`app`]), keys are mapped in one place ([`input`]),
//! drawing reads the state only ([`render`]); this module owns the terminal and the loop.
//! The view never writes to the kernel; only `--balance` without `--dry-run` does, through
//! the same [`crate::engine::Engine`] and actuation as the daemon, driven by `cmd::top`.
use std::{
    io::Stdout,
    sync::{
        Once,
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

pub(crate) mod app;
pub(crate) mod balance;
pub(crate) mod input;
pub(crate) mod render;

use app::{App, Effect};

/// Runs the view until the user quits or `stop` is set: the terminal in raw mode on the
/// alternate screen (restored after, and after a panic), `sample` called once per interval.
pub(crate) fn run(
    app: &mut App,
    stop: &AtomicBool,
    sample: &mut dyn FnMut(&mut App, Instant),
) -> anyhow::Result<()> {
    let mut term = TerminalGuard::enter()?;
    watch_for_hangup();
    event_loop(&mut term.terminal, app, stop, sample)
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
