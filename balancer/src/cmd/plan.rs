//! `balancer plan`: measure one interval and print what the daemon would do now, and why.
use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use serde::Serialize;

use super::{Result, startup};
use crate::{
    config,
    engine::{DryRun, Engine, Step},
    monitor::Monitor,
    output,
    policy::{Plan, Snapshot},
};

/// Measure one interval and print what the daemon would do now, and why. Changes nothing.
#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// Seconds to measure (0.1 to 86400, fractions allowed).
    #[arg(short, long, default_value = "5", value_name = "SECS",
          value_parser = super::parse_duration)]
    duration: Duration,
    /// Config file (TOML) whose policy settings to plan with; default
    /// /etc/balancer/balancer.toml, defaults when it is absent.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON (keys: plan, cpus, no_irq_cpus).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct PlanJson<'a> {
    plan: &'a Plan,
    cpus: Vec<CpuJson>,
    /// CPUs that take no IRQs, by reason (cpulists).
    no_irq_cpus: NoIrqJson,
}

#[derive(Serialize)]
struct NoIrqJson {
    excluded: crate::cpumask::CpuSet,
    isolated: crate::cpumask::CpuSet,
    nohz_full: crate::cpumask::CpuSet,
}

#[derive(Clone, Serialize)]
struct CpuJson {
    cpu: u32,
    node: Option<u32>,
    busy_pct: f64,
    irq_pct: f64,
}

/// Runs the command.
pub(crate) fn run(args: &PlanArgs) -> Result<ExitCode> {
    let cfg = startup::load_config(args.config.as_deref())?;
    let root = startup::machine_root();
    let opts = startup::read_options(cfg.proximity.as_deref(), &root)?;
    startup::measuring()?;
    let mut monitor = Monitor::start(&root, opts)?;
    startup::warn_machine(&cfg, monitor.model())?;
    std::thread::sleep(args.duration);
    let tick = monitor.tick()?;
    let snap = Snapshot::build(monitor.model(), &tick.attribution);
    // One dry step of a fresh engine: the journal's IRQs are not special here, history
    // starts empty as in a fresh daemon.
    let mut engine = Engine::new(cfg, DryRun);
    let Step { plan, .. } = engine.step(&snap);
    let cfg = engine.config();
    let cpus: Vec<CpuJson> = snap
        .cpus
        .values()
        .filter(|c| c.online)
        .map(|c| CpuJson {
            cpu: c.id,
            node: c.node,
            busy_pct: 100.0 * snap.frac(c.busy_ns),
            irq_pct: 100.0 * snap.frac(c.irq_ns),
        })
        .collect();
    let mut out = output::stdout();
    if args.json {
        serde_json::to_writer_pretty(
            &mut out,
            &PlanJson {
                plan: &plan,
                cpus: cpus.clone(),
                no_irq_cpus: NoIrqJson {
                    excluded: cfg.exclude_cpus.clone(),
                    isolated: monitor.model().isolated.clone(),
                    nohz_full: monitor.model().nohz_full.clone(),
                },
            },
        )?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "Measured {:.1} s; strategy {}, threshold {}%, load-limit {}%",
        snap.duration_ns as f64 / 1e9,
        cfg.strategy.as_str(),
        cfg.threshold,
        cfg.load_limit
    )?;
    writeln!(
        out,
        "{}",
        cfg.banned_cpus_text(&config::MachineFacts::of(monitor.model()))
    )?;
    writeln!(out, "\n  CPU  NODE  BUSY%  IRQ%")?;
    for c in &cpus {
        writeln!(
            out,
            "  {:>3}  {:>4}  {:>5.1}  {:>4.1}",
            c.cpu,
            c.node.map_or("-".into(), |n| n.to_string()),
            c.busy_pct,
            c.irq_pct
        )?;
    }
    if !plan.overloaded.is_empty() {
        let list: Vec<String> = plan.overloaded.iter().map(u32::to_string).collect();
        writeln!(out, "\nOverloaded CPUs: {}", list.join(", "))?;
    }
    writeln!(out, "\nWould do ({}):", plan.actions.len())?;
    if plan.actions.is_empty() {
        writeln!(out, "  nothing")?;
    }
    for a in &plan.actions {
        writeln!(out, "  - {}", a.reason)?;
    }
    if !plan.findings.is_empty() {
        writeln!(out, "\nFindings:")?;
        for f in &plan.findings {
            writeln!(out, "  - {}", f.message)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
