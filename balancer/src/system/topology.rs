//! `balancer topology`: prints the system model.
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::{NodeSource, QueueKind, ReadOptions, SystemModel};
use crate::cpumask::CpuSet;

/// Print the machine as the balancer sees it: CPUs by node, devices, IRQs and where each one's
/// node came from.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Read /proc and /sys under this directory instead of the live machine.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Proximity override file (birq's format: `<pci address or prefix> node N|cpumask HEX`).
    #[arg(long, value_name = "FILE")]
    pub proximity: Option<PathBuf>,
    /// Print the model as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TopologyArgs) -> anyhow::Result<ExitCode> {
    let opts: ReadOptions =
        crate::report::read_options_under(args.proximity.as_deref(), &args.root)?;
    let model = SystemModel::read(&args.root, &opts)
        .with_context(|| format!("reading the system under {}", args.root.display()))?;
    let out = if args.json {
        serde_json::to_string_pretty(&model)? + "\n"
    } else {
        render(&model)
    };
    crate::output::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

const WIDTH: usize = 100;

/// Cuts a field to `width` columns, marking the cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn list_or_dash(set: Option<&CpuSet>) -> String {
    match set {
        Some(s) if !s.is_empty() => s.to_list_string(),
        Some(_) => "none".into(),
        None => "-".into(),
    }
}

fn node_text(node: Option<u32>, source: NodeSource) -> String {
    match (node, source) {
        (Some(n), NodeSource::Override) => format!("{n} ovr"),
        (Some(n), _) => format!("{n} fw"),
        (None, NodeSource::Override) => "- ovr".into(),
        (None, _) => "-".into(),
    }
}

/// The text form, every line within 100 columns.
pub fn render(m: &SystemModel) -> String {
    let mut o = String::new();
    let online = m.online_cpus();
    let _ = writeln!(
        o,
        "{}",
        fit(
            &format!(
                "Kernel {}, {} CPUs present, {} online ({}), nr_cpu_ids {}",
                m.kernel.as_deref().unwrap_or("unknown"),
                m.cpus.len(),
                online.len(),
                online,
                m.nr_cpu_ids
            ),
            WIDTH
        )
    );
    let offline = m.present_cpus().difference(&online);
    let line = format!(
        "Offline: {}   Isolated: {}   nohz_full: {}",
        list_or_dash(Some(&offline)),
        list_or_dash(Some(&m.isolated)),
        list_or_dash(Some(&m.nohz_full))
    );
    let _ = writeln!(o, "{}", fit(&line, WIDTH));

    let _ = writeln!(o, "\nCPUs by node");
    let mut groups: Vec<(Option<u32>, CpuSet)> = m
        .nodes
        .keys()
        .map(|&n| {
            (
                Some(n),
                m.cpus
                    .values()
                    .filter(|c| c.node == Some(n))
                    .map(|c| c.id)
                    .collect(),
            )
        })
        .collect();
    let unplaced: CpuSet = m
        .cpus
        .values()
        .filter(|c| c.node.is_none())
        .map(|c| c.id)
        .collect();
    if !unplaced.is_empty() {
        groups.push((None, unplaced));
    }
    for (node, cpus) in groups {
        let head = match node {
            Some(n) => {
                let dist = m.nodes.get(&n).map_or(String::new(), |nd| {
                    nd.distances
                        .values()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                format!(
                    "  node {n}: cpus {}  distances [{dist}]",
                    list_or_dash(Some(&cpus))
                )
            }
            None => format!("  no node: cpus {}", list_or_dash(Some(&cpus))),
        };
        let _ = writeln!(o, "{}", fit(&head, WIDTH));
        // One line per core: its threads, package and last-level cache.
        let mut seen = CpuSet::new();
        for cpu in cpus.iter() {
            if seen.contains(cpu) {
                continue;
            }
            let c = &m.cpus[&cpu];
            let threads = if c.thread_siblings.is_empty() {
                CpuSet::from_cpus([cpu])
            } else {
                c.thread_siblings.intersection(&cpus)
            };
            seen = seen.union(&threads);
            let state = if c.online { "" } else { "  offline" };
            let llc = match (&c.llc, &c.llc_siblings) {
                (Some(info), Some(sib)) => format!(
                    "  L{} {} shared {}",
                    info.level,
                    info.size.as_deref().unwrap_or("?"),
                    sib
                ),
                _ => String::new(),
            };
            let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            let line = format!(
                "    pkg {:>3} core {:>4}  threads {:<12}{llc}{state}",
                opt(c.package),
                opt(c.core),
                threads.to_list_string()
            );
            let _ = writeln!(o, "{}", fit(&line, WIDTH));
        }
    }

    let _ = writeln!(o, "\nPCI devices with IRQs or netdevs");
    let _ = writeln!(
        o,
        "  {:<12} {:<14} {:<8} {:>4} {:<8} {:<16} {:<16} {:>4}",
        "ADDRESS", "DRIVER", "NODE", "FW", "SOURCE", "LOCAL CPUS", "NETDEVS", "IRQS"
    );
    for d in m.pci.values() {
        let nirqs = m
            .irqs
            .values()
            .filter(|i| i.device.as_ref() == Some(&d.address))
            .count();
        if nirqs == 0 && d.netdevs.is_empty() {
            continue;
        }
        let source = match d.node_source {
            NodeSource::Firmware => "firmware",
            NodeSource::Override => "override",
            NodeSource::Unknown => "unknown",
        };
        let line = format!(
            "  {:<12} {:<14} {:<8} {:>4} {:<8} {:<16} {:<16} {:>4}",
            fit(&d.address, 12),
            fit(d.driver.as_deref().unwrap_or("-"), 14),
            d.node.map_or("-".into(), |n| n.to_string()),
            d.numa_node.map_or("-".into(), |n| n.to_string()),
            source,
            fit(&list_or_dash(d.node_cpus.as_ref()), 16),
            fit(&d.netdevs.join(","), 16),
            nirqs
        );
        let _ = writeln!(o, "{}", fit(&line, WIDTH));
    }

    let _ = writeln!(o, "\nNetdevs");
    let _ = writeln!(
        o,
        "  {:<16} {:<12} {:>4} {:<9} RPS CPUS (by rx queue, where set)",
        "NAME", "DEVICE", "RXQ", "THREADED"
    );
    for n in m.netdevs.values() {
        let rps: Vec<String> = n
            .rx_queues
            .iter()
            .filter_map(|q| {
                q.rps_cpus
                    .as_ref()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("{}:{s}", q.index))
            })
            .collect();
        let threaded = match n.threaded {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let line = format!(
            "  {:<16} {:<12} {:>4} {:<9} {}",
            fit(&n.name, 16),
            fit(n.device.as_deref().unwrap_or("-"), 12),
            n.rx_queues.len(),
            threaded,
            if rps.is_empty() {
                "-".into()
            } else {
                rps.join(" ")
            }
        );
        let _ = writeln!(o, "{}", fit(&line, WIDTH));
    }

    let _ = writeln!(
        o,
        "\nIRQs (node: fw = firmware, ovr = proximity override; M = managed)"
    );
    let _ = writeln!(
        o,
        "  {:>5} {:<12} {:<11} {:<10} {:<7} {:<6} {:<11} {:<9} ACTIONS",
        "IRQ", "DEVICE", "DRIVER", "NETDEV", "QUEUE", "NODE", "AFFINITY", "EFFECTIVE"
    );
    for irq in m.irqs.values() {
        let queue = irq.queue.map_or("-".to_string(), |q| {
            let kind = match q.kind {
                QueueKind::Rx => "rx",
                QueueKind::Tx => "tx",
                QueueKind::RxTx => "txrx",
                QueueKind::Other => "q",
            };
            format!("{kind} {}", q.index)
        });
        let managed = if irq.managed == Some(true) { "M " } else { "" };
        let device = irq.device.clone().unwrap_or_else(|| irq.chip.clone());
        let line = format!(
            "  {:>5} {:<12} {:<11} {:<10} {:<7} {:<6} {:<11} {:<9} {managed}{}",
            irq.number,
            fit(&device, 12),
            fit(irq.driver.as_deref().unwrap_or("-"), 11),
            fit(irq.netdev.as_deref().unwrap_or("-"), 10),
            queue,
            node_text(irq.node, irq.node_source),
            fit(&list_or_dash(irq.smp_affinity.as_ref()), 11),
            fit(&list_or_dash(irq.effective_affinity.as_ref()), 9),
            irq.actions.join(", ")
        );
        let _ = writeln!(o, "{}", fit(&line, WIDTH));
    }

    if !m.warnings.is_empty() {
        let _ = writeln!(o, "\nWarnings");
        for w in &m.warnings {
            let _ = writeln!(o, "  {}", fit(w, WIDTH - 2));
        }
    }
    o
}
