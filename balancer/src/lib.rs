//! balancer: IRQ observability and balancing on measured CPU time.
//!
//! Data flows one way, one module per stage:
//!
//! ```text
//! probe (eBPF maps)  ─┐
//! system (/proc,/sys)─┼─> sample ─> attribution ─> policy (pure) ─> actuation (writes)
//!                     │                     └────> report / tui / metrics (views)
//! ```
//!
//! [`engine`] runs policy and actuation as one loop for every command that plans; [`cmd`]
//! holds the commands, one file each, and the start-up they share.
use std::fmt;

pub mod actuation;
pub mod attribution;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod cpumask;
pub mod daemon;
pub mod engine;
pub mod metrics;
pub mod monitor;
pub mod output;
pub mod policy;
pub mod probe;
pub mod report;
pub mod sample;
pub mod system;
pub mod table;
pub mod tui;
pub mod vector;

/// An error that ends the program with a chosen exit code and a one-line message, without a
/// backtrace or a chain of causes: for conditions the user fixes (privileges, bad input).
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

impl Fatal {
    /// Exit code for missing privileges or capabilities.
    pub const PERMISSION: u8 = 2;
    /// Exit code for bad command-line or configuration input.
    pub const USAGE: u8 = 2;
    /// Exit code when another balancer (daemon, `top --balance`) holds the lock.
    pub const BUSY: u8 = 3;
    /// Exit code for a journal that cannot be used as it is (damaged, unknown version,
    /// another boot, a target balancer does not change): nothing was written.
    pub const JOURNAL: u8 = 4;

    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}
