//! How a command fails: one error type over the library's typed errors, each kind with its
//! own exit code ([`exit`]), listed in `balancer --help` and the README.
use crate::{actuation::JournalError, config::ConfigError, probe::ProbeError, system::proximity};

/// The exit codes of every command.
pub(crate) mod exit {
    /// Done.
    // Kept so the table is whole; success itself returns ExitCode::SUCCESS.
    #[allow(dead_code)]
    pub(crate) const OK: u8 = 0;
    /// Measuring, an action or a write failed at run time (the error says what).
    pub(crate) const RUNTIME: u8 = 1;
    /// The command line is wrong (clap's code for its own errors too).
    pub(crate) const USAGE: u8 = 2;
    /// Another balancer (daemon, `top --balance`) or irqbalance runs.
    pub(crate) const BUSY: u8 = 3;
    /// A journal that cannot be used as it is (damaged, unknown version, another boot, a
    /// target balancer does not change): nothing was written.
    pub(crate) const JOURNAL: u8 = 4;
    /// Missing privileges or capabilities, or a tracefs that could not be mounted.
    pub(crate) const PERMISSION: u8 = 5;
    /// A config or proximity file that cannot be used (missing, malformed, a value out of
    /// range, or no CPU left for IRQs on this machine).
    pub(crate) const CONFIG: u8 = 6;
    /// The reader of standard output went away: what a shell shows for a program that
    /// SIGPIPE ended (128 + 13), so `set -o pipefail` sees the output was cut as with any
    /// other tool. Rust ignores SIGPIPE (the daemon's metrics socket needs that), so we say
    /// it.
    pub(crate) const CLOSED_PIPE: u8 = 141;
}

/// The exit codes as `--help` lists them.
pub(crate) const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    done
  1    runtime error: measuring, an action or a write failed
  2    usage error: the command line is wrong
  3    busy: another balancer (daemon, top --balance) or irqbalance runs
  4    the journal cannot be used as it is; nothing was written
  5    permission: root or CAP_BPF and CAP_PERFMON needed, or tracefs not mountable
  6    configuration: a config or proximity file cannot be used
  141  standard output was closed (as SIGPIPE)";

/// Why a command failed. The message is one line; [`Error::exit_code`] says which kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line asks for something that cannot be (clap reports its own errors).
    #[error("{0}")]
    Usage(String),
    /// Missing privileges, or a tracefs that could not be mounted.
    #[error(transparent)]
    Permission(ProbeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Proximity(#[from] proximity::LoadError),
    /// The config against this machine (no CPU left for IRQs).
    #[error("{0}")]
    Machine(String),
    /// Another balancer or irqbalance runs.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Everything else: measuring, the kernel refusing, a write that failed.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl From<ProbeError> for Error {
    fn from(e: ProbeError) -> Error {
        if e.is_permission() {
            Error::Permission(e)
        } else {
            Error::Runtime(e.into())
        }
    }
}

// Reading the machine, writing the output and serialising it: run-time errors.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Runtime(e.into())
    }
}

impl From<crate::system::SystemError> for Error {
    fn from(e: crate::system::SystemError) -> Error {
        Error::Runtime(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Runtime(e.into())
    }
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Permission(_) => exit::PERMISSION,
            Error::Config(_) | Error::Proximity(_) | Error::Machine(_) => exit::CONFIG,
            Error::Busy(_) => exit::BUSY,
            // Reading or writing the file is no fault of its content.
            Error::Journal(JournalError::Io { .. }) => exit::RUNTIME,
            Error::Journal(_) => exit::JOURNAL,
            // The probes are loaded after start-up checked the privileges; should the kernel
            // still refuse for them, say so with the same code.
            Error::Runtime(e) => match e.downcast_ref::<ProbeError>() {
                Some(p) if p.is_permission() => exit::PERMISSION,
                _ => exit::RUNTIME,
            },
        }
    }

    /// The message and its causes on one line, a cause left out when the message before it
    /// already ends with it (many of the library's messages carry their cause).
    pub(crate) fn line(&self) -> String {
        let mut line = String::new();
        let mut push = |part: String| {
            if !line.ends_with(&part) {
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&part);
            }
        };
        match self {
            Error::Runtime(e) => e.chain().for_each(|c| push(c.to_string())),
            _ => {
                let mut next: Option<&dyn std::error::Error> = Some(self);
                while let Some(e) = next {
                    push(e.to_string());
                    next = e.source();
                }
            }
        }
        line
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let codes = [
            Error::Usage("u".into()).exit_code(),
            Error::Permission(ProbeError::Permission("p".into())).exit_code(),
            Error::Machine("m".into()).exit_code(),
            Error::Busy("b".into()).exit_code(),
            Error::Runtime(anyhow::anyhow!("r")).exit_code(),
        ];
        assert_eq!(
            codes,
            [
                exit::USAGE,
                exit::PERMISSION,
                exit::CONFIG,
                exit::BUSY,
                exit::RUNTIME
            ]
        );
        let mut all = vec![
            exit::OK,
            exit::RUNTIME,
            exit::USAGE,
            exit::BUSY,
            exit::JOURNAL,
            exit::PERMISSION,
            exit::CONFIG,
            exit::CLOSED_PIPE,
        ];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8, "distinct");
        for code in all {
            assert!(
                EXIT_STATUS_HELP
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "--help lists {code}"
            );
        }
    }

    #[test]
    fn a_probe_error_is_permission_only_when_privileges_fix_it() {
        let e: Error = ProbeError::Permission("needs root".into()).into();
        assert_eq!(e.exit_code(), exit::PERMISSION);
        let e: Error = ProbeError::Attach {
            event: "irq:irq_handler_entry".into(),
            tried: "tp_btf: EINVAL".into(),
        }
        .into();
        assert_eq!(e.exit_code(), exit::RUNTIME);
        // Wrapped by a stage on its way up, it keeps its code.
        let e = Error::Runtime(
            anyhow::Error::new(ProbeError::Permission("needs root".into()))
                .context("starting the monitor"),
        );
        assert_eq!(e.exit_code(), exit::PERMISSION);
        assert_eq!(e.line(), "starting the monitor: needs root");
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let e = Error::Journal(JournalError::Io {
            path: "/j".into(),
            source: io,
        });
        assert_eq!(e.line().matches(&text).count(), 1, "{}", e.line());
        assert_eq!(e.exit_code(), exit::RUNTIME);
    }
}
