//! Standard output of the commands. Every command prints its results through [`stdout`], which
//! remembers the first write error; `main` asks [`failure`] and ends quietly on a closed pipe
//! (`balancer topology | head -1`) and with one line on any other error (`> /dev/full`).
//!
//! Why a remembered error rather than a type in the error chain: serde_json and anyhow's
//! contexts wrap the io::Error on its way up, and serde_json hides it from `source()`.
use std::{
    io::{self, Write},
    sync::OnceLock,
};

/// Why standard output could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The reader went away (EPIPE): the user's choice, not an error.
    ClosedPipe,
    /// Anything else (ENOSPC, EIO, ...), as the kernel said it.
    Error(String),
}

static FAILURE: OnceLock<Failure> = OnceLock::new();

/// The first failed write to standard output, if any.
pub(crate) fn failure() -> Option<&'static Failure> {
    FAILURE.get()
}

fn note(e: io::Error) -> io::Error {
    // write_all retries EINTR itself: not a failure.
    if e.kind() == io::ErrorKind::Interrupted {
        return e;
    }
    let _ = FAILURE.set(if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::ClosedPipe
    } else {
        Failure::Error(e.to_string())
    });
    e
}

/// Standard output (locked, line-buffered as std's) that notes its first error.
pub(crate) struct Stdout(io::StdoutLock<'static>);

pub(crate) fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(note)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(note)
    }
}

/// Flushes what std still buffers (std's own flush at exit drops errors).
pub(crate) fn flush() {
    let _ = stdout().flush();
}

/// The narrowest width text tables are laid out for; narrower terminals get 80 columns.
pub(crate) const MIN_COLUMNS: usize = 80;

/// Columns the text output of `report` and `topology` may use: `COLUMNS` when set, else the
/// terminal's width when standard output is one; `None` (the full layout) with `--wide` or
/// when standard output is a pipe or file, so what scripts read does not change with the
/// terminal they ran from.
pub(crate) fn columns(wide: bool) -> Option<usize> {
    use io::IsTerminal as _;
    if wide {
        return None;
    }
    // A COLUMNS that is no number is ignored, as by other tools.
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    let width = from_env.or_else(|| {
        io::stdout()
            .is_terminal()
            .then(crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(w, _)| usize::from(w))
    })?;
    Some(width.max(MIN_COLUMNS))
}
