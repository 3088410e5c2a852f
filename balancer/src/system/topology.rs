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
    /// Text: the full layout whatever the terminal's width (as when piped); else the tables
    /// fit `COLUMNS` or the terminal, 80 columns at least.
    #[arg(long)]
    pub wide: bool,
}

pub fn run(args: TopologyArgs) -> anyhow::Result<ExitCode> {
    let opts: ReadOptions =
        crate::report::read_options_under(args.proximity.as_deref(), &args.root)?;
    let model = SystemModel::read(&args.root, &opts)
        .with_context(|| format!("reading the system under {}", args.root.display()))?;
    let out = if args.json {
        serde_json::to_string_pretty(&model)? + "\n"
    } else {
        render_width(&model, crate::output::columns(args.wide).unwrap_or(WIDTH))
    };
    crate::output::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The full layout's width, what piped output and `--wide` get.
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

/// The text form in the full layout, every line within 100 columns.
pub fn render(m: &SystemModel) -> String {
    render_width(m, WIDTH)
}

/// The text form with every line within `width` columns (80 at least): below the full
/// width the PCI and IRQ tables narrow their columns; lines longer than `width` are cut.
pub fn render_width(m: &SystemModel, width: usize) -> String {
    let width = width.max(crate::output::MIN_COLUMNS);
    let narrow = width < WIDTH;
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
            width
        )
    );
    let offline = m.present_cpus().difference(&online);
    let line = format!(
        "Offline: {}   Isolated: {}   nohz_full: {}",
        list_or_dash(Some(&offline)),
        list_or_dash(Some(&m.isolated)),
        list_or_dash(Some(&m.nohz_full))
    );
    let _ = writeln!(o, "{}", fit(&line, width));

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
        let _ = writeln!(o, "{}", fit(&head, width));
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
            let _ = writeln!(o, "{}", fit(&line, width));
        }
    }

    let _ = writeln!(o, "\nPCI devices with IRQs or netdevs");
    // Narrow: shorter DRIVER, NODE, LOCAL CPUS and NETDEVS columns.
    let (drv_w, node_w, cpus_w, nd_w) = if narrow {
        (10, 4, 14, 12)
    } else {
        (14, 8, 16, 16)
    };
    let _ = writeln!(
        o,
        "  {:<12} {:<drv_w$} {:<node_w$} {:>4} {:<8} {:<cpus_w$} {:<nd_w$} {:>4}",
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
            "  {:<12} {:<drv_w$} {:<node_w$} {:>4} {:<8} {:<cpus_w$} {:<nd_w$} {:>4}",
            fit(&d.address, 12),
            fit(d.driver.as_deref().unwrap_or("-"), drv_w),
            d.node.map_or("-".into(), |n| n.to_string()),
            d.numa_node.map_or("-".into(), |n| n.to_string()),
            source,
            fit(&list_or_dash(d.node_cpus.as_ref()), cpus_w),
            fit(&d.netdevs.join(","), nd_w),
            nirqs
        );
        let _ = writeln!(o, "{}", fit(&line, width));
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
        let _ = writeln!(o, "{}", fit(&line, width));
    }

    let _ = writeln!(
        o,
        "\nIRQs (node: fw = firmware, ovr = proximity override; M = managed)"
    );
    // Narrow: shorter DRIVER, NETDEV, NODE and affinity columns, so ACTIONS keeps some room.
    let (drv_w, net_w, node_w, aff_w, eff_w, eff) = if narrow {
        (8, 8, 5, 8, 5, "EFF")
    } else {
        (11, 10, 6, 11, 9, "EFFECTIVE")
    };
    let _ = writeln!(
        o,
        "  {:>5} {:<12} {:<drv_w$} {:<net_w$} {:<7} {:<node_w$} {:<aff_w$} {:<eff_w$} ACTIONS",
        "IRQ", "DEVICE", "DRIVER", "NETDEV", "QUEUE", "NODE", "AFFINITY", eff
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
            "  {:>5} {:<12} {:<drv_w$} {:<net_w$} {:<7} {:<node_w$} {:<aff_w$} {:<eff_w$} \
             {managed}{}",
            irq.number,
            fit(&device, 12),
            fit(irq.driver.as_deref().unwrap_or("-"), drv_w),
            fit(irq.netdev.as_deref().unwrap_or("-"), net_w),
            queue,
            node_text(irq.node, irq.node_source),
            fit(&list_or_dash(irq.smp_affinity.as_ref()), aff_w),
            fit(&list_or_dash(irq.effective_affinity.as_ref()), eff_w),
            irq.actions.join(", ")
        );
        let _ = writeln!(o, "{}", fit(&line, width));
    }

    if !m.warnings.is_empty() {
        let _ = writeln!(o, "\nWarnings");
        for w in &m.warnings {
            let _ = writeln!(o, "  {}", fit(w, width - 2));
        }
    }
    o
}
