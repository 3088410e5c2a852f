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
//! Modules the integration tests (`tests/`), benches, examples and fuzz targets use are
//! public, and inside them only the items those use; the rest (the daemon's loop, monitor,
//! metrics, the TUI, output, tables) is `pub(crate)`.
//!
//! [`engine`] runs policy and actuation as one loop for every command that plans; [`cmd`]
//! holds the commands, one file each, and the start-up they share.

// What is not reachable from outside says so (`pub(crate)`), so that the compiler finds
// what nothing uses.
#![warn(unreachable_pub)]

pub mod actuation;
pub mod attribution;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod cpumask;
pub(crate) mod daemon;
pub mod engine;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod output;
pub mod policy;
pub mod probe;
pub mod report;
pub mod sample;
pub mod system;
pub(crate) mod table;
pub(crate) mod tui;
pub mod vector;

// Shared with the tests crate, which exports it.
#[cfg(test)]
#[allow(unreachable_pub)]
#[path = "../tests/support/copy_dir.rs"]
mod test_support;
