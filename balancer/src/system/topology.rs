//! The topology view: the system model as text tables, for `balancer topology`.
use std::fmt::Write as _;

use super::{NodeSource, QueueKind, SystemModel};
use crate::{
    cpumask::CpuSet,
    table::{Column, Table, fit},
};

/// The full layout's width, what piped output and `--wide` get.
pub(crate) const WIDTH: usize = 100;

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

/// Narrow: shorter DRIVER, NODE, LOCAL CPUS and NETDEVS columns.
fn pci_table(o: &mut String, m: &SystemModel, width: usize) {
    let _ = writeln!(o, "\nPCI devices with IRQs or netdevs");
    let (drv_w, node_w, cpus_w, nd_w) = if width < WIDTH {
        (10, 4, 14, 12)
    } else {
        (14, 8, 16, 16)
    };
    let table = Table::new(vec![
        Column::left("ADDRESS", 12),
        Column::left("DRIVER", drv_w),
        Column::left("NODE", node_w),
        Column::right("FW", 4),
        Column::left("SOURCE", 8),
        Column::left("LOCAL CPUS", cpus_w),
        Column::left("NETDEVS", nd_w),
        Column::right("IRQS", 4),
    ])
    .indent("  ");
    let rows: Vec<Vec<String>> = m
        .pci
        .values()
        .filter_map(|d| {
            let nirqs = m
                .irqs
                .values()
                .filter(|i| i.device.as_ref() == Some(&d.address))
                .count();
            if nirqs == 0 && d.netdevs.is_empty() {
                return None;
            }
            let source = match d.node_source {
                NodeSource::Firmware => "firmware",
                NodeSource::Override => "override",
                NodeSource::Unknown => "unknown",
            };
            Some(vec![
                d.address.clone(),
                d.driver.clone().unwrap_or_else(|| "-".into()),
                d.node.map_or("-".into(), |n| n.to_string()),
                d.numa_node.map_or("-".into(), |n| n.to_string()),
                source.to_string(),
                list_or_dash(d.node_cpus.as_ref()),
                d.netdevs.join(","),
                nirqs.to_string(),
            ])
        })
        .collect();
    o.push_str(&table.text(width, &rows));
}

fn netdev_table(o: &mut String, m: &SystemModel, width: usize) {
    let _ = writeln!(o, "\nNetdevs");
    let table = Table::new(vec![
        Column::left("NAME", 16),
        Column::left("DEVICE", 12),
        Column::right("RXQ", 4),
        Column::left("THREADED", 9),
        Column::left("RPS CPUS (by rx queue, where set)", 0).flex(0, 1),
    ])
    .indent("  ");
    let rows: Vec<Vec<String>> = m
        .netdevs
        .values()
        .map(|n| {
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
            vec![
                n.name.clone(),
                n.device.clone().unwrap_or_else(|| "-".into()),
                n.rx_queues.len().to_string(),
                threaded.to_string(),
                if rps.is_empty() {
                    "-".into()
                } else {
                    rps.join(" ")
                },
            ]
        })
        .collect();
    o.push_str(&table.text(width, &rows));
}

/// Narrow: shorter DRIVER, NETDEV, NODE and affinity columns, so ACTIONS keeps some room.
fn irq_table(o: &mut String, m: &SystemModel, width: usize) {
    let _ = writeln!(
        o,
        "\nIRQs (node: fw = firmware, ovr = proximity override; M = managed)"
    );
    let (drv_w, net_w, node_w, aff_w, eff_w) = if width < WIDTH {
        (8, 8, 5, 8, 5)
    } else {
        (11, 10, 6, 11, 9)
    };
    let table = Table::new(vec![
        Column::right("IRQ", 5),
        Column::left("DEVICE", 12),
        Column::left("DRIVER", drv_w),
        Column::left("NETDEV", net_w),
        Column::left("QUEUE", 7),
        Column::left("NODE", node_w),
        Column::left("AFFINITY", aff_w),
        Column::left("EFFECTIVE", eff_w).short(&["EFF"]),
        Column::left("ACTIONS", 0).flex(0, 1),
    ])
    .indent("  ");
    let rows: Vec<Vec<String>> = m
        .irqs
        .values()
        .map(|irq| {
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
            vec![
                irq.number.to_string(),
                irq.device.clone().unwrap_or_else(|| irq.chip.clone()),
                irq.driver.clone().unwrap_or_else(|| "-".into()),
                irq.netdev.clone().unwrap_or_else(|| "-".into()),
                queue,
                node_text(irq.node, irq.node_source),
                list_or_dash(irq.smp_affinity.as_ref()),
                list_or_dash(irq.effective_affinity.as_ref()),
                format!("{managed}{}", irq.actions.join(", ")),
            ]
        })
        .collect();
    o.push_str(&table.text(width, &rows));
}

/// Per node its CPUs and distances, then one line per core: its threads, package and
/// last-level cache.
fn cpus_by_node(o: &mut String, m: &SystemModel, width: usize) {
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
}

/// The text form in the full layout, every line within 100 columns.
pub fn render(m: &SystemModel) -> String {
    render_width(m, WIDTH)
}

/// The text form with every line within `width` columns (80 at least): below the full
/// width the PCI and IRQ tables narrow their columns; lines and cells that do not fit are
/// cut.
pub(crate) fn render_width(m: &SystemModel, width: usize) -> String {
    let width = width.max(crate::output::MIN_COLUMNS);
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

    cpus_by_node(&mut o, m, width);
    pci_table(&mut o, m, width);
    netdev_table(&mut o, m, width);
    irq_table(&mut o, m, width);
    if !m.warnings.is_empty() {
        let _ = writeln!(o, "\nWarnings");
        for w in &m.warnings {
            let _ = writeln!(o, "  {}", fit(w, width - 2));
        }
    }
    o
}
