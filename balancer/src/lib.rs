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
